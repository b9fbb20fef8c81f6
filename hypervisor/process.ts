/**
 * One helper process the driver owns (QEMU, virtiofsd): spawned without a shell, stdin ignored, stdout ignored or
 * handed to `onStdout` (QEMU's serial console), stderr kept as a bounded tail, its exit recorded once. Signals go only to a process we spawned and have not yet reaped (Node
 * reaps on exit, so the pid cannot have been reused while `exit` is undefined).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { NOOP_LOGGER, type Logger } from '../log';
import type { SpawnedHelper } from './types';
import { TailBuffer, pidExists, settlesWithin, sleep } from './util';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all. */
  error?: Error;
}

export interface SpawnOptions {
  /** For logs: 'qemu', 'virtiofsd'. */
  name: string;
  logger?: Logger;
  stderrTailBytes?: number;
  /** Each chunk the process writes to its stdout (a pipe then; otherwise stdout goes nowhere); `onStdoutEnd` once it closes. */
  onStdout?: (chunk: Buffer) => void;
  onStdoutEnd?: () => void;
  /** Told synchronously once the process exists (see VmConfig.onSpawn); a throw kills it and is rethrown. */
  onSpawn?: (helper: SpawnedHelper) => void;
  /** Open file descriptors the child inherits as fd 3, 4, ... (a VM template's saved state: qemu/template.ts). */
  extraFds?: readonly number[];
}

/** How long after exit we keep reading stderr for the last words (a forked helper may hold the pipe open). */
const STDERR_DRAIN_MS = 200;

export class OwnedProcess {
  readonly name: string;
  readonly pid: number | undefined;
  /** performance.now() at spawn. */
  readonly spawnedAt: number;
  /** Resolves once, when the process has exited (or failed to spawn); never rejects. */
  readonly exited: Promise<ChildExit>;
  #exit: ChildExit | undefined;
  readonly #child: ChildProcess;
  readonly #stderr: TailBuffer;

  private constructor(child: ChildProcess, opts: SpawnOptions) {
    this.name = opts.name;
    this.#child = child;
    this.pid = child.pid;
    this.spawnedAt = performance.now();
    this.#stderr = new TailBuffer(opts.stderrTailBytes ?? 8192);
    const logger = opts.logger ?? NOOP_LOGGER;
    if (child.stdout) {
      const ended = (): void => {
        child.stdout?.removeAllListeners('data');
        opts.onStdoutEnd?.();
      };
      child.stdout.on('data', (chunk: Buffer) => opts.onStdout?.(chunk));
      child.stdout.once('close', ended);
      child.stdout.once('error', ended);
    }
    const stderrDone = new Promise<void>((resolve) => {
      if (!child.stderr) return resolve();
      child.stderr.on('data', (chunk: Buffer) => this.#stderr.push(chunk));
      child.stderr.on('close', resolve);
      child.stderr.on('error', () => resolve());
    });
    this.exited = new Promise<ChildExit>((resolve) => {
      const finish = (exit: ChildExit): void => {
        if (this.#exit) return;
        this.#exit = exit;
        logger.debug(
          { process: this.name, pid: this.pid, ...exit, error: exit.error?.message },
          'helper process exited',
        );
        // Whatever it said last is usually the reason it exited: give the pipe a moment to drain, then let go.
        void settlesWithin(stderrDone, STDERR_DRAIN_MS).then(() => {
          child.stderr?.destroy();
          resolve(exit);
        });
      };
      child.once('exit', (code, signal) => finish({ code, signal }));
      child.once('error', (error) => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null)
          finish({ code: null, signal: null, error });
      });
    });
  }

  static spawn(file: string, args: readonly string[], opts: SpawnOptions): OwnedProcess {
    // spawns: wrapper; OwnedProcess.spawn's callers name the program
    const child = spawn(file, args, {
      stdio: ['ignore', opts.onStdout ? 'pipe' : 'ignore', 'pipe', ...(opts.extraFds ?? [])],
      detached: false,
      shell: false,
    });
    const owned = new OwnedProcess(child, opts);
    if (child.pid !== undefined && opts.onSpawn) {
      try {
        // Node's spawn returns once the child has exec'd (or failed to), so its /proc entry is already there.
        opts.onSpawn({ name: opts.name, pid: child.pid, startTime: processStartTime(child.pid) ?? '' });
      } catch (err) {
        owned.signal('SIGKILL');
        throw err;
      }
    }
    return owned;
  }

  get exit(): ChildExit | undefined {
    return this.#exit;
  }
  get alive(): boolean {
    return this.#exit === undefined && this.pid !== undefined;
  }
  stderrTail(): string {
    return this.#stderr.toString();
  }

  /** Send a signal if the process is still ours to signal; false otherwise. */
  signal(sig: NodeJS.Signals): boolean {
    if (!this.alive) return false;
    try {
      return this.#child.kill(sig);
    } catch {
      return false;
    }
  }

  /** Wait up to `ms` for the exit; true when it exited. */
  async waitExit(ms: number): Promise<boolean> {
    if (!this.alive) return true;
    return settlesWithin(this.exited, ms);
  }

  /** SIGTERM, wait `graceMs`, then SIGKILL and wait `killMs`. Resolves with the exit if it happened. */
  async terminate(graceMs: number, killMs = 5000): Promise<ChildExit | undefined> {
    if (this.alive && this.signal('SIGTERM') && (await this.waitExit(graceMs))) return this.#exit;
    return this.kill(killMs);
  }

  /** SIGKILL and wait up to `waitMs`. */
  async kill(waitMs = 5000): Promise<ChildExit | undefined> {
    this.signal('SIGKILL');
    await this.waitExit(waitMs);
    return this.#exit;
  }
}

/** The pids of `pid`'s children (from /proc/<pid>/task/<tid>/children); [] when it is gone. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      for (const w of fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(/\s+/)) {
        const n = Number(w);
        if (w !== '' && Number.isInteger(n)) out.push(n);
      }
    } catch {
      // the task went away
    }
  }
  return out;
}

/**
 * /proc/<pid>/stat field 22, the process's start time in clock ticks after boot (a decimal string), or undefined
 * when it is gone. With the pid it names one process: a reused pid has a later start time.
 */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': fields 3.. follow the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/** /proc/<pid>/cmdline as argv, or undefined when the process is gone. */
export function processArgv(pid: number): string[] | undefined {
  try {
    return fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((w) => w !== '');
  } catch {
    return undefined;
  }
}

/**
 * Make sure a process we know by pid (not our child, e.g. the forked sandbox child of virtiofsd) is gone: only if
 * its argv still satisfies `isOurs` (guards against pid reuse), SIGTERM, wait, SIGKILL, wait.
 */
export async function reapForeign(pid: number, isOurs: (argv: string[]) => boolean, graceMs: number): Promise<boolean> {
  const ours = (): boolean => {
    const argv = processArgv(pid);
    return argv !== undefined && argv.length > 0 && isOurs(argv);
  };
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    if (!pidExists(pid) || !ours()) return true;
    try {
      process.kill(pid, sig);
    } catch {
      return true;
    }
    const deadline = performance.now() + graceMs;
    while (performance.now() < deadline) {
      if (!pidExists(pid) || !ours()) return true;
      await sleep(10);
    }
  }
  return !pidExists(pid) || !ours();
}
