/**
 * D-Bus wire format (the specification's "Marshaling" section), driven by a type signature: the encoder and decoder
 * of every type but unix fds ('h' is refused: hull never negotiates fd passing). Both byte orders are read; hull
 * writes little-endian.
 *
 * Values: y n q i u d as number, x t as bigint, b as boolean, s o g as string, an array as a JS array (a dict as an
 * array of [key, value] pairs), a struct as a JS array of its fields, a variant as `{ signature, value }`.
 * Everything read is checked (lengths within the message, strings valid UTF-8 without NUL, object paths and
 * signatures well formed, booleans 0/1, nesting depth); a fault is a DBusProtocolError.
 */

export type DBusValue = number | bigint | boolean | string | Variant | DBusValue[];

export interface Variant {
  signature: string;
  value: DBusValue;
}

export class DBusProtocolError extends Error {}

/** One complete type of a signature. */
export interface DBusType {
  code: string;
  /** a: the element; (: the fields; {: key and value. */
  children?: DBusType[];
}

const BASIC = 'ybnqiuxtdsog';
const MAX_SIGNATURE = 255;
/** The specification's limit: 32 levels of arrays and 32 of structs; variants count too here. */
const MAX_DEPTH = 64;
/** The specification's array limit (64 MiB); the message cap is lower anyway. */
const MAX_ARRAY_BYTES = 64 << 20;
const OBJECT_PATH = /^\/$|^(\/[A-Za-z0-9_]+)+$/;

const ALIGN: Record<string, number> = {
  y: 1,
  b: 4,
  n: 2,
  q: 2,
  i: 4,
  u: 4,
  x: 8,
  t: 8,
  d: 8,
  s: 4,
  o: 4,
  g: 1,
  a: 4,
  '(': 8,
  '{': 8,
  v: 1,
};

export function isObjectPath(p: string): boolean {
  return OBJECT_PATH.test(p);
}

/** The complete types of a signature, or a DBusProtocolError naming what is wrong with it. */
export function parseSignature(sig: string): DBusType[] {
  if (sig.length > MAX_SIGNATURE) throw new DBusProtocolError(`signature longer than ${MAX_SIGNATURE}`);
  let pos = 0;
  const one = (arrays: number, structs: number): DBusType => {
    const c = sig[pos++];
    if (c === undefined) throw new DBusProtocolError(`signature ${JSON.stringify(sig)} ends early`);
    if (BASIC.includes(c) || c === 'v') return { code: c };
    if (c === 'a') {
      if (arrays >= 32) throw new DBusProtocolError('signature nests arrays deeper than 32');
      if (sig[pos] === '{') {
        pos++;
        const key = one(arrays + 1, structs + 1);
        if (!BASIC.includes(key.code)) throw new DBusProtocolError('a dict entry key must be a basic type');
        const value = one(arrays + 1, structs + 1);
        if (sig[pos++] !== '}') throw new DBusProtocolError('a dict entry has exactly two types');
        return { code: 'a', children: [{ code: '{', children: [key, value] }] };
      }
      return { code: 'a', children: [one(arrays + 1, structs)] };
    }
    if (c === '(') {
      if (structs >= 32) throw new DBusProtocolError('signature nests structs deeper than 32');
      const fields: DBusType[] = [];
      while (sig[pos] !== ')') {
        if (pos >= sig.length) throw new DBusProtocolError(`signature ${JSON.stringify(sig)}: unclosed struct`);
        fields.push(one(arrays, structs + 1));
      }
      pos++;
      if (fields.length === 0) throw new DBusProtocolError('empty struct');
      return { code: '(', children: fields };
    }
    throw new DBusProtocolError(`signature ${JSON.stringify(sig)}: unsupported type code ${JSON.stringify(c)}`);
  };
  const out: DBusType[] = [];
  while (pos < sig.length) out.push(one(0, 0));
  return out;
}

function typeString(t: DBusType): string {
  if (t.code === 'a') return `a${typeString(t.children![0]!)}`;
  if (t.code === '(') return `(${t.children!.map(typeString).join('')})`;
  if (t.code === '{') return `{${t.children!.map(typeString).join('')}}`;
  return t.code;
}

function fail(what: string): never {
  throw new DBusProtocolError(what);
}

/** Writes values at offsets aligned from the start of its buffer (a message or a body: both start 8-aligned). */
export class Writer {
  private buf = Buffer.alloc(256);
  private len = 0;

