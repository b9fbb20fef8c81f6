/**
 * One container of a sandbox: its init process (whose state is the container's: lifecycle.ts), its execs, and
 * one mutex around every lifecycle operation of the container and of its execs, so that each one checks the
 * state when the previous one is done and moves it by compare-and-set. Only the exit path (Sandbox.finish →
 * Process.markStopped) changes a state without the mutex, which is why every transition after an `await` is a
 * compare-and-set. Wait, State and event delivery never take the mutex.
 *
 * Lock order: a container's mutex, then the sandbox's Create/Delete chain (deleting a container), never the
 * other way round.
 */
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from '../errors';
import type { AgentClient, ContainerResources, OciProcess } from '../agent-client';
import type { Logger } from '../log';
import type { EventSink, StdioPaths } from './events';
import { Mutex, type LifecycleState, type Operation } from './lifecycle';
import { Process, type ExitInfo } from './process';
import { ProcessIo } from './stdio';

/** What a container needs from its sandbox. */
export interface ContainerContext {
  agent(): AgentClient;
  /** The pid reported to containerd: the VM's. */
  hostPid(): number;
  events: EventSink;
  logger: Logger;
  /** The FIFOs a process's output goes to. */
  ioPaths(stdio: StdioPaths): StdioPaths;
  /** Waits for a started process in the background and records its exit (the sandbox's one exit path). */
  watch(p: Process, agentExecId: string): void;
  /** The init has just started in the guest (a crash test's failpoint may end the shim here). */
  initStarted(containerId: string): void;
}

export class Container {
  readonly execs = new Map<string, Process>();
  /** The exec's OCI process, kept from Exec until Start. */
  readonly execSpecs = new Map<string, OciProcess>();
  /** Milliseconds spent in this shim per phase, logged when the container is deleted (bench/shim.ts reads them). */
  readonly timings: { createMs: number; bootMs?: number; qemuStartedMs?: number; startMs?: number } = { createMs: 0 };
  readonly #mutex = new Mutex();

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly init: Process,
    private readonly ctx: ContainerContext,
  ) {}

  /** The container's state: its init's (paused is the container's, the init's status then says running). */
  get state(): LifecycleState {
    return this.init.state;
  }

  process(execId: string): Process {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new NotFoundError(`process ${execId} of container ${this.id}: not found`);
    return p;
  }

  /**
   * Runs `fn` once every earlier lifecycle operation of this container and its execs is done, if the process's
   * state answers `op` with "do" (`skipped` if it answers without doing anything; throws if it refuses).
   */
  locked<T>(op: Operation, execId: string, fn: (p: Process) => Promise<T>, skipped?: T): Promise<T> {
    return this.#mutex.run(async () => {
      if (execId !== '' && this.state === 'deleted')
        throw new NotFoundError(`container ${this.id} was deleted: exec ${execId} not found`);
      const p = this.process(execId);
      return p.check(op) ? fn(p) : (skipped as T);
    });
  }

  start(execId: string): Promise<number> {
    return this.locked('start', execId, async (p) => {
      const agent = this.ctx.agent();
      if (p.isInit) {
        const t0 = performance.now();
        await agent.startContainer(this.id);
        this.ctx.initStarted(this.id);
        this.timings.startMs = performance.now() - t0;
        if (!p.markRunning(this.ctx.hostPid())) throw p.raced('start');
        this.ctx.events({ type: 'start', containerId: this.id, pid: p.pid });
      } else {
        this.init.check('exec'); // the container runs (not paused, not stopped)
        const spec = this.execSpecs.get(execId)!;
        p.io = await ProcessIo.open({
          agent,
          containerId: this.id,
          execId,
          stdio: this.ctx.ioPaths(p.stdio),
          logger: this.ctx.logger,
        });
        try {
          await agent.execOciProcess(this.id, execId, spec);
        } catch (err) {
          p.io.close();
          p.io = undefined;
          throw err;
        }
        this.execSpecs.delete(execId);
        p.io.start();
        if (!p.markRunning(this.ctx.hostPid())) throw p.raced('start');
        this.ctx.events({ type: 'exec-started', containerId: this.id, execId, pid: p.pid });
      }
      this.ctx.watch(p, p.isInit ? this.id : execId);
      return p.pid;
    });
  }

  async exec(execId: string, spec: OciProcess, stdio: StdioPaths): Promise<void> {
    if (!!spec.terminal !== stdio.terminal)
      throw new InvalidArgumentError(`exec ${execId}: the request's terminal flag and the process spec disagree`);
    this.refuseDuplicate(execId); // as the runc shim: a duplicate id is AlreadyExists whatever the state
    return this.locked('exec', '', async () => {
      this.refuseDuplicate(execId);
      this.execs.set(execId, new Process(this.id, execId, stdio));
      this.execSpecs.set(execId, spec);
      this.ctx.events({ type: 'exec-added', containerId: this.id, execId });
    });
  }

  private refuseDuplicate(execId: string): void {
    if (execId === this.id || this.execs.has(execId))
      throw new AlreadyExistsError(`exec ${execId} of container ${this.id}: already exists`);
  }

  pause(): Promise<void> {
    return this.locked('pause', '', async (p) => {
      await this.ctx.agent().pauseContainer(this.id);
      if (!p.markPaused()) throw p.raced('pause');
      this.ctx.events({ type: 'paused', containerId: this.id });
    });
  }

  resume(): Promise<void> {
    return this.locked('resume', '', async (p) => {
      await this.ctx.agent().resumeContainer(this.id);
      if (!p.markResumed()) throw p.raced('resume');
      this.ctx.events({ type: 'resumed', containerId: this.id });
    });
  }

  /** The agent's empty exec id means every process of the container; the init alone is addressed by the container id. */
  kill(execId: string, signal: number, all: boolean): Promise<void> {
    return this.locked('kill', execId, (p) =>
      this.ctx.agent().signalProcess(this.id, all ? '' : p.isInit ? this.id : execId, signal),
    );
  }

  /** Deletes a stopped (or never started) exec: no event, as the runc shim. */
  deleteExec(execId: string): Promise<{ pid: number; exit: ExitInfo }> {
    return this.locked('delete', execId, async (p) => {
      const exit = p.markDeleted();
      this.execs.delete(execId);
      this.execSpecs.delete(execId);
      return { pid: p.pid, exit };
    });
  }

  /** Checked under the mutex; the wait for stdin to drain is not (it lasts as long as containerd's writer). */
  async closeIO(execId: string): Promise<void> {
    const p = await this.locked('closeIO', execId, async (p) => p);
    await p?.io?.closeStdin();
  }

  resizePty(execId: string, width: number, height: number): Promise<void> {
    return this.locked('resize', execId, (p) =>
      this.ctx.agent().ttyWinResize(this.id, p.isInit ? this.id : execId, height, width),
    );
  }

  update(resources: ContainerResources): Promise<void> {
    return this.locked('update', '', () => this.ctx.agent().updateContainer(this.id, resources));
  }
}
