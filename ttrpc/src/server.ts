/**
 * ttrpc server. Handlers run concurrently and answer in completion order; a request's deadline reaches the handler
 * as an AbortSignal. Protocol errors answer on the offending stream and keep the connection: UNIMPLEMENTED for an
 * unknown service or method, RESOURCE_EXHAUSTED for an oversized frame, INVALID_ARGUMENT for an even stream id, a
 * stream id not above the last request's, or an undecodable request. An error status always goes with an empty payload.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { Channel } from './channel';
import { FrameType, MAX_MESSAGE_LENGTH, type DecodedFrame } from './frame-codec';
import { pairsToMetadata } from './metadata';
import type { ServiceDefinition } from './method';
import { ServiceRegistry, type HandlerContext, type RawHandler, type ServiceImplementation } from './service-registry';
import { Code, StatusError, toStatus, type Status } from './status';
import { listenUnix, type ListenOptions } from './transport';
import { decodeRequest, prepareResponse, type RequestMessage } from './wire';

export interface ServerOptions {
  maxMessageLength?: number;
  /** Called for handler failures and connection errors (for logging); never required. */
  onError?: (err: unknown, where: { service?: string; method?: string }) => void;
}

const EMPTY = new Uint8Array(0);
/** Characters of an error status's message sent at most. */
const MAX_STATUS_MESSAGE = 16 << 10;
/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A request's context. Its AbortSignal and deadline timer are made only if the handler asks for the signal: most
 * handlers finish long before any deadline, and an AbortController per request is a measurable share of a call.
 */
class RequestContext implements HandlerContext {
  readonly service: string;
  readonly method: string;
  private metadataCache: Record<string, string[]> | undefined;
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private abortedWith: unknown;

  constructor(
    private readonly request: RequestMessage,
    readonly deadline: number | undefined,
  ) {
    this.service = request.service;
    this.method = request.method;
  }

