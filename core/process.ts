/**
 * One process of a container (its init, exec id '', or an exec) and its state machine:
 *
 *   created ──start──▶ running ──exit──▶ stopped
 *      └────────── (deleted before start: stopped, exit status 0, never ran) ──┘
 *
 * The exit is published after the process's start event and after the output it wrote before it exited reached
 * containerd's FIFOs, so that containerd sees start, output, exit, in that order; that wait is bounded (the
 * agent's and ProcessIo.drained()'s, 2 s each, as runc's shim bounds its own), so that a background child holding
 * the process's stdout cannot hold its exit. The stdio stays open after the exit, as runc's does, until the process
 * is deleted.
 */
import type { ProcessIo } from './stdio';
import type { StdioPaths } from './events';

export type ProcessStatus = 'created' | 'running' | 'stopped';

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

export class Process {
  status: ProcessStatus = 'created';
  /** A Start is in flight (a second one is refused). */
  starting = false;
  /** The pid reported to containerd (the VM's host pid: guest pids mean nothing on the host). */
  pid = 0;
  exit: ExitInfo | undefined;
  io: ProcessIo | undefined;
  private readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;

  constructor(
    readonly containerId: string,
    /** containerd's exec id; '' for the container's init. */
    readonly execId: string,
    readonly stdio: StdioPaths,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  get isInit(): boolean {
    return this.execId === '';
  }

  /** Resolves once the process stopped (immediately if it already has). */
  wait(): Promise<ExitInfo> {
    return this.exited;
  }

  markRunning(pid: number): void {
    this.status = 'running';
    this.pid = pid;
  }

  /** Records the exit once; later calls are ignored. Returns whether this call recorded it. */
  markStopped(exitStatus: number, exitedAt = new Date()): boolean {
    if (this.exit) return false;
    this.status = 'stopped';
    this.exit = { exitStatus, exitedAt };
    this.resolveExit(this.exit);
    return true;
  }
}
