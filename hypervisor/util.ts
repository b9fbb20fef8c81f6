/** Small helpers shared by the driver: abort-aware waits and connects, bounded tails of output. */
import net from 'node:net';
import { CancelledError, DeadlineExceededError, ShimError } from '../errors';

/**
 * The error an aborted signal stands for: its reason if that is already one of ours, DeadlineExceededError for
 * AbortSignal.timeout(), else CancelledError.
 */
export function abortError(signal: AbortSignal | undefined, what: string): ShimError {
  const reason: unknown = signal?.reason;
  if (reason instanceof ShimError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError')
    return new DeadlineExceededError(`${what}: deadline exceeded`, { cause: reason });
  return new CancelledError(`${what}: cancelled`, reason === undefined ? undefined : { cause: reason });
}

/** setTimeout as a promise that rejects with abortError() when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal, 'wait'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal, 'wait'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Resolves true when `p` settles within `ms`, false otherwise (never rejects). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

/** Connect to a unix socket, retrying while it does not exist yet or refuses, until the signal aborts. */
export async function connectWithRetry(
  socketPath: string,
  signal: AbortSignal | undefined,
  intervalMs: number,
): Promise<net.Socket> {
  for (;;) {
    if (signal?.aborted) throw abortError(signal, `connect ${socketPath}`);
    try {
      return await connectOnce(socketPath, signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === undefined || !RETRYABLE.has(code)) throw err;
    }
    await sleep(intervalMs, signal);
  }
}

function connectOnce(socketPath: string, signal: AbortSignal | undefined): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(signal, `connect ${socketPath}`));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(err);
    });
  });
}

/** Keeps the last `maxBytes` of a stream of text (QEMU's stderr). */
export class TailBuffer {
  #text = '';
  constructor(private readonly maxBytes = 8192) {}
  push(chunk: Buffer | string): void {
    this.#text += chunk.toString();
    if (this.#text.length > 2 * this.maxBytes) this.#text = this.#text.slice(-this.maxBytes);
  }
  toString(): string {
    return this.#text.length > this.maxBytes ? this.#text.slice(-this.maxBytes) : this.#text;
  }
}

/** Whether a process with this pid exists (it may be a zombie). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** An async mutex (vscode-jsonrpc's Semaphore(1)): lifecycle operations run one at a time, in call order. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
