/**
 * The answers that carry a process's output or a forwarded connection's bytes (grpc.ReadStreamResponse `bytes data
 * = 1`; hull's ReadConnectionResponse adds `bool eof = 2`), encoded straight from the chunks the agent buffered as
 * they came from the pipe or socket: one copy into the answer, where joining the chunks (Buffer.concat) and then
 * protobufjs's encoding made two, and two fewer buffers of up to 1 MiB per answer for the garbage collector. Under
 * TCG every copy of the guest's output is the guest's CPU (bench/datapath.ts).
 */
import type { MethodDescriptor } from 'ttrpc-ts';

export interface DataChunks {
  chunks: readonly Buffer[];
  /** Only ReadConnectionResponse has it. */
  eof?: boolean;
}

const varintSize = (n: number): number => {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
};

export function encodeDataChunks(v: DataChunks): Uint8Array {
  let size = 0;
  for (const c of v.chunks) size += c.length;
  const out = Buffer.allocUnsafe((size ? 1 + varintSize(size) + size : 0) + (v.eof ? 2 : 0));
  let off = 0;
  if (size) {
    out[off++] = 0x0a; // field 1, length-delimited
    for (let n = size; ; n = Math.floor(n / 128)) {
      if (n < 0x80) {
        out[off++] = n;
        break;
      }
      out[off++] = (n & 0x7f) | 0x80;
    }
    for (const c of v.chunks) off += c.copy(out, off);
  }
  if (v.eof) {
    out[off] = 0x10; // field 2, varint
    out[off + 1] = 1;
  }
  return out;
}

/** `d` answering DataChunks, encoded as above (the agent only encodes these answers). */
export function chunkedAnswer<Req>(d: MethodDescriptor<Req, unknown>): MethodDescriptor<Req, DataChunks> {
  return {
    ...d,
    response: {
      encode: encodeDataChunks,
      decode: () => {
        throw new Error(`${d.method}: the agent does not decode its answers`);
      },
    },
  };
}
