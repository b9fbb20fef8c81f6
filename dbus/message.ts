/**
 * D-Bus messages: the fixed header (`yyyyuua(yv)`), the header fields, the body; `encodeMessage` and a stream
 * `MessageDecoder` that cuts whole messages out of what the socket gives, refusing one larger than its cap before
 * buffering it.
 */
import { DBusProtocolError, Reader, Writer, isObjectPath, type DBusValue, type Variant } from './marshal';

export enum MessageType {
  MethodCall = 1,
  MethodReturn = 2,
  Error = 3,
  Signal = 4,
}

export const NO_REPLY_EXPECTED = 0x1;

export interface Message {
  type: MessageType;
  flags?: number;
  serial: number;
  path?: string;
  interface?: string;
  member?: string;
  errorName?: string;
  replySerial?: number;
  destination?: string;
  sender?: string;
  /** The body's signature ('' or absent: no body). */
  signature?: string;
  body?: DBusValue[];
}

const FIELD = {
  path: 1,
  interface: 2,
  member: 3,
  errorName: 4,
  replySerial: 5,
  destination: 6,
  sender: 7,
  signature: 8,
  unixFds: 9,
} as const;
const FIELD_SIG: Record<number, string> = { 1: 'o', 2: 's', 3: 's', 4: 's', 5: 'u', 6: 's', 7: 's', 8: 'g', 9: 'u' };
/** A header field's code → the Message property it fills (the codes above, inverted). */
const FIELD_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(FIELD).map(([name, code]) => [code, name]),
);

/** The specification's maximum message size; a decoder's own cap is usually far lower. */
export const MAX_MESSAGE_BYTES = 128 << 20;
const FIXED_HEADER = 16;

function fail(what: string): never {
  throw new DBusProtocolError(what);
}

/** Names: interfaces and error names are dotted words; members one word (the specification's rules, 255 max). */
const INTERFACE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$/;
const MEMBER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BUS_NAME = /^(:[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+|[A-Za-z_-][A-Za-z0-9_-]*(\.[A-Za-z_-][A-Za-z0-9_-]*)+)$/;

function checkName(what: string, v: string | undefined, re: RegExp): void {
  if (v !== undefined && (v.length > 255 || !re.test(v))) fail(`${what} ${JSON.stringify(v.slice(0, 80))} is invalid`);
}

function checkRequired(m: Message): void {
  if (m.type === MessageType.MethodCall && (m.path === undefined || m.member === undefined))
    fail('a method call needs a path and a member');
  if (m.type === MessageType.Signal && (m.path === undefined || m.interface === undefined || m.member === undefined))
    fail('a signal needs a path, an interface and a member');
  if (m.type === MessageType.MethodReturn && m.replySerial === undefined) fail('a method return needs a reply serial');
  if (m.type === MessageType.Error && (m.replySerial === undefined || m.errorName === undefined))
    fail('an error needs a reply serial and an error name');
  if (m.path !== undefined && !isObjectPath(m.path)) fail(`path ${JSON.stringify(m.path.slice(0, 80))} is invalid`);
  checkName('interface', m.interface, INTERFACE);
  checkName('member', m.member, MEMBER);
  checkName('error name', m.errorName, INTERFACE);
  checkName('destination', m.destination, BUS_NAME);
  checkName('sender', m.sender, BUS_NAME);
}

/** The message's bytes (little-endian). */
export function encodeMessage(m: Message): Buffer {
  if (!Number.isInteger(m.serial) || m.serial <= 0 || m.serial > 0xffffffff) fail(`serial ${m.serial}`);
  checkRequired(m);
  const signature = m.signature ?? '';
  const body = new Writer();
  body.writeAll(signature, m.body ?? []);
  const fields: DBusValue[] = [];
  const add = (code: number, value: string | number | undefined): void => {
    if (value !== undefined && value !== '') fields.push([code, { signature: FIELD_SIG[code]!, value }]);
  };
  add(FIELD.path, m.path);
  add(FIELD.interface, m.interface);
  add(FIELD.member, m.member);
  add(FIELD.errorName, m.errorName);
  add(FIELD.replySerial, m.replySerial);
  add(FIELD.destination, m.destination);
  add(FIELD.sender, m.sender);
  add(FIELD.signature, signature);
  const head = new Writer();
  head.writeAll('yyyyuua(yv)', ['l'.charCodeAt(0), m.type, m.flags ?? 0, 1, body.length, m.serial, fields]);
  head.align(8);
  const out = Buffer.concat([head.result(), body.result()]);
  if (out.length > MAX_MESSAGE_BYTES) fail('message larger than 128 MiB');
  return out;
}

/** One whole message's bytes → the message; everything checked. */
export function decodeMessage(buf: Buffer): Message {
  if (buf.length < FIXED_HEADER) fail('message shorter than its header');
  const endian = String.fromCharCode(buf[0]!);
  if (endian !== 'l' && endian !== 'B') fail(`byte order ${JSON.stringify(endian)}`);
  const le = endian === 'l';
  const r = new Reader(buf, 0, buf.length, le);
  const [, type, flags, version, bodyLength, serial, fields] = r.readAll('yyyyuua(yv)') as [
    number,
    number,
    number,
    number,
    number,
    number,
    [number, Variant][],
  ];
  if (version !== 1) fail(`protocol version ${version}`);
  if (type < 1 || type > 4) fail(`message type ${type}`);
  if (serial === 0) fail('serial 0');
  r.align(8);
  const bodyStart = r.offset;
  if (bodyStart + bodyLength !== buf.length) fail('body length does not match the message');
  const m: Message = { type, flags, serial };
  for (const [code, v] of fields) {
    const want = FIELD_SIG[code];
    if (want === undefined) continue; // unknown fields are ignored, as the specification says
    if (v.signature !== want) fail(`header field ${code} has type ${v.signature}, not ${want}`);
    if (code === FIELD.unixFds) {
      if (v.value !== 0) fail('unix fds were not negotiated');
      continue;
    }
    (m as unknown as Record<string, unknown>)[FIELD_NAME[code]!] = v.value;
  }
  checkRequired(m);
  const body = new Reader(buf.subarray(bodyStart), 0, bodyLength, le);
  m.body = body.readAll(m.signature ?? '');
  if (body.offset !== bodyLength) fail('body longer than its signature');
  return m;
}

/** Cuts whole messages out of a byte stream; a message announced larger than `maxBytes` is an error at once. */
export class MessageDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxBytes: number) {}

  /** The messages completed by `data`. */
  push(data: Buffer): Message[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Message[] = [];
    for (;;) {
      if (this.buffered < FIXED_HEADER) return out;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [all];
      const endian = String.fromCharCode(all[0]!);
      if (endian !== 'l' && endian !== 'B') fail(`byte order ${JSON.stringify(endian)}`);
      const le = endian === 'l';
      const bodyLength = le ? all.readUInt32LE(4) : all.readUInt32BE(4);
      const fieldsLength = le ? all.readUInt32LE(12) : all.readUInt32BE(12);
      const headerLength = FIXED_HEADER + fieldsLength;
      const total = headerLength + ((8 - (headerLength % 8)) % 8) + bodyLength;
      if (total > this.maxBytes) fail(`a message of ${total} bytes is larger than the cap of ${this.maxBytes}`);
      if (this.buffered < total) return out;
      out.push(decodeMessage(all.subarray(0, total)));
      const rest = all.subarray(total);
      this.chunks = rest.length ? [rest] : [];
      this.buffered = rest.length;
    }
  }
}
