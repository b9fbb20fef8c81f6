/**
 * The protobuf encoding of ttrpc's own envelope messages, written by hand so that ttrpc-ts depends on nothing:
 *   Request  { service = 1; method = 2; payload = 3; timeout_nano = 4 (int64); metadata = 5 (repeated KeyValue) }
 *   Response { status = 1 (google.rpc.Status); payload = 2 }
 *   KeyValue { key = 1; value = 2 }
 *   google.rpc.Status { code = 1 (int32); message = 2; details = 3 (repeated google.protobuf.Any) }
 *   google.protobuf.Any { type_url = 1; value = 2 }
 * Encoders write straight into a caller-provided buffer (so a frame is built with one allocation); decoders
 * return views into the input, never copies, and skip unknown fields.
 */
import { Code, type AnyMessage, type Status } from './status';

export interface KeyValue {
  key: string;
  value: string;
}

export interface RequestMessage {
  service: string;
  method: string;
  payload: Uint8Array;
  /** 0 = no deadline. */
  timeoutNano: number;
  metadata: KeyValue[];
}

export interface ResponseMessage {
  status?: Status;
  payload: Uint8Array;
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export class WireError extends Error {
  override get name(): string {
    return 'WireError';
  }
}

// ---- sizes -------------------------------------------------------------------------------------------------------

function varintSize(n: number): number {
  if (n < 0) return 10; // negative int32/int64: ten bytes, two's complement
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

const lenFieldSize = (len: number): number => 1 + varintSize(len) + len;

interface Sized<T> {
  value: T;
  size: number;
}

function sizeKeyValue(kv: KeyValue): Sized<{ key: Buffer; value: Buffer }> {
  const key = Buffer.from(kv.key, 'utf8');
  const value = Buffer.from(kv.value, 'utf8');
  return {
    value: { key, value },
    size: (key.length ? lenFieldSize(key.length) : 0) + (value.length ? lenFieldSize(value.length) : 0),
  };
}

// ---- writer ------------------------------------------------------------------------------------------------------

class Writer {
  constructor(
    readonly buf: Buffer,
    public pos: number,
  ) {}

  varint(n: number): void {
    if (n < 0) {
      let v = BigInt.asUintN(64, BigInt(Math.trunc(n)));
      for (let i = 0; i < 9; i++) {
        this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
        v >>= 7n;
      }
      this.buf[this.pos++] = Number(v);
      return;
    }
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }

  tag(field: number, wire: number): void {
    this.buf[this.pos++] = (field << 3) | wire; // every field number here is < 16
  }

  bytes(field: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.tag(field, WIRE_LEN);
    this.varint(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }

  header(field: number, len: number): void {
    this.tag(field, WIRE_LEN);
    this.varint(len);
  }
}

// ---- Request -----------------------------------------------------------------------------------------------------

export interface EncodedRequest {
  size: number;
  write(buf: Buffer, offset: number): void;
}

/** Prepares a Request for writing at a known size (used to build the frame in one allocation). */
/** Encoded service and method names: a client sends the same few names over and over. */
const nameCache = new Map<string, Buffer>();
function encodedName(name: string): Buffer {
  let buf = nameCache.get(name);
  if (!buf) {
    buf = Buffer.from(name, 'utf8');
    if (nameCache.size < 4096) nameCache.set(name, buf);
  }
  return buf;
}

export function prepareRequest(req: RequestMessage): EncodedRequest {
  const service = encodedName(req.service);
  const method = encodedName(req.method);
  const metadata = req.metadata.map(sizeKeyValue);
  let size = 0;
  if (service.length) size += lenFieldSize(service.length);
  if (method.length) size += lenFieldSize(method.length);
  if (req.payload.length) size += lenFieldSize(req.payload.length);
  if (req.timeoutNano !== 0) size += 1 + varintSize(req.timeoutNano);
  for (const kv of metadata) size += lenFieldSize(kv.size);
  return {
    size,
    write(buf, offset) {
      const w = new Writer(buf, offset);
      w.bytes(1, service);
      w.bytes(2, method);
      w.bytes(3, req.payload);
      if (req.timeoutNano !== 0) {
        w.tag(4, WIRE_VARINT);
        w.varint(req.timeoutNano);
      }
      for (const kv of metadata) {
        w.header(5, kv.size);
        w.bytes(1, kv.value.key);
        w.bytes(2, kv.value.value);
      }
    },
  };
}

export function encodeRequest(req: RequestMessage): Buffer {
  const prepared = prepareRequest(req);
  const buf = Buffer.allocUnsafe(prepared.size);
  prepared.write(buf, 0);
  return buf;
}

// ---- Response ----------------------------------------------------------------------------------------------------

export function prepareResponse(res: ResponseMessage): EncodedRequest {
  const status = res.status && res.status.code !== Code.OK ? prepareStatus(res.status) : undefined;
  let size = 0;
  if (status) size += lenFieldSize(status.size);
  if (res.payload.length) size += lenFieldSize(res.payload.length);
  return {
    size,
    write(buf, offset) {
      const w = new Writer(buf, offset);
      if (status) {
        w.header(1, status.size);
        status.write(w);
      }
      w.bytes(2, res.payload);
    },
  };
}

export function encodeResponse(res: ResponseMessage): Buffer {
  const prepared = prepareResponse(res);
  const buf = Buffer.allocUnsafe(prepared.size);
  prepared.write(buf, 0);
  return buf;
}

function prepareStatus(status: Status): { size: number; write(w: Writer): void } {
  const message = Buffer.from(status.message, 'utf8');
  const details = status.details.map((d) => {
    const typeUrl = Buffer.from(d.typeUrl, 'utf8');
    const size =
      (typeUrl.length ? lenFieldSize(typeUrl.length) : 0) + (d.value.length ? lenFieldSize(d.value.length) : 0);
    return { typeUrl, value: d.value, size };
  });
  let size = 0;
  if (status.code !== Code.OK) size += 1 + varintSize(status.code);
  if (message.length) size += lenFieldSize(message.length);
  for (const d of details) size += lenFieldSize(d.size);
  return {
    size,
    write(w) {
      if (status.code !== Code.OK) {
        w.tag(1, WIRE_VARINT);
        w.varint(status.code);
      }
      w.bytes(2, message);
      for (const d of details) {
        w.header(3, d.size);
        w.bytes(1, d.typeUrl);
        w.bytes(2, d.value);
      }
    },
  };
}

// ---- reader ------------------------------------------------------------------------------------------------------

class Reader {
  pos = 0;

  constructor(readonly buf: Uint8Array) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** An unsigned varint of up to 64 bits, as a bigint when it does not fit 2^53 exactly. */
  varint(): number | bigint {
    let result = 0;
    let shift = 0;
    // Fast path: up to 7 bytes (49 bits) fits a double exactly.
    for (let i = 0; i < 7; i++) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return result;
      shift += 7;
    }
    let big = BigInt(result);
    for (let i = 7; i < 10; i++) {
      const b = this.byte();
      big |= BigInt(b & 0x7f) << BigInt(shift);
      if (b < 0x80) return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : BigInt.asUintN(64, big);
      shift += 7;
    }
    throw new WireError('varint longer than 10 bytes');
  }

  int64(): number {
    const v = this.varint();
    return typeof v === 'number' ? v : Number(BigInt.asIntN(64, v));
  }

  int32(): number {
    const v = this.varint();
    return typeof v === 'number' ? v | 0 : Number(BigInt.asIntN(32, v));
  }

  bytes(): Uint8Array {
    const len = this.varint();
    if (typeof len !== 'number' || this.pos + len > this.buf.length)
      throw new WireError('length-delimited field overruns the message');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  string(): string {
    const b = this.bytes();
    return Buffer.from(b.buffer, b.byteOffset, b.length).toString('utf8');
  }

  tag(): { field: number; wire: number } {
    const t = this.varint();
    if (typeof t !== 'number') throw new WireError('field tag out of range');
    return { field: Math.floor(t / 8), wire: t & 7 };
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw new WireError(`unsupported wire type ${wire}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.buf.length) throw new WireError('field overruns the message');
    this.pos += n;
  }

  private byte(): number {
    if (this.pos >= this.buf.length) throw new WireError('truncated varint');
    return this.buf[this.pos++]!;
  }
}

function expectWire(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new WireError(`${what}: wrong wire type ${actual}`);
}

const EMPTY = new Uint8Array(0);

export function decodeRequest(buf: Uint8Array): RequestMessage {
  const r = new Reader(buf);
  const req: RequestMessage = { service: '', method: '', payload: EMPTY, timeoutNano: 0, metadata: [] };
  while (!r.done) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        expectWire(wire, WIRE_LEN, 'Request.service');
        req.service = r.string();
        break;
      case 2:
        expectWire(wire, WIRE_LEN, 'Request.method');
        req.method = r.string();
        break;
      case 3:
        expectWire(wire, WIRE_LEN, 'Request.payload');
        req.payload = r.bytes();
        break;
      case 4:
        expectWire(wire, WIRE_VARINT, 'Request.timeout_nano');
        req.timeoutNano = r.int64();
        break;
      case 5:
        expectWire(wire, WIRE_LEN, 'Request.metadata');
        req.metadata.push(decodeKeyValue(r.bytes()));
        break;
      default:
        r.skip(wire);
    }
  }
  return req;
}

function decodeKeyValue(buf: Uint8Array): KeyValue {
  const r = new Reader(buf);
  const kv: KeyValue = { key: '', value: '' };
  while (!r.done) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) kv.key = r.string();
    else if (field === 2 && wire === WIRE_LEN) kv.value = r.string();
    else r.skip(wire);
  }
  return kv;
}

export function decodeResponse(buf: Uint8Array): ResponseMessage {
  const r = new Reader(buf);
  const res: ResponseMessage = { payload: EMPTY };
  while (!r.done) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) res.status = decodeStatus(r.bytes());
    else if (field === 2 && wire === WIRE_LEN) res.payload = r.bytes();
    else r.skip(wire);
  }
  return res;
}

export function decodeStatus(buf: Uint8Array): Status {
  const r = new Reader(buf);
  const status: Status = { code: Code.OK, message: '', details: [] };
  while (!r.done) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_VARINT) status.code = r.int32();
    else if (field === 2 && wire === WIRE_LEN) status.message = r.string();
    else if (field === 3 && wire === WIRE_LEN) status.details.push(decodeAny(r.bytes()));
    else r.skip(wire);
  }
  return status;
}

function decodeAny(buf: Uint8Array): AnyMessage {
  const r = new Reader(buf);
  const any: AnyMessage = { typeUrl: '', value: EMPTY };
  while (!r.done) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === WIRE_LEN) any.typeUrl = r.string();
    else if (field === 2 && wire === WIRE_LEN) any.value = r.bytes();
    else r.skip(wire);
  }
  return any;
}
