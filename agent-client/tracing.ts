/**
 * Tracing of agent calls (OpenTelemetry's API only: a no-op until the shim loads the SDK): each call made inside a
 * recording span gets a client span, and its W3C `traceparent` goes to the guest in the ttrpc request metadata.
 * The trace ids handed to the guest are remembered (bounded), and the spans the guest sends back (DrainSpans) are
 * checked and capped here before anything else sees them: the guest is untrusted.
 */
import { SpanKind, SpanStatusCode, context, trace, type Span } from '@opentelemetry/api';
import { errorMessage, guestText } from '../errors';
import type { diagnostics } from '../protos/hull';

export const TRACER_NAME = 'hull';

/**
 * Calls that get no span: long polls and streams (a span per chunk read would drown the trace, and they outlive
 * the Task call that started them), the periodic health check, and the drain itself.
 */
const UNTRACED = new Set([
  'ReadStdout',
  'ReadStderr',
  'WriteStdin',
  'WaitProcess',
  'GetOOMEvent',
  'ReadConnection',
  'WriteConnection',
  'Check',
  'DrainSpans',
]);

/** Trace ids handed to the guest that its spans may carry (the most recent ones). */
const KNOWN_TRACES = 1024;
/** Caps on what one drain may bring back, and on each span. */
export const MAX_DRAINED_SPANS = 512;
const MAX_NAME_BYTES = 128;
const MAX_ATTRIBUTES = 16;
const MAX_KEY_BYTES = 64;
const MAX_VALUE_BYTES = 256;
/** A guest span's times, once mapped to the host's clock, lie within this much of now and last at most this. */
const MAX_AGE_MS = 60 * 60 * 1000;
const MAX_DURATION_MS = 60 * 60 * 1000;

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ATTRIBUTE_KEY = /^[A-Za-z0-9_.]+$/;

/** A span the guest recorded, checked, with its times on the host's clock (ms since the epoch). */
export interface GuestSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  startMs: number;
  endMs: number;
  attributes: Record<string, string>;
  status: { code: 'unset' | 'ok' | 'error'; message: string };
}

export interface GuestSpanBatch {
  spans: GuestSpan[];
  /** Dropped by the guest (its buffer was full). */
  dropped: number;
  /** Refused here: malformed, out of bounds, or of a trace this host never handed the guest. */
  refused: number;
}

export class AgentCallTracer {
  private readonly traces = new Set<string>();
  /** Traced calls answered since the last drain: with none, the guest has nothing new and no drain is sent. */
  private sinceDrain = 0;

  /**
   * A client span for `service/method` when the caller is in a recording span, with its traceparent and the
   * request's container and exec ids.
   */
  begin(service: string, method: string, request?: unknown): { span: Span; traceparent: string } | undefined {
    if (UNTRACED.has(method)) return undefined;
    const parent = trace.getSpan(context.active());
    if (!parent?.isRecording()) return undefined;
    const span = trace.getTracer(TRACER_NAME).startSpan(`${service}/${method}`, {
      kind: SpanKind.CLIENT,
      attributes: { 'rpc.system': 'ttrpc', 'rpc.service': service, 'rpc.method': method },
    });
    const { containerId, execId } = (request ?? {}) as { containerId?: unknown; execId?: unknown };
    if (typeof containerId === 'string' && containerId) span.setAttribute('hull.container.id', containerId);
    if (typeof execId === 'string' && execId) span.setAttribute('hull.exec.id', execId);
    const sc = span.spanContext();
    this.remember(sc.traceId);
    return {
      span,
      traceparent: `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`,
    };
  }

