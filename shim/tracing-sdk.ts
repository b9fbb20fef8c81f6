/**
 * The OpenTelemetry SDK side of the shim's tracing, loaded by shim/tracing.ts only when `[runtime] enable_tracing`
 * is on (a lazy require; `make install` bundles it apart from the daemon, so the daemon's bundle does not even
 * parse it): a tracer provider with a parent-based ratio sampler, a batch processor and the OTLP/gRPC exporter,
 * a context manager over AsyncLocalStorage, and the guest's spans (already checked by agent-client/tracing.ts)
 * turned into SDK spans for the same exporter.
 *
 * Only the trace SDK, not @opentelemetry/sdk-node: this host measured 56 ms and 16 MB to load these packages,
 * 191 ms and 26 MB for sdk-node, which also brings metrics, logs and instrumentation that the shim does not use.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  context,
  trace,
  type Context,
  type ContextManager,
} from '@opentelemetry/api';
import { hrTimeDuration, millisToHrTime } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import {
  defaultResource,
  detectResources,
  envDetector,
  resourceFromAttributes,
  type Resource,
} from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import type { GuestSpan } from '../agent-client';

export interface SdkSettings {
  /** '' = the exporter's own: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317. */
  endpoint: string;
  samplingRatio: number;
  /** Resource attributes: service.name, hull.sandbox.id, hull.namespace. */
  resource: Record<string, string>;
}

/** OpenTelemetry's context, carried through async calls by AsyncLocalStorage (what context-async-hooks does). */
class AsyncLocalContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the bound function needs both `this`es
    const manager = this;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => (target as (...a: unknown[]) => unknown).apply(this, args));
    } as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

export class TracingSdk {
  private readonly provider: BasicTracerProvider;
  private readonly processor: BatchSpanProcessor;
  private readonly resource: Resource;
  private readonly contextManager = new AsyncLocalContextManager();

  constructor(settings: SdkSettings) {
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (containerd's environment) win over hull's own attributes.
    this.resource = defaultResource()
      .merge(resourceFromAttributes(settings.resource))
      .merge(detectResources({ detectors: [envDetector] }));
    const exporter = new OTLPTraceExporter(settings.endpoint ? { url: settings.endpoint } : {});
    this.processor = new BatchSpanProcessor(exporter, { scheduledDelayMillis: 1000 });
    this.provider = new BasicTracerProvider({
      resource: this.resource,
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.samplingRatio) }),
      spanProcessors: [this.processor],
    });
    context.setGlobalContextManager(this.contextManager.enable());
    trace.setGlobalTracerProvider(this.provider);
  }

  /** The guest's spans, for the exporter: a ttrpc call's own span is the server side of the host's client span. */
  exportGuestSpans(spans: readonly GuestSpan[]): void {
    for (const s of spans) this.processor.onEnd(this.readable(s));
  }

  private readable(s: GuestSpan): ReadableSpan {
    const startTime = millisToHrTime(s.startMs);
    const endTime = millisToHrTime(s.endMs);
    const spanContext = { traceId: s.traceId, spanId: s.spanId, traceFlags: TraceFlags.SAMPLED };
    return {
      name: s.name,
      kind: s.name.includes('/') ? SpanKind.SERVER : SpanKind.INTERNAL,
      spanContext: () => spanContext,
      parentSpanContext: {
        traceId: s.traceId,
        spanId: s.parentSpanId,
        traceFlags: TraceFlags.SAMPLED,
        isRemote: true,
      },
      startTime,
      endTime,
      duration: hrTimeDuration(startTime, endTime),
      status:
        s.status.code === 'error'
          ? { code: SpanStatusCode.ERROR, message: s.status.message }
          : { code: s.status.code === 'ok' ? SpanStatusCode.OK : SpanStatusCode.UNSET },
      attributes: { ...s.attributes, 'hull.guest': true },
      links: [],
      events: [],
      ended: true,
      resource: this.resource,
      instrumentationScope: { name: 'hull-agent' },
      droppedAttributesCount: 0,
      droppedEventsCount: 0,
      droppedLinksCount: 0,
    };
  }

  /** Stops new spans at once, then exports what is pending; bounded by the exporter's own timeout. */
  async shutdown(): Promise<void> {
    // The globals go first: a hung collector can hold the provider's shutdown past the caller's bound, and no span
    // may start on a provider that is going away (the spans already ended are in the processor's queue).
    trace.disable();
    context.disable();
    await this.provider.shutdown();
  }

  async flush(): Promise<void> {
    await this.provider.forceFlush();
  }
}
