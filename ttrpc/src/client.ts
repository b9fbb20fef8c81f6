/**
 * ttrpc client: any number of concurrent unary calls on one connection, odd increasing stream ids, per-call
 * deadline (sent as timeout_nano and enforced locally), metadata and AbortSignal. When the connection closes,
 * every pending call fails with ConnectionClosedError.
 */
import type { Duplex } from 'node:stream';
import { Channel } from './channel';
import { FrameType, MAX_MESSAGE_LENGTH, type DecodedFrame } from './frame-codec';
import { metadataToPairs, type Metadata } from './metadata';
import type { MethodDescriptor, RequestOf, ResponseOf, ServiceDefinition } from './method';
import {
  CancelledError,
  Code,
  ConnectionClosedError,
  DeadlineExceededError,
  MessageTooLargeError,
  ProtocolError,
  fromStatus,
} from './status';
import { connectUnix, type ConnectOptions } from './transport';
import { decodeResponse, prepareRequest } from './wire';

export interface CallOptions {
  /** Relative deadline in milliseconds. */
  timeoutMs?: number;
  /** Absolute deadline (Date or epoch milliseconds). The earlier of this and timeoutMs wins. */
  deadline?: Date | number;
  signal?: AbortSignal;
  /** Added to the client's default metadata. */
  metadata?: Metadata;
}

export interface ClientOptions {
  maxMessageLength?: number;
  /** Sent with every call, e.g. `{ 'containerd-namespace-ttrpc': 'default' }`. */
  metadata?: Metadata;
}

interface PendingCall {
  resolve(payload: Buffer): void;
  reject(err: Error): void;
}

const MAX_STREAM_ID = 0xffffffff;

export class Client {
  private readonly channel: Channel;
  private readonly pending = new Map<number, PendingCall>();
  private readonly closeListeners = new Set<(err?: Error) => void>();
  private nextStreamId = 1;
  private closeError: Error | undefined;
  private readonly defaultMetadata: Metadata | undefined;

  constructor(stream: Duplex, options: ClientOptions = {}) {
    this.defaultMetadata = options.metadata;
    this.channel = new Channel(
      stream,
      { onFrame: (f) => this.onFrame(f), onClose: (err) => this.handleClose(err) },
      options.maxMessageLength ?? MAX_MESSAGE_LENGTH,
    );
  }

