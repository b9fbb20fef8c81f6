/**
 * A sandbox's VM and its agent, booted as one step: prepare and start the hypervisor, then dial the agent before
 * the boot deadline. If any step fails (QEMU exits early, the agent never answers, the caller aborts) the VM and
 * everything it started are stopped and removed before the error is thrown, and the error carries what the guest
 * said last. Shutdown goes the gentle way first (the agent powers the guest off), then forced.
 */
import { DeadlineExceededError, ShimError, UnavailableError, errorMessage } from '../errors';
import type { AgentClient, AgentEndpoint, DialOptions, GuestSpanBatch } from '../agent-client';
import { KataAgentClient } from '../agent-client';
import type { Hypervisor, VmConfig, VmExit } from '../hypervisor/types';
import type { Logger } from '../log';
import { HealthMonitor, type HealthSettings } from './health';
import { context } from '@opentelemetry/api';
import { inSpan, pastSpan, tracing } from './tracing';

export type AgentDialer = (endpoint: AgentEndpoint, options: DialOptions) => Promise<AgentClient>;

export interface BootOptions {
  /** From the start of boot until the agent answers. */
  bootTimeoutMs: number;
  logger: Logger;
  signal?: AbortSignal;
  /** How to reach the agent (the real client by default; tests pass a fake). */
  dial?: AgentDialer;
  /** Periodic Health.Check once booted (core/health.ts); absent or interval 0 = none. */
  health?: HealthSettings;
}

/** Milliseconds from the start of boot, as measured on the host. */
export interface BootTimings {
  /** prepare + QEMU spawned until QMP reports it running. */
  qemuStartedMs: number;
  /** until the agent answered Health.Check. */
  agentReadyMs: number;
}

const CONSOLE_LINES = 15;
/**
 * The deadline of the guest spans' last drain, right after DestroySandbox (the guest holds its power-off for it, up
 * to 2 s: agent/service.ts): a guest that does not answer delays the shutdown by this much at most.
 */
export const LAST_DRAIN_MS = 1_000;
/** The agent's last log records a boot failure carries (its own port; hypervisor/guest-log.ts). */
const AGENT_LOG_LINES = 5;

export class SandboxVm {
  private exited: VmExit | undefined;
  private destroyed = false;
  /** shutdown() has begun: a connection closing from here on is expected. */
  private closing = false;
  /** Why the VM was declared lost (the agent connection broke, or a health check failed): once. */
  private lostReason: Error | undefined;
  private readonly lostListeners = new Set<(err: Error) => void>();
  private readonly health: HealthMonitor | undefined;
  /** The guest's spans drained after DestroySandbox, until the sandbox takes them for the exporter. */
  private lastSpans: GuestSpanBatch | undefined;

  private constructor(
    readonly hypervisor: Hypervisor,
    readonly agent: AgentClient,
    readonly timings: BootTimings,
    private readonly logger: Logger,
    health: HealthSettings | undefined,
  ) {
    void hypervisor.wait().then((exit) => {
      this.exited = exit;
      if (!exit.expected) logger.warn({ exit: describeExit(exit) }, 'the VM exited unexpectedly');
    });
    agent.onClose((err) => this.lose(err));
    if (health && health.intervalMs > 0) {
      this.health = new HealthMonitor(
        (o) => agent.check(o),
        health,
        (err) => this.lose(err, { kill: true }),
        logger,
      );
      this.health.start();
    }
  }

  /**
   * Calls `listener` once if the VM is lost outside shutdown(): the agent connection broke (QEMU died), or the agent
   * stopped answering health checks (then QEMU has been killed: a hung VM is a dead one). Every process of the
   * sandbox is gone either way.
   */
  onLost(listener: (err: Error) => void): void {
    if (this.lostReason) queueMicrotask(() => listener(this.lostReason!));
    else this.lostListeners.add(listener);
  }

