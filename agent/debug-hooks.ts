/**
 * Test-only fault hooks. They exist so that end-to-end tests can make the guest misbehave the way a broken or
 * hostile one would (hull's liveness tests: the agent hangs). They are honoured only when the host put
 * `hull.debug_hooks=1` on the kernel command line, which hull does only with `[runtime] debug_hooks = true` (off by
 * default); otherwise the annotations are ignored.
 *
 * `io.hull.debug.agent-stop-after-ms` = N on a container: N ms after that container starts, the agent stops itself
 * with SIGSTOP (under hull-init the agent is not PID 1, so the signal is delivered; hull-init does not wait for
 * stopped children, so it stays stopped). As PID 1 (an image without hull-init) SIGSTOP would be ignored, so the
 * agent blocks its own thread instead: from the host both look the same, a channel that no longer answers.
 */
import { log } from './log';
import { kernelParams } from './system';

export const DEBUG_HOOKS_PARAM = 'hull.debug_hooks';
export const AGENT_STOP_ANNOTATION = 'io.hull.debug.agent-stop-after-ms';
const MAX_DELAY_MS = 3_600_000;

export function debugHooksEnabled(params: Map<string, string> = kernelParams()): boolean {
  return params.get(DEBUG_HOOKS_PARAM) === '1';
}

/** Stops the agent for good (see above). */
export function stopAgent(): void {
  log.warn('debug hook: the agent stops itself now', { pid: process.pid });
  if (process.pid !== 1) {
    process.kill(process.pid, 'SIGSTOP');
    return;
  }
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

export class DebugHooks {
  /** Containers created with the stop annotation: the delay, armed when they start. */
  private readonly stopAfter = new Map<string, number>();

  constructor(
    private readonly enabled: boolean,
    private readonly stop: () => void = stopAgent,
  ) {}

  created(containerId: string, annotations: Record<string, string> | null | undefined): void {
    const value = annotations?.[AGENT_STOP_ANNOTATION];
    if (value === undefined) return;
    if (!this.enabled) {
      log.warn('ignoring a debug hook annotation: debug hooks are off', {
        id: containerId,
        annotation: AGENT_STOP_ANNOTATION,
      });
      return;
    }
    const ms = /^\d{1,7}$/.test(value) ? Number(value) : NaN;
    if (!(ms <= MAX_DELAY_MS)) {
      log.warn('ignoring a bad debug hook annotation', { id: containerId, annotation: AGENT_STOP_ANNOTATION });
      return;
    }
    this.stopAfter.set(containerId, ms);
  }

  started(containerId: string): void {
    const ms = this.stopAfter.get(containerId);
    if (ms === undefined) return;
    this.stopAfter.delete(containerId);
    log.warn('debug hook armed: the agent will stop', { id: containerId, afterMs: ms });
    setTimeout(this.stop, ms);
  }

  removed(containerId: string): void {
    this.stopAfter.delete(containerId);
  }
}
