/**
 * ttrpc framing: a 10-byte big-endian header (payload length u32, stream id u32, type u8, flags u8) followed by the
 * payload. `FrameDecoder` is a pure, synchronous state machine: feed it chunks split anywhere, get whole frames
 * back. A frame whose length is over the limit is skipped without buffering it and reported as `oversized`, so the
 * receiver can answer on that stream and keep the connection.
 */

export const HEADER_LENGTH = 10;
/** The largest payload ttrpc accepts (4 MiB). */
export const MAX_MESSAGE_LENGTH = 4 << 20;

export const FrameType = {
  Request: 0x01,
  Response: 0x02,
  /** ttrpc 1.2 streaming; containerd 1.6 never sends it. Receivers ignore it. */
  Data: 0x03,
} as const;

export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

export interface Frame extends FrameHeader {
  payload: Buffer;
}

export type DecodedFrame = ({ kind: 'frame' } & Frame) | ({ kind: 'oversized' } & FrameHeader);

export function writeHeader(buf: Buffer, offset: number, header: FrameHeader): void {
  buf.writeUInt32BE(header.length, offset);
  buf.writeUInt32BE(header.streamId, offset + 4);
  buf[offset + 8] = header.type;
  buf[offset + 9] = header.flags;
}

/** Header and payload in one buffer. */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  writeHeader(buf, 0, { length: payload.length, streamId, type, flags });
  buf.set(payload, HEADER_LENGTH);
  return buf;
}

function readHeader(buf: Buffer, offset: number): FrameHeader {
  return {
    length: buf.readUInt32BE(offset),
    streamId: buf.readUInt32BE(offset + 4),
    type: buf[offset + 8]!,
    flags: buf[offset + 9]!,
  };
}

enum ReadState {
  Header,
  Payload,
  Discard,
}

export class FrameDecoder {
  private state = ReadState.Header;
  private readonly headerBuf = Buffer.alloc(HEADER_LENGTH);
  private headerFilled = 0;
  private header: FrameHeader | undefined;
  private payload: Buffer | undefined;
  private payloadFilled = 0;
  private discardLeft = 0;

  constructor(readonly maxLength: number = MAX_MESSAGE_LENGTH) {}

  /** Bytes of an incomplete frame held (0 at a frame boundary). */
  get pendingBytes(): number {
    switch (this.state) {
      case ReadState.Header:
        return this.headerFilled;
      case ReadState.Payload:
        return HEADER_LENGTH + this.payloadFilled;
      case ReadState.Discard:
        return HEADER_LENGTH + (this.header!.length - this.discardLeft);
    }
  }

  /** Bytes of memory the decoder holds for the frame in progress: never more than the header and the cap. */
  get heldBytes(): number {
    switch (this.state) {
      case ReadState.Header:
        return this.headerFilled;
      case ReadState.Payload:
        return HEADER_LENGTH + this.payload!.length;
      case ReadState.Discard:
        return HEADER_LENGTH;
    }
  }

  write(chunk: Buffer): DecodedFrame[] {
    const out: DecodedFrame[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case ReadState.Header: {
          // Fast path: a whole frame inside this chunk at a boundary is returned as a view, without copying.
          if (this.headerFilled === 0 && chunk.length - pos >= HEADER_LENGTH) {
            const header = readHeader(chunk, pos);
            if (header.length <= this.maxLength && chunk.length - pos - HEADER_LENGTH >= header.length) {
              const start = pos + HEADER_LENGTH;
              out.push({ kind: 'frame', ...header, payload: chunk.subarray(start, start + header.length) });
              pos = start + header.length;
              break;
            }
          }
          const n = Math.min(HEADER_LENGTH - this.headerFilled, chunk.length - pos);
          chunk.copy(this.headerBuf, this.headerFilled, pos, pos + n);
          this.headerFilled += n;
          pos += n;
          if (this.headerFilled === HEADER_LENGTH) this.startFrame(out);
          break;
        }
        case ReadState.Payload: {
          const want = this.header!.length - this.payloadFilled;
          const n = Math.min(want, chunk.length - pos);
          chunk.copy(this.payload!, this.payloadFilled, pos, pos + n);
          this.payloadFilled += n;
          pos += n;
          if (this.payloadFilled === this.header!.length) {
            out.push({ kind: 'frame', ...this.header!, payload: this.payload! });
            this.reset();
          }
          break;
        }
        case ReadState.Discard: {
          const n = Math.min(this.discardLeft, chunk.length - pos);
          this.discardLeft -= n;
          pos += n;
          if (this.discardLeft === 0) {
            out.push({ kind: 'oversized', ...this.header! });
            this.reset();
          }
          break;
        }
      }
    }
    return out;
  }

  private startFrame(out: DecodedFrame[]): void {
    const header = readHeader(this.headerBuf, 0);
    this.header = header;
    this.headerFilled = 0;
    if (header.length > this.maxLength) {
      this.state = ReadState.Discard;
      this.discardLeft = header.length;
      if (header.length === 0) this.reset();
      return;
    }
    if (header.length === 0) {
      out.push({ kind: 'frame', ...header, payload: Buffer.alloc(0) });
      this.reset();
      return;
    }
    this.state = ReadState.Payload;
    this.payload = Buffer.allocUnsafe(header.length);
    this.payloadFilled = 0;
  }

  private reset(): void {
    this.state = ReadState.Header;
    this.header = undefined;
    this.payload = undefined;
    this.payloadFilled = 0;
    this.discardLeft = 0;
  }
}
