/**
 * A sandbox's VM and its agent, booted as one step: prepare and start the hypervisor, then dial the agent before
 * the boot deadline. If any step fails (QEMU exits early, the agent never answers, the caller aborts) the VM and
 * everything it started are stopped and removed before the error is thrown, and the error carries what the guest
 * said last. Shutdown goes the gentle way first (the agent powers the guest off), then forced.
 */
import fs from 'node:fs';
import { DeadlineExceededError, ShimError, UnavailableError, errorMessage } from '../errors';
import type { AgentClient, AgentEndpoint, DialOptions } from '../agent-client';
import { KataAgentClient } from '../agent-client';
import type { Hypervisor, VmConfig, VmExit } from '../hypervisor/types';
import type { Logger } from '../log';

export type AgentDialer = (endpoint: AgentEndpoint, options: DialOptions) => Promise<AgentClient>;

export interface BootOptions {
  /** From the start of boot until the agent answers. */
  bootTimeoutMs: number;
  logger: Logger;
  signal?: AbortSignal;
  /** How to reach the agent (the real client by default; tests pass a fake). */
  dial?: AgentDialer;
}

/** Milliseconds from the start of boot, as measured on the host. */
export interface BootTimings {
  /** prepare + QEMU spawned until QMP reports it running. */
  qemuStartedMs: number;
  /** until the agent answered Health.Check. */
  agentReadyMs: number;
}

const CONSOLE_LINES = 15;

export class SandboxVm {
  private exited: VmExit | undefined;
  private destroyed = false;

  private constructor(
    readonly hypervisor: Hypervisor,
    readonly agent: AgentClient,
    readonly timings: BootTimings,
    private readonly logger: Logger,
  ) {
    void hypervisor.wait().then((exit) => {
      this.exited = exit;
      if (!exit.expected) logger.warn({ exit: describeExit(exit) }, 'the VM exited unexpectedly');
    });
  }

  static async boot(hypervisor: Hypervisor, config: VmConfig, options: BootOptions): Promise<SandboxVm> {
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
      await hypervisor.prepare(config);
      started = true;
      await hypervisor.start(abort.signal);
      const qemuStartedMs = performance.now() - t0;
      void hypervisor.wait().then((exit) => abort.abort(new UnavailableError(`the VM exited while booting: ${describeExit(exit)}`)));
      const agent = await dial(hypervisor.agentAddress(), { deadline, signal: abort.signal });
      const timings = { qemuStartedMs, agentReadyMs: performance.now() - t0 };
      options.logger.info({ id: config.id, accel: hypervisor.accel(), ...timings }, 'VM booted, agent ready');
      return new SandboxVm(hypervisor, agent, timings, options.logger);
    } catch (err) {
      const consoleTail = started ? readConsoleTail(hypervisor.consoleLogPath()) : [];
      if (started) {
        await hypervisor.stop({ force: true }).catch((e: unknown) => options.logger.warn({ error: errorMessage(e) }, 'stopping a VM that failed to boot'));
        await hypervisor.cleanup().catch((e: unknown) => options.logger.warn({ error: errorMessage(e) }, 'cleaning up a VM that failed to boot'));
      }
      throw withConsole(err, consoleTail);
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
    if (!this.destroyed && !this.exited) {
      this.destroyed = true;
      try {
        await this.agent.destroySandbox();
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
}

export function describeExit(exit: VmExit): string {
  const how = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
  const stderr = exit.stderrTail.trim() ? `; qemu stderr: ${exit.stderrTail.trim().split('\n').slice(-5).join(' | ')}` : '';
  const console = exit.consoleTail.length ? `; guest console: ${exit.consoleTail.slice(-CONSOLE_LINES).join(' | ')}` : '';
  return `${how}${stderr}${console}`;
}

function readConsoleTail(file: string): string[] {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').map((l) => l.trimEnd()).filter(Boolean).slice(-CONSOLE_LINES);
  } catch {
    return [];
  }
}

/** Adds the guest console's last lines to a boot failure that does not already carry them. */
function withConsole(err: unknown, consoleTail: string[]): unknown {
  if (!(err instanceof ShimError) || consoleTail.length === 0 || err.message.includes('guest console:')) return err;
  const Ctor = err.constructor as new (message: string, options: { cause: unknown }) => ShimError;
  return new Ctor(`${err.message}; guest console: ${consoleTail.join(' | ')}`, { cause: err });
}
