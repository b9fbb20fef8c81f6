/**
 * Spans recorded in the guest, without OpenTelemetry's SDK (the agent stays small): a call whose ttrpc metadata
 * carries a sampled W3C `traceparent` gets a span of its own (its parent: the host's client span), and what the
 * handler does inside it (crun create/start, mounts) gets child spans through AsyncLocalStorage. Finished spans wait
 * in a bounded buffer (dropped and counted when full) until the shim drains them (hull.agent.v1.Tracing/DrainSpans)
 * and exports them: no exporter, no network and no port in the guest.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import type { HandlerContext, Server } from 'ttrpc-ts';
import type { diagnostics } from '../protos/hull';

type GuestSpan = diagnostics.IGuestSpan;

/** Finished spans kept until drained; beyond this they are dropped and counted. */
export const SPAN_BUFFER_SIZE = 512;
const MAX_ATTRIBUTES = 16;
const MAX_VALUE_CHARS = 256;

/**
 * The guest's clock for spans and for the drain's `now_ms` alike: the process's start on the wall clock plus the
 * monotonic clock, so that a clock set meanwhile (SetGuestDateTime) shifts neither; the host maps them by the offset.
 */
const clockMs = (): number => performance.timeOrigin + performance.now();

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface SpanParent {
  traceId: string;
  spanId: string;
}

/** The parent a call's `traceparent` names, if it is well formed and sampled (W3C trace context, version 00). */
export function parseTraceparent(metadata: Record<string, readonly string[]> | undefined): SpanParent | undefined {
  const value = metadata?.traceparent?.[0];
  if (typeof value !== 'string') return undefined;
  const m = TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, traceId, spanId, flags] = m as unknown as [string, string, string, string];
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId) || (parseInt(flags, 16) & 1) === 0) return undefined;
  return { traceId, spanId };
}

export class SpanRecorder {
  private buffer: GuestSpan[] = [];
  private droppedCount = 0;
  /** Those waiting for the next drain (a traced DestroySandbox holding the power-off), at most a few. */
  private waiters: (() => void)[] = [];

  constructor(private readonly capacity = SPAN_BUFFER_SIZE) {}

  record(span: GuestSpan): void {
    if (this.buffer.length >= this.capacity) {
      this.droppedCount++;
      return;
    }
    this.buffer.push(span);
  }

  /** Up to `max` spans, oldest first, and how many were dropped since the last drain. */
  drain(max: number): { spans: GuestSpan[]; dropped: number; nowMs: number } {
    const n = Math.max(0, Math.min(max > 0 ? max : this.capacity, this.capacity));
    const spans = this.buffer.splice(0, n);
    const dropped = this.droppedCount;
    this.droppedCount = 0;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
    return { spans, dropped, nowMs: clockMs() };
  }

  /**
   * Resolves once the next drain has taken its spans (its reply goes out right after), or after `timeoutMs` when no
   * drain comes: the last spans of a traced DestroySandbox wait for the host's drain, never longer than that.
   */
  nextDrain(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined = undefined;
      const done = (): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      timer = setTimeout(done, timeoutMs);
      this.waiters.push(done);
    });
  }

  get size(): number {
    return this.buffer.length;
  }
}

export const recorder = new SpanRecorder();
const current = new AsyncLocalStorage<SpanParent>();

/** Whether the caller runs inside a recorded span (a call whose traceparent was sampled). */
export function inTracedCall(): boolean {
  return current.getStore() !== undefined;
}

type Attributes = Record<string, string | number | boolean | undefined>;

function attributesOf(attributes: Attributes): { key: string; value: string }[] {
  return Object.entries(attributes)
    .filter(([, v]) => v !== undefined)
    .slice(0, MAX_ATTRIBUTES)
    .map(([key, v]) => ({ key, value: String(v).slice(0, MAX_VALUE_CHARS) }));
}

async function recordSpan<T>(
  name: string,
  parent: SpanParent,
  attributes: Attributes,
  fn: () => Promise<T> | T,
  into: SpanRecorder,
): Promise<T> {
  const self: SpanParent = { traceId: parent.traceId, spanId: randomBytes(8).toString('hex') };
  const startMs = clockMs();
  const finish = (err?: unknown): void =>
    into.record({
      traceId: self.traceId,
      spanId: self.spanId,
      parentSpanId: parent.spanId,
      name,
      startMs,
      endMs: clockMs(),
      attributes: attributesOf(attributes),
      statusCode: err === undefined ? 0 : 2,
      statusMessage: err === undefined ? '' : (err instanceof Error ? err.message : 'failed').slice(0, MAX_VALUE_CHARS),
    });
  try {
    const result = await current.run(self, fn);
    finish();
    return result;
  } catch (err) {
    finish(err);
    throw err;
  }
}

/** Runs a ttrpc handler in a span of its own when its metadata carries a sampled traceparent; otherwise just runs it. */
export function serverSpan<T>(
  name: string,
  metadata: Record<string, readonly string[]> | undefined,
  attributes: Attributes,
  fn: () => Promise<T> | T,
  into: SpanRecorder = recorder,
): Promise<T> | T {
  const parent = parseTraceparent(metadata);
  return parent ? recordSpan(name, parent, attributes, fn, into) : fn();
}

/** A step inside a traced call (crun create, a mount): a child span of the current one, or nothing outside a trace. */
export function guestSpan<T>(
  name: string,
  attributes: Attributes,
  fn: () => Promise<T> | T,
  into: SpanRecorder = recorder,
): Promise<T> | T {
  const parent = current.getStore();
  return parent ? recordSpan(name, parent, attributes, fn, into) : fn();
}

/**
 * `server` whose `register` wraps each handler in `serverSpan`, named `<service>/<method>` as the host's client span
 * is, with the request's container and exec ids. A call without a traceparent runs its handler as it is.
 */
export function tracedServer(server: Server): Server {
  const register = (definition: Parameters<Server['register']>[0], impl: Record<string, unknown>): void => {
    const traced: Record<string, unknown> = {};
    for (const [name, handler] of Object.entries(impl) as [string, (req: unknown, call: HandlerContext) => unknown][]) {
      const service = (definition as Record<string, { service?: string } | undefined>)[name]?.service ?? '';
      traced[name] = (req: unknown, call: HandlerContext) => {
        const r = (req ?? {}) as { containerId?: unknown; execId?: unknown };
        return serverSpan(
          `${service}/${name}`,
          call.metadata,
          {
            'hull.container.id': typeof r.containerId === 'string' && r.containerId ? r.containerId : undefined,
            'hull.exec.id': typeof r.execId === 'string' && r.execId ? r.execId : undefined,
          },
          () => handler(req, call),
        );
      };
    }
    server.register(definition, traced as never);
  };
  return new Proxy(server, {
    get: (target, prop) => (prop === 'register' ? register : Reflect.get(target, prop, target)),
  });
}
