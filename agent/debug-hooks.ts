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
 *
 * Channel floors for bench/datapath.ts (what the data paths are measured against), on a container when it is created:
 * - `io.hull.debug.serial-floor` = N (at most 1 GiB): the agent writes N zero bytes, no protocol, to the test-only
 *   virtio-serial port DEBUG_PORT_NAME (the host adds it with debug hooks on; its writes block until the host reads);
 * - `io.hull.debug.tcp-floor` = `<IPv4>:<port>:<N>`: the agent connects there over the pod network and sends N zero
 *   bytes, then ends the connection.
 * Both write FLOOR_CHUNK at a time, one write in flight, as the agent's own channel does.
 *
 * `io.hull.debug.profile` = `[D+]N` ms (each at most 60000) on a container when it is created: where the guest's CPU
 * goes for N ms from D ms on (default 0), for the data path benchmarks: the guest's CPU time by kind (/proc/stat), by process (/proc/<pid>/stat,
 * by command name) and the agent's own JavaScript by function (V8's sampling profiler, self time). Written as one
 * line of JSON, after a line with its length, to the test-only port DEBUG_PORT_NAME.
 */
import fs from 'node:fs';
import { Session } from 'node:inspector';
import net from 'node:net';
import { log } from './log';
import { findSerialPort } from './port';
import { outputTotals } from './process';
import { kernelParams } from './system';

export const DEBUG_HOOKS_PARAM = 'hull.debug_hooks';
export const AGENT_STOP_ANNOTATION = 'io.hull.debug.agent-stop-after-ms';
export const AGENT_LOG_FLOOD_ANNOTATION = 'io.hull.debug.agent-log-flood';
const MAX_DELAY_MS = 3_600_000;
const MAX_FLOOD_RECORDS = 100_000;
const FLOOD_BATCH = 500;
export const SERIAL_FLOOR_ANNOTATION = 'io.hull.debug.serial-floor';
export const TCP_FLOOR_ANNOTATION = 'io.hull.debug.tcp-floor';
/** The test-only raw port (hypervisor's DEBUG_SERIAL_NAME). */
export const DEBUG_PORT_NAME = 'hull.debug.0';
export const MAX_FLOOR_BYTES = 1 << 30;
const FLOOR_CHUNK = 1 << 20;

/** A floor hook's target: the raw port, or a TCP address. */
export type FloorTarget =
  { kind: 'serial'; bytes: number } | { kind: 'tcp'; host: string; port: number; bytes: number };

export const PROFILE_ANNOTATION = 'io.hull.debug.profile';
const MAX_PROFILE_MS = 60_000;

/** Every process's CPU ticks (utime + stime) by command name, and the guest's /proc/stat cpu line by field. */
function cpuSnapshot(): { total: Record<string, number>; procs: Record<string, number> } {
  const fields = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'];
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const total = Object.fromEntries(fields.map((f, i) => [f, line[i] ?? 0]));
  const procs: Record<string, number> = {};
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = pid === String(process.pid) ? 'agent' : comm.replace(/\/\d+$/, '/N');
      procs[name] = (procs[name] ?? 0) + Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return { total, procs };
}

const delta = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
  Object.fromEntries(
    Object.entries(b)
      .map(([k, v]) => [k, v - (a[k] ?? 0)] as const)
      .filter(([, v]) => v > 0)
      .sort((x, y) => y[1] - x[1])
      .slice(0, 30),
  );

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Profiles the guest for `ms` (see above) and writes the result to the test-only port; logs, never throws. */
export function profileGuest(ms: number): void {
  const session = new Session();
  session.connect();
  const before = cpuSnapshot();
  const output0 = { ...outputTotals };
  session.post('Profiler.enable', () =>
    session.post('Profiler.start', () => {
      setTimeout(() => {
        session.post('Profiler.stop', (err, result) => {
          session.disconnect();
          const after = cpuSnapshot();
          const self: Record<string, number> = {};
          const profile = result?.profile as { nodes: ProfileNode[]; samples?: number[] } | undefined;
          if (!err && profile) {
            const total = profile.samples?.length || 1;
            for (const n of profile.nodes) {
              const f = n.callFrame;
              const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\//, '')}:${f.lineNumber + 1}`;
              self[key] = (self[key] ?? 0) + ((n.hitCount ?? 0) * ms) / total;
            }
          }
          const text = JSON.stringify({
            ms,
            ticksPerSecond: 100,
            cpu: delta(before.total, after.total),
            processes: delta(before.procs, after.procs),
            output: delta(output0, outputTotals),
            agentSelfMs: delta({}, self),
          });
          const payload = Buffer.from(`${Buffer.byteLength(text)}\n${text}`);
          const device = findSerialPort(DEBUG_PORT_NAME);
          if (!device) return log.warn('debug hook: no port for the profile', { port: DEBUG_PORT_NAME });
          fs.writeFile(device, payload, (werr) =>
            werr ? log.warn('debug hook: profile not written', { error: werr.message }) : undefined,
          );
        });
      }, ms);
    }),
  );
}

