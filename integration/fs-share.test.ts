/**
 * fs-share against REAL mounts (root only): overlay and bind rootfs, read-only volumes, the read-only shared view,
 * symlink refusal and crash-safe cleanup. Every test works in its own temp root and afterEach unmounts everything
 * under it (via /proc/self/mountinfo) and removes it, even when the test failed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../errors';
import { VirtioFsShare, mountsUnder } from '../fs-share';

const SANDBOX = 'sb1';

function mountedUnder(dir: string): string[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

function writeFails(file: string, code: string): void {
  assert.throws(
    () => fs.writeFileSync(file, 'x'),
    (err: NodeJS.ErrnoException) => err.code === code,
  );
}

describe('fs-share: real mounts (root)', function () {
  this.timeout(30_000);
  let tmp: string;
  let root: string;
  let share: VirtioFsShare;

  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });

  beforeEach(() => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'hull-fsshare-')));
    root = path.join(tmp, 'root');
    share = new VirtioFsShare({ root, sandboxId: SANDBOX });
  });

  afterEach(() => {
    // Last resort, independent of the code under test: lazy-unmount deepest first, then remove.
    for (let i = 0; i < 5; i++) {
      const left = mountedUnder(tmp).sort((a, b) => b.split('/').length - a.split('/').length);
      if (left.length === 0) break;
      for (const p of left) {
        try {
          execFileSync('umount', ['-l', '--', p], { stdio: 'ignore' });
        } catch {
          /* already gone */
        }
      }
    }
    assert.deepEqual(mountedUnder(tmp), []);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function overlayDirs(): { lower: string; upper: string; work: string } {
    const dirs = { lower: path.join(tmp, 'lower'), upper: path.join(tmp, 'upper'), work: path.join(tmp, 'work') };
    for (const d of Object.values(dirs)) fs.mkdirSync(d);
    fs.writeFileSync(path.join(dirs.lower, 'hello.txt'), 'from lower\n');
    return dirs;
  }

  async function shareOverlay(cid: string): Promise<string> {
    const d = overlayDirs();
    const g = await share.shareRootfs(cid, [
      {
        type: 'overlay',
        source: 'overlay',
        options: [`lowerdir=${d.lower}`, `upperdir=${d.upper}`, `workdir=${d.work}`],
      },
    ]);
    assert.deepEqual(g, { guestPath: `/run/kata-containers/shared/containers/${cid}/rootfs`, readOnly: false });
    return d.upper;
  }

  it('prepare is idempotent and makes shared/ a read-only view of mounts/', async () => {
    await share.prepare();
    await share.prepare();
    const base = path.join(root, SANDBOX);
    assert.equal(share.sharedDir(), path.join(base, 'shared'));
    fs.writeFileSync(path.join(base, 'mounts', 'probe'), 'x');
    assert.equal(fs.readFileSync(path.join(base, 'shared', 'probe'), 'utf8'), 'x');
    writeFails(path.join(base, 'shared', 'other'), 'EROFS');
    fs.unlinkSync(path.join(base, 'mounts', 'probe'));
    assert.deepEqual(mountedUnder(base).sort(), [base, path.join(base, 'mounts'), path.join(base, 'shared')]);
  });

  it('shares an overlay rootfs: visible in shared/, shared/ read-only, mounts/ writable; unshare twice; cleanup', async () => {
    await share.prepare();
    const upper = await shareOverlay('c1');
    const base = path.join(root, SANDBOX);
    assert.equal(fs.readFileSync(path.join(base, 'shared', 'c1', 'rootfs', 'hello.txt'), 'utf8'), 'from lower\n');
    writeFails(path.join(base, 'shared', 'c1', 'new.txt'), 'EROFS');
    writeFails(path.join(base, 'shared', 'new.txt'), 'EROFS');
    fs.writeFileSync(path.join(base, 'mounts', 'c1', 'rootfs', 'written.txt'), 'w');
    assert.equal(fs.readFileSync(path.join(upper, 'written.txt'), 'utf8'), 'w');
    await assert.rejects(
      shareOverlayAgain(),
      (err: unknown) => err instanceof Error && err.name === 'AlreadyExistsError',
    );

    await share.unshare('c1');
    await share.unshare('c1');
    assert.deepEqual(mountedUnder(path.join(base, 'mounts', 'c1')), []);
    assert.deepEqual(mountedUnder(path.join(base, 'shared', 'c1')), []);
    assert.equal(fs.existsSync(path.join(base, 'mounts', 'c1')), false);
    assert.equal(fs.readFileSync(path.join(upper, 'written.txt'), 'utf8'), 'w', 'unshare never deletes data');

    await share.cleanup();
    await share.cleanup();
    assert.deepEqual(mountedUnder(tmp), []);
    assert.equal(fs.existsSync(base), false);
  });

  async function shareOverlayAgain(): Promise<unknown> {
    return share.shareRootfs('c1', [{ type: 'bind', source: tmp, options: ['rbind'] }]);
  }

  it('shares read-only volumes (file and folder) and a bundle rootfs', async () => {
    await share.prepare();
    const bundle = path.join(tmp, 'bundle-rootfs');
    fs.mkdirSync(bundle);
    fs.writeFileSync(path.join(bundle, 'b.txt'), 'bundle');
    const g = await share.shareRootfs('c2', [], bundle);
    assert.equal(g.guestPath, '/run/kata-containers/shared/containers/c2/rootfs');
    const base = path.join(root, SANDBOX);
    assert.equal(fs.readFileSync(path.join(base, 'shared', 'c2', 'rootfs', 'b.txt'), 'utf8'), 'bundle');

    const volDir = path.join(tmp, 'vol dir');
    fs.mkdirSync(volDir);
    fs.writeFileSync(path.join(volDir, 'in.txt'), 'dir');
    const volFile = path.join(tmp, 'resolv.conf');
    fs.writeFileSync(volFile, 'nameserver 1.1.1.1\n');
    const gd = await share.shareVolume('c2', { source: volDir, destination: '/data', readOnly: true });
    const gf = await share.shareVolume('c2', { source: volFile, destination: '/etc/resolv.conf', readOnly: true });
    const gw = await share.shareVolume('c2', { source: volDir, destination: '/rw', readOnly: false });
    assert.match(gd.guestPath, /^\/run\/kata-containers\/shared\/containers\/c2\/volumes\/[0-9a-f]{16}$/);
    assert.equal(gd.readOnly, true);
    const hostOf = (guest: string): string =>
      path.join(base, 'shared', path.relative('/run/kata-containers/shared/containers', guest));
    assert.equal(fs.readFileSync(path.join(hostOf(gd.guestPath), 'in.txt'), 'utf8'), 'dir');
    assert.equal(fs.readFileSync(hostOf(gf.guestPath), 'utf8'), 'nameserver 1.1.1.1\n');
    writeFails(path.join(hostOf(gd.guestPath), 'x'), 'EROFS');
    writeFails(hostOf(gf.guestPath), 'EROFS');
    // read-only in the private mounts/ view as well
    writeFails(
      path.join(base, 'mounts', path.relative('/run/kata-containers/shared/containers', gd.guestPath), 'x'),
      'EROFS',
    );
    // the read-write volume stays writable (through mounts/)
    fs.writeFileSync(
      path.join(base, 'mounts', path.relative('/run/kata-containers/shared/containers', gw.guestPath), 'rw.txt'),
      'rw',
    );
    assert.equal(fs.readFileSync(path.join(volDir, 'rw.txt'), 'utf8'), 'rw');
    // no staging mount is left behind
    assert.deepEqual(mountedUnder(path.join(base, 'private')), []);

    await assert.rejects(
      share.shareVolume('c2', { source: path.join(tmp, 'missing'), destination: '/m', readOnly: true }),
      NotFoundError,
    );
    await share.unshare('c2');
    assert.deepEqual(mountedUnder(path.join(base, 'mounts')), [path.join(base, 'mounts')]);
    assert.equal(fs.readFileSync(path.join(volDir, 'in.txt'), 'utf8'), 'dir');
    assert.equal(fs.readFileSync(volFile, 'utf8'), 'nameserver 1.1.1.1\n');
    await share.cleanup();
    assert.deepEqual(mountedUnder(tmp), []);
  });

  it('refuses path-escaping ids and volume destinations, and symlinks at targets', async () => {
    assert.throws(() => new VirtioFsShare({ root, sandboxId: '../evil' }), InvalidArgumentError);
    await share.prepare();
    const d = overlayDirs();
    const ovl = [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${d.lower}`] }];
    await assert.rejects(share.shareRootfs('../c', ovl), InvalidArgumentError);
    await assert.rejects(share.shareRootfs('a/b', ovl), InvalidArgumentError);
    await assert.rejects(
      share.shareVolume('..', { source: d.lower, destination: '/x', readOnly: true }),
      InvalidArgumentError,
    );
    await assert.rejects(
      share.shareVolume('c3', { source: d.lower, destination: '../../etc', readOnly: true }),
      InvalidArgumentError,
    );
    await assert.rejects(
      share.shareVolume('c3', { source: 'rel/path', destination: '/x', readOnly: true }),
      InvalidArgumentError,
    );
    await assert.rejects(
      share.shareRootfs('c3', [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${d.lower},upperdir=/etc`] }]),
      InvalidArgumentError,
    );
    await assert.rejects(
      share.shareRootfs('c3', [{ type: 'proc', source: 'proc', options: [] }]),
      InvalidArgumentError,
    );

    // a symlink planted where the container folder would go
    const outside = path.join(tmp, 'outside');
    fs.mkdirSync(outside);
    const base = path.join(root, SANDBOX);
    fs.symlinkSync(outside, path.join(base, 'mounts', 'c4'));
    await assert.rejects(share.shareRootfs('c4', ovl), FailedPreconditionError);
    // and one planted at a volume target
    fs.mkdirSync(path.join(base, 'mounts', 'c5', 'volumes'), { recursive: true });
    const vol = await share.shareVolume('c5', { source: d.lower, destination: '/v', readOnly: false });
    const name = path.basename(vol.guestPath);
    await share.unshare('c5');
    fs.mkdirSync(path.join(base, 'mounts', 'c5', 'volumes'), { recursive: true });
    fs.symlinkSync(outside, path.join(base, 'mounts', 'c5', 'volumes', name));
    await assert.rejects(
      share.shareVolume('c5', { source: d.lower, destination: '/v', readOnly: false }),
      FailedPreconditionError,
    );
    assert.deepEqual(mountedUnder(outside), []);
    assert.deepEqual(fs.readdirSync(outside), []);

    await share.unshare('c4'); // removes the planted link itself, never what it points at
    assert.equal(fs.existsSync(outside), true);
    await share.cleanup();
    assert.deepEqual(mountedUnder(tmp), []);
  });

  it('cleanup after a simulated crash (a new object over the same root) unmounts everything', async () => {
    await share.prepare();
    await shareOverlay('c6');
    const volDir = path.join(tmp, 'v');
    fs.mkdirSync(volDir);
    await share.shareVolume('c6', { source: volDir, destination: '/v', readOnly: true });
    assert.ok((await mountsUnder(path.join(root, SANDBOX))).length >= 5);

    const fresh = new VirtioFsShare({ root, sandboxId: SANDBOX });
    await fresh.cleanup();
    assert.deepEqual(mountedUnder(tmp), []);
    assert.equal(fs.existsSync(path.join(root, SANDBOX)), false);
    assert.equal(fs.existsSync(path.join(tmp, 'upper')), true);
    await fresh.cleanup();
  });

  it('shareRootfs before prepare is a FailedPreconditionError', async () => {
    await assert.rejects(share.shareRootfs('c7', [], tmp), FailedPreconditionError);
  });
});
