/**
 * OOM events from the guest, coalesced per container and rate limited: the guest decides how often GetOOMEvent
 * answers, and an answer per allocation failure must not become an event per answer to containerd. The first OOM of
 * a container is published at once; those that follow within `intervalMs` are counted, and one event stands for
 * all of them when the interval ends (the log says how many it stands for). So each container gets at most one oom
 * event per interval.
 */
import type { Logger } from '../log';

export const DEFAULT_OOM_INTERVAL_MS = 1_000;

interface Window {
  timer: NodeJS.Timeout;
  /** OOMs seen since the last published event. */
  pending: number;
}

export class OomCoalescer {
  private readonly windows = new Map<string, Window>();
  private stopped = false;

  constructor(
    private readonly publish: (containerId: string) => void,
    private readonly logger: Logger,
    private readonly intervalMs = DEFAULT_OOM_INTERVAL_MS,
  ) {}

  /** One OOM of the container, as the guest reported it. */
  report(containerId: string): void {
    if (this.stopped) return;
    const w = this.windows.get(containerId);
    if (w) {
      w.pending++;
      return;
    }
    this.publish(containerId);
    this.open(containerId);
  }

  private open(containerId: string): void {
    const timer = setTimeout(() => this.close(containerId), this.intervalMs);
    timer.unref();
    this.windows.set(containerId, { timer, pending: 0 });
  }

  /** The interval ended: one event for the OOMs it saw (then another interval), or nothing and forget the container. */
  private close(containerId: string): void {
    const w = this.windows.get(containerId);
    this.windows.delete(containerId);
    if (!w || w.pending === 0 || this.stopped) return;
    this.logger.warn(
      { containerId, coalesced: w.pending, intervalMs: this.intervalMs },
      `${w.pending} OOM events of the container within ${this.intervalMs} ms published as one`,
    );
    this.publish(containerId);
    this.open(containerId);
  }

  /** No further event; what is pending is dropped (the sandbox is going away). */
  stop(): void {
    this.stopped = true;
    for (const w of this.windows.values()) clearTimeout(w.timer);
    this.windows.clear();
  }
}
