/**
 * A small WebSocket client (RFC 6455) for the Kubernetes remote-command protocol `v4.channel.k8s.io`, the way
 * kubectl reaches a CRI streaming server (the URL CRI's Exec and Attach hand out). Node 20 has no WebSocket client.
 *
 * The protocol, as containerd 1.6's streaming server (k8s wsstream over golang.org/x/net/websocket) speaks it:
 * every message is binary and starts with its channel byte: 0 stdin (to the server), 1 stdout, 2 stderr,
 * 3 status (one JSON `Status` when the process ends), 4 resize (to the server, `{"Width":w,"Height":h}`). The server
 * first sends an empty message on the lowest output channel, and closes the connection after the status. v4 cannot
 * half-close stdin (v5's close signal is newer than containerd 1.6): closing the connection is the only end.
 * Port forwarding (the URL of CRI's PortForward, `?port=<n>`) uses the same framing with two channels per port,
 * 0 data (both ways) and 1 errors; the server starts each with the port as two little-endian bytes.
 *
 *   const s = await K8sStream.open(url);
 *   s.stdin('hello\n');
 *   const r = await s.done();         // { stdout, stderr, status, exitCode }
 *
 * Frames to the server are masked; frames from it must not be. Fragmented messages are put back together, pings
 * answered, and a message over `maxMessageBytes` ends the connection (close code 1009) with an error.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';

export const V4_CHANNEL_PROTOCOL = 'v4.channel.k8s.io';
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const Channel = { stdin: 0, stdout: 1, stderr: 2, status: 3, resize: 4 } as const;
export const Opcode = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;
export const CloseCode = { normal: 1000, protocolError: 1002, tooBig: 1009 } as const;

export const DEFAULT_MAX_MESSAGE_BYTES = 4 << 20;
const MAX_CONTROL_PAYLOAD = 125;

export class WsProtocolError extends Error {
  constructor(
    message: string,
    readonly closeCode: number = CloseCode.protocolError,
  ) {
    super(message);
    this.name = 'WsProtocolError';
  }
}

export interface WsMessage {
  opcode: number;
  payload: Buffer;
}

/** One frame with FIN set. Client frames are masked with a fresh random key (RFC 6455 5.3). */
export function encodeFrame(opcode: number, payload: Buffer, mask = true): Buffer {
  const len = payload.length;
  const lenBytes = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const header = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  header[0] = 0x80 | opcode;
  header[1] = (mask ? 0x80 : 0) | (lenBytes === 0 ? len : lenBytes === 2 ? 126 : 127);
  if (lenBytes === 2) header.writeUInt16BE(len, 2);
  else if (lenBytes === 8) header.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([header, payload]);
  const key = crypto.randomBytes(4);
  key.copy(header, 2 + lenBytes);
  const body = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([header, body]);
}

/**
 * Bytes in, whole messages out (synchronous, like a stream decoder): control frames as they come, data messages once
 * their last fragment is in. Throws WsProtocolError on anything RFC 6455 forbids a server to send, or on a message
 * larger than `maxMessageBytes`; the decoder is unusable afterwards.
 */
export class FrameDecoder {
  #buf: Buffer = Buffer.alloc(0);
  #fragments: Buffer[] = [];
  #fragmentOpcode = -1;
  #fragmentBytes = 0;

  constructor(
    readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    /** Whether frames must be masked (a server's view); a client's decoder refuses masked frames. */
    readonly expectMasked = false,
  ) {}

  write(chunk: Buffer): WsMessage[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: WsMessage[] = [];
    for (;;) {
      const frame = this.#nextFrame();
      if (!frame) return out;
      const message = this.#onFrame(frame.fin, frame.opcode, frame.payload);
      if (message) out.push(message);
    }
  }

