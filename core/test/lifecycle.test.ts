/** The lifecycle tables as pure data: every state answers every operation, moves are compare-and-set, messages name the state. */
import assert from 'node:assert/strict';
import { FailedPreconditionError, InternalError, NotFoundError } from '../../errors';
import {
  CONTAINER_ANSWERS,
  CONTAINER_MOVES,
  EXEC_ANSWERS,
  EXEC_MOVES,
  Mutex,
  StateMachine,
  type LifecycleState,
  type Operation,
} from '../lifecycle';

const STATES: LifecycleState[] = ['created', 'running', 'paused', 'stopped', 'deleted'];
const OPERATIONS: Operation[] = [
  'start',
  'exec',
  'pause',
  'resume',
  'kill',
  'delete',
  'update',
  'closeIO',
  'resize',
  'stats',
  'pids',
  'state',
];

/** A machine driven to `state` through the table's own moves. */
function machineIn(state: LifecycleState, exec = false): StateMachine {
  const m = exec
    ? new StateMachine('exec e1 of container c1', EXEC_MOVES, EXEC_ANSWERS)
    : new StateMachine('container c1', CONTAINER_MOVES, CONTAINER_ANSWERS);
  const path: Record<LifecycleState, LifecycleState[]> = {
    created: [],
    running: ['running'],
    paused: ['running', 'paused'],
    stopped: ['stopped'],
    deleted: ['stopped', 'deleted'],
  };
  for (const to of path[state]) assert.ok(m.transition([m.state], to), `${m.state} -> ${to}`);
  return m;
}

describe('core lifecycle tables', () => {
  it('every state of a container and of an exec answers every operation', () => {
    for (const table of [CONTAINER_ANSWERS, EXEC_ANSWERS]) {
      for (const s of STATES)
        for (const op of OPERATIONS) assert.ok(['do', 'skip', 'refuse', 'gone'].includes(table[s][op]), `${s} ${op}`);
    }
  });

  it("the allowed moves are those of containerd's runc shim: only a container pauses, deleted is final", () => {
    assert.deepEqual(CONTAINER_MOVES, {
      created: ['running', 'stopped'],
      running: ['paused', 'stopped'],
      paused: ['running', 'stopped'],
      stopped: ['deleted'],
      deleted: [],
    });
    assert.deepEqual(EXEC_MOVES, {
      created: ['running', 'stopped'],
      running: ['stopped'],
      paused: [],
      stopped: ['deleted'],
      deleted: [],
    });
  });

  it('a refused operation is FailedPrecondition naming the operation and the state; a gone one NotFound', () => {
    assert.throws(
      () => machineIn('paused').check('pause'),
      (e: Error) => e instanceof FailedPreconditionError && e.message === 'cannot pause container c1 in state paused',
    );
    assert.throws(() => machineIn('paused').check('exec'), /cannot exec in container c1 in state paused/);
    assert.throws(
      () => machineIn('running', true).check('delete'),
      /cannot delete exec e1 of container c1 in state running/,
    );
    assert.throws(() => machineIn('stopped').check('kill'), NotFoundError);
    assert.throws(
      () => machineIn('created', true).check('kill'),
      NotFoundError,
      'an exec not started yet has nothing to signal',
    );
    for (const op of OPERATIONS) assert.throws(() => machineIn('deleted').check(op), NotFoundError, op);
    assert.equal(machineIn('stopped').check('pids'), false, 'no pids: answered without asking the agent');
    assert.equal(machineIn('stopped').check('delete'), true);
    assert.equal(machineIn('paused').check('kill'), true, 'a frozen container can be killed');
  });

  it('transition is compare-and-set: a stale expected state does not move; a move the table does not allow is a bug', () => {
    const m = machineIn('running');
    assert.equal(m.transition(['created'], 'running'), false);
    assert.equal(m.state, 'running');
    assert.throws(() => m.transition(['running'], 'deleted'), InternalError);
    assert.equal(m.transition(['running'], 'stopped'), true);
    assert.equal(m.transition(['running'], 'paused'), false, 'an exit wins over a pause that comes back late');
    assert.match(m.raced('pause').message, /cannot pause container c1: it became stopped meanwhile/);
    assert.throws(
      () => machineIn('running', true).transition(['running'], 'paused'),
      InternalError,
      'an exec is never paused',
    );
  });

  it('Mutex runs one at a time, in the order asked, and goes on after a failure', async () => {
    const mutex = new Mutex();
    const order: string[] = [];
    let release!: () => void;
    const a = mutex.run(async () => {
      order.push('a in');
      await new Promise<void>((r) => (release = r));
      order.push('a out');
    });
    const b = mutex.run(async () => {
      order.push('b');
      throw new Error('b failed');
    });
    const c = mutex.run(async () => void order.push('c'));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, ['a in']);
    release();
    await a;
    await assert.rejects(b, /b failed/);
    await c;
    assert.deepEqual(order, ['a in', 'a out', 'b', 'c']);
  });
});
