/**
 * The debug console (hull.agent.v1.DebugConsole, `hull exec`): a process in the guest itself, in the agent's own
 * namespaces and outside every container, for debugging the guest. Off unless the host enabled it at CreateSandbox
 * (ttrpc metadata `hull-debug-console: enabled`, from `[agent] debug_console_enabled`); the first CreateSandbox
 * decides, and every call is refused with FAILED_PRECONDITION before that or when it said no.
 *
 * The process is the agent's own child (no crun, no reaper: node reaps it), with pipes or with a pty. Its stdio is
 * process.ts's ContainerProcess, the same buffering, bounds and exit-then-drain rule as a container's process. A
 * terminal is terminal.ts's Terminal, used as it is: the slave as stdin, stdout and stderr, and hull-ctty run first
 * (its fd 3 an open copy of itself, closed by it; fd 4 its exec status channel), which makes the pty the process's
 * controlling terminal, so ^C (SIGINT) and a resize (SIGWINCH) reach the foreground process group from the kernel.
 *
 * Nothing here touches containers: the processes have their own table, keyed by the session's exec id.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { Code, StatusError } from 'ttrpc-ts';
import type { diagnostics } from '../protos/hull';
import { identifierProblem } from '../protos/identifiers';
import { log } from './log';
import { ContainerProcess, READ_LIMIT } from './process';
import { DEFAULT_SIZE, HULL_CTTY, Terminal } from './terminal';

/** Sessions at once: a debugging aid, not a way to run work in the guest. */
export const MAX_DEBUG_PROCESSES = 8;
const MAX_ARGS = 256;
const MAX_ENV = 64;
const MAX_STRING = 4096;
const MAX_TERMINAL_SIZE = 10_000;
/** How long hull-ctty may take to execute the program before the process is taken as started. */
const EXEC_STATUS_MS = 10_000;
/** The guest's own environment for the process; the host may add entries (TERM). */
const BASE_ENV: Readonly<Record<string, string>> = Object.freeze({
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  TERM: 'linux',
});
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export interface DebugConsoleOptions {
  /** Outside the guest (the agent's test mode) nothing is ever run: the host's processes are not the guest's. */
  inGuest: boolean;
  /** hull-ctty (tests point it elsewhere). */
  hullCtty?: string;
}

interface Session {
  proc: ContainerProcess;
  child: ChildProcess;
}

const refuse = (message: string): StatusError => new StatusError(Code.FAILED_PRECONDITION, message);
const invalid = (message: string): StatusError => new StatusError(Code.INVALID_ARGUMENT, message);

function text(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length > MAX_STRING || value.includes('\0'))
    throw invalid(`${what} must be a string of at most ${MAX_STRING} characters without NUL`);
  return value;
}

/** The environment: the guest's base and the request's NAME=value entries, checked. */
export function debugEnv(entries: readonly unknown[] | null | undefined): Record<string, string> {
  const list = entries ?? [];
  if (list.length > MAX_ENV) throw invalid(`at most ${MAX_ENV} environment entries`);
  const env: Record<string, string> = { ...BASE_ENV };
  for (const e of list) {
    const entry = text(e, 'an environment entry');
    const eq = entry.indexOf('=');
    const name = eq > 0 ? entry.slice(0, eq) : '';
    if (!ENV_NAME.test(name))
      throw invalid(`environment entry ${JSON.stringify(entry.slice(0, 40))} is not NAME=value`);
    env[name] = entry.slice(eq + 1);
  }
  return env;
}

/** The program and its arguments, checked. */
export function debugArgs(args: readonly unknown[] | null | undefined): string[] {
  const list = args ?? [];
  if (list.length === 0 || list.length > MAX_ARGS) throw invalid(`a command of 1 to ${MAX_ARGS} arguments is needed`);
  const out = list.map((a, i) => text(a, `argument ${i}`));
  if (out[0] === '') throw invalid('the program name is empty');
  return out;
}

function terminalSize(rows: unknown, cols: unknown): { rows: number; cols: number } {
  const ok = (n: unknown): n is number =>
    Number.isInteger(n) && (n as number) > 0 && (n as number) <= MAX_TERMINAL_SIZE;
  if (rows === 0 && cols === 0) return DEFAULT_SIZE;
  if (!ok(rows) || !ok(cols))
    throw invalid(`terminal size ${String(rows)}x${String(cols)} is not 1 to ${MAX_TERMINAL_SIZE}`);
  return { rows, cols };
}