  #nextFrame(): { fin: boolean; opcode: number; payload: Buffer } | undefined {
    const b = this.#buf;
    if (b.length < 2) return undefined;
    const fin = (b[0]! & 0x80) !== 0;
    if ((b[0]! & 0x70) !== 0) throw new WsProtocolError('a reserved bit is set (no extension was negotiated)');
    const opcode = b[0]! & 0x0f;
    const masked = (b[1]! & 0x80) !== 0;
    if (masked !== this.expectMasked)
      throw new WsProtocolError(masked ? 'the server masked a frame' : 'an unmasked client frame');
    let len = b[1]! & 0x7f;
    let at = 2;
    if (len === 126) {
      if (b.length < 4) return undefined;
      len = b.readUInt16BE(2);
      at = 4;
    } else if (len === 127) {
      if (b.length < 10) return undefined;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(this.maxMessageBytes))
        throw new WsProtocolError(`a frame of ${big} bytes (the limit is ${this.maxMessageBytes})`, CloseCode.tooBig);
      len = Number(big);
      at = 10;
    }
    if (opcode >= 0x8 && (!fin || len > MAX_CONTROL_PAYLOAD))
      throw new WsProtocolError(`control frame ${opcode} fragmented or over ${MAX_CONTROL_PAYLOAD} bytes`);
    if (len > this.maxMessageBytes)
      throw new WsProtocolError(`a frame of ${len} bytes (the limit is ${this.maxMessageBytes})`, CloseCode.tooBig);
    const keyAt = at;
    if (masked) at += 4;
    if (b.length < at + len) return undefined;
    let payload = b.subarray(at, at + len);
    if (masked) {
      const key = b.subarray(keyAt, keyAt + 4);
      payload = Buffer.from(payload.map((x, i) => x ^ key[i & 3]!));
    }
    this.#buf = b.subarray(at + len);
    return { fin, opcode, payload };
  }

  #onFrame(fin: boolean, opcode: number, payload: Buffer): WsMessage | undefined {
    if (opcode >= 0x8) {
      if (opcode !== Opcode.close && opcode !== Opcode.ping && opcode !== Opcode.pong)
        throw new WsProtocolError(`unknown control opcode ${opcode}`);
      return { opcode, payload: Buffer.from(payload) };
    }
    if (opcode !== Opcode.continuation && opcode !== Opcode.text && opcode !== Opcode.binary)
      throw new WsProtocolError(`unknown data opcode ${opcode}`);
    const continuing = this.#fragmentOpcode !== -1;
    if (opcode === Opcode.continuation && !continuing)
      throw new WsProtocolError('a continuation frame outside a fragmented message');
    if (opcode !== Opcode.continuation && continuing)
      throw new WsProtocolError('a new message before the last one ended');
    if (fin && !continuing) return { opcode, payload: Buffer.from(payload) };
    if (!continuing) this.#fragmentOpcode = opcode;
    this.#fragmentBytes += payload.length;
    if (this.#fragmentBytes > this.maxMessageBytes)
      throw new WsProtocolError(`a message of more than ${this.maxMessageBytes} bytes`, CloseCode.tooBig);
    this.#fragments.push(Buffer.from(payload));
    if (!fin) return undefined;
    const message = { opcode: this.#fragmentOpcode, payload: Buffer.concat(this.#fragments) };
    this.#fragments = [];
    this.#fragmentOpcode = -1;
    this.#fragmentBytes = 0;
    return message;
  }
}

/** The Kubernetes `Status` the server sends on channel 3 when the process ends. */
export interface K8sStatus {
  status?: string;
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

/** The process's exit code from a v4 status: 0 for Success, the ExitCode cause for NonZeroExitCode, else undefined. */
export function exitCodeOf(status: K8sStatus | undefined): number | undefined {
  if (status?.status === 'Success') return 0;
  if (status?.reason !== 'NonZeroExitCode') return undefined;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  return cause?.message !== undefined && /^\d+$/.test(cause.message) ? Number(cause.message) : undefined;
}

export interface StreamResult {
  stdout: string;
  stderr: string;
  status: K8sStatus | undefined;
  exitCode: number | undefined;
  /** The close code the server sent, if it sent a close frame. */
  closeCode: number | undefined;
}

export interface OpenOptions {
  /** Sub-protocols offered, best first (default: v4 only). */
  protocols?: string[];
  /**
   * The channels the server writes (default stdout, stderr and status, as for exec and attach; port forwarding
   * writes 0, data, and 1, errors, for its one port).
   */
  outputChannels?: number[];
  /** For the HTTP upgrade (default 15 s). */
  timeoutMs?: number;
  maxMessageBytes?: number;
}

export class K8sStream {
  readonly #socket: Socket;
  readonly #decoder: FrameDecoder;
  readonly #out: Record<number, Buffer[]> = {};
  #closeSent = false;
  #closeReceived = false;
  #closeCode: number | undefined;
  #error: Error | undefined;
  #ended = false;
  /** Re-checked on every message and at the end. */
  readonly #waiters = new Set<() => void>();