  get metadata(): Record<string, string[]> {
    return (this.metadataCache ??= pairsToMetadata(this.request.metadata));
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = (this.controller = new AbortController());
      if (this.abortedWith !== undefined) {
        controller.abort(this.abortedWith);
      } else if (this.deadline !== undefined) {
        const deadline = this.deadline;
        // A timer fires after at most 2^31-1 ms (Node runs a longer one after 1 ms): a far deadline is re-armed.
        const arm = (): void => {
          const ms = deadline - Date.now();
          if (ms <= 0) controller.abort(new DOMException('deadline exceeded', 'TimeoutError'));
          else this.timer = setTimeout(arm, Math.min(ms, MAX_TIMER_MS));
        };
        arm();
      }
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    this.dispose();
    if (this.controller) this.controller.abort(reason);
    else this.abortedWith = reason;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

class ServerConnection {
  readonly channel: Channel;
  /** In-flight requests by stream id. */
  readonly active = new Map<number, RequestContext>();
  private idleWaiters: (() => void)[] = [];
  /** The highest request stream id seen. */
  private lastStreamId = 0;

  constructor(
    stream: Duplex,
    private readonly server: Server,
    maxMessageLength: number,
  ) {
    this.channel = new Channel(
      stream,
      { onFrame: (f) => this.onFrame(f), onClose: (err) => this.onClose(err) },
      maxMessageLength,
    );
  }

  /** Resolves when no request is in flight (immediately if none is). */
  whenIdle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onFrame(frame: DecodedFrame): void {
    if (frame.type !== FrameType.Request) return; // servers ignore frames of other types
    if (frame.kind === 'oversized') {
      this.respond(frame.streamId, undefined, {
        code: Code.RESOURCE_EXHAUSTED,
        message: `message of ${frame.length} bytes exceeds the maximum of ${this.channel.maxMessageLength}`,
        details: [],
      });
      return;
    }
    if (frame.streamId % 2 !== 1) {
      this.respond(frame.streamId, undefined, {
        code: Code.INVALID_ARGUMENT,
        message: 'stream id must be odd for client-initiated streams',
        details: [],
      });
      return;
    }
    // As ttrpc's Go server: a request's stream id must be above the last one's (never reused, even once answered).
    if (frame.streamId <= this.lastStreamId) {
      this.respond(frame.streamId, undefined, {
        code: Code.INVALID_ARGUMENT,
        message: `stream id ${frame.streamId} cannot be reused and must increase (last ${this.lastStreamId})`,
        details: [],
      });
      return;
    }
    this.lastStreamId = frame.streamId;
    let request: RequestMessage;
    try {
      request = decodeRequest(frame.payload);
    } catch (err) {
      this.respond(frame.streamId, undefined, {
        code: Code.INVALID_ARGUMENT,
        message: `undecodable request: ${(err as Error).message}`,
        details: [],
      });
      return;
    }
    if (this.server.shuttingDown) {
      this.respond(frame.streamId, undefined, {
        code: Code.UNAVAILABLE,
        message: 'server is shutting down',
        details: [],
      });
      return;
    }
    const handler = this.server.registry.lookup(request.service, request.method);
    if (handler instanceof StatusError) {
      this.respond(frame.streamId, undefined, handler.toStatus());
      return;
    }
    this.dispatch(frame.streamId, request, handler);
  }

  private dispatch(streamId: number, request: RequestMessage, handler: RawHandler): void {
    const deadline = request.timeoutNano > 0 ? Date.now() + request.timeoutNano / 1e6 : undefined;
    const context = new RequestContext(request, deadline);
    this.active.set(streamId, context);
    const payload = Buffer.from(request.payload.buffer, request.payload.byteOffset, request.payload.length);
    const finish = (result: Uint8Array | undefined, status: Status | undefined): void => {
      context.dispose();
      this.active.delete(streamId);
      this.respond(streamId, result, status);
      if (this.active.size === 0) this.notifyIdle();
    };
    const fail = (err: unknown): void => {
      this.server.options.onError?.(err, { service: request.service, method: request.method });
      finish(undefined, toStatus(err));
    };
    let pending: Promise<Uint8Array> | Uint8Array;
    try {
      pending = handler(payload, context);
    } catch (err) {
      fail(err);
      return;
    }
    if (pending instanceof Uint8Array) finish(pending, undefined);
    else pending.then((result) => finish(result, undefined), fail);
  }

  private respond(streamId: number, payload: Uint8Array | undefined, status: Status | undefined): void {
    // An error's message may quote its input (a megabyte-long id): cut it, so that the code still reaches the caller.
    if (status && status.message.length > MAX_STATUS_MESSAGE) {
      status = {
        ...status,
        message: `${status.message.slice(0, MAX_STATUS_MESSAGE)}... (${status.message.length - MAX_STATUS_MESSAGE} more characters)`,
      };
    }
    let body = prepareResponse({ status, payload: status ? EMPTY : (payload ?? EMPTY) });
    if (body.size > this.channel.maxMessageLength) {
      body = prepareResponse({
        status: {
          code: Code.RESOURCE_EXHAUSTED,
          message: `response of ${body.size} bytes exceeds the maximum of ${this.channel.maxMessageLength}`,
          details: [],
        },
        payload: EMPTY,
      });
    }
    this.channel.send(streamId, FrameType.Response, 0, body);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private onClose(err?: Error): void {
    if (err) this.server.options.onError?.(err, {});
    for (const context of this.active.values()) context.abort(new DOMException('connection closed', 'AbortError'));
    this.active.clear();
    this.notifyIdle();
    this.server.connectionClosed(this);
  }
}

export class Server {
  readonly registry = new ServiceRegistry();
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners = new Set<net.Server>();
  private shuttingDownFlag = false;

  constructor(readonly options: ServerOptions = {}) {}

  get shuttingDown(): boolean {
    return this.shuttingDownFlag;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  register<S extends ServiceDefinition>(definition: S, impl: Partial<ServiceImplementation<S>>): this {
    this.registry.register(definition, impl);
    return this;
  }

  registerRaw(service: string, method: string, handler: RawHandler): this {
    this.registry.registerRaw(service, method, handler);
    return this;
  }

  /** Serves one connection over any Duplex. */
  serveStream(stream: Duplex): void {
    if (this.shuttingDownFlag) {
      stream.destroy();
      return;
    }
    this.connections.add(new ServerConnection(stream, this, this.options.maxMessageLength ?? MAX_MESSAGE_LENGTH));
  }

  /** Serves connections accepted by an existing net.Server (e.g. one listening on an inherited fd). */
  serveListener(listener: net.Server): void {
    this.listeners.add(listener);
    listener.on('connection', (socket: net.Socket) => this.serveStream(socket));
  }

  /** Listens on a unix socket address (see transport.ts). */
  async listen(address: string, options?: ListenOptions): Promise<net.Server> {
    const listener = await listenUnix(address, (socket) => this.serveStream(socket), options);
    this.listeners.add(listener);
    return listener;
  }

  /**
   * Graceful stop: accept nothing new, refuse new requests with UNAVAILABLE, let in-flight requests finish and
   * their responses go out, then close. After `timeoutMs` whatever remains is aborted and closed.
   * A handler must not await this (it would wait for itself): schedule it after replying.
   */
  async shutdown(options: { timeoutMs?: number } = {}): Promise<void> {
    this.shuttingDownFlag = true;
    const closingListeners = this.closeListeners();
    const drained = Promise.all(
      [...this.connections].map(async (c) => {
        await c.whenIdle();
        c.channel.close();
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>(
      (resolve) => (timer = setTimeout(() => resolve('timeout'), options.timeoutMs ?? 5_000)),
    );
    const outcome = await Promise.race([drained.then(() => 'drained' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') for (const c of this.connections) c.channel.destroy();
    await closingListeners;
  }

  /** Immediate stop: every connection is closed and every in-flight handler aborted. */
  async close(): Promise<void> {
    this.shuttingDownFlag = true;
    for (const c of this.connections) c.channel.destroy();
    await this.closeListeners();
  }

  /** @internal */
  connectionClosed(connection: ServerConnection): void {
    this.connections.delete(connection);
  }

  private closeListeners(): Promise<void> {
    const listeners = [...this.listeners];
    this.listeners.clear();
    return Promise.all(
      listeners.map((l) => new Promise<void>((resolve) => (l.listening ? l.close(() => resolve()) : resolve()))),
    ).then(() => undefined);
  }
}
