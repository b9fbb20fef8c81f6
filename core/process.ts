/**
 * One process of a container (its init, exec id '', or an exec). Its state is a StateMachine (lifecycle.ts): an
 * init's is its container's (created, running, paused, stopped, deleted), an exec's has no paused:
 *
 *   created ──start──▶ running ──exit──▶ stopped ──delete──▶ deleted
 *      └────────── (deleted before start: stopped, exit status 0, never ran) ──┘
 *
 * The exit is recorded by markStopped alone (Sandbox.finish), at once, without waiting for any operation in
 * flight. It is published after the process's start event and after the output it wrote before it exited reached
 * containerd's FIFOs, so that containerd sees start, output, exit, in that order; that wait is bounded (the
 * agent's and ProcessIo.drained()'s, 2 s each, as runc's shim bounds its own), so that a background child holding
 * the process's stdout cannot hold its exit. The stdio stays open after the exit, as runc's does, until the process
 * is deleted.
 */
import {
  CONTAINER_ANSWERS,
  CONTAINER_MOVES,
  EXEC_ANSWERS,
  EXEC_MOVES,
  StateMachine,
  type LifecycleState,
  type Operation,
} from './lifecycle';
import type { ProcessIo } from './stdio';
import type { StdioPaths } from './events';

export type ProcessStatus = 'created' | 'running' | 'stopped';

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

export class Process {
  /** The pid reported to containerd (the VM's host pid: guest pids mean nothing on the host). */
  pid = 0;
  exit: ExitInfo | undefined;
  io: ProcessIo | undefined;
  readonly #machine: StateMachine;
  private readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;

  constructor(
    readonly containerId: string,
    /** containerd's exec id; '' for the container's init. */
    readonly execId: string,
    readonly stdio: StdioPaths,
  ) {
    this.#machine =
      execId === ''
        ? new StateMachine(`container ${containerId}`, CONTAINER_MOVES, CONTAINER_ANSWERS)
        : new StateMachine(`exec ${execId} of container ${containerId}`, EXEC_MOVES, EXEC_ANSWERS);
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  get isInit(): boolean {
    return this.execId === '';
  }

  /** The state (an init's is its container's, paused included). */
  get state(): LifecycleState {
    return this.#machine.state;
  }

  /** The process's own status: a paused init still runs, a deleted process has stopped. */
  get status(): ProcessStatus {
    const s = this.#machine.state;
    return s === 'paused' ? 'running' : s === 'deleted' ? 'stopped' : s;
  }

  /** See StateMachine.check: true to do `op`, false to answer without doing it; throws when the state refuses it. */
  check(op: Operation): boolean {
    return this.#machine.check(op);
  }

  /** The error for an operation whose transition lost a race with the exit. */
  raced(op: Operation): Error {
    return this.#machine.raced(op);
  }

  /** Resolves once the process stopped (immediately if it already has). */
  wait(): Promise<ExitInfo> {
    return this.exited;
  }

  /** created → running; false if the process stopped meanwhile. */
  markRunning(pid: number): boolean {
    if (!this.#machine.transition(['created'], 'running')) return false;
    this.pid = pid;
    return true;
  }

  /** running → paused (a container's init only); false if it stopped meanwhile. */
  markPaused(): boolean {
    return this.#machine.transition(['running'], 'paused');
  }

  /** paused → running; false if it stopped meanwhile. */
  markResumed(): boolean {
    return this.#machine.transition(['paused'], 'running');
  }

  /** Records the exit once; later calls are ignored. Returns whether this call recorded it. */
  markStopped(exitStatus: number, exitedAt = new Date()): boolean {
    if (!this.#machine.transition(['created', 'running', 'paused'], 'stopped')) return false;
    this.exit = { exitStatus, exitedAt };
    this.resolveExit(this.exit);
    return true;
  }

  /** created or stopped → deleted; one that never ran is recorded stopped with status 0 (no exit event). */
  markDeleted(): ExitInfo {
    this.markStopped(0);
    if (!this.#machine.transition(['stopped'], 'deleted')) throw this.raced('delete');
    this.io?.close();
    return this.exit!;
  }
}
