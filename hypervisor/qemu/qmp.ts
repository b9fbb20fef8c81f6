/**
 * A QMP client over QEMU's unix socket: newline-delimited JSON, read the greeting, negotiate `qmp_capabilities`,
 * then commands correlated by `id`, each under its own timeout, with asynchronous events surfaced as typed
 * callbacks. QMP errors ({"error":{"class","desc"}}) are classified here, once (see qmpError).
 */
import net from 'node:net';
import {
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  NotFoundError,
  NotImplementedError,
  UnavailableError,
  type ShimError,
} from '../../errors';
import { NOOP_LOGGER, type Logger } from '../../log';
import { abortError, connectWithRetry } from '../util';

/** QMP lines are small; a line this long means the peer is not QEMU (or is broken). */
export const MAX_QMP_LINE_BYTES = 1024 * 1024;
export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;

/** Pure framing: bytes in, complete lines out; tolerant of split chunks, with a line-length cap. */
export class LineSplitter {
  #parts: Buffer[] = [];
  #size = 0;

  constructor(private readonly maxLineBytes = MAX_QMP_LINE_BYTES) {}

  /** Returns the complete lines (without the newline, `\r` trimmed); throws InternalError over the cap. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a, start); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      this.#append(chunk.subarray(start, nl));
      const line = Buffer.concat(this.#parts, this.#size).toString('utf8');
      this.#parts = [];
      this.#size = 0;
      lines.push(line.endsWith('\r') ? line.slice(0, -1) : line);
      start = nl + 1;
    }
    this.#append(chunk.subarray(start));
    return lines;
  }

  #append(piece: Buffer): void {
    if (piece.length === 0) return;
    this.#size += piece.length;
    if (this.#size > this.maxLineBytes) throw new InternalError(`QMP line exceeds ${this.maxLineBytes} bytes`);
    this.#parts.push(piece);
  }
}

export interface Disposable {
  dispose(): void;
}
export type Event<T> = (listener: (e: T) => void) => Disposable;

/** A typed event source (vscode-jsonrpc's Emitter, reduced). Listener exceptions are not our problem to rethrow. */
class Emitter<T> {
  #listeners = new Set<(e: T) => void>();
  readonly event: Event<T> = (listener) => {
    this.#listeners.add(listener);
    return { dispose: () => this.#listeners.delete(listener) };
  };
  fire(e: T): void {
    for (const l of [...this.#listeners]) {
      try {
        l(e);
      } catch {
        // a listener's bug must not break the connection
      }
    }
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}
export interface ShutdownEvent {
  /** True when the guest asked for it (poweroff, panic with -no-reboot...), false for host requests such as quit. */
  guest: boolean;
  reason: string;
}
export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}
export interface QmpStatus {
  status: string;
  running: boolean;
}

/** What QEMU said when a command failed; the `cause` of the typed error execute() throws. */
export class QmpErrorReply extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${command}: ${errorClass}: ${desc}`);
  }
  override get name(): string {
    return 'QmpErrorReply';
  }
}

/**
 * QMP error classes -> hull errors. CommandNotFound: this QEMU lacks the command; DeviceNotFound: no such device;
 * GenericError/DeviceNotActive: QEMU refused in its current state (cont after a guest panic, duplicate device id).
 */
export function qmpError(command: string, errorClass: string, desc: string): ShimError {
  const cause = new QmpErrorReply(command, errorClass, desc);
  const message = `QMP ${command} failed: ${desc} (${errorClass})`;
  switch (errorClass) {
    case 'CommandNotFound':
      return new NotImplementedError(message, { cause });
    case 'DeviceNotFound':
      return new NotFoundError(message, { cause });
    case 'GenericError':
    case 'DeviceNotActive':
      return new FailedPreconditionError(message, { cause });
    default:
      return new InternalError(message, { cause });
  }
}

interface Pending {
  command: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  /** Gives up (CancelledError, or the signal's reason if it is a ShimError) when aborted; retries until then. */
  signal?: AbortSignal;
  /** Delay between attempts while the socket does not exist or refuses. */
  retryIntervalMs?: number;
  /** Bound on greeting + capabilities negotiation once connected. */
  handshakeTimeoutMs?: number;
  commandTimeoutMs?: number;
  logger?: Logger;
}

export class QmpClient {
  readonly #socket: net.Socket;
  readonly #splitter = new LineSplitter();
  readonly #pending = new Map<number, Pending>();
  readonly #logger: Logger;
  readonly #commandTimeoutMs: number;
  #nextId = 1;
  #closed: Error | undefined;
  #greeting: QmpGreeting | undefined;
  #greetingWaiter: { resolve(g: QmpGreeting): void; reject(e: Error): void } | undefined;

  readonly #onEvent = new Emitter<QmpEvent>();
  readonly #onShutdown = new Emitter<ShutdownEvent>();
  readonly #onStop = new Emitter<void>();
  readonly #onResume = new Emitter<void>();
  readonly #onClose = new Emitter<Error>();
  /** Every event, raw. */
  readonly onEvent = this.#onEvent.event;
  readonly onShutdown = this.#onShutdown.event;
  readonly onStop = this.#onStop.event;
  readonly onResume = this.#onResume.event;
  /** Fires once, with the reason (UnavailableError when the peer closed). */
  readonly onClose = this.#onClose.event;

  private constructor(socket: net.Socket, opts: QmpConnectOptions) {
    this.#socket = socket;
    this.#logger = opts.logger ?? NOOP_LOGGER;
    this.#commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) =>
      this.#shutdown(new UnavailableError(`QMP connection failed: ${err.message}`, { cause: err })),
    );
    socket.on('close', () => this.#shutdown(new UnavailableError('QMP connection closed by QEMU')));
  }

  /**
   * Connect (retrying while the socket is absent or refuses, until opts.signal aborts), read the greeting and
   * negotiate capabilities.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const socket = await connectWithRetry(socketPath, opts.signal, opts.retryIntervalMs ?? 10);
    const client = new QmpClient(socket, opts);
    const onAbort = (): void => client.close(abortError(opts.signal, 'QMP handshake'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const handshake = opts.handshakeTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
      const greeting = await client.#waitGreeting(handshake);
      await client.execute('qmp_capabilities', undefined, { timeoutMs: handshake });
      client.#logger.debug({ qemu: greeting.version.qemu }, 'QMP ready');
      return client;
    } catch (err) {
      client.close();
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  get greeting(): QmpGreeting | undefined {
    return this.#greeting;
  }
  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Run any QMP command (device_add and friends later). Resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    const timeoutMs = opts.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new DeadlineExceededError(`QMP ${command} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: (v) => resolve(v as T), reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      this.#socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  async queryStatus(opts?: { timeoutMs?: number }): Promise<QmpStatus> {
    const r = await this.execute<{ status: string; running: boolean }>('query-status', undefined, opts);
    return { status: r.status, running: r.running };
  }
  async stop(): Promise<void> {
    await this.execute('stop');
  }
  async cont(): Promise<void> {
    await this.execute('cont');
  }
  async systemPowerdown(): Promise<void> {
    await this.execute('system_powerdown');
  }
  /** Ask QEMU to exit. QEMU may close the socket before its reply arrives; that counts as success. */
  async quit(opts?: { timeoutMs?: number }): Promise<void> {
    try {
      await this.execute('quit', undefined, opts);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
    }
  }