/** The floor annotations' values, checked; undefined when bad. */
export function parseFloor(annotation: string, value: string): FloorTarget | undefined {
  if (annotation === SERIAL_FLOOR_ANNOTATION) {
    const bytes = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
    return bytes >= 1 && bytes <= MAX_FLOOR_BYTES ? { kind: 'serial', bytes } : undefined;
  }
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5}):(\d{1,10})$/.exec(value);
  if (!m || net.isIPv4(m[1]!) === false) return undefined;
  const port = Number(m[2]);
  const bytes = Number(m[3]);
  if (port < 1 || port > 65535 || bytes < 1 || bytes > MAX_FLOOR_BYTES) return undefined;
  return { kind: 'tcp', host: m[1]!, port, bytes };
}

/** Writes the floor's bytes (see above); logs, never throws. */
export function writeFloor(target: FloorTarget): void {
  const chunk = Buffer.alloc(FLOOR_CHUNK);
  const done = (error?: Error | null): void => {
    if (error) log.warn('debug hook: floor write failed', { kind: target.kind, error: error.message });
    else log.info('debug hook: floor written', { kind: target.kind, bytes: target.bytes });
  };
  if (target.kind === 'tcp') {
    const socket = net.connect({ host: target.host, port: target.port });
    socket.once('error', done);
    socket.once('connect', () => {
      let left = target.bytes;
      const pump = (): void => {
        while (left > 0) {
          const n = Math.min(left, FLOOR_CHUNK);
          left -= n;
          if (!socket.write(chunk.subarray(0, n))) return void socket.once('drain', pump);
        }
        socket.end(() => done());
      };
      pump();
    });
    return;
  }
  const device = findSerialPort(DEBUG_PORT_NAME);
  if (!device) return done(new Error(`no virtio-serial port ${DEBUG_PORT_NAME}`));
  fs.open(device, fs.constants.O_WRONLY | fs.constants.O_NOCTTY, (err, fd) => {
    if (err) return done(err);
    let left = target.bytes;
    const next = (werr: Error | null, written: number): void => {
      left -= written;
      if (werr || left <= 0) return fs.close(fd, () => done(werr));
      fs.write(fd, chunk, 0, Math.min(left, FLOOR_CHUNK), null, next);
    };
    next(null, 0);
  });
}

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
    private readonly floor: (target: FloorTarget) => void = writeFloor,
    private readonly profile: (ms: number) => void = profileGuest,
  ) {}

  created(containerId: string, annotations: Record<string, string> | null | undefined): void {
    this.#floodHook(containerId, annotations?.[AGENT_LOG_FLOOD_ANNOTATION]);
    for (const annotation of [SERIAL_FLOOR_ANNOTATION, TCP_FLOOR_ANNOTATION])
      this.#floorHook(containerId, annotation, annotations?.[annotation]);
    this.#profileHook(containerId, annotations?.[PROFILE_ANNOTATION]);
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

  #profileHook(containerId: string, value: string | undefined): void {
    if (value === undefined) return;
    const m = /^(?:(\d{1,5})\+)?(\d{1,5})$/.exec(value);
    const delayMs = Number(m?.[1] ?? 0);
    const ms = m ? Number(m[2]) : NaN;
    if (!this.enabled || !(ms >= 1 && ms <= MAX_PROFILE_MS && delayMs <= MAX_PROFILE_MS)) {
      log.warn(
        this.enabled ? 'ignoring a bad debug hook annotation' : 'ignoring a debug hook annotation: debug hooks are off',
        { id: containerId, annotation: PROFILE_ANNOTATION },
      );
      return;
    }
    log.info('debug hook: profiling the guest', { id: containerId, delayMs, ms });
    setTimeout(() => this.profile(ms), delayMs);
  }

  #floorHook(containerId: string, annotation: string, value: string | undefined): void {
    if (value === undefined) return;
    const target = this.enabled ? parseFloor(annotation, value) : undefined;
    if (!target) {
      log.warn(
        this.enabled ? 'ignoring a bad debug hook annotation' : 'ignoring a debug hook annotation: debug hooks are off',
        { id: containerId, annotation },
      );
      return;
    }
    log.info('debug hook: writing a channel floor', { id: containerId, ...target });
    this.floor(target);
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
