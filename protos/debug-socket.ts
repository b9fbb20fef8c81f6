/**
 * The debug console's socket protocol, between `hull exec` (cli/exec.ts) and the shim daemon
 * (shim/debug-console.ts) on `<state_dir>/<namespace>/<sandbox>/debug.sock`. hull's own, both ends ship together.
 *
 * A stream of frames: one type byte, a 4-byte big-endian length, the payload. The client's first frame is a hello
 * (JSON); then input, end of input, resizes and signals. The shim answers `started` (JSON: the guest pid) or
 * `failed` (JSON: a message), then output of stdout and stderr, and last `exit` (JSON: the status) or `failed`.
 * Either side closes the connection after that; a client that goes away ends the session (the guest process is
 * killed). Payloads are bounded (MAX_FRAME, the hello MAX_HELLO), and the decoder refuses anything else.
 */

export const DEBUG_SOCKET = 'debug.sock';

/** Largest payload of a data frame. */
export const MAX_FRAME = 1 << 20;
/** Largest hello (JSON). */
export const MAX_HELLO = 64 * 1024;

export const Frame = Object.freeze({
  // client -> shim
  Hello: 0x48, // 'H' JSON DebugHello
  Input: 0x49, // 'I' bytes for the process's stdin (the terminal)
  InputEnd: 0x45, // 'E' end of input (^D on a terminal)
  Resize: 0x57, // 'W' JSON {rows, columns}
  Signal: 0x53, // 'S' one byte: the signal's number
  // shim -> client
  Started: 0x50, // 'P' JSON {pid, execId}
  Stdout: 0x4f, // 'O'
  Stderr: 0x52, // 'R'
  Exit: 0x58, // 'X' JSON {status}
  Failed: 0x46, // 'F' JSON {message}
});

const TYPES = new Set<number>(Object.values(Frame));

export interface DebugFrame {
  type: number;
  payload: Buffer;
}

/** Who asks, as the client reports it (the socket is root's only: these are for the log). */
export interface DebugClient {
  pid: number;
  uid: number;
  /** $SUDO_USER or $USER, the login uid (/proc/self/loginuid), the controlling terminal: what the client knows. */
  user: string;
  loginUid: number;
  tty: string;
}

export interface DebugHello {
  /** The program and its arguments; empty: the guest's /bin/sh. */
  args: string[];
  terminal: boolean;
  rows: number;
  columns: number;
  /** TERM for a terminal, checked by the agent. */
  term: string;
  client: DebugClient;
}

export function encodeFrame(type: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length > MAX_FRAME) throw new RangeError(`a debug frame of ${body.length} bytes is over ${MAX_FRAME}`);
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

export const encodeJson = (type: number, value: unknown): Buffer => encodeFrame(type, JSON.stringify(value));

/** Splits a byte stream into frames, across chunk boundaries; an unknown type or an oversized frame throws. */
export class FrameDecoder {
  private pending: Buffer[] = [];

  push(chunk: Buffer): DebugFrame[] {
    this.pending.push(chunk);
    const out: DebugFrame[] = [];
    let buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    while (buf.length >= 5) {
      const type = buf[0]!;
      if (!TYPES.has(type)) throw new RangeError(`debug frame type 0x${type.toString(16)} is unknown`);
      const len = buf.readUInt32BE(1);
      const max = type === Frame.Hello ? MAX_HELLO : MAX_FRAME;
      if (len > max) throw new RangeError(`debug frame of ${len} bytes is over ${max}`);
      if (buf.length < 5 + len) break;
      out.push({ type, payload: Buffer.from(buf.subarray(5, 5 + len)) });
      buf = buf.subarray(5 + len);
    }
    this.pending = buf.length ? [buf] : [];
    return out;
  }
}

const isInt = (n: unknown, min: number, max: number): n is number =>
  Number.isSafeInteger(n) && (n as number) >= min && (n as number) <= max;

/** A text that goes into a log line: a string, capped, without control characters. */
function logText(v: unknown, max: number): string {
  if (typeof v !== 'string') return '';
  let out = '';
  for (const ch of v.slice(0, max)) out += ch < ' ' || ch === '\x7f' ? '?' : ch;
  return out;
}

/** The hello, checked (the shim parses what a client sent); a reason string when it is not acceptable. */
export function parseHello(payload: Buffer): DebugHello | string {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(payload.toString('utf8')) as Record<string, unknown>;
  } catch {
    return 'the hello is not JSON';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'the hello is not an object';
  const args = v.args;
  if (
    !Array.isArray(args) ||
    args.length > 256 ||
    !args.every((a) => typeof a === 'string' && a.length <= 4096 && !a.includes('\0'))
  )
    return 'args must be at most 256 strings of at most 4096 characters';
  if (args.length > 0 && args[0] === '') return 'the program name is empty';
  if (typeof v.terminal !== 'boolean') return 'terminal must be true or false';
  if (!isInt(v.rows, 0, 10_000) || !isInt(v.columns, 0, 10_000)) return 'rows and columns must be 0 to 10000';
  if (typeof v.term !== 'string' || !/^[A-Za-z0-9._+-]{0,64}$/.test(v.term)) return 'term is not a terminal name';
  const c = (typeof v.client === 'object' && v.client !== null ? v.client : {}) as Record<string, unknown>;
  return {
    args: args as string[],
    terminal: v.terminal,
    rows: v.rows,
    columns: v.columns,
    term: v.term,
    client: {
      pid: isInt(c.pid, 0, 0x3fffffff) ? c.pid : 0,
      uid: isInt(c.uid, 0, 0xffffffff) ? c.uid : -1,
      user: logText(c.user, 64),
      loginUid: isInt(c.loginUid, 0, 0xffffffff) ? c.loginUid : -1,
      tty: logText(c.tty, 64),
    },
  };
}

/** A resize frame's size, checked; undefined when it is not one. */
export function parseResize(payload: Buffer): { rows: number; columns: number } | undefined {
  try {
    const v = JSON.parse(payload.toString('utf8')) as { rows?: unknown; columns?: unknown };
    return isInt(v.rows, 1, 10_000) && isInt(v.columns, 1, 10_000) ? { rows: v.rows, columns: v.columns } : undefined;
  } catch {
    return undefined;
  }
}