  /** Close the connection; pending commands fail with `reason` (default: UnavailableError). Idempotent. */
  close(reason?: Error): void {
    this.#shutdown(reason ?? new UnavailableError('QMP connection closed'));
    this.#socket.destroy();
  }

  #waitGreeting(timeoutMs: number): Promise<QmpGreeting> {
    if (this.#greeting) return Promise.resolve(this.#greeting);
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#greetingWaiter = undefined;
        reject(new DeadlineExceededError(`no QMP greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#greetingWaiter = {
        resolve: (g) => {
          clearTimeout(timer);
          resolve(g);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  #onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.#splitter.push(chunk);
    } catch (err) {
      this.close(err as Error);
      return;
    }
    for (const line of lines) {
      if (line.trim() === '') continue;
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch (err) {
        this.close(new InternalError(`QMP sent invalid JSON: ${line.slice(0, 200)}`, { cause: err }));
        return;
      }
      this.#dispatch(msg);
    }
  }

  #dispatch(msg: unknown): void {
    if (typeof msg !== 'object' || msg === null) return;
    const m = msg as Record<string, unknown>;
    if ('QMP' in m) {
      this.#greeting = m.QMP as QmpGreeting;
      this.#greetingWaiter?.resolve(this.#greeting);
      this.#greetingWaiter = undefined;
      return;
    }
    if (typeof m.event === 'string') {
      const e: QmpEvent = { event: m.event, data: (m.data as Record<string, unknown> | undefined) ?? {} };
      if (m.timestamp !== undefined) e.timestamp = m.timestamp as QmpEvent['timestamp'] & object;
      this.#logger.debug({ event: e.event, data: e.data }, 'QMP event');
      this.#onEvent.fire(e);
      if (e.event === 'SHUTDOWN')
        this.#onShutdown.fire({
          guest: e.data.guest === true,
          reason: typeof e.data.reason === 'string' ? e.data.reason : '',
        });
      else if (e.event === 'STOP') this.#onStop.fire();
      else if (e.event === 'RESUME') this.#onResume.fire();
      return;
    }
    if (!('return' in m) && !('error' in m)) return;
    // Replies carry our id; one without (QEMU could not parse the request) belongs to the oldest pending command.
    const id = typeof m.id === 'number' ? m.id : this.#pending.keys().next().value;
    const pending = id === undefined ? undefined : this.#pending.get(id);
    if (!pending || id === undefined) return; // a reply to a command that already timed out
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if ('error' in m) {
      const e = (m.error ?? {}) as { class?: unknown; desc?: unknown };
      const errorClass = typeof e.class === 'string' ? e.class : 'GenericError';
      pending.reject(
        qmpError(pending.command, errorClass, typeof e.desc === 'string' ? e.desc : JSON.stringify(m.error)),
      );
    } else {
      pending.resolve(m.return);
    }
  }

  #shutdown(reason: Error): void {
    if (this.#closed) return;
    this.#closed = reason;
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.#pending.clear();
    this.#greetingWaiter?.reject(reason);
    this.#greetingWaiter = undefined;
    this.#onClose.fire(reason);
  }
}
