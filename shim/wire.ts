/**
 * The few protobuf messages `start` and `-info` read and write, encoded by hand so that those two short-lived
 * commands load no generated code (start-up time is part of every container start, and containerd 2.2+ runs `-info`
 * before creates). The shapes are those of protos/proto (containerd/types/introspection.proto,
 * containerd/runtime/bootstrap/v1/bootstrap.proto, google/protobuf/any.proto); test/wire.test.ts checks every
 * encoding and decoding here against the generated classes.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** A protobuf writer for the field types used here: strings, bytes, nested messages, int32. */
export class ProtoWriter {
  private readonly parts: Buffer[] = [];

  private varint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    this.parts.push(Buffer.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  /** A length-delimited field (proto3: an empty one is left out). */
  bytes(field: number, value: Uint8Array | undefined): this {
    if (!value || value.length === 0) return this;
    this.tag(field, WIRE_LEN);
    this.varint(value.length);
    this.parts.push(Buffer.from(value));
    return this;
  }

  string(field: number, value: string | undefined): this {
    return this.bytes(field, value ? Buffer.from(value, 'utf8') : undefined);
  }

  /** A nested message, written even when empty (presence is part of a message field). */
  message(field: number, value: ProtoWriter | undefined): this {
    if (!value) return this;
    const body = value.finish();
    this.tag(field, WIRE_LEN);
    this.varint(body.length);
    this.parts.push(body);
    return this;
  }

  /** int32 (negative values take ten bytes, as protobuf sign-extends them to 64 bits). */
  int32(field: number, value: number): this {
    if (value === 0) return this;
    this.tag(field, WIRE_VARINT);
    this.varint(BigInt(Math.trunc(value)));
    return this;
  }

  /** A map<string, string> entry per key, in key order (deterministic output). */
  stringMap(field: number, map: Readonly<Record<string, string>> | undefined): this {
    for (const key of Object.keys(map ?? {}).sort())
      this.message(field, new ProtoWriter().string(1, key).string(2, map![key]));
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** One decoded field: varints as bigint, length-delimited fields as bytes. */
export interface ProtoField {
  field: number;
  wire: number;
  varint?: bigint;
  bytes?: Buffer;
}

/** Splits a message into its fields; throws on malformed input (truncated, bad tag, groups, overlong varint). */
export function readFields(buf: Uint8Array): ProtoField[] {
  const data = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: ProtoField[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= data.length) throw new Error('truncated varint');
      const b = data[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return BigInt.asUintN(64, result);
    }
    throw new Error('varint too long');
  };
  while (pos < data.length) {
    const key = varint();
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field < 1 || field > 0x1fffffff) throw new Error(`bad field number ${field}`);
    if (wire === WIRE_VARINT) out.push({ field, wire, varint: varint() });
    else if (wire === WIRE_LEN) {
      const len = varint();
      if (len > BigInt(data.length - pos)) throw new Error('truncated field');
      out.push({ field, wire, bytes: data.subarray(pos, pos + Number(len)) });
      pos += Number(len);
    } else if (wire === WIRE_I64 || wire === WIRE_I32) {
      const len = wire === WIRE_I64 ? 8 : 4;
      if (pos + len > data.length) throw new Error('truncated field');
      out.push({ field, wire, bytes: data.subarray(pos, pos + len) });
      pos += len;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

/** The last value of a string field (protobuf: the last one wins), or ''. */
export function stringField(fields: readonly ProtoField[], field: number): string {
  const f = fields.filter((x) => x.field === field && x.wire === WIRE_LEN).pop();
  return f?.bytes ? f.bytes.toString('utf8') : '';
}

/** google.protobuf.Any: type_url = 1, value = 2. */
export interface AnyMessage {
  typeUrl: string;
  value: Buffer;
}

export function decodeAny(buf: Uint8Array): AnyMessage {
  const fields = readFields(buf);
  const value = fields.filter((f) => f.field === 2 && f.wire === WIRE_LEN).pop()?.bytes ?? Buffer.alloc(0);
  return { typeUrl: stringField(fields, 1), value: Buffer.from(value) };
}

export function anyWriter(a: AnyMessage): ProtoWriter {
  return new ProtoWriter().string(1, a.typeUrl).bytes(2, a.value);
}

/** What hull reads of containerd 2.3's containerd.runtime.bootstrap.v1.BootstrapParams. */
export interface BootstrapParams {
  instanceId: string;
  namespace: string;
  containerdVersion: string;
  containerdTtrpcAddress: string;
  containerdGrpcAddress: string;
  containerdBinary: string;
  /** extensions[].value: the runtime options among them. */
  extensions: AnyMessage[];
  socketDir?: string;
}

export function decodeBootstrapParams(buf: Uint8Array): BootstrapParams {
  const fields = readFields(buf);
  const socketDir = fields.filter((f) => f.field === 9 && f.wire === WIRE_LEN).pop();
  return {
    instanceId: stringField(fields, 1),
    namespace: stringField(fields, 2),
    containerdVersion: stringField(fields, 4),
    containerdTtrpcAddress: stringField(fields, 5),
    containerdGrpcAddress: stringField(fields, 6),
    containerdBinary: stringField(fields, 7),
    extensions: fields
      .filter((f) => f.field === 8 && f.wire === WIRE_LEN)
      .map((f) => {
        const value = readFields(f.bytes!)
          .filter((x) => x.field === 1 && x.wire === WIRE_LEN)
          .pop();
        return value ? decodeAny(value.bytes!) : { typeUrl: '', value: Buffer.alloc(0) };
      }),
    ...(socketDir?.bytes ? { socketDir: socketDir.bytes.toString('utf8') } : {}),
  };
}

/** containerd.runtime.bootstrap.v1.BootstrapResult: version = 1, address = 2, protocol = 3. */
export function encodeBootstrapResult(r: { version: number; address: string; protocol: string }): Buffer {
  return new ProtoWriter().int32(1, r.version).string(2, r.address).string(3, r.protocol).finish();
}

/** containerd.types.RuntimeInfo: name = 1, version = 2 {version = 1, revision = 2}, options = 3, features = 4, annotations = 5. */
export function encodeRuntimeInfo(info: {
  name: string;
  version: { version: string; revision: string };
  options?: AnyMessage;
  features?: AnyMessage;
  annotations?: Readonly<Record<string, string>>;
}): Buffer {
  return new ProtoWriter()
    .string(1, info.name)
    .message(2, new ProtoWriter().string(1, info.version.version).string(2, info.version.revision))
    .message(3, info.options ? anyWriter(info.options) : undefined)
    .message(4, info.features ? anyWriter(info.features) : undefined)
    .stringMap(5, info.annotations)
    .finish();
}
