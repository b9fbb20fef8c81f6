/**
 * A real OTLP/gRPC trace receiver for tests and benchmarks: `opentelemetry.proto.collector.trace.v1.TraceService/
 * Export` served with grpc-js on 127.0.0.1, decoding with protobufjs the few messages it needs, written here from
 * opentelemetry-proto's wire facts (package, message and field names, numbers and types as upstream's; fields a
 * test does not read are left out, and protobufjs skips them on decode).
 */
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const OTLP_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.trace.v1;

message ExportTraceServiceRequest {
  repeated ResourceSpans resource_spans = 1;
}
message ExportTraceServiceResponse {
  ExportTracePartialSuccess partial_success = 1;
}
message ExportTracePartialSuccess {
  int64 rejected_spans = 1;
  string error_message = 2;
}

// opentelemetry.proto.trace.v1, opentelemetry.proto.common.v1 and opentelemetry.proto.resource.v1 (the same field
// numbers and types; one package here, which does not change the bytes).
message ResourceSpans {
  Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
  string schema_url = 3;
}
message Resource {
  repeated KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
message ScopeSpans {
  InstrumentationScope scope = 1;
  repeated Span spans = 2;
  string schema_url = 3;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  string name = 5;
  int32 kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  Status status = 15;
  fixed32 flags = 16;
}
message Status {
  string message = 2;
  int32 code = 3;
}
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    bytes bytes_value = 7;
  }
}
`;

/** A received span, ids in lower-case hex ('' for no parent), times in ms since the epoch. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  attributes: Record<string, string | number | boolean>;
  status: { code: number; message: string };
  resource: Record<string, string | number | boolean>;
  scope: string;
}

interface RawKeyValue {
  key?: string;
  value?: { stringValue?: string; boolValue?: boolean; intValue?: number; doubleValue?: number };
}

function keyValues(list: RawKeyValue[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const kv of list ?? []) {
    const v = kv.value ?? {};
    out[kv.key ?? ''] = v.stringValue ?? v.boolValue ?? v.intValue ?? v.doubleValue ?? '';
  }
  return out;
}

const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? []).toString('hex');

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  /** Export calls received (batches). */
  exports = 0;
  port = 0;
  private constructor(private readonly server: grpc.Server) {}

  static async start(): Promise<OtlpReceiver> {
    const root = protobuf.parse(OTLP_PROTO, { keepCase: false }).root;
    const Request = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
    const Response = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse');
    const server = new grpc.Server();
    const receiver = new OtlpReceiver(server);
    server.addService(
      {
        Export: {
          path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
          requestStream: false,
          responseStream: false,
          requestSerialize: (v: object) => Buffer.from(Request.encode(v).finish()),
          requestDeserialize: (b: Buffer) => Request.toObject(Request.decode(b), { longs: Number }),
          responseSerialize: (v: object) => Buffer.from(Response.encode(v).finish()),
          responseDeserialize: (b: Buffer) => Response.decode(b),
        },
      },
      {
        Export: (call: grpc.ServerUnaryCall<Record<string, unknown>, object>, cb: grpc.sendUnaryData<object>) => {
          receiver.add(call.request);
          cb(null, {});
        },
      },
    );
    receiver.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    return receiver;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private add(req: Record<string, unknown>): void {
    this.exports++;
    type Raw = {
      resourceSpans?: {
        resource?: { attributes?: RawKeyValue[] };
        scopeSpans?: {
          scope?: { name?: string };
          spans?: {
            traceId?: Uint8Array;
            spanId?: Uint8Array;
            parentSpanId?: Uint8Array;
            name?: string;
            kind?: number;
            startTimeUnixNano?: number;
            endTimeUnixNano?: number;
            attributes?: RawKeyValue[];
            status?: { code?: number; message?: string };
          }[];
        }[];
      }[];
    };
    for (const rs of (req as Raw).resourceSpans ?? []) {
      const resource = keyValues(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? [])
        for (const s of ss.spans ?? [])
          this.spans.push({
            traceId: hex(s.traceId),
            spanId: hex(s.spanId),
            parentSpanId: hex(s.parentSpanId),
            name: s.name ?? '',
            kind: s.kind ?? 0,
            startMs: (s.startTimeUnixNano ?? 0) / 1e6,
            endMs: (s.endTimeUnixNano ?? 0) / 1e6,
            attributes: keyValues(s.attributes),
            status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
            resource,
            scope: ss.scope?.name ?? '',
          });
    }
  }

  clear(): void {
    this.spans.length = 0;
    this.exports = 0;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
