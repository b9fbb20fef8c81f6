import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import type { grpc } from '../../protos/agent';
import { toRuntimeSpec } from '../oci';
import { resolveUnder } from '../validate';
import { isBindMount, volumeMount } from '../volumes';

const isCode =
  (code: Code, pattern?: RegExp) =>
  (e: unknown): boolean =>
    e instanceof StatusError && e.code === code && (!pattern || pattern.test(e.message));

describe('agent volumes (bind mounts into the share)', () => {
  let dir: string;
  let share: string;
  let vol: string;

  beforeEach(() => {
    dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'hull-volumes-')));
    share = path.join(dir, 'shared');
    vol = path.join(share, 'c1', 'volumes', 'abc');
    fs.mkdirSync(path.join(vol, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(vol, 'file'), 'x');
    fs.mkdirSync(path.join(dir, 'outside'));
    fs.symlinkSync('/etc', path.join(vol, 'abs-out'));
    fs.symlinkSync('/nonexistent-hull-target', path.join(vol, 'dangling-out'));
    fs.symlinkSync('../../../../outside', path.join(vol, 'rel-out'));
    fs.symlinkSync('sub', path.join(vol, 'rel-in'));
    fs.symlinkSync(path.join(share, 'c1', 'volumes', 'abc', 'file'), path.join(vol, 'abs-in'));
    fs.symlinkSync('loop', path.join(vol, 'loop'));
  });

  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('resolves a path inside the share, following only links that stay inside', () => {
    assert.equal(resolveUnder(share, vol, 's'), vol);
    assert.equal(resolveUnder(share, `${vol}/rel-in`, 's'), `${vol}/sub`);
    assert.equal(resolveUnder(share, `${vol}/abs-in`, 's'), `${vol}/file`);
  });

  it('refuses links that lead out, even dangling ones, and never reports them as missing', () => {
    for (const name of ['abs-out', 'dangling-out', 'rel-out']) {
      assert.throws(
        () => resolveUnder(share, `${vol}/${name}`, 's'),
        isCode(Code.INVALID_ARGUMENT, /leads outside/),
        name,
      );
    }
    assert.throws(() => resolveUnder(share, `${vol}/loop`, 's'), isCode(Code.INVALID_ARGUMENT, /too many symlinks/));
    assert.throws(() => resolveUnder(share, `${vol}/missing`, 's'), isCode(Code.NOT_FOUND));
    for (const bad of [share, `${share}/../x`, `${vol}/../abc`, `${vol}/`, 'relative', '/etc']) {
      assert.throws(() => resolveUnder(share, bad, 's'), isCode(Code.INVALID_ARGUMENT), bad);
    }
  });

  it('recognises bind mounts by type or by option', () => {
    assert.ok(isBindMount({ type: 'bind', options: [] }));
    assert.ok(isBindMount({ type: 'none', options: ['rbind'] }));
    assert.ok(isBindMount({ type: '', options: ['bind', 'ro'] }));
    assert.ok(!isBindMount({ type: 'tmpfs', options: ['bind'] }));
    assert.ok(!isBindMount({ type: 'proc', options: [] }));
  });

  it('keeps a volume in the share with its options, resolved, and adds rbind when missing', () => {
    assert.deepEqual(
      volumeMount({ destination: '/data', type: 'bind', source: vol, options: ['rbind', 'ro', 'nosuid'] }, 0, share),
      { destination: '/data', type: 'bind', source: vol, options: ['rbind', 'ro', 'nosuid'] },
    );
    assert.deepEqual(
      volumeMount({ destination: '/d', type: 'bind', source: `${vol}/rel-in`, options: ['rw'] }, 0, share),
      { destination: '/d', type: 'bind', source: `${vol}/sub`, options: ['rbind', 'rw'] },
    );
  });

  it('refuses, naming the mount: sources outside the share, bad destinations and options', () => {
    const bad: [grpc.IMount, RegExp][] = [
      [
        { destination: '/data', type: 'bind', source: '/etc', options: ['rbind'] },
        /volume "\/data".*not a normalized path inside the shared folder/,
      ],
      [{ destination: '/data', type: 'bind', source: `${share}/../outside`, options: ['rbind'] }, /volume "\/data"/],
      [{ destination: '/data', type: 'bind', source: share, options: ['rbind'] }, /volume "\/data"/],
      [
        { destination: '/data', type: 'bind', source: `${vol}/abs-out`, options: ['rbind'] },
        /volume "\/data".*leads outside/,
      ],
      [
        { destination: '/data/../etc', type: 'bind', source: vol, options: [] },
        /volume "\/data\/..\/etc": the destination/,
      ],
      [{ destination: 'data', type: 'bind', source: vol, options: [] }, /volume "data": the destination/],
      [{ destination: '', type: 'bind', source: vol, options: [] }, /volume 3: the destination/],
      [{ destination: '/data', type: 'bind', source: vol, options: ['rshared'] }, /volume "\/data": option "rshared"/],
      [{ destination: '/data', type: 'bind', source: vol, options: ['x-evil=1'] }, /not allowed/],
      [{ destination: '/data', type: 'bind', source: vol, options: ['ro', 'rw'] }, /both ro and rw/],
    ];
    for (const [m, pattern] of bad)
      assert.throws(() => volumeMount(m, 3, share), isCode(Code.INVALID_ARGUMENT, pattern), JSON.stringify(m));
  });

  it('toRuntimeSpec keeps volumes and kernel filesystems, refuses a bind from outside the share', () => {
    const spec = (mounts: grpc.IMount[]): grpc.ISpec => ({ Process: { Args: ['true'], Cwd: '/' }, Mounts: mounts });
    const proc = { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] };
    const out = toRuntimeSpec(
      spec([proc, { destination: '/data', type: 'bind', source: vol, options: ['rbind', 'ro'] }]),
      'c1',
      `${share}/c1/rootfs`,
      share,
    );
    assert.deepEqual(out.mounts, [proc, { destination: '/data', type: 'bind', source: vol, options: ['rbind', 'ro'] }]);
    assert.throws(
      () =>
        toRuntimeSpec(
          spec([{ destination: '/etc/hosts', type: 'bind', source: '/etc/hosts', options: ['rbind'] }]),
          'c1',
          `${share}/c1/rootfs`,
          share,
        ),
      isCode(Code.INVALID_ARGUMENT, /volume "\/etc\/hosts"/),
    );
  });
});