  get length(): number {
    return this.len;
  }

  result(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  align(n: number): void {
    const pad = (n - (this.len % n)) % n;
    this.room(pad);
    this.buf.fill(0, this.len, this.len + pad);
    this.len += pad;
  }

  writeAll(signature: string, values: readonly DBusValue[]): void {
    const types = parseSignature(signature);
    if (types.length !== values.length)
      fail(`signature ${JSON.stringify(signature)} has ${types.length} types, given ${values.length} values`);
    types.forEach((t, i) => this.write(t, values[i]!, 0));
  }

  write(t: DBusType, v: DBusValue, depth: number): void {
    if (depth > MAX_DEPTH) fail('values nest too deep');
    const num = (min: number, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
        fail(
          `${typeof v === 'object' ? 'an object' : JSON.stringify(String(v)).slice(0, 40)} is not a ${t.code} (${min}..${max})`,
        );
      return v;
    };
    this.align(ALIGN[t.code]!);
    switch (t.code) {
      case 'y':
        this.room(1);
        this.buf.writeUInt8(num(0, 0xff), this.len);
        this.len += 1;
        return;
      case 'b':
        if (typeof v !== 'boolean') fail('b needs a boolean');
        this.room(4);
        this.buf.writeUInt32LE(v ? 1 : 0, this.len);
        this.len += 4;
        return;
      case 'n':
        this.room(2);
        this.buf.writeInt16LE(num(-0x8000, 0x7fff), this.len);
        this.len += 2;
        return;
      case 'q':
        this.room(2);
        this.buf.writeUInt16LE(num(0, 0xffff), this.len);
        this.len += 2;
        return;
      case 'i':
        this.room(4);
        this.buf.writeInt32LE(num(-0x80000000, 0x7fffffff), this.len);
        this.len += 4;
        return;
      case 'u':
        this.room(4);
        this.buf.writeUInt32LE(num(0, 0xffffffff), this.len);
        this.len += 4;
        return;
      case 'x':
      case 't':
        if (typeof v !== 'bigint') fail(`${t.code} needs a bigint`);
        this.room(8);
        if (t.code === 'x') this.buf.writeBigInt64LE(v, this.len);
        else this.buf.writeBigUInt64LE(v, this.len);
        this.len += 8;
        return;
      case 'd':
        if (typeof v !== 'number') fail('d needs a number');
        this.room(8);
        this.buf.writeDoubleLE(v, this.len);
        this.len += 8;
        return;
      case 's':
      case 'o':
      case 'g': {
        if (typeof v !== 'string') fail(`${t.code} needs a string`);
        if (v.includes('\0')) fail('a string may not contain NUL');
        if (t.code === 'o' && !isObjectPath(v)) fail(`${JSON.stringify(v)} is not an object path`);
        if (t.code === 'g') parseSignature(v);
        const bytes = Buffer.from(v, 'utf8');
        const head = t.code === 'g' ? 1 : 4;
        if (t.code === 'g' && bytes.length > MAX_SIGNATURE) fail('signature too long');
        this.room(head + bytes.length + 1);
        if (head === 1) this.buf.writeUInt8(bytes.length, this.len);
        else this.buf.writeUInt32LE(bytes.length, this.len);
        bytes.copy(this.buf, this.len + head);
        this.buf[this.len + head + bytes.length] = 0;
        this.len += head + bytes.length + 1;
        return;
      }
      case 'v': {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('v needs { signature, value }');
        const inner = parseSignature(v.signature);
        if (inner.length !== 1) fail(`a variant holds one complete type, not ${JSON.stringify(v.signature)}`);
        this.write({ code: 'g' }, v.signature, depth + 1);
        this.write(inner[0]!, v.value, depth + 1);
        return;
      }
      case 'a': {
        if (!Array.isArray(v)) fail('a needs an array');
        const elem = t.children![0]!;
        this.room(4);
        const at = this.len;
        this.len += 4;
        this.align(ALIGN[elem.code]!);
        const start = this.len;
        for (const e of v) this.write(elem, e, depth + 1);
        const size = this.len - start;
        if (size > MAX_ARRAY_BYTES) fail('array longer than 64 MiB');
        this.buf.writeUInt32LE(size, at);
        return;
      }
      case '(':
      case '{': {
        const fields = t.children!;
        if (!Array.isArray(v) || v.length !== fields.length)
          fail(`${typeString(t)} needs an array of ${fields.length} fields`);
        fields.forEach((f, i) => this.write(f, v[i]!, depth + 1));
        return;
      }
      default:
        fail(`unsupported type ${t.code}`);
    }
  }
}

/** Reads values from a buffer whose offset 0 is 8-aligned in the message (alignment is from there). */
export class Reader {
  constructor(
    private readonly buf: Buffer,
    private pos: number,
    private readonly end: number,
    private readonly littleEndian: boolean,
  ) {}