  private lose(err: Error, how: { kill?: boolean } = {}): void {
    if (this.closing || this.lostReason) return;
    this.lostReason = err;
    void this.health?.stop();
    const tell = (): void => {
      for (const l of this.lostListeners) l(err);
      this.lostListeners.clear();
    };
    if (!how.kill) return tell();
    // A hung VM is a dead one: its processes are reported exited once QEMU is gone, not while it still runs.
    this.logger.error(
      { error: errorMessage(err), qemuPid: this.hypervisor.pid() },
      'the agent is hung: stopping the VM',
    );
    void this.hypervisor
      .stop({ force: true })
      .catch((e: unknown) => this.logger.warn({ error: errorMessage(e) }, 'stopping a hung VM'))
      .finally(tell);
  }

  /**
   * Traced as `vm.boot`, with `vm.qemu_start` (prepare, spawn, until QMP reports it running), `vm.guest_boot` (the
   * guest kernel and init, until the agent's process started) and `vm.agent_ready` (the agent, until it answered
   * Health.Check): the last two are split by the guest's own uptimes (GuestInfo), asked only when tracing.
   */
  static async boot(hypervisor: Hypervisor, config: VmConfig, options: BootOptions): Promise<SandboxVm> {
    return inSpan('vm.boot', { 'hull.sandbox.id': config.id }, () => SandboxVm.bootVm(hypervisor, config, options));
  }

  private static async bootVm(hypervisor: Hypervisor, config: VmConfig, options: BootOptions): Promise<SandboxVm> {
    const t0 = performance.now();
    const deadline = Date.now() + options.bootTimeoutMs;
    const dial = options.dial ?? ((endpoint, dialOptions) => KataAgentClient.dial(endpoint, dialOptions));
    // Aborted by the caller, the boot deadline (during QEMU start), or the VM exiting (during the dial).
    const abort = new AbortController();
    const onCallerAbort = (): void => abort.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const deadlineTimer = setTimeout(
      () => abort.abort(new DeadlineExceededError(`the VM did not boot within ${options.bootTimeoutMs} ms`)),
      options.bootTimeoutMs,
    );
    let started = false;
    try {
      await inSpan('vm.qemu_start', {}, async () => {
        await hypervisor.prepare(config);
        started = true;
        await hypervisor.start(abort.signal);
      });
      const qemuStartedMs = performance.now() - t0;
      const runningAt = Date.now();
      void hypervisor
        .wait()
        .then((exit) => abort.abort(new UnavailableError(`the VM exited while booting: ${describeExit(exit)}`)));
      const agent = await dial(hypervisor.agentAddress(), { deadline, signal: abort.signal });
      const timings = { qemuStartedMs, agentReadyMs: performance.now() - t0 };
      // Not awaited: the boot does not wait for the guest's figures (a round trip, long under TCG).
      if (tracing()) void traceGuestBoot(agent, runningAt, Date.now());
      options.logger.info({ id: config.id, accel: hypervisor.accel(), ...timings }, 'VM booted, agent ready');
      return new SandboxVm(hypervisor, agent, timings, options.logger, options.health);
    } catch (err) {
      const consoleTail = started ? hypervisor.consoleTail(CONSOLE_LINES) : [];
      const agentLogTail = started ? (hypervisor.agentLogTail?.(AGENT_LOG_LINES) ?? []) : [];
      if (started) {
        await hypervisor
          .stop({ force: true })
          .catch((e: unknown) => options.logger.warn({ error: errorMessage(e) }, 'stopping a VM that failed to boot'));
        await hypervisor
          .cleanup()
          .catch((e: unknown) =>
            options.logger.warn({ error: errorMessage(e) }, 'cleaning up a VM that failed to boot'),
          );
      }
      throw withConsole(err, consoleTail, agentLogTail);
    } finally {
      clearTimeout(deadlineTimer);
      options.signal?.removeEventListener('abort', onCallerAbort);
    }
  }

