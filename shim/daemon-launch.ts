/**
 * How `start` launches the daemon: the node flags and the environment the daemon runs with, set here and not by
 * the user's NODE_OPTIONS (which the daemon still inherits, after the caller's own flags). Built-ins only: `start`
 * loads this. Measured by bench/footprint.ts (shim/README.md "Footprint").
 */

/**
 * V8 and node settings of the daemon, a long-lived process per pod that mostly waits: `--v8-pool-size=1`, one V8
 * worker thread instead of four (concurrent marking and compilation, whose threads and their malloc arenas a
 * waiting process pays for). No limit on the old generation: a burst of stdout or many execs must never end the
 * shim in an out-of-memory abort. `--optimize-for-size` saves 1–3 MiB more but costs ~20 ms of CPU time before the
 * daemon serves (160 → 180 ms; `--lite-mode` more on Task calls): not taken, start-up is part of every pod's start.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--v8-pool-size=1'];

/** Set in the daemon's environment when `start` chose its MALLOC_ARENA_MAX, so the daemon does not pass it on. */
const ARENA_MARK = 'HULL_SHIM_MALLOC_ARENA_MAX';

/**
 * The daemon's environment: containerd's, with glibc's malloc held to one arena (a thread's own arena is kept
 * partly touched for the life of the process) unless containerd's environment chose a MALLOC_ARENA_MAX itself.
 */
export function daemonEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  if (env.MALLOC_ARENA_MAX !== undefined) return env;
  return { ...env, MALLOC_ARENA_MAX: '1', [ARENA_MARK]: '1' };
}

/**
 * In the daemon, first thing: glibc has read MALLOC_ARENA_MAX at the process's start; the programs the daemon runs
 * (QEMU, virtiofsd, ip, ...) get containerd's environment as it was, without the arena limit `start` added.
 */
export function restoreDaemonEnv(env: NodeJS.ProcessEnv = process.env): void {
  if (env[ARENA_MARK] !== '1') return;
  delete env.MALLOC_ARENA_MAX;
  delete env[ARENA_MARK];
}
