/**
 * A span per containerd.task.v2.Task call, as a wrapper over the service's handlers (so that other wrappers, e.g.
 * metrics, compose with it: `register(TaskService, traceTaskService(metered(impl), ...))`). The span is a server span
 * named `containerd.task.v2.Task/<Method>`, with the sandbox, container and exec ids; containerd's own trace
 * context is its parent when the request's ttrpc metadata carries a W3C `traceparent`. Everything the handler does
 * (core's steps, agent calls and, through them, the guest's spans) nests below it.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, trace, type Context } from '@opentelemetry/api';
import type { HandlerContext, ServiceImplementation } from 'ttrpc-ts';
import { TRACER_NAME } from '../agent-client';
import { errorMessage } from '../errors';
import { TASK_SERVICE, type TaskService } from '../protos/containerd';

type TaskImplementation = ServiceImplementation<typeof TaskService>;

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface TaskTracingOptions {
  sandboxId: string;
  /** The service the spans name (default containerd.task.v2.Task; containerd 2.x calls containerd.task.v3.Task). */
  service?: string;
  /** Whether to trace now (the SDK is loaded); false: the handler runs as it is, no span at all. */
  enabled(): boolean;
  /** Before a call's span starts (Create: the configuration is read there, and may turn tracing on). */
  before?(method: string, request: unknown): void;
  /** After a traced call (the guest's spans are drained then). */
  after?(method: string): void;
}

/** The parent containerd's metadata names (`traceparent`, W3C version 00), or the root context. */
export function parentContext(metadata: Readonly<Record<string, readonly string[]>> | undefined): Context {
  const value = metadata?.traceparent?.[0];
  const m = typeof value === 'string' ? TRACEPARENT.exec(value) : null;
  if (!m) return ROOT_CONTEXT;
  const [, traceId, spanId, flags] = m as unknown as [string, string, string, string];
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: parseInt(flags, 16) & 1, isRemote: true });
}

function idsOf(sandboxId: string, request: unknown): Record<string, string> {
  const r = (request ?? {}) as { id?: unknown; execId?: unknown };
  const attributes: Record<string, string> = { 'hull.sandbox.id': sandboxId };
  if (typeof r.id === 'string' && r.id) attributes['hull.container.id'] = r.id.slice(0, 256);
  if (typeof r.execId === 'string' && r.execId) attributes['hull.exec.id'] = r.execId.slice(0, 256);
  return attributes;
}

export function traceTaskService(impl: TaskImplementation, o: TaskTracingOptions): TaskImplementation {
  const wrapped: Record<string, unknown> = {};
  for (const [method, handler] of Object.entries(impl) as [string, (req: unknown, ctx: HandlerContext) => unknown][]) {
    wrapped[method] = async (req: unknown, ctx: HandlerContext): Promise<unknown> => {
      o.before?.(method, req);
      if (!o.enabled()) return handler(req, ctx);
      const parent = parentContext(ctx.metadata);
      const service = o.service ?? TASK_SERVICE;
      const span = trace.getTracer(TRACER_NAME).startSpan(
        `${service}/${method}`,
        {
          kind: SpanKind.SERVER,
          attributes: {
            'rpc.system': 'ttrpc',
            'rpc.service': service,
            'rpc.method': method,
            ...idsOf(o.sandboxId, req),
          },
        },
        parent,
      );
      try {
        return await context.with(trace.setSpan(parent, span), () => handler(req, ctx));
      } catch (err) {
        const message = errorMessage(err);
        const code = (err as { code?: unknown }).code;
        if (typeof code === 'number') span.setAttribute('rpc.ttrpc.status_code', code);
        span.setStatus({ code: SpanStatusCode.ERROR, message });
        throw err;
      } finally {
        span.end();
        o.after?.(method);
      }
    };
  }
  return wrapped as TaskImplementation;
}
