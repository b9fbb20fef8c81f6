/**
 * A connected AF_VSOCK stream as a Node Duplex, and connect().
 *
 * How the bytes move, and why this way: the fd is non-blocking and a libuv poll handle on node's own event loop
 * says when it is readable or writable (see src/vsock.c); reads and writes are plain non-blocking recv/send calls
 * made from here. The alternative, blocking reads with fs.read on libuv's thread pool (as agent/port.ts does for
 * the virtio-serial port), pins one of the pool's four threads per connection for as long as the peer is silent,
 * cannot be cancelled by closing the socket, and makes node's exit wait for a read that may never end. Here:
 *
 * - backpressure: readable is polled only while the stream wants data (_read called, push() not yet false); a
 *   write that meets a full send buffer (EAGAIN) waits for writable before its callback runs, so write() returns
 *   false once writableHighWaterMark is queued, as for net.Socket;
 * - EOF: recv() returning 0 ends the readable side (push(null)); end() shuts the write side down (shutdown(SHUT_WR))
 *   once everything queued is sent, and the peer sees EOF;
 * - errors: a failed read or write destroys the stream with a VsockError (code ECONNRESET, EPIPE, ...);
 * - close: destroy() stops polling and closes the fd at once: nothing is left waiting, and a socket that is not
 *   reading or writing does not keep node alive (one that is can be unref()'d).
 */
import os from 'node:os';
import { Duplex } from 'node:stream';
import { VsockError, errnoError, vsockUri } from './errors';
import { native, type NativeBinding, type NativeHandle } from './native';

export interface VsockAddress {
  cid: number;
  port: number;
}

export interface SocketOptions {
  /** Keep the writable side open after the peer's EOF (default false, as for net.Socket). */
  allowHalfOpen?: boolean;
  readableHighWaterMark?: number;
  writableHighWaterMark?: number;
}

export interface ConnectOptions extends SocketOptions {
  cid: number;
  port: number;
  /**
   * Give up after this many milliseconds (ETIMEDOUT). The kernel has a connect timeout of its own (2 s unless
   * SO_VM_SOCKETS_CONNECT_TIMEOUT says otherwise) after which it fails with ETIMEDOUT too.
   */
  timeoutMs?: number;
  /** Aborting closes the socket and rejects with code ABORT_ERR (the reason as `cause`). */
  signal?: AbortSignal;
}

/** recv() size, and how many reads one readiness callback makes before it yields to the event loop. */
const READ_SIZE = 64 * 1024;
const MAX_READS_PER_CALLBACK = 16;
const SHUT_WR = 1;
const MAX_U32 = 0xffffffff;

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

export function checkU32(what: string, value: unknown, options: { allowMax?: boolean } = {}): number {
  const max = options.allowMax === false ? MAX_U32 - 1 : MAX_U32;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw Object.assign(new RangeError(`vsock ${what} must be an integer in [0, ${max}], got ${String(value)}`), {
      code: 'ERR_OUT_OF_RANGE',
    });
  }
  return value;
}

function addressOf(result: [number, number] | number): VsockAddress | undefined {
  return typeof result === 'number' ? undefined : { cid: result[0], port: result[1] };
}

export class VsockSocket extends Duplex {
  readonly #h: NativeHandle;
  readonly #n: NativeBinding;
  readonly #scratch = Buffer.allocUnsafe(READ_SIZE);
  /** The stream asked for data and push() has not said stop. */
  #wantRead = false;
  #reading = false;
  #pending: PendingWrite | undefined;
  /** What the poll handle watches now. */
  #events = 0;
  /** Where this end is bound, and the peer; undefined if the kernel no longer knows (the peer went first). */
  readonly localAddress: VsockAddress | undefined;
  readonly remoteAddress: VsockAddress | undefined;
  readonly #uri: string;

  /** Takes over a connected native handle; made by connect() and VsockServer.accept(), not by users. */
  constructor(handle: NativeHandle, options: SocketOptions = {}) {
    super({
      allowHalfOpen: options.allowHalfOpen ?? false,
      ...(options.readableHighWaterMark === undefined ? {} : { readableHighWaterMark: options.readableHighWaterMark }),
      ...(options.writableHighWaterMark === undefined ? {} : { writableHighWaterMark: options.writableHighWaterMark }),
    });
    this.#n = native();
    this.#h = handle;
    this.localAddress = addressOf(handle.sockname());
    this.remoteAddress = addressOf(handle.peername());
    this.#uri = this.remoteAddress ? vsockUri(this.remoteAddress.cid, this.remoteAddress.port) : 'vsock://?';
    handle.onready = (status, events) => this.#onReady(status, events);
  }

  /** Whether a socket that is reading or writing keeps node's event loop alive (it does by default). */
  ref(): this {
    this.#h.ref();
    return this;
  }

  unref(): this {
    this.#h.unref();
    return this;
  }

  override _read(): void {
    this.#wantRead = true;
    this.#pumpRead();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#pending = { chunk, offset: 0, callback };
    this.#pumpWrite();
  }