  /**
   * Ends the VM: DestroySandbox (the agent unmounts and powers off), waiting up to `gracefulMs` for QEMU to exit,
   * then a forced stop. Removes everything the VM left in its state folder. Safe to call twice.
   */
  async shutdown(options: { gracefulMs: number } = { gracefulMs: 10_000 }): Promise<VmExit> {
    this.closing = true;
    await this.health?.stop();
    if (!this.destroyed && !this.exited && !this.lostReason) {
      this.destroyed = true;
      try {
        await this.agent.destroySandbox();
        await this.drainLastSpans();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.hypervisor.wait(), new Promise((r) => (timer = setTimeout(r, options.gracefulMs)))]);
        clearTimeout(timer); // a pending timer would keep the process alive for the whole grace period
      } catch (err) {
        this.logger.warn({ error: errorMessage(err) }, 'graceful VM shutdown failed; stopping it');
      }
    }
    await this.agent.close();
    await this.hypervisor.stop({ force: false });
    const exit = await this.hypervisor.wait();
    await this.hypervisor.cleanup();
    return exit;
  }

  /**
   * The spans the guest recorded until it powers off (DestroySandbox's own among them), drained before the VM goes
   * away, within LAST_DRAIN_MS. The agent client sends no drain unless a traced call went to the guest since the last
   * one: with tracing off nothing is asked.
   */
  private async drainLastSpans(): Promise<void> {
    if (!this.agent.drainSpans) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      const batch = await Promise.race([
        this.agent.drainSpans({ timeoutMs: LAST_DRAIN_MS }),
        new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), LAST_DRAIN_MS))),
      ]);
      if (batch && (batch.spans.length > 0 || batch.dropped > 0 || batch.refused > 0)) this.lastSpans = batch;
      if (!batch) this.logger.debug({}, `tracing: the last drain of the guest's spans took over ${LAST_DRAIN_MS} ms`);
    } catch (err) {
      this.logger.debug({ error: errorMessage(err) }, "tracing: the last drain of the guest's spans failed");
    } finally {
      clearTimeout(timer);
    }
  }

  /** The guest spans drained at shutdown, once (the shim exports them). */
  takeLastSpans(): GuestSpanBatch | undefined {
    const batch = this.lastSpans;
    this.lastSpans = undefined;
    return batch;
  }
}

/** `vm.guest_boot` and `vm.agent_ready` between QEMU running and the agent's answer (epoch ms), split by the guest. */
async function traceGuestBoot(agent: AgentClient, runningAt: number, readyAt: number): Promise<void> {
  const bootSpan = context.active();
  let agentMs: number | undefined;
  try {
    const d = await agent.guestDetails();
    const ms = d.agentReadyMs - d.agentStartedMs; // guest uptimes: the agent's own start, on the guest's clock
    if (Number.isFinite(ms) && ms >= 0) agentMs = ms;
  } catch {
    // an older agent, or none: the boot stays one part
  }
  const split = agentMs === undefined ? readyAt : Math.max(runningAt, readyAt - agentMs);
  pastSpan('vm.guest_boot', runningAt, split, bootSpan);
  if (agentMs !== undefined) pastSpan('vm.agent_ready', split, readyAt, bootSpan);
}

export function describeExit(exit: VmExit): string {
  const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
  const stderr = exit.stderrTail.trim()
    ? `; qemu stderr: ${exit.stderrTail.trim().split('\n').slice(-5).join(' | ')}`
    : '';
  const console = exit.consoleTail.length
    ? `; guest console: ${exit.consoleTail.slice(-CONSOLE_LINES).join(' | ')}`
    : '';
  return `${how}${stderr}${console}`;
}

/** Adds the guest console's and the agent log's last lines to a boot failure that does not already carry them. */
function withConsole(err: unknown, consoleTail: string[], agentLogTail: string[] = []): unknown {
  if (!(err instanceof ShimError)) return err;
  const console =
    consoleTail.length === 0 || err.message.includes('guest console:')
      ? ''
      : `; guest console: ${consoleTail.join(' | ')}`;
  const agent = agentLogTail.length === 0 ? '' : `; agent log: ${agentLogTail.join(' | ')}`;
  if (console === '' && agent === '') return err;
  const Ctor = err.constructor as new (message: string, options: { cause: unknown }) => ShimError;
  return new Ctor(`${err.message}${console}${agent}`, { cause: err });
}