  get offset(): number {
    return this.pos;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) fail('message truncated');
  }

  align(n: number): void {
    const pad = (n - (this.pos % n)) % n;
    this.need(pad);
    for (let i = 0; i < pad; i++) if (this.buf[this.pos + i] !== 0) fail('non-zero alignment padding');
    this.pos += pad;
  }

  readAll(signature: string): DBusValue[] {
    const values = parseSignature(signature).map((t) => this.read(t, 0));
    return values;
  }

  private u32(): number {
    this.need(4);
    const v = this.littleEndian ? this.buf.readUInt32LE(this.pos) : this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  private text(len: number): string {
    this.need(len + 1);
    const bytes = this.buf.subarray(this.pos, this.pos + len);
    if (this.buf[this.pos + len] !== 0) fail('string not NUL-terminated');
    if (bytes.includes(0)) fail('string contains NUL');
    let s: string;
    try {
      s = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      fail('string is not valid UTF-8');
    }
    this.pos += len + 1;
    return s;
  }

  read(t: DBusType, depth: number): DBusValue {
    if (depth > MAX_DEPTH) fail('values nest too deep');
    this.align(ALIGN[t.code]!);
    const le = this.littleEndian;
    const b = this.buf;
    const at = this.pos;
    switch (t.code) {
      case 'y':
        this.need(1);
        this.pos += 1;
        return b.readUInt8(at);
      case 'b': {
        const v = this.u32();
        if (v > 1) fail(`boolean ${v}`);
        return v === 1;
      }
      case 'n':
        this.need(2);
        this.pos += 2;
        return le ? b.readInt16LE(at) : b.readInt16BE(at);
      case 'q':
        this.need(2);
        this.pos += 2;
        return le ? b.readUInt16LE(at) : b.readUInt16BE(at);
      case 'i':
        this.need(4);
        this.pos += 4;
        return le ? b.readInt32LE(at) : b.readInt32BE(at);
      case 'u':
        return this.u32();
      case 'x':
        this.need(8);
        this.pos += 8;
        return le ? b.readBigInt64LE(at) : b.readBigInt64BE(at);
      case 't':
        this.need(8);
        this.pos += 8;
        return le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at);
      case 'd':
        this.need(8);
        this.pos += 8;
        return le ? b.readDoubleLE(at) : b.readDoubleBE(at);
      case 's':
      case 'o': {
        const s = this.text(this.u32());
        if (t.code === 'o' && !isObjectPath(s)) fail(`${JSON.stringify(s.slice(0, 80))} is not an object path`);
        return s;
      }
      case 'g': {
        this.need(1);
        const len = b.readUInt8(this.pos);
        this.pos += 1;
        const s = this.text(len);
        parseSignature(s);
        return s;
      }
      case 'v': {
        const signature = this.read({ code: 'g' }, depth + 1) as string;
        const inner = parseSignature(signature);
        if (inner.length !== 1) fail(`a variant holds one complete type, not ${JSON.stringify(signature)}`);
        return { signature, value: this.read(inner[0]!, depth + 1) };
      }
      case 'a': {
        const size = this.u32();
        if (size > MAX_ARRAY_BYTES) fail('array longer than 64 MiB');
        const elem = t.children![0]!;
        this.align(ALIGN[elem.code]!);
        const end = this.pos + size;
        if (end > this.end) fail('array runs past the message');
        const out: DBusValue[] = [];
        while (this.pos < end) out.push(this.read(elem, depth + 1));
        if (this.pos !== end) fail('array elements overrun its length');
        return out;
      }
      case '(':
      case '{':
        return t.children!.map((f) => this.read(f, depth + 1));
      default:
        fail(`unsupported type ${t.code}`);
    }
  }
}