  /** Ends a call's span; its guest span is recorded by now (the agent records it before it answers). */
  end(span: Span, err?: unknown): void {
    this.sinceDrain++;
    if (err !== undefined) {
      span.recordException(err instanceof Error ? err : errorMessage(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
    }
    span.end();
  }

  private remember(traceId: string): void {
    if (this.traces.has(traceId)) return;
    this.traces.add(traceId);
    if (this.traces.size > KNOWN_TRACES) this.traces.delete(this.traces.values().next().value as string);
  }

  /** Whether a traced call was answered since the last call of this (then a drain may bring spans). */
  takeDrainNeed(): boolean {
    const need = this.sinceDrain > 0;
    this.sinceDrain = 0;
    return need;
  }

  /** Whether this client handed `traceId` to the guest (recently). */
  knows(traceId: string): boolean {
    return this.traces.has(traceId);
  }

  /**
   * The guest's DrainSpans answer, checked: ids in W3C form and of a trace handed to the guest, a parent always
   * (the guest never starts a trace), names and attributes capped, times mapped to the host's clock (the guest's
   * offset measured from its `now_ms` against the midpoint of the drain's send, `sentMs`, and its answer) and bounded. What fails a check is counted, never exported.
   */
  check(res: diagnostics.IDrainSpansResponse, hostNowMs: number, sentMs = hostNowMs): GuestSpanBatch {
    const all = Array.isArray(res.spans) ? res.spans : [];
    const dropped = Number.isSafeInteger(res.dropped) && (res.dropped ?? 0) >= 0 ? (res.dropped ?? 0) : 0;
    const guestNow = typeof res.nowMs === 'number' && Number.isFinite(res.nowMs) ? res.nowMs : undefined;
    const spans: GuestSpan[] = [];
    let refused = Math.max(0, all.length - MAX_DRAINED_SPANS);
    for (const raw of all.slice(0, MAX_DRAINED_SPANS)) {
      // The guest read its clock between the drain's send and its answer: the midpoint of the two errs by half the
      // difference of the two ways' delays, where the answer's arrival alone errs by its whole delay.
      const offsetMs = (Math.min(sentMs, hostNowMs) + hostNowMs) / 2 - (guestNow ?? 0);
      const span = guestNow === undefined ? undefined : this.checkSpan(raw, offsetMs, hostNowMs);
      if (span) spans.push(span);
      else refused++;
    }
    return { spans, dropped, refused };
  }

  private checkSpan(raw: diagnostics.IGuestSpan, offsetMs: number, hostNowMs: number): GuestSpan | undefined {
    const { traceId, spanId, parentSpanId } = raw;
    if (typeof traceId !== 'string' || !HEX32.test(traceId) || !this.knows(traceId)) return undefined;
    if (typeof spanId !== 'string' || !HEX16.test(spanId) || /^0+$/.test(spanId)) return undefined;
    if (typeof parentSpanId !== 'string' || !HEX16.test(parentSpanId) || /^0+$/.test(parentSpanId)) return undefined;
    if (typeof raw.name !== 'string' || raw.name.length === 0) return undefined;
    if (typeof raw.startMs !== 'number' || typeof raw.endMs !== 'number') return undefined;
    const startMs = raw.startMs + offsetMs;
    const endMs = raw.endMs + offsetMs;
    if (!Number.isFinite(startMs) || !Number.isFinite(endMs) || endMs < startMs) return undefined;
    if (endMs - startMs > MAX_DURATION_MS || startMs < hostNowMs - MAX_AGE_MS || endMs > hostNowMs + 1000)
      return undefined;
    const attributes: Record<string, string> = Object.create(null) as Record<string, string>;
    const rawAttributes = Array.isArray(raw.attributes) ? raw.attributes : [];
    if (rawAttributes.length > MAX_ATTRIBUTES) return undefined;
    for (const a of rawAttributes) {
      const key = a?.key;
      if (typeof key !== 'string' || key.length > MAX_KEY_BYTES || !ATTRIBUTE_KEY.test(key)) return undefined;
      // hull's own keys (hull.container.id) as the host's spans name them; anything else marked as the guest's.
      attributes[key.startsWith('hull.') ? key : `guest.${key}`] = guestText(a.value ?? '', MAX_VALUE_BYTES);
    }
    const code = raw.statusCode === 1 ? 'ok' : raw.statusCode === 2 ? 'error' : 'unset';
    return {
      traceId,
      spanId,
      parentSpanId,
      name: guestText(raw.name, MAX_NAME_BYTES),
      startMs,
      endMs,
      attributes,
      status: { code, message: code === 'error' ? guestText(raw.statusMessage ?? '', MAX_VALUE_BYTES) : '' },
    };
  }
}