  /** After the last write's callback: shut the write side down, so the peer reads EOF. */
  override _final(callback: (error?: Error | null) => void): void {
    const r = this.#h.shutdown(SHUT_WR);
    // The peer may have gone already (ENOTCONN): nothing is left to tell it.
    callback(r < 0 && r !== -os.constants.errno.ENOTCONN ? errnoError(r, 'shutdown', this.#uri) : null);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const pending = this.#pending;
    this.#pending = undefined;
    this.#wantRead = false;
    this.#h.onready = undefined;
    this.#h.close();
    callback(error);
    pending?.callback(
      error ??
        new VsockError(`write ${this.#uri}: the socket was destroyed`, {
          code: 'ERR_STREAM_DESTROYED',
          syscall: 'write',
          address: this.#uri,
        }),
    );
  }

  #onReady(status: number, events: number): void {
    if (this.destroyed) return;
    if (status < 0) {
      // libuv reports POLLERR as a status (and stops polling); the socket's own error says what happened.
      const soError = this.#h.socketError();
      this.#events = 0;
      this.destroy(errnoError(soError < 0 ? soError : status, soError < 0 ? 'read' : 'poll', this.#uri));
      return;
    }
    if (events & this.#n.UV_WRITABLE) this.#pumpWrite();
    if (events & this.#n.UV_READABLE && !this.destroyed) this.#pumpRead();
  }

  #pumpRead(): void {
    if (this.#reading || this.destroyed) return;
    this.#reading = true;
    try {
      for (let i = 0; i < MAX_READS_PER_CALLBACK && this.#wantRead && !this.destroyed; i++) {
        const n = this.#h.read(this.#scratch, 0, READ_SIZE);
        if (n > 0) {
          const chunk = Buffer.allocUnsafe(n);
          this.#scratch.copy(chunk, 0, 0, n);
          if (!this.push(chunk)) this.#wantRead = false;
        } else if (n === 0) {
          this.#wantRead = false;
          this.push(null);
        } else if (n === this.#n.EAGAIN) {
          break;
        } else {
          this.destroy(errnoError(n, 'read', this.#uri));
          return;
        }
      }
    } finally {
      this.#reading = false;
    }
    // Data may remain after MAX_READS_PER_CALLBACK reads: the poll is level-triggered and fires again.
    this.#updatePoll();
  }

  #pumpWrite(): void {
    const p = this.#pending;
    if (!p || this.destroyed) return;
    while (p.offset < p.chunk.length) {
      const n = this.#h.write(p.chunk, p.offset, p.chunk.length - p.offset);
      if (n > 0) {
        p.offset += n;
      } else if (n === 0 || n === this.#n.EAGAIN) {
        this.#updatePoll(); // wait for writable
        return;
      } else {
        this.#pending = undefined;
        this.#updatePoll();
        p.callback(errnoError(n, 'write', this.#uri));
        return;
      }
    }
    this.#pending = undefined;
    this.#updatePoll();
    p.callback();
  }

  #updatePoll(): void {
    if (this.destroyed) return;
    const want = (this.#wantRead ? this.#n.UV_READABLE : 0) | (this.#pending ? this.#n.UV_WRITABLE : 0);
    if (want === this.#events) return;
    const r = this.#h.poll(want);
    if (r < 0) {
      this.destroy(errnoError(r, 'poll', this.#uri));
      return;
    }
    this.#events = want;
  }
}

/**
 * Connects to cid:port. Rejects with a VsockError: a system error's code (ECONNRESET when nothing listens there,
 * ENODEV when no vsock transport reaches the CID, ETIMEDOUT), ABORT_ERR, or a RangeError for a bad cid or port.
 */
export function connect(options: ConnectOptions): Promise<VsockSocket> {
  return new Promise<VsockSocket>((resolve, reject) => {
    const { signal, timeoutMs } = options;
    const cid = checkU32('cid', options.cid);
    const port = checkU32('port', options.port, { allowMax: false }); // VMADDR_PORT_ANY is for bind only
    const uri = vsockUri(cid, port);
    const aborted = (): VsockError =>
      new VsockError(`connect ${uri} aborted`, {
        code: 'ABORT_ERR',
        syscall: 'connect',
        address: uri,
        cause: signal?.reason,
      });
    if (signal?.aborted) throw aborted();
    const n = native();
    const fd = n.socket();
    if (fd < 0) throw errnoError(fd, 'socket', uri);
    const h = new n.Handle(fd);
    const r = h.connect(cid, port);
    if (r === 0) {
      resolve(new VsockSocket(h, options));
      return;
    }
    if (r !== n.EINPROGRESS) {
      h.close();
      throw errnoError(r, 'connect', uri);
    }
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => finish(aborted());
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      h.onready = undefined;
      if (err) {
        h.close();
        reject(err);
        return;
      }
      h.poll(0);
      try {
        resolve(new VsockSocket(h, options));
      } catch (e) {
        h.close();
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    };
    h.onready = (status) => {
      const soError = h.socketError();
      if (soError < 0) finish(errnoError(soError, 'connect', uri));
      else if (status < 0) finish(errnoError(status, 'connect', uri));
      else finish();
    };
    if (timeoutMs !== undefined) {
      timer = setTimeout(
        () =>
          finish(
            new VsockError(`connect ETIMEDOUT ${uri} (no answer within ${timeoutMs} ms)`, {
              code: 'ETIMEDOUT',
              syscall: 'connect',
              address: uri,
            }),
          ),
        Math.max(0, timeoutMs),
      );
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const pr = h.poll(n.UV_WRITABLE);
    if (pr < 0) finish(errnoError(pr, 'poll', uri));
  });
}
