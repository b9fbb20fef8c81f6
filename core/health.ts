/**
 * The agent's liveness, checked from the host: a hung agent (or a hung VM: QEMU stopped, the guest kernel locked up)
 * answers nothing, and without a check its tasks would look alive for ever. Every `intervalMs` one Health.Check goes
 * out, given `timeoutMs` to answer; when no check has succeeded for `timeoutMs`, the VM is declared lost (once). So
 * a hang is noticed within intervalMs + timeoutMs. A check in flight when the monitor stops is abandoned.
 */
import { UnavailableError, errorMessage } from '../errors';
import type { HealthStatus } from '../agent-client';
import type { Logger } from '../log';

export interface HealthSettings {
  /** Between the end of one check and the start of the next; 0 = no health checks. */
  intervalMs: number;
  /** How long the agent may go without answering a check successfully. */
  timeoutMs: number;
}

/** One Health.Check; the signal aborts it when the monitor gives up on it or stops. */
export type HealthCheck = (options: { signal: AbortSignal; timeoutMs: number }) => Promise<HealthStatus>;

export class HealthMonitor {
  private readonly stopper = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    private readonly check: HealthCheck,
    private readonly settings: HealthSettings,
    private readonly onFailure: (err: UnavailableError) => void,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.running || this.settings.intervalMs <= 0) return;
    this.running = this.loop();
  }

  /** No further check; resolves once the loop has ended. */
  async stop(): Promise<void> {
    this.stopper.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { intervalMs, timeoutMs } = this.settings;
    const stop = this.stopper.signal;
    let lastOk = Date.now();
    let failures = 0;
    while (!stop.aborted) {
      await pause(intervalMs, stop);
      if (stop.aborted) return;
      const problem = await this.once(timeoutMs, stop);
      if (stop.aborted) return;
      if (problem === undefined) {
        if (failures > 0) this.logger.info({ failures }, 'the agent answers health checks again');
        lastOk = Date.now();
        failures = 0;
        continue;
      }
      failures++;
      const silentMs = Date.now() - lastOk;
      this.logger.warn({ problem, failures, silentMs, timeoutMs }, 'agent health check failed');
      if (silentMs >= timeoutMs) {
        this.onFailure(
          new UnavailableError(
            `the agent has not answered a health check for ${silentMs} ms (timeout ${timeoutMs} ms; last: ${problem})`,
          ),
        );
        return;
      }
    }
  }

  /** One check, bounded by `timeoutMs` on this side too: undefined when it answered SERVING, else what went wrong. */
  private async once(timeoutMs: number, stop: AbortSignal): Promise<string | undefined> {
    const call = new AbortController();
    const onStop = (): void => call.abort(stop.reason);
    stop.addEventListener('abort', onStop, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<string>((resolve) => {
      timer = setTimeout(() => {
        call.abort(new Error('health check timed out'));
        resolve(`no answer within ${timeoutMs} ms`);
      }, timeoutMs);
    });
    try {
      const answered = this.check({ signal: call.signal, timeoutMs }).then(
        (status) => (status === 'serving' ? undefined : `the agent says it is ${status}`),
        (err: unknown) => errorMessage(err),
      );
      return await Promise.race([answered, expired]);
    } finally {
      clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
    }
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
