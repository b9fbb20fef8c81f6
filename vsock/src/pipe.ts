/**
 * The read end of a pipe as a Readable that takes everything the pipe holds in one read(2), up to READ_SIZE (1 MiB),
 * where node's own pipe streams read 64 KiB at a time and run their stream machinery for each. The agent reads a
 * container's output through it: under TCG each read and each chunk through node's streams costs the guest far more
 * than the bytes, and a pipe of 1 MiB fills between two wakes of the agent.
 *
 * Readiness comes from the addon's poll handle on node's event loop (as for sockets, src/vsock.c); the pipe is
 * polled only while the stream wants data. A read that returns little is copied into a buffer of its size, so a
 * line of output does not keep a megabyte alive; a large one is handed out as it is and the next read gets a new
 * buffer.
 */
import { Readable } from 'node:stream';
import { errnoError } from './errors';
import { native, type NativeBinding, type NativeHandle } from './native';

const READ_SIZE = 1 << 20;
/** Reads smaller than this are copied out and the read buffer kept. */
const COPY_BELOW = 64 * 1024;

export class PipeReader extends Readable {
  readonly #h: NativeHandle;
  readonly #n: NativeBinding;
  #buf: Buffer | undefined;
  #wantRead = false;
  #reading = false;
  #polling = false;

  /** Takes over `fd`, a pipe's non-blocking read end (from pipe()); destroy() closes it. */
  constructor(fd: number) {
    super();
    this.#n = native();
    this.#h = new this.#n.Handle(fd);
    this.#h.onready = (status) => {
      if (this.destroyed) return;
      if (status < 0) {
        this.#polling = false;
        this.destroy(errnoError(status, 'poll'));
        return;
      }
      this.#pump();
    };
  }

  override _read(): void {
    this.#wantRead = true;
    this.#pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#wantRead = false;
    this.#h.onready = undefined;
    this.#h.close();
    this.#buf = undefined;
    callback(error);
  }

  #pump(): void {
    if (this.#reading || this.destroyed) return;
    this.#reading = true;
    let wait = false;
    try {
      while (this.#wantRead && !this.destroyed) {
        const buf = (this.#buf ??= Buffer.allocUnsafeSlow(READ_SIZE));
        const n = this.#h.read(buf, 0, READ_SIZE);
        if (n > 0) {
          let chunk: Buffer;
          if (n < COPY_BELOW) {
            chunk = Buffer.allocUnsafe(n);
            buf.copy(chunk, 0, 0, n);
          } else {
            chunk = buf.subarray(0, n);
            this.#buf = undefined;
          }
          if (!this.push(chunk)) this.#wantRead = false;
        } else if (n === 0) {
          this.#wantRead = false;
          this.push(null);
        } else if (n === this.#n.EAGAIN) {
          wait = true;
          break;
        } else {
          this.destroy(errnoError(n, 'read'));
          return;
        }
      }
    } finally {
      this.#reading = false;
    }
    if (this.destroyed) return;
    const poll = wait && this.#wantRead;
    if (poll !== this.#polling) {
      const r = this.#h.poll(poll ? this.#n.UV_READABLE : 0);
      if (r < 0) return void this.destroy(errnoError(r, 'poll'));
      this.#polling = poll;
    }
  }
}
