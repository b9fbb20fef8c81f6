/**
 * Exit statuses of the guest's orphans, as hull-init (guest/init/hull-init.c, PID 1) reports them. Container init
 * processes are orphaned when `crun create` exits, so PID 1 reaps them, not node; hull-init writes one line
 * "<pid> <exit_code>\n" per reaped process (exit status, or 128 + signal number) to a pipe whose read end the
 * agent gets as fd 3.
 *
 * `waitFor(pid)` resolves with a process's exit code. A status can arrive before anyone asks for it (a container
 * init may exit before the agent has read crun's pid file), so statuses nobody waits for are kept, for at most
 * `keepMs` and at most `maxKept` of them (oldest dropped first), and handed to the first `waitFor` of that pid.
 * A kept status is handed out once. Pid reuse within `keepMs` would hand an old status to a new process with the
 * same pid; callers should call `waitFor` as soon as they know a pid.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { log } from './log';

export interface ExitRecord {
  pid: number;
  exitCode: number;
}

/** Longest line accepted ("<pid> <code>" is at most 24 bytes); a longer run without a newline is discarded. */
const MAX_LINE = 64;

/** Splits a byte stream into exit records, across chunk boundaries. Malformed lines are reported and skipped. */
export class RecordParser {
  private partial = '';

  constructor(
    private readonly onRecord: (r: ExitRecord) => void,
    private readonly onBadLine: (line: string) => void = () => {},
  ) {}

  push(chunk: Buffer | string): void {
    const text = this.partial + (typeof chunk === 'string' ? chunk : chunk.toString('latin1'));
    const lines = text.split('\n');
    let rest = lines.pop() ?? '';
    for (const line of lines) this.line(line);
    if (rest.length > MAX_LINE) {
      this.onBadLine(rest.slice(0, MAX_LINE));
      rest = '';
    }
    this.partial = rest;
  }

  private line(line: string): void {
    const m = /^([1-9][0-9]{0,9}) ([0-9]{1,3})$/.exec(line);
    const pid = m ? Number(m[1]) : NaN;
    const exitCode = m ? Number(m[2]) : NaN;
    if (!m || pid > 0x7fffffff || exitCode > 255) this.onBadLine(line.slice(0, MAX_LINE));
    else this.onRecord({ pid, exitCode });
  }
}

export interface ReaperOptions {
  /** How long a status nobody waits for is kept (default 60 s). */
  keepMs?: number;
  /** How many such statuses are kept at most (default 1024). */
  maxKept?: number;
  now?: () => number;
}

interface Waiter {
  resolve(code: number): void;
  reject(err: Error): void;
}

/** Emits 'exit' (ExitRecord) for every status read. */
export class Reaper extends EventEmitter {
  private readonly kept = new Map<number, { exitCode: number; at: number }>();
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly keepMs: number;
  private readonly maxKept: number;
  private readonly now: () => number;
  private closed: Error | undefined;

  constructor(options: ReaperOptions = {}) {
    super();
    this.keepMs = options.keepMs ?? 60_000;
    this.maxKept = options.maxKept ?? 1024;
    this.now = options.now ?? Date.now;
  }

  /** Reads records from `stream` (hull-init's pipe, or any stream in tests). */
  attach(stream: Readable): this {
    const parser = new RecordParser(
      (r) => this.record(r),
      (line) => log.warn('bad exit status record from hull-init', { line }),
    );
    stream.on('data', (chunk: Buffer) => parser.push(chunk));
    stream.on('error', (err) => this.close(err));
    stream.on('end', () => this.close(new Error('hull-init closed the exit status pipe')));
    return this;
  }

  /** A process's exit code: at once if its status was already read, else when it is. */
  waitFor(pid: number): Promise<number> {
    this.expire();
    const kept = this.kept.get(pid);
    if (kept) {
      this.kept.delete(pid);
      return Promise.resolve(kept.exitCode);
    }
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(pid) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(pid, list);
    });
  }

  /** Number of statuses read that nobody has asked for yet (after dropping expired ones). */
  get keptCount(): number {
    this.expire();
    return this.kept.size;
  }

  record(r: ExitRecord): void {
    this.emit('exit', r);
    const list = this.waiters.get(r.pid);
    if (list) {
      this.waiters.delete(r.pid);
      for (const w of list) w.resolve(r.exitCode);
      return;
    }
    this.expire();
    this.kept.delete(r.pid); // a reused pid: the newer status replaces the older one, and goes to the end
    this.kept.set(r.pid, { exitCode: r.exitCode, at: this.now() });
    while (this.kept.size > this.maxKept) {
      const oldest = this.kept.keys().next().value as number;
      this.kept.delete(oldest);
      log.warn('dropped an unclaimed exit status', { pid: oldest, kept: this.maxKept });
    }
  }

  private expire(): void {
    const limit = this.now() - this.keepMs;
    for (const [pid, k] of this.kept) {
      if (k.at > limit) break; // in arrival order
      this.kept.delete(pid);
    }
  }

  private close(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    for (const list of this.waiters.values()) for (const w of list) w.reject(err);
    this.waiters.clear();
  }
}

/** Set by hull-init in the agent's environment; fd 3 is then the read end of its status pipe. */
export const HULL_INIT_ENV = 'HULL_INIT';
export const STATUS_FD = 3;

/** True when this process was started by hull-init: HULL_INIT=1 and fd 3 is a pipe. */
export function underHullInit(): boolean {
  if (process.env[HULL_INIT_ENV] !== '1') return false;
  try {
    return fs.fstatSync(STATUS_FD).isFIFO();
  } catch {
    return false;
  }
}

/**
 * The reaper on hull-init's pipe. The pipe is reopened through /proc with close-on-exec (fd 3 has to be inherited
 * by node, so it is not), and fd 3 is closed, so that crun, busybox and containers never get it. HULL_INIT is
 * removed from the environment the agent's children inherit.
 */
export function openHullInitReaper(options: ReaperOptions = {}): Reaper {
  let fd = STATUS_FD;
  try {
    fd = fs.openSync(`/proc/self/fd/${STATUS_FD}`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    fs.closeSync(STATUS_FD);
  } catch (err) {
    log.warn('cannot reopen the exit status pipe with close-on-exec; children will inherit fd 3', {
      error: (err as Error).message,
    });
  }
  delete process.env[HULL_INIT_ENV];
  const socket = new net.Socket({ fd, readable: true, writable: false });
  socket.unref(); // the pipe alone does not keep the agent alive
  return new Reaper(options).attach(socket);
}
