/**
 * Task events to containerd: Events.Forward over ttrpc at $TTRPC_ADDRESS (containerd 1.6), one at a time from one
 * queue so that they arrive in order. Like containerd's own shim publisher: a 5 s deadline per call, a reconnect
 * when the connection broke, and up to 5 attempts per event with a growing pause; an event that still fails is
 * logged and dropped so that the ones behind it go out.
 *
 * The queue is bounded (`maxQueued`, 1024 by default): a guest that makes events faster than containerd takes them
 * (OOMs, exits of many execs) must not grow the shim without limit. When it is full the oldest queued event that is
 * not an exit is dropped (never the one being sent); exits are dropped only when the queue holds nothing else, past
 * four times the bound. Drops are counted per topic and logged: once when dropping starts, then as a summary
 * when the queue has drained (and at close).
 */
import { Client } from 'ttrpc-ts';
import { errorMessage } from '../errors';
import { EventsService, taskEvent, type TaskEventName, type TaskEventPayload } from '../protos/containerd';
import type { Logger } from '../log';

const CALL_TIMEOUT_MS = 5_000;
const ATTEMPTS = 5;
const NAMESPACE_KEY = 'containerd-namespace-ttrpc';
export const DEFAULT_MAX_QUEUED = 1024;
const EXIT_TOPIC = '/tasks/exit';

interface Queued {
  topic: string;
  event: ReturnType<typeof taskEvent>['event'];
  timestamp: Date;
}

export class EventPublisher {
  private readonly queue: Queued[] = [];
  private client: Client | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  /** The head of the queue is being sent (it is never the one dropped). */
  private sending = false;
  /** Events dropped because the queue was full, per topic, since the last summary. */
  private dropped = new Map<string, number>();

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly logger: Logger,
    private readonly backoffMs = 1_000,
    private readonly maxQueued = DEFAULT_MAX_QUEUED,
  ) {}

  publish<N extends TaskEventName>(name: N, payload: TaskEventPayload<N>): void {
    if (this.closed) return;
    const { topic, event } = taskEvent(name, payload);
    if (this.queue.length >= this.maxQueued) this.makeRoom(topic);
    this.queue.push({ topic, event, timestamp: new Date() });
    this.kick();
  }

  /** Events queued and not yet sent (the one being sent included). */
  get queued(): number {
    return this.queue.length;
  }

  /** The queue is full: drops the oldest non-exit event not being sent; an exit only past 4 × the bound. */
  private makeRoom(incoming: string): void {
    const first = this.sending ? 1 : 0;
    let victim = this.queue.findIndex((q, i) => i >= first && q.topic !== EXIT_TOPIC);
    if (victim < 0) {
      if (incoming === EXIT_TOPIC && this.queue.length < 4 * this.maxQueued) return; // only exits queued: keep them
      victim = first < this.queue.length ? first : -1;
    }
    if (victim < 0) return;
    const [gone] = this.queue.splice(victim, 1);
    const total = [...this.dropped.values()].reduce((a, b) => a + b, 0);
    this.dropped.set(gone!.topic, (this.dropped.get(gone!.topic) ?? 0) + 1);
    if (total === 0) {
      this.logger.warn(
        { maxQueued: this.maxQueued, topic: gone!.topic },
        'the event queue to containerd is full: dropping the oldest events (exits last)',
      );
    }
  }

  /** Logs how many events were dropped since the last summary, per topic. */
  private reportDropped(): void {
    if (this.dropped.size === 0) return;
    const byTopic = Object.fromEntries(this.dropped);
    const total = [...this.dropped.values()].reduce((a, b) => a + b, 0);
    this.dropped = new Map();
    this.logger.warn({ dropped: total, byTopic }, `dropped ${total} events to containerd because the queue was full`);
  }

  /** Starts draining unless a drain runs; one that ends re-checks the queue (an event may land as it finishes). */
  private kick(): void {
    if (this.running || this.closed) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  /** Waits (up to `timeoutMs`) for queued events to go out, then stops. */
  async close(timeoutMs = 2_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    if (this.running) await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    this.closed = true;
    this.reportDropped();
    this.queue.length = 0;
    this.client?.close();
    this.client = undefined;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed) {
      const item = this.queue[0]!;
      this.sending = true;
      for (let attempt = 1; !this.closed; attempt++) {
        try {
          await this.send(item);
          break;
        } catch (err) {
          this.client?.close();
          this.client = undefined;
          if (attempt >= ATTEMPTS || this.closed) {
            this.logger.error(
              { topic: item.topic, error: errorMessage(err) },
              'dropping an event containerd did not take',
            );
            break;
          }
          await new Promise((r) => setTimeout(r, this.backoffMs * attempt));
        }
      }
      this.sending = false;
      if (this.queue[0] === item) this.queue.shift();
    }
    this.reportDropped();
  }

  private async send(item: Queued): Promise<void> {
    if (!this.client) {
      const client = await Client.connect(this.address, {
        connectTimeoutMs: CALL_TIMEOUT_MS,
        metadata: { [NAMESPACE_KEY]: [this.namespace] },
      });
      if (this.closed) {
        client.close(); // close() ran while connecting: it could not close this one
        throw new Error('the event publisher is closed');
      }
      this.client = client;
    }
    const ms = item.timestamp.getTime();
    await this.client.call(
      EventsService.Forward,
      {
        envelope: {
          timestamp: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
          namespace: this.namespace,
          topic: item.topic,
          event: item.event,
        },
      },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
  }
}
