/**
 * hull-monitor's work for one scrape of its /metrics: find every shim's metrics socket under the state folder,
 * scrape them all at once, each within the deadline and the byte cap, ask CRI for the pods' names meanwhile, and
 * serve the union with `sandbox_id`, `containerd_namespace` (and `pod_name`, `pod_namespace`, `pod_uid` when CRI knows the sandbox) added to
 * every sample, followed by the monitor's own figures. Nothing runs between scrapes.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { mergeExposition, writeExposition, type Family } from './exposition';
import type { PodLabels, PodLookup } from './pods';
import { findShimSockets, scrapeShim, ScrapeError, type ScrapeFailure } from './shims';

export interface MonitorOptions {
  stateDir: string;
  /** Pod names by sandbox id (CRI); absent = sandbox ids only. */
  pods?: PodLookup;
  /** Deadline of each shim's scrape, and of the CRI lookup. */
  timeoutMs: number;
  /** The most bytes read from one shim. */
  maxBytes: number;
}

export const DEFAULT_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_BYTES = 4 << 20;

export class HullMonitor {
  readonly registry = new Registry();
  private readonly errors: Counter<'reason'>;
  private readonly criErrors: Counter;
  private readonly dropped: Counter;
  private readonly shims: Gauge;
  private readonly up: Gauge<'sandbox_id' | 'containerd_namespace'>;
  private readonly duration: Gauge;

  constructor(private readonly o: MonitorOptions) {
    const r = [this.registry];
    this.errors = new Counter({
      name: 'hull_monitor_scrape_errors_total',
      help: 'Shim sockets that could not be scraped, by reason (refused: a stale socket of a dead shim; timeout; too_large; http_status; error).',
      labelNames: ['reason'] as const,
      registers: r,
    });
    for (const reason of ['refused', 'timeout', 'too_large', 'http_status', 'error'] as ScrapeFailure[])
      this.errors.inc({ reason }, 0);
    this.criErrors = new Counter({
      name: 'hull_monitor_cri_errors_total',
      help: 'Scrapes whose CRI lookup of pod names failed (their samples carry sandbox_id only).',
      registers: r,
    });
    this.dropped = new Counter({
      name: 'hull_monitor_dropped_lines_total',
      help: "Lines of shims' answers dropped as malformed or inconsistent.",
      registers: r,
    });
    this.shims = new Gauge({
      name: 'hull_monitor_shims',
      help: 'Shim metrics sockets found in the last scrape.',
      registers: r,
    });
    this.up = new Gauge({
      name: 'hull_monitor_shim_up',
      help: 'Whether each shim found in the last scrape answered (1) or not (0).',
      labelNames: ['sandbox_id', 'containerd_namespace'] as const,
      registers: r,
    });
    this.duration = new Gauge({
      name: 'hull_monitor_scrape_duration_seconds',
      help: 'How long the last scrape of every shim took.',
      registers: r,
    });
  }

  async scrape(): Promise<string> {
    const t0 = performance.now();
    const sockets = findShimSockets(this.o.stateDir);
    const podsP: Promise<Map<string, PodLabels> | undefined> = this.o.pods
      ? this.o.pods(this.o.timeoutMs).catch(() => {
          this.criErrors.inc();
          return undefined;
        })
      : Promise.resolve(undefined);
    const [pods, texts] = await Promise.all([
      podsP,
      Promise.allSettled(sockets.map((s) => scrapeShim(s.path, this.o))),
    ]);
    const families = new Map<string, Family>();
    this.up.reset();
    sockets.forEach((s, i) => {
      const res = texts[i]!;
      this.up.set({ sandbox_id: s.sandboxId, containerd_namespace: s.namespace }, res.status === 'fulfilled' ? 1 : 0);
      if (res.status === 'rejected') {
        this.errors.inc({ reason: res.reason instanceof ScrapeError ? res.reason.reason : 'error' });
        return;
      }
      const labels = { sandbox_id: s.sandboxId, containerd_namespace: s.namespace, ...(pods?.get(s.sandboxId) ?? {}) };
      const dropped = mergeExposition(res.value, labels, families);
      if (dropped > 0) this.dropped.inc(dropped);
    });
    this.shims.set(sockets.length);
    this.duration.set((performance.now() - t0) / 1000);
    return writeExposition(families.values()) + (await this.registry.metrics());
  }
}
