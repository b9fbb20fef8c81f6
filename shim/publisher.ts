/**
 * Task events to containerd: Events.Forward over ttrpc at $TTRPC_ADDRESS (containerd 1.6), one at a time from one
 * queue so that they arrive in order. Like containerd's own shim publisher: a 5 s deadline per call, a reconnect
 * when the connection broke, and up to 5 attempts per event with a growing pause; an event that still fails is
 * logged and dropped so that the ones behind it go out.
 */
import { Client } from 'ttrpc-ts';
import { errorMessage } from '../errors';
import { EventsService, taskEvent, type TaskEventName, type TaskEventPayload } from '../protos/containerd';
import type { Logger } from '../log';

const CALL_TIMEOUT_MS = 5_000;
const ATTEMPTS = 5;
const NAMESPACE_KEY = 'containerd-namespace-ttrpc';

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

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly logger: Logger,
    private readonly backoffMs = 1_000,
  ) {}

  publish<N extends TaskEventName>(name: N, payload: TaskEventPayload<N>): void {
    if (this.closed) return;
    const { topic, event } = taskEvent(name, payload);
    this.queue.push({ topic, event, timestamp: new Date() });
    this.kick();
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
    this.queue.length = 0;
    this.client?.close();
    this.client = undefined;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed) {
      const item = this.queue[0]!;
      for (let attempt = 1; !this.closed; attempt++) {
        try {
          await this.send(item);
          break;
        } catch (err) {
          this.client?.close();
          this.client = undefined;
          if (attempt >= ATTEMPTS || this.closed) {
            this.logger.error({ topic: item.topic, error: errorMessage(err) }, 'dropping an event containerd did not take');
            break;
          }
          await new Promise((r) => setTimeout(r, this.backoffMs * attempt));
        }
      }
      this.queue.shift();
    }
  }

  private async send(item: Queued): Promise<void> {
    if (!this.client) {
      const client = await Client.connect(this.address, { connectTimeoutMs: CALL_TIMEOUT_MS, metadata: { [NAMESPACE_KEY]: [this.namespace] } });
      if (this.closed) {
        client.close(); // close() ran while connecting: it could not close this one
        throw new Error('the event publisher is closed');
      }
      this.client = client;
    }
    const ms = item.timestamp.getTime();
    await this.client.call(
      EventsService.Forward,
      { envelope: { timestamp: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 }, namespace: this.namespace, topic: item.topic, event: item.event } },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
  }
}
