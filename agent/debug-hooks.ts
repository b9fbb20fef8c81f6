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
 *
 * `io.hull.debug.agent-log-flood` = N (at most 100000) on a container: when it is created, the agent writes N log
 * records (info, in batches that let it keep serving), as an agent gone chatty or hostile would (the guest-log
 * tests: the host logs them at a bounded rate and counts the rest).
 */
import { log } from './log';
import { kernelParams } from './system';

export const DEBUG_HOOKS_PARAM = 'hull.debug_hooks';
export const AGENT_STOP_ANNOTATION = 'io.hull.debug.agent-stop-after-ms';
export const AGENT_LOG_FLOOD_ANNOTATION = 'io.hull.debug.agent-log-flood';
const MAX_DELAY_MS = 3_600_000;
const MAX_FLOOD_RECORDS = 100_000;
const FLOOD_BATCH = 500;

/** Writes n info records, FLOOD_BATCH at a time (see above). */
export function floodLog(
  n: number,
  write: (i: number) => void = (i) => log.info('debug hook: log flood', { i }),
): void {
  let i = 0;
  const batch = (): void => {
    for (const end = Math.min(n, i + FLOOD_BATCH); i < end; i++) write(i);
    if (i < n) setImmediate(batch);
  };
  batch();
}

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
    private readonly flood: (n: number) => void = floodLog,
  ) {}

  created(containerId: string, annotations: Record<string, string> | null | undefined): void {
    this.#floodHook(containerId, annotations?.[AGENT_LOG_FLOOD_ANNOTATION]);
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

  #floodHook(containerId: string, value: string | undefined): void {
    if (value === undefined) return;
    const n = /^\d{1,6}$/.test(value) ? Number(value) : NaN;
    if (!this.enabled || !(n <= MAX_FLOOD_RECORDS)) {
      log.warn(
        this.enabled ? 'ignoring a bad debug hook annotation' : 'ignoring a debug hook annotation: debug hooks are off',
        { id: containerId, annotation: AGENT_LOG_FLOOD_ANNOTATION },
      );
      return;
    }
    log.warn('debug hook: the agent floods its log', { id: containerId, records: n });
    this.flood(n);
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
