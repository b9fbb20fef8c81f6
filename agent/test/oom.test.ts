import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import { OomEvents, readOomKills } from '../oom';

const events = (oomKill: number): string => `low 0\nhigh 0\nmax 3\noom 1\noom_kill ${oomKill}\noom_group_kill 0\n`;

/** Resolves with the value, or 'pending' if it has not settled after `ms`. */
function settled<T>(p: Promise<T>, ms = 200): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
}

describe('agent OOM events (memory.events watched with inotify)', () => {
  let dir: string;
  let oom: OomEvents;
  const file = (cid: string): string => path.join(dir, cid, 'memory.events');
  const write = (cid: string, n: number): void => fs.writeFileSync(file(cid), events(n));

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-oom-'));
    for (const cid of ['c1', 'c2']) {
      fs.mkdirSync(path.join(dir, cid));
      write(cid, 0);
    }
    oom = new OomEvents();
  });

  afterEach(() => {
    oom.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads the oom_kill counter', () => {
    write('c1', 4);
    assert.equal(readOomKills(file('c1')), 4);
    assert.equal(readOomKills(path.join(dir, 'missing')), undefined);
  });

  it('answers a waiting poll when oom_kill grows, and only then', async () => {
    oom.watch('c1', file('c1'));
    oom.watch('c2', file('c2'));
    const next = oom.next();
    fs.writeFileSync(file('c1'), events(0).replace('max 3', 'max 4')); // another counter: no event
    assert.equal(await settled(next), 'pending');
    write('c2', 1);
    assert.equal(await settled(next, 2000), 'c2');
  });

  it('queues events nobody waits for, in order', async () => {
    oom.watch('c1', file('c1'));
    oom.watch('c2', file('c2'));
    write('c1', 1);
    await new Promise((r) => setTimeout(r, 100));
    write('c2', 2);
    for (const until = Date.now() + 2000; oom.size.queued < 2 && Date.now() < until;)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(await oom.next(), 'c1');
    assert.equal(await oom.next(), 'c2');
  });

  it('counts a kill seen by the last read at unwatch, then forgets the container', async () => {
    oom.watch('c1', file('c1'));
    oom.unwatch('c1'); // nothing new
    assert.deepEqual(oom.size, { watched: 0, queued: 0, waiting: 0 });
    oom.watch('c1', file('c1'));
    write('c1', 1);
    oom.unwatch('c1'); // before inotify's notification is handled
    assert.equal(await settled(oom.next()), 'c1');
    write('c1', 2);
    const later = oom.next();
    assert.equal(await settled(later), 'pending', 'no longer watched');
  });

  it('stops a poll when its call is cancelled (the connection closed), and serves the newest poll first', async () => {
    const controller = new AbortController();
    const cancelled = oom.next(controller.signal);
    controller.abort();
    await assert.rejects(cancelled, (e: unknown) => e instanceof StatusError && e.code === Code.CANCELLED);
    assert.equal(oom.size.waiting, 0);
    const aborted = new AbortController();
    aborted.abort();
    await assert.rejects(
      oom.next(aborted.signal),
      (e: unknown) => e instanceof StatusError && e.code === Code.CANCELLED,
    );

    oom.watch('c1', file('c1'));
    const older = oom.next();
    const newer = oom.next();
    write('c1', 1);
    assert.equal(await settled(newer, 2000), 'c1');
    assert.equal(await settled(older), 'pending');
  });

  it('stops watching a container whose cgroup is gone', async () => {
    oom.watch('c1', file('c1'));
    fs.rmSync(path.join(dir, 'c1'), { recursive: true });
    for (const until = Date.now() + 2000; oom.size.watched > 0 && Date.now() < until;)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(oom.size.watched, 0);
    oom.watch('missing', path.join(dir, 'missing', 'memory.events'));
    assert.equal(oom.size.watched, 0);
  });
});
