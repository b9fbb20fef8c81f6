/**
 * The lifecycle of containers and processes as tables (containerd's runc shim has one class per state,
 * process/init_state.go and exec_state.go; here each state is a row):
 *
 *   - MOVES: the only transitions a state allows. A container (its init process) and an exec differ: only a
 *     container can be paused.
 *
 *       container:  created ─start─▶ running ─pause─▶ paused ─resume─▶ running
 *                   created|running|paused ─exit─▶ stopped;  created|stopped ─delete─▶ deleted
 *       exec:       created ─start─▶ running ─exit─▶ stopped;  created|stopped ─delete─▶ deleted
 *
 *   - ANSWERS: what each state answers to each operation: do it, answer without doing anything (`skip`: the pids
 *     of a stopped container are none, resizing a stopped process's terminal does nothing), refuse it
 *     (FailedPreconditionError naming the operation and the state) or say it is gone (NotFoundError: a stopped
 *     process cannot be signalled, a deleted one is not there).
 *
 * A StateMachine changes state by compare-and-set (grpc-js's transitionToState): a late change that no longer
 * matches the current state is ignored, and a move the table does not list is a bug (InternalError).
 */
import { FailedPreconditionError, InternalError, NotFoundError } from '../errors';

export type LifecycleState = 'created' | 'running' | 'paused' | 'stopped' | 'deleted';

/** Everything a container or a process can be asked. `exec` is a container's: adding an exec or starting one. */
export type Operation =
  | 'start'
  | 'exec'
  | 'pause'
  | 'resume'
  | 'kill'
  | 'delete'
  | 'update'
  | 'closeIO'
  | 'resize'
  | 'stats'
  | 'pids'
  | 'state';

export type Answer = 'do' | 'skip' | 'refuse' | 'gone';

type Moves = Readonly<Record<LifecycleState, readonly LifecycleState[]>>;
type Answers = Readonly<Record<LifecycleState, Readonly<Record<Operation, Answer>>>>;

export const CONTAINER_MOVES: Moves = {
  created: ['running', 'stopped'],
  running: ['paused', 'stopped'],
  paused: ['running', 'stopped'],
  stopped: ['deleted'],
  deleted: [],
};

export const EXEC_MOVES: Moves = {
  created: ['running', 'stopped'],
  running: ['stopped'],
  paused: [], // never: an exec is not paused on its own
  stopped: ['deleted'],
  deleted: [],
};

/** Every operation answered `gone`: what a deleted container or exec answers. */
const GONE: Record<Operation, Answer> = {
  start: 'gone',
  exec: 'gone',
  pause: 'gone',
  resume: 'gone',
  kill: 'gone',
  delete: 'gone',
  update: 'gone',
  closeIO: 'gone',
  resize: 'gone',
  stats: 'gone',
  pids: 'gone',
  state: 'gone',
};

/** A container, i.e. its init process. A created container can be killed (containerd does so when a start fails). */
export const CONTAINER_ANSWERS: Answers = {
  created: {
    start: 'do',
    exec: 'refuse',
    pause: 'refuse',
    resume: 'refuse',
    kill: 'do',
    delete: 'do',
    update: 'do',
    closeIO: 'refuse',
    resize: 'do',
    stats: 'do',
    pids: 'skip',
    state: 'do',
  },
  running: {
    start: 'refuse',
    exec: 'do',
    pause: 'do',
    resume: 'refuse',
    kill: 'do',
    delete: 'refuse',
    update: 'do',
    closeIO: 'do',
    resize: 'do',
    stats: 'do',
    pids: 'do',
    state: 'do',
  },
  // runc refuses to exec into a frozen container; a frozen one can still be signalled (SIGKILL ends it).
  paused: {
    start: 'refuse',
    exec: 'refuse',
    pause: 'refuse',
    resume: 'do',
    kill: 'do',
    delete: 'refuse',
    update: 'do',
    closeIO: 'do',
    resize: 'do',
    stats: 'do',
    pids: 'do',
    state: 'do',
  },
  stopped: {
    start: 'refuse',
    exec: 'refuse',
    pause: 'refuse',
    resume: 'refuse',
    kill: 'gone',
    delete: 'do',
    update: 'refuse',
    closeIO: 'do',
    resize: 'skip',
    stats: 'gone',
    pids: 'skip',
    state: 'do',
  },
  deleted: GONE,
};

/** An exec. Signalling one that has not started is NotFound, as in the runc shim (nothing to signal yet). */
export const EXEC_ANSWERS: Answers = {
  created: { ...GONE, start: 'do', kill: 'gone', delete: 'do', closeIO: 'refuse', resize: 'do', state: 'do' },
  running: { ...GONE, start: 'refuse', kill: 'do', delete: 'refuse', closeIO: 'do', resize: 'do', state: 'do' },
  paused: GONE, // never reached (EXEC_MOVES)
  stopped: { ...GONE, start: 'refuse', kill: 'gone', delete: 'do', closeIO: 'do', resize: 'skip', state: 'do' },
  deleted: GONE,
};

/** How an operation reads in a message: "cannot <verb> container c1 in state paused". */
const VERB: Readonly<Record<Operation, string>> = {
  start: 'start',
  exec: 'exec in',
  pause: 'pause',
  resume: 'resume',
  kill: 'signal',
  delete: 'delete',
  update: 'update',
  closeIO: 'close the stdin of',
  resize: 'resize the terminal of',
  stats: 'read the stats of',
  pids: 'list the processes of',
  state: 'read the state of',
};

/**
 * One state, its allowed moves and its answers. `what` names the owner in messages ("container c1",
 * "exec e1 of container c1").
 */
export class StateMachine {
  #state: LifecycleState = 'created';

  constructor(
    private readonly what: string,
    private readonly moves: Moves,
    private readonly answers: Answers,
  ) {}

  get state(): LifecycleState {
    return this.#state;
  }

  /**
   * Whether `op` is to be done (true) or answered without doing anything (false) in the current state; throws
   * FailedPreconditionError when the state refuses it, NotFoundError when the process is gone for it.
   */
  check(op: Operation): boolean {
    const state = this.#state;
    switch (this.answers[state][op]) {
      case 'do':
        return true;
      case 'skip':
        return false;
      case 'refuse':
        throw new FailedPreconditionError(`cannot ${VERB[op]} ${this.what} in state ${state}`);
      case 'gone':
        throw new NotFoundError(`cannot ${VERB[op]} ${this.what} in state ${state}: not found`);
    }
  }

  /**
   * Compare-and-set: moves to `to` only from one of `from`, and returns whether it moved (false: the state changed
   * meanwhile, e.g. the process exited during the operation). A move the table does not allow is a bug.
   */
  transition(from: readonly LifecycleState[], to: LifecycleState): boolean {
    const state = this.#state;
    if (!from.includes(state)) return false;
    if (!this.moves[state].includes(to)) throw new InternalError(`${this.what}: no transition from ${state} to ${to}`);
    this.#state = to;
    return true;
  }

  /** The error for an operation whose transition lost a race (the state moved while the operation awaited). */
  raced(op: Operation): FailedPreconditionError {
    return new FailedPreconditionError(`cannot ${VERB[op]} ${this.what}: it became ${this.#state} meanwhile`);
  }
}

/** One operation at a time, in the order they asked (vscode-jsonrpc's Semaphore(1)). */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
