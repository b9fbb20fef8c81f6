/**
 * Spans of the sandbox's steps (VM boot and its parts, the share, the pod network), through OpenTelemetry's API
 * only: until the shim loads an SDK (shim/tracing.ts, `[runtime] enable_tracing`) every call here is a no-op, and
 * outside a recording span (a Task call the shim traces) nothing is started at all.
 */
import { SpanStatusCode, context, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { TRACER_NAME } from '../agent-client';
import { errorMessage } from '../errors';

/** Whether the caller is inside a recording span (a traced Task call). */
export function tracing(): boolean {
  return trace.getSpan(context.active())?.isRecording() ?? false;
}

/** Runs `fn` in a child span of the current one (none outside a trace); an error marks the span and is rethrown. */
export async function inSpan<T>(name: string, attributes: Attributes, fn: (span?: Span) => Promise<T>): Promise<T> {
  if (!tracing()) return fn();
  return trace.getTracer(TRACER_NAME).startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : errorMessage(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}

/**
 * A finished span over a past interval (epoch ms), e.g. a part of the boot measured after it: a child of the span
 * current in `parent` (captured while that span still recorded; by now it may have ended).
 */
export function pastSpan(
  name: string,
  startMs: number,
  endMs: number,
  parent: Context = context.active(),
  attributes: Attributes = {},
): void {
  if (!(endMs >= startMs)) return;
  trace.getTracer(TRACER_NAME).startSpan(name, { startTime: startMs, attributes }, parent).end(endMs);
}
