/**
 * A listening AF_VSOCK socket. accept() is a promise: the listening fd is polled only while someone waits in
 * accept(), so connections nobody asked for wait in the kernel's backlog (natural backpressure), and close()
 * stops polling, closes the fd and rejects every waiting accept() with ERR_SERVER_CLOSED at once.
 */
import { VsockError, errnoError, vsockUri } from './errors';
import { native, type NativeBinding, type NativeHandle } from './native';
import { VsockSocket, checkU32, type SocketOptions, type VsockAddress } from './socket';

export interface ListenOptions extends SocketOptions {
  /** VMADDR_PORT_ANY (0xFFFFFFFF) lets the kernel choose; `address` then says which. */
  port: number;
  /** Default VMADDR_CID_ANY: every transport (the host, a guest, loopback). */
  cid?: number;
  /** Default 128. */
  backlog?: number;
}

interface Waiter {
  resolve(socket: VsockSocket): void;
  reject(err: Error): void;
}

export class VsockServer {
  readonly #h: NativeHandle;
  readonly #n: NativeBinding;
  readonly #options: SocketOptions;
  readonly #waiters: Waiter[] = [];
  #polling = false;
  #closed = false;
  /** Where it listens (the port the kernel chose, for VMADDR_PORT_ANY). */
  readonly address: VsockAddress;

  private constructor(n: NativeBinding, h: NativeHandle, address: VsockAddress, options: SocketOptions) {
    this.#n = n;
    this.#h = h;
    this.address = address;
    this.#options = { ...options };
    h.onready = (status) => this.#onReady(status);
  }

  /** Binds and listens; throws a VsockError (EADDRINUSE, EAFNOSUPPORT when the kernel has no AF_VSOCK, ...). */
  static listen(options: ListenOptions): VsockServer {
    const n = native();
    const cid = checkU32('cid', options.cid ?? n.VMADDR_CID_ANY);
    const port = checkU32('port', options.port);
    const backlog = options.backlog ?? 128;
    if (!Number.isInteger(backlog) || backlog < 0)
      throw Object.assign(new RangeError(`backlog must be a non-negative integer, got ${backlog}`), {
        code: 'ERR_OUT_OF_RANGE',
      });
    const uri = vsockUri(cid, port);
    const fd = n.socket();
    if (fd < 0) throw errnoError(fd, 'socket', uri);
    const h = new n.Handle(fd);
    const fail = (r: number, syscall: string): never => {
      h.close();
      throw errnoError(r, syscall, uri);
    };
    const b = h.bind(cid, port);
    if (b < 0) fail(b, 'bind');
    const l = h.listen(backlog);
    if (l < 0) fail(l, 'listen');
    const name = h.sockname();
    if (typeof name === 'number') fail(name, 'getsockname');
    const [boundCid, boundPort] = name as [number, number];
    return new VsockServer(n, h, { cid: boundCid, port: boundPort }, options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The next connection. Rejects with ERR_SERVER_CLOSED once the server is closed, ABORT_ERR when `signal`
   * aborts, or the accept error (EMFILE, ...; the server stays open: back off and accept again).
   */
  accept(options: { signal?: AbortSignal } = {}): Promise<VsockSocket> {
    const { signal } = options;
    if (this.#closed) return Promise.reject(this.#closedError());
    if (signal?.aborted) return Promise.reject(this.#abortError(signal));
    return new Promise<VsockSocket>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        this.#updatePoll();
        reject(this.#abortError(signal));
      };
      const waiter: Waiter = {
        resolve: (s) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(s);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#updatePoll();
    });
  }

  /** Stops listening: waiting accept() calls reject with ERR_SERVER_CLOSED. Sockets already accepted stay open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#polling = false;
    this.#h.onready = undefined;
    this.#h.close();
    for (const w of this.#waiters.splice(0)) w.reject(this.#closedError());
  }

  /** Whether waiting in accept() keeps node's event loop alive (it does by default, as a listening net.Server does). */
  ref(): this {
    this.#h.ref();
    return this;
  }

  unref(): this {
    this.#h.unref();
    return this;
  }

  #onReady(status: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.#polling = false; // libuv stopped the handle
      const err = errnoError(status, 'accept', this.#uri());
      this.#waiters.shift()?.reject(err);
      this.#updatePoll();
      return;
    }
    while (this.#waiters.length && !this.#closed) {
      const fd = this.#h.accept();
      if (fd === this.#n.EAGAIN) break;
      const waiter = this.#waiters.shift()!;
      if (fd < 0) {
        waiter.reject(errnoError(fd, 'accept', this.#uri()));
        break; // level-triggered: if the error persists the next waiter gets it on the next turn, not in a loop
      }
      let socket: VsockSocket;
      try {
        socket = new VsockSocket(new this.#n.Handle(fd), this.#options);
      } catch (err) {
        waiter.reject(err as Error);
        continue;
      }
      waiter.resolve(socket);
    }
    this.#updatePoll();
  }

  #updatePoll(): void {
    if (this.#closed) return;
    const want = this.#waiters.length > 0;
    if (want === this.#polling) return;
    const r = this.#h.poll(want ? this.#n.UV_READABLE : 0);
    if (r < 0) {
      for (const w of this.#waiters.splice(0)) w.reject(errnoError(r, 'poll', this.#uri()));
      return;
    }
    this.#polling = want;
  }

  #uri(): string {
    return vsockUri(this.address.cid, this.address.port);
  }

  #closedError(): VsockError {
    return new VsockError(`accept on ${this.#uri()}: the server is closed`, {
      code: 'ERR_SERVER_CLOSED',
      syscall: 'accept',
      address: this.#uri(),
    });
  }

  #abortError(signal: AbortSignal | undefined): VsockError {
    return new VsockError(`accept on ${this.#uri()} aborted`, {
      code: 'ABORT_ERR',
      syscall: 'accept',
      address: this.#uri(),
      cause: signal?.reason,
    });
  }
}