  private constructor(
    socket: Socket,
    readonly protocol: string,
    maxMessageBytes: number,
    outputChannels: number[],
  ) {
    this.#socket = socket;
    for (const c of outputChannels) this.#out[c] = [];
    this.#decoder = new FrameDecoder(maxMessageBytes);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    // After the server's close frame, a reset (our close echo reaching a socket it already closed) ends nothing early.
    socket.on('error', (err) => (this.#closeReceived ? this.#socket.destroy() : this.#fail(err)));
    socket.on('close', () => {
      this.#ended = true;
      this.#notify();
    });
  }

  /** Upgrades `url` (http) to a WebSocket speaking one of `protocols`. */
  static open(url: string, opts: OpenOptions = {}): Promise<K8sStream> {
    const protocols = opts.protocols ?? [V4_CHANNEL_PROTOCOL];
    const key = crypto.randomBytes(16).toString('base64');
    const accept = crypto
      .createHash('sha1')
      .update(key + ACCEPT_GUID)
      .digest('base64');
    return new Promise((resolve, reject) => {
      const req = http.request(url, {
        headers: {
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': key,
          'Sec-WebSocket-Protocol': protocols.join(', '),
        },
        timeout: opts.timeoutMs ?? 15_000,
      });
      req.on('timeout', () => req.destroy(new Error(`${url}: no upgrade in ${opts.timeoutMs ?? 15_000} ms`)));
      req.on('error', reject);
      req.on('response', (res) => {
        const body: Buffer[] = [];
        res.on('data', (c: Buffer) => body.push(c));
        res.on('end', () =>
          reject(
            new Error(
              `${url}: HTTP ${res.statusCode} instead of an upgrade: ${Buffer.concat(body).toString().slice(0, 300)}`,
            ),
          ),
        );
      });
      req.on('upgrade', (res, socket, head) => {
        const chosen = String(res.headers['sec-websocket-protocol'] ?? '');
        const problem =
          res.headers['sec-websocket-accept'] !== accept
            ? 'a wrong Sec-WebSocket-Accept'
            : !protocols.includes(chosen)
              ? `sub-protocol ${JSON.stringify(chosen)}, not one offered`
              : undefined;
        if (problem) {
          socket.destroy();
          reject(new Error(`${url}: the server answered with ${problem}`));
          return;
        }
        socket.setNoDelay(true);
        const stream = new K8sStream(
          socket,
          chosen,
          opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
          opts.outputChannels ?? [Channel.stdout, Channel.stderr, Channel.status],
        );
        if (head.length > 0) stream.#onData(head);
        resolve(stream);
      });
      req.end();
    });
  }

  /** Sends `data` on a channel (stdin by default). */
  send(data: string | Buffer, channel: number = Channel.stdin): void {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    this.#write(Opcode.binary, Buffer.concat([Buffer.from([channel]), bytes]));
  }

  /**
   * Sends unless the server has already closed the stream (it may answer and close before a client's first byte, as
   * a port-forward to a refused port does); returns whether the data went out.
   */
  sendIfOpen(data: string | Buffer, channel: number = Channel.stdin): boolean {
    if (this.#closeSent || this.#socket.destroyed) return false;
    this.send(data, channel);
    return true;
  }

  stdin(data: string | Buffer): void {
    this.send(data, Channel.stdin);
  }

  /** A terminal size change (the process gets SIGWINCH). */
  resize(width: number, height: number): void {
    this.send(JSON.stringify({ Width: width, Height: height }), Channel.resize);
  }

  /** What arrived on a channel so far. */
  output(channel: number): string {
    return this.outputBytes(channel).toString();
  }

  outputBytes(channel: number): Buffer {
    return Buffer.concat(this.#out[channel] ?? []);
  }

  /** How many bytes arrived on a channel so far (without joining them). */
  receivedBytes(channel: number): number {
    return (this.#out[channel] ?? []).reduce((n, b) => n + b.length, 0);
  }

  /** Resolves once `n` bytes arrived on a channel; rejects at the deadline or if the stream ends first. */
  async waitForBytes(channel: number, n: number, ms = 30_000): Promise<void> {
    let seen = 0;
    let counted = 0;
    const enough = (): boolean => {
      const parts = this.#out[channel] ?? [];
      for (; counted < parts.length; counted++) seen += parts[counted]!.length;
      return seen >= n;
    };
    await this.#until(enough, ms, () => `channel ${channel} has ${seen} of ${n} bytes`);
  }

  /** Resolves with the channel's text once `want` matches it; rejects at the deadline or if the stream ends first. */
  waitFor(channel: number, want: RegExp | string, ms = 30_000): Promise<string> {
    const matches = (): boolean =>
      typeof want === 'string' ? this.output(channel).includes(want) : want.test(this.output(channel));
    return this.#until(
      matches,
      ms,
      () => `channel ${channel} never held ${String(want)}; it has ${JSON.stringify(this.output(channel).slice(-500))}`,
    );
  }

  /** Resolves when the server has closed the connection, with everything it sent. */
  async done(ms = 60_000): Promise<StreamResult> {
    await this.#until(
      () => this.#ended,
      ms,
      () => `the stream did not end; stdout ${JSON.stringify(this.output(Channel.stdout).slice(-300))}`,
      true,
    );
    if (this.#error) throw this.#error;
    const raw = this.output(Channel.status).trim();
    const status = raw ? (JSON.parse(raw) as K8sStatus) : undefined;
    return {
      stdout: this.output(Channel.stdout),
      stderr: this.output(Channel.stderr),
      status,
      exitCode: exitCodeOf(status),
      closeCode: this.#closeCode,
    };
  }

  /** Closes the connection (a close frame, then the socket once the server answers or after a second). */
  close(code: number = CloseCode.normal): void {
    if (this.#ended) return;
    this.#sendClose(code);
    setTimeout(() => this.#socket.destroy(), 1_000).unref();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.#socket.destroy();
  }

  #until(cond: () => boolean, ms: number, what: () => string, endIsOk = false): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (cond()) finish(() => resolve(''));
        else if (this.#ended && !endIsOk)
          finish(() =>
            reject(
              this.#error ?? new Error(`the stream ended: ${what()}; status ${this.output(Channel.status) || 'none'}`),
            ),
          );
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`after ${ms} ms: ${what()}`))), ms);
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        fn();
      };
      this.#waiters.add(check);
      check();
    });
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  #write(opcode: number, payload: Buffer): void {
    if (this.#closeSent || this.#socket.destroyed) throw new Error('the stream is closed');
    this.#socket.write(encodeFrame(opcode, payload));
  }

