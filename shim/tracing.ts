/**
 * The shim's tracing switch, the one place that decides whether an OpenTelemetry SDK exists in the process
 * (`[runtime] enable_tracing`, read at the first Create with the rest of the configuration). Off (the default),
 * nothing beyond @opentelemetry/api is loaded and every span call in core/ and agent-client/ is a no-op. On, the
 * SDK (shim/tracing-sdk.ts) is required then, and the spans the guest recorded are drained after each traced Task
 * call and exported with the shim's own.
 */
import { errorMessage } from '../errors';
import type { GuestSpanBatch } from '../agent-client';
import type { Logger } from '../log';
import type { TracingSdk } from './tracing-sdk';

export interface TracingSettings {
  enableTracing: boolean;
  tracingEndpoint: string;
  tracingSamplingRatio: number;
}

/** Where the guest's spans come from (the sandbox's agent, once the VM runs). */
export type GuestSpanSource = () => Promise<GuestSpanBatch | undefined>;

/** Time allowed for the last export at exit. */
const SHUTDOWN_TIMEOUT_MS = 5_000;

export class ShimTracing {
  private sdk: TracingSdk | undefined;
  private decided = false;
  private draining: Promise<void> | undefined;
  private drainAgain = false;
  private guestSpans: GuestSpanSource | undefined;
  /** Guest spans exported, dropped by the guest (buffer full), refused here (failed a check). */
  readonly counts = { exported: 0, dropped: 0, refused: 0 };

  constructor(
    private readonly logger: Logger,
    private readonly resource: Record<string, string>,
  ) {}

  /** Whether spans are being recorded (the SDK is loaded and started). */
  get enabled(): boolean {
    return this.sdk !== undefined;
  }

  /** Whether the SDK's modules are in this process (the shim's own report; the tests check it). */
  static sdkLoaded(): boolean {
    // In a checkout the SDK's own files; installed, the separate bundle holding it (scripts/install.mjs).
    return Object.keys(require.cache).some(
      (f) => f.includes('@opentelemetry/sdk-trace-base') || /[/\\]tracing-sdk\.js$/.test(f),
    );
  }

  /** Decides once: loads and starts the SDK if the configuration asks for it. A failure leaves tracing off. */
  start(settings: TracingSettings | undefined): void {
    if (this.decided) return;
    this.decided = true;
    if (!settings?.enableTracing) return;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when tracing is on
      const { TracingSdk } = require('./tracing-sdk') as typeof import('./tracing-sdk');
      this.sdk = new TracingSdk({
        endpoint: settings.tracingEndpoint,
        samplingRatio: settings.tracingSamplingRatio,
        resource: this.resource,
      });
      this.logger.info(
        { endpoint: settings.tracingEndpoint || '(OTEL_EXPORTER_OTLP_* or localhost:4317)' },
        'tracing on: spans go to the OTLP collector',
      );
    } catch (err) {
      this.logger.error(
        { error: errorMessage(err) },
        'tracing: the OpenTelemetry SDK could not start; tracing stays off',
      );
    }
  }

  setGuestSpanSource(source: GuestSpanSource): void {
    this.guestSpans = source;
  }

  /** After a traced Task call: the guest's spans are drained soon (one drain at a time; calls meanwhile coalesce). */
  afterCall(): void {
    if (!this.sdk || !this.guestSpans) return;
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
      if (this.drainAgain) {
        this.drainAgain = false;
        this.afterCall();
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      const batch = await this.guestSpans?.();
      if (!batch || !this.sdk) return;
      this.sdk.exportGuestSpans(batch.spans);
      this.counts.exported += batch.spans.length;
      this.counts.dropped += batch.dropped;
      this.counts.refused += batch.refused;
      if (batch.dropped || batch.refused)
        this.logger.warn(
          { dropped: batch.dropped, refused: batch.refused, exported: batch.spans.length },
          'tracing: guest spans lost (dropped by the guest: its buffer was full; refused: failed the checks)',
        );
    } catch (err) {
      this.logger.debug({ error: errorMessage(err) }, 'tracing: draining the guest spans failed');
    }
  }

  /**
   * The last guest spans (also those the VM drained as it powered off) and everything pending go to the collector,
   * each step bounded; then the SDK stops.
   */
  async shutdown(): Promise<void> {
    const sdk = this.sdk;
    if (!sdk) return;
    let timer: NodeJS.Timeout | undefined;
    const bounded = (p: Promise<unknown>): Promise<unknown> =>
      Promise.race([p, new Promise((r) => (timer = setTimeout(r, SHUTDOWN_TIMEOUT_MS)))]).finally(() =>
        clearTimeout(timer),
      );
    await bounded(this.draining ?? Promise.resolve());
    // What the VM drained just before it powered off (a SIGTERM teardown: no Task call drains after it).
    if (this.guestSpans) await bounded(this.drain());
    this.sdk = undefined;
    await bounded(sdk.shutdown()).catch((err: unknown) =>
      this.logger.warn({ error: errorMessage(err) }, 'tracing: the last export failed'),
    );
  }
}
