/**
 * Answers of buffered output encoded straight into their ttrpc frame. ReadStdout, ReadStderr (grpc.ReadStreamResponse
 * `{ bytes data = 1; }`) and ReadConnection (hull's ReadConnectionResponse `{ bytes data = 1; bool eof = 2; }`) carry
 * the chunks the output was read in; their codec hands ttrpc the field's head and the chunks as parts (ttrpc-ts
 * `Codec.encodeParts`), which it writes one after the other into the frame. Under TCG the guest's CPU is what limits
 * these paths, and this copies each byte once in JavaScript instead of three times (joined, encoded by protobufjs,
 * framed), with two large allocations fewer per answer.
 */
import type { MethodDescriptor } from 'ttrpc-ts';

/** A read's answer: its bytes as chunks (field 1), and for a connection whether it ended (field 2). */
export interface GatheredData {
  data: readonly Buffer[];
  eof?: boolean;
}

const EOF_TRUE = Buffer.from([0x10, 0x01]);

function fieldHead(len: number): Buffer {
  const head = [0x0a];
  while (len >= 0x80) {
    head.push((len & 0x7f) | 0x80);
    len = Math.floor(len / 128);
  }
  head.push(len);
  return Buffer.from(head);
}

/** The message's encoding, as parts: protobufjs's bytes for the same message, without joining the chunks. */
export function gatheredParts(value: GatheredData): Buffer[] {
  let len = 0;
  for (const c of value.data) len += c.length;
  const parts = len ? [fieldHead(len), ...value.data.filter((c) => c.length > 0)] : [];
  if (value.eof) parts.push(EOF_TRUE);
  return parts;
}

/**
 * `desc` with a response codec for GatheredData (the server side only: the host decodes the usual message).
 * `decode` gives the data back as one chunk (for tests that call a handler through a client of this descriptor).
 */
export function gathered<Req, Res extends { data?: Uint8Array | null; eof?: boolean | null }>(
  desc: MethodDescriptor<Req, Res>,
): MethodDescriptor<Req, GatheredData> {
  return {
    ...desc,
    response: {
      encode: (value) => Buffer.concat(gatheredParts(value)),
      encodeParts: gatheredParts,
      decode: (bytes) => {
        const m = desc.response.decode(bytes);
        return { data: m.data?.length ? [Buffer.from(m.data)] : [], ...(m.eof ? { eof: true } : {}) };
      },
    },
  };
}