  #sendClose(code: number): void {
    if (this.#closeSent || this.#socket.destroyed) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this.#socket.write(encodeFrame(Opcode.close, payload));
    this.#closeSent = true;
  }

  /** Records the first error and ends the connection (with a close frame for a protocol error). */
  #fail(err: Error): void {
    this.#error ??= err;
    if (err instanceof WsProtocolError && !this.#socket.destroyed) {
      this.#sendClose(err.closeCode);
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1_000).unref();
    } else {
      this.#socket.destroy();
    }
  }

  #onData(chunk: Buffer): void {
    if (this.#error) return;
    let messages: WsMessage[];
    try {
      messages = this.#decoder.write(chunk);
    } catch (err) {
      this.#fail(err as Error);
      return;
    }
    for (const m of messages) {
      if (m.opcode === Opcode.ping) {
        if (!this.#closeSent) this.#write(Opcode.pong, m.payload);
      } else if (m.opcode === Opcode.close) {
        this.#closeReceived = true;
        this.#closeCode = m.payload.length >= 2 ? m.payload.readUInt16BE(0) : undefined;
        this.#sendClose(this.#closeCode ?? CloseCode.normal);
        this.#socket.end();
      } else if (m.opcode === Opcode.binary) {
        if (m.payload.length === 0) continue;
        const channel = m.payload[0]!;
        if (channel in this.#out) this.#out[channel]!.push(m.payload.subarray(1));
        else return this.#fail(new WsProtocolError(`a message on channel ${channel}, which a server does not write`));
      } else if (m.opcode === Opcode.text) {
        return this.#fail(new WsProtocolError('a text message: v4.channel.k8s.io is binary'));
      }
    }
    this.#notify();
  }
}
