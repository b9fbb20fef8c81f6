/**
 * What `hull check` and `hull env` ask the host, behind one interface so that tests can pretend any host: a fake
 * root folder holding dev/, proc/, sys/ and etc/ (the host's fixed paths are read below `root`), and a fake runner.
 * Paths that come from the configuration (QEMU, the guest kernel, ...) are read as they are, not below `root`.
 *
 * Programs are run with execFile (argv arrays, never a shell), with a deadline after which the child is killed by
 * its PID, and with their output capped. Nothing here touches the network.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface RunResult {
  /** The exit code; null when the child was killed (signal set) or could not be started (error set). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Why it could not run (ENOENT, EACCES) or was killed (the deadline). */
  error?: string;
  /** Whether the deadline killed it. */
  timedOut: boolean;
  elapsedMs: number;
}

export interface Host {
  /** Reads a fixed host path (/proc/..., /sys/..., /etc/...) below the host's root; undefined when unreadable. */
  readFile(hostPath: string): string | undefined;
  /** Whether a fixed host path exists below the host's root. */
  exists(hostPath: string): boolean;
  /** Whether open(O_RDWR) succeeds on a fixed host path below the host's root (closed again at once). */
  openReadWrite(hostPath: string): boolean;
  /** Runs `program args` (no shell) with a deadline in ms; the child is killed by its PID when it passes. */
  run(program: string, args: readonly string[], deadlineMs: number): Promise<RunResult>;
  /**
   * Whether this process may lower its own oom_score_adj (/proc/self/oom_score_adj below the root): one step down,
   * then back. Where even root may not, containerd's CRI needs restrict_oom_score_adj.
   */
  lowerOomScoreAdj(): boolean;
  /** The effective uid (0 = root). */
  readonly uid: number;
}

/** Output beyond this is cut: the child is killed (execFile's maxBuffer). */
const MAX_OUTPUT_BYTES = 1024 * 1024;

/** The real host, or a fake root (tests) with the real runner. */
export class RealHost implements Host {
  readonly uid: number;
  constructor(
    readonly root = '/',
    uid = process.geteuid?.() ?? 0,
  ) {
    this.uid = uid;
  }

  private at(hostPath: string): string {
    return path.join(this.root, hostPath);
  }

  readFile(hostPath: string): string | undefined {
    try {
      return fs.readFileSync(this.at(hostPath), 'utf8');
    } catch {
      return undefined;
    }
  }

  exists(hostPath: string): boolean {
    return fs.existsSync(this.at(hostPath));
  }

  openReadWrite(hostPath: string): boolean {
    try {
      fs.closeSync(fs.openSync(this.at(hostPath), fs.constants.O_RDWR));
      return true;
    } catch {
      return false;
    }
  }

  lowerOomScoreAdj(): boolean {
    const file = this.at('/proc/self/oom_score_adj');
    try {
      const now = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
      if (!Number.isInteger(now) || now <= -1000) return now === -1000;
      fs.writeFileSync(file, `${now - 1}\n`);
      fs.writeFileSync(file, `${now}\n`);
      return true;
    } catch {
      return false;
    }
  }

  run(program: string, args: readonly string[], deadlineMs: number): Promise<RunResult> {
    const started = Date.now();
    return new Promise((resolve) => {
      // spawns: qemu-system-x86_64, virtiofsd, iptables, containerd; the programs hull check asks for their versions
      execFile(
        program,
        args,
        { timeout: deadlineMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, shell: false, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const e = err as (NodeJS.ErrnoException & { killed?: boolean; signal?: NodeJS.Signals | null }) | null;
          const timedOut = Boolean(e?.killed) && Date.now() - started >= deadlineMs;
          const code = e === null ? 0 : typeof e.code === 'number' ? e.code : null;
          const result: RunResult = {
            code,
            signal: e?.signal ?? null,
            stdout,
            stderr,
            timedOut,
            elapsedMs: Date.now() - started,
          };
          if (e && typeof e.code === 'string') result.error = e.code;
          else if (timedOut) result.error = `killed after ${deadlineMs} ms`;
          resolve(result);
        },
      );
    });
  }
}