export class DebugConsole {
  private enabled: boolean | undefined;
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly o: DebugConsoleOptions) {}

  /** The host's choice at CreateSandbox; only the first counts. */
  configure(enabled: boolean): void {
    if (this.enabled !== undefined) return;
    this.enabled = enabled;
    log.info(enabled ? 'debug console enabled by the host' : 'debug console disabled', { enabled });
  }

  private check(): void {
    if (this.enabled !== true)
      throw refuse(
        this.enabled === undefined
          ? 'the debug console is not available before CreateSandbox'
          : 'the debug console is disabled for this sandbox ([agent] debug_console_enabled = false when it was created)',
      );
    if (!this.o.inGuest) throw refuse('the debug console runs processes only inside the guest');
  }

  private session(execId: unknown): Session {
    this.check();
    const s = typeof execId === 'string' ? this.sessions.get(execId) : undefined;
    if (!s) throw new StatusError(Code.NOT_FOUND, `no debug process ${JSON.stringify(String(execId).slice(0, 80))}`);
    return s;
  }

  async start(req: diagnostics.IStartDebugProcessRequest): Promise<{ pid: number }> {
    this.check();
    const execId = req.execId ?? '';
    const bad = identifierProblem('exec id', execId);
    if (bad) throw invalid(bad);
    if (this.sessions.has(execId)) throw new StatusError(Code.ALREADY_EXISTS, `debug process ${execId} exists`);
    if (this.sessions.size >= MAX_DEBUG_PROCESSES)
      throw new StatusError(Code.RESOURCE_EXHAUSTED, `at most ${MAX_DEBUG_PROCESSES} debug processes at once`);
    const args = debugArgs(req.args);
    const env = debugEnv(req.env);
    const session = req.terminal
      ? await this.spawnOnTerminal(execId, args, env, terminalSize(req.rows ?? 0, req.columns ?? 0))
      : await this.spawnWithPipes(execId, args, env);
    this.sessions.set(execId, session);
    log.info('debug process started', { execId, program: args[0], terminal: !!req.terminal, pid: session.proc.pid });
    return { pid: session.proc.pid };
  }

  read(req: diagnostics.IReadDebugOutputRequest): Promise<Buffer> {
    const { proc } = this.session(req.execId);
    const len = Math.min(req.len || READ_LIMIT, READ_LIMIT);
    if (req.stream === 1) return proc.stdout.read(len);
    if (req.stream === 2) return proc.stderr.read(len);
    throw invalid(`stream ${req.stream} is not 1 (stdout) or 2 (stderr)`);
  }

  write(req: diagnostics.IWriteDebugInputRequest): Promise<number> {
    return this.session(req.execId).proc.write(req.data ?? new Uint8Array());
  }

  closeInput(req: diagnostics.IDebugProcessRequest): void {
    this.session(req.execId).proc.closeStdin();
  }

  resize(req: diagnostics.IResizeDebugTerminalRequest): void {
    this.session(req.execId).proc.resize(terminalSize(req.rows ?? 0, req.columns ?? 0));
  }

  signal(req: diagnostics.ISignalDebugProcessRequest): void {
    const { proc, child } = this.session(req.execId);
    const signal = req.signal ?? 0;
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw invalid(`signal ${signal} is not 1 to 64`);
    if (proc.exited) return; // reaped: its pid may be another process's now
    child.kill(signal);
  }

  async wait(req: diagnostics.IDebugProcessRequest): Promise<number> {
    return this.session(req.execId).proc.wait();
  }

  remove(req: diagnostics.IDebugProcessRequest): void {
    const execId = req.execId ?? '';
    this.session(execId);
    this.forget(execId);
  }

  /** DestroySandbox: every debug process goes. */
  closeAll(): void {
    for (const execId of [...this.sessions.keys()]) this.forget(execId);
  }

  private forget(execId: string): void {
    const s = this.sessions.get(execId);
    if (!s) return;
    this.sessions.delete(execId);
    if (!s.proc.exited) s.child.kill('SIGKILL');
    s.proc.close();
    log.info('debug process removed', { execId, exitCode: s.proc.exitCode });
  }

  private async spawnWithPipes(execId: string, args: string[], env: Record<string, string>): Promise<Session> {
    // spawns: none; the program the operator named to `hull exec`, whatever the guest has
    const child = spawn(args[0]!, args.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env, cwd: '/' });
    const exit = exitOf(child);
    await spawned(child, args[0]!);
    const proc = new ContainerProcess(execId, child.stdin, child.stdout, child.stderr);
    proc.started(child.pid!, exit);
    return { proc, child };
  }

  private async spawnOnTerminal(
    execId: string,
    args: string[],
    env: Record<string, string>,
    size: { rows: number; cols: number },
  ): Promise<Session> {
    const hullCtty = this.o.hullCtty ?? HULL_CTTY;
    const terminal = await Terminal.open(size);
    let child: ChildProcess;
    let exit: Promise<number>;
    try {
      const helper = fs.openSync(hullCtty, fs.constants.O_RDONLY);
      try {
        // spawns: none; hull-ctty, built into the guest image from guest/init/hull-ctty.c, then the program named
        child = spawn(hullCtty, args, { stdio: terminal.stdio(helper), env, cwd: '/' });
        exit = exitOf(child);
        terminal.attach(child);
      } finally {
        fs.closeSync(helper);
      }
      await spawned(child, hullCtty);
    } catch (err) {
      terminal.close();
      throw err instanceof StatusError
        ? err
        : refuse(`terminals need ${hullCtty} (the guest image has it): ${(err as Error).message}`);
    }
    terminal.releaseSlave(); // the process has its own copy
    const proc = new ContainerProcess(execId, terminal.input, terminal.output, null, terminal);
    proc.started(child.pid!, exit);
    try {
      await terminal.execed(EXEC_STATUS_MS);
    } catch (err) {
      child.kill('SIGKILL');
      proc.close();
      throw err;
    }
    return { proc, child };
  }
}

/** Resolves once the child runs; a program that cannot be executed is NOT_FOUND or FAILED_PRECONDITION. */
function spawned(child: ChildProcess, program: string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new StatusError(
          err.code === 'ENOENT' ? Code.NOT_FOUND : Code.FAILED_PRECONDITION,
          `${program.slice(0, 200)}: ${err.code === 'ENOENT' ? 'not found in the guest' : err.message}`,
        ),
      ),
    );
  });
}

/** The exit status: the code, or 128 + the signal's number. */
function exitOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0)));
  });
}