  /** Connects to a unix socket: a filesystem path (optionally `unix://`), or an abstract name (`@name` or `\0name`). */
  static async connect(address: string, options: ClientOptions & ConnectOptions = {}): Promise<Client> {
    return new Client(await connectUnix(address, options), options);
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** Calls currently waiting for a response. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /** Registers a listener for the connection's closing; returns a function that removes it. */
  onClose(listener: (err?: Error) => void): () => void {
    if (this.channel.closed) {
      queueMicrotask(() => listener(this.closeError));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** A typed unary call. */
  async call<Req, Res>(desc: MethodDescriptor<Req, Res>, request: Req, options: CallOptions = {}): Promise<Res> {
    const payload = await this.callRaw(desc.service, desc.method, desc.request.encode(request), options);
    try {
      return desc.response.decode(payload);
    } catch (cause) {
      throw new ProtocolError(`${desc.service}/${desc.method}: undecodable response`, { cause });
    }
  }

  /** An untyped unary call: request payload bytes in, response payload bytes out. */
  callRaw(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Buffer> {
    if (this.channel.closed) return Promise.reject(new ConnectionClosedError(undefined, { cause: this.closeError }));
    const { signal } = options;
    if (signal?.aborted)
      return Promise.reject(
        new CancelledError(`${service}/${method}: aborted before sending`, { cause: signal.reason }),
      );
    const deadline = effectiveDeadline(options);
    const remainingMs = deadline === undefined ? undefined : deadline - Date.now();
    if (remainingMs !== undefined && remainingMs <= 0) {
      return Promise.reject(new DeadlineExceededError(`${service}/${method}: deadline passed before sending`));
    }
    if (this.nextStreamId > MAX_STREAM_ID) {
      return Promise.reject(new ConnectionClosedError('ttrpc: stream ids exhausted on this connection'));
    }

    const body = prepareRequest({
      service,
      method,
      payload,
      timeoutNano: remainingMs === undefined ? 0 : Math.ceil(remainingMs * 1e6),
      metadata: metadataToPairs(this.defaultMetadata, options.metadata),
    });
    if (body.size > this.channel.maxMessageLength) {
      return Promise.reject(
        new MessageTooLargeError(
          `${service}/${method}: request of ${body.size} bytes exceeds the limit of ${this.channel.maxMessageLength}`,
        ),
      );
    }

    const streamId = this.nextStreamId;
    this.nextStreamId += 2;
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void =>
        settle(new CancelledError(`${service}/${method}: aborted`, { cause: signal?.reason }));
      const settle = (err: Error | undefined, result?: Buffer): void => {
        if (!this.pending.delete(streamId)) return;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(result!);
      };
      this.pending.set(streamId, { resolve: (p) => settle(undefined, p), reject: (e) => settle(e) });
      if (remainingMs !== undefined) {
        timer = setTimeout(
          () =>
            settle(
              new DeadlineExceededError(`${service}/${method}: deadline exceeded after ${Math.round(remainingMs)} ms`),
            ),
          remainingMs,
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      if (!this.channel.send(streamId, FrameType.Request, 0, body)) {
        settle(new ConnectionClosedError(undefined, { cause: this.closeError }));
      }
    });
  }

  /** Closes the connection; pending calls fail with ConnectionClosedError. */
  close(): void {
    this.channel.close();
  }

  private onFrame(frame: DecodedFrame): void {
    if (frame.type !== FrameType.Response) return; // requests and data frames are not for a client
    const call = this.pending.get(frame.streamId);
    if (!call) return; // a call that timed out or was aborted: its late response is dropped
    if (frame.kind === 'oversized') {
      call.reject(
        new MessageTooLargeError(
          `response of ${frame.length} bytes exceeds the limit of ${this.channel.maxMessageLength}`,
        ),
      );
      return;
    }
    let response;
    try {
      response = decodeResponse(frame.payload);
    } catch (cause) {
      call.reject(new ProtocolError('undecodable ttrpc response', { cause }));
      return;
    }
    if (response.status && response.status.code !== Code.OK) call.reject(fromStatus(response.status));
    else call.resolve(Buffer.from(response.payload.buffer, response.payload.byteOffset, response.payload.length));
  }

  private handleClose(err?: Error): void {
    this.closeError = err;
    const closed = new ConnectionClosedError(undefined, { cause: err });
    for (const call of [...this.pending.values()]) call.reject(closed);
    for (const listener of this.closeListeners) listener(err);
    this.closeListeners.clear();
  }
}

function effectiveDeadline(options: CallOptions): number | undefined {
  const candidates: number[] = [];
  if (options.timeoutMs !== undefined) candidates.push(Date.now() + options.timeoutMs);
  if (options.deadline !== undefined)
    candidates.push(typeof options.deadline === 'number' ? options.deadline : options.deadline.getTime());
  return candidates.length ? Math.min(...candidates) : undefined;
}

/** A typed stub: one async function per method of a service definition. */
export type ServiceClient<S extends ServiceDefinition> = {
  [K in keyof S]: (request: RequestOf<S[K]>, options?: CallOptions) => Promise<ResponseOf<S[K]>>;
};

export function createServiceClient<S extends ServiceDefinition>(client: Client, definition: S): ServiceClient<S> {
  const stub: Record<string, unknown> = {};
  for (const [name, desc] of Object.entries(definition)) {
    stub[name] = (request: unknown, options?: CallOptions) => client.call(desc, request, options);
  }
  return stub as ServiceClient<S>;
}
