import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NOOP_LOGGER } from '../../hypervisor/types';
import { BUNDLE_POINTER, Store, processMatches, readBundlePointer, recoverFromRecord, writeBundlePointer, type SandboxRecord } from '../store';
import { FakeShare } from './fakes';

function spawned(argv: string[]): Promise<ChildProcess> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.once('spawn', () => resolve(child));
    child.once('error', reject);
  });
}

function exited(child: ChildProcess): Promise<NodeJS.Signals | number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode ?? child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
}

describe('core store', () => {
  let tmp: string;
  const children: ChildProcess[] = [];
  beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-store-'))));
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function record(dir: string, extra: Partial<SandboxRecord> = {}): SandboxRecord {
    return {
      version: 1,
      namespace: 'ns1',
      sandboxId: 'sb',
      shimPid: 999_999_999,
      vmStateDir: path.join(dir, 'vm'),
      shareRoot: dir,
      shareId: 'share',
      containers: { sb: { bundle: path.join(tmp, 'bundles', 'sb') }, c2: { bundle: path.join(tmp, 'bundles', 'c2') } },
      ...extra,
    };
  }

  describe('Store', () => {
    it('saves atomically (mode 0600, no temporary left) and loads the record back', () => {
      const file = path.join(tmp, 'ns1', 'sb', 'state.json');
      const store = new Store(file);
      const r = record(path.join(tmp, 'ns1', 'sb'));
      store.save(r);
      assert.deepEqual(Store.load(file), r);
      assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
      assert.equal(fs.existsSync(`${file}.tmp`), false);
      store.remove();
      assert.equal(Store.load(file), undefined);
      store.remove(); // idempotent
    });

    it('refuses a malformed record rather than guessing', () => {
      const file = path.join(tmp, 'state.json');
      fs.writeFileSync(file, JSON.stringify({ ...record(tmp), version: 2 }));
      assert.throws(() => Store.load(file), /not a hull sandbox record/);
      fs.writeFileSync(file, JSON.stringify({ ...record(tmp), vmStateDir: 'relative' }));
      assert.throws(() => Store.load(file), /not a hull sandbox record/);
      fs.writeFileSync(file, '{');
      assert.throws(() => Store.load(file), SyntaxError);
      fs.rmSync(file);
      fs.mkdirSync(file);
      assert.throws(() => Store.load(file), /not a regular file/);
    });
  });

  describe('bundle pointer', () => {
    it('writes and reads the record path and the state folder back', () => {
      const recordFile = path.join(tmp, 'state', 'ns', 'sb', 'state.json');
      writeBundlePointer(tmp, recordFile, path.join(tmp, 'state'));
      assert.deepEqual(readBundlePointer(tmp), { record: recordFile, stateDir: path.join(tmp, 'state') });
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(tmp, BUNDLE_POINTER), 'utf8')), { record: recordFile, stateDir: path.join(tmp, 'state') });
      assert.equal(fs.existsSync(path.join(tmp, `${BUNDLE_POINTER}.tmp`)), false);
      writeBundlePointer(tmp, '/other/ns/sb/state.json', '/other'); // replaced
      assert.deepEqual(readBundlePointer(tmp), { record: '/other/ns/sb/state.json', stateDir: '/other' });
    });

    it('is undefined when missing, malformed, relative, or a symlink', () => {
      assert.equal(readBundlePointer(tmp), undefined);
      assert.equal(readBundlePointer(path.join(tmp, 'no-such-bundle')), undefined);
      const p = path.join(tmp, BUNDLE_POINTER);
      fs.writeFileSync(p, 'not json');
      assert.equal(readBundlePointer(tmp), undefined);
      fs.writeFileSync(p, JSON.stringify({ record: 'relative/state.json' }));
      assert.equal(readBundlePointer(tmp), undefined);
      fs.writeFileSync(p, JSON.stringify({ record: 42 }));
      assert.equal(readBundlePointer(tmp), undefined);
      fs.writeFileSync(p, JSON.stringify({ record: '/x/ns/sb/state.json' })); // no state folder
      assert.equal(readBundlePointer(tmp), undefined);
      fs.writeFileSync(p, JSON.stringify({ record: '/x/../etc/state.json', stateDir: '/x' })); // not normalised
      assert.equal(readBundlePointer(tmp), undefined);
      fs.rmSync(p);
      const target = path.join(tmp, 'elsewhere.json');
      fs.writeFileSync(target, JSON.stringify({ record: '/x/state.json' }));
      fs.symlinkSync(target, p);
      assert.equal(readBundlePointer(tmp), undefined);
    });
  });

  describe('recoverFromRecord', () => {
    it('for a pod container: only unshares it and drops it from the record; the VM is left alone', async () => {
      const dir = path.join(tmp, 'state', 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      // A process whose argv names the VM state folder, as QEMU's does: it must survive a pod container's recovery.
      const qemu = await spawned([process.execPath, '-e', 'setTimeout(() => {}, 30_000)', path.join(dir, 'vm')]);
      children.push(qemu);
      const r = record(dir, { qemuPid: qemu.pid });
      new Store(file).save(r);
      const share = new FakeShare(dir, 'share');
      assert.deepEqual(await recoverFromRecord(r, file, 'c2', share, NOOP_LOGGER), []);
      assert.deepEqual(share.calls, ['unshare c2']);
      assert.deepEqual(Store.load(file), { ...r, containers: { sb: r.containers.sb } });
      assert.ok(processMatches(qemu.pid, r.vmStateDir), 'the VM still runs');
    });

    it('for the sandbox: kills only pids whose argv carries the marker, cleans the share, removes record and folders', async () => {
      const dir = path.join(tmp, 'state', 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const vmStateDir = path.join(dir, 'vm');
      fs.mkdirSync(vmStateDir, { recursive: true });
      fs.writeFileSync(path.join(vmStateDir, 'console.log'), 'guest\n');
      // A recycled pid: something harmless whose command line does not mention the VM's state folder.
      const stranger = await spawned(['sleep', '30']);
      children.push(stranger);
      const virtiofsd = await spawned([process.execPath, '-e', 'setTimeout(() => {}, 30_000)', path.join(vmStateDir, 'vfsd.sock')]);
      children.push(virtiofsd);
      const r = record(dir, { qemuPid: stranger.pid, virtiofsdPid: virtiofsd.pid });
      new Store(file).save(r);
      const share = new FakeShare(dir, 'share');
      assert.deepEqual(await recoverFromRecord(r, file, undefined, share, NOOP_LOGGER), []);
      assert.equal(await exited(virtiofsd), 'SIGKILL');
      assert.equal(stranger.exitCode, null);
      assert.equal(stranger.signalCode, null);
      process.kill(stranger.pid!, 0); // still alive
      assert.deepEqual(share.calls, ['cleanup']);
      assert.equal(fs.existsSync(file), false);
      assert.equal(fs.existsSync(vmStateDir), false);
      assert.equal(fs.existsSync(dir), false);
    });

    it('with the sandbox id as container id it recovers the whole sandbox; a dead pid is skipped', async () => {
      const dir = path.join(tmp, 'state', 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const gone = await spawned(['true']);
      await exited(gone);
      const r = record(dir, { qemuPid: gone.pid, virtiofsdPid: 1 });
      new Store(file).save(r);
      const share = new FakeShare(dir, 'share');
      assert.deepEqual(await recoverFromRecord(r, file, 'sb', share, NOOP_LOGGER), []);
      assert.deepEqual(share.calls, ['cleanup']);
      assert.equal(fs.existsSync(dir), false);
    });

    it('removes the taps a pod\'s record names from its network namespace, and is fine when the namespace is gone', async () => {
      const ns = `hull-st-${process.pid}`;
      const ip = (...args: string[]) => assert.equal(spawnSync('ip', args).status, 0, `ip ${args.join(' ')}`);
      ip('netns', 'add', ns);
      try {
        ip('-n', ns, 'tuntap', 'add', 'dev', 'tap0_hull', 'mode', 'tap');
        const dir = path.join(tmp, 'state', 'ns1', 'sb');
        const file = path.join(dir, 'state.json');
        const r = { ...record(dir), network: { netnsPath: `/run/netns/${ns}`, taps: ['tap0_hull'] } };
        new Store(file).save(r);
        assert.deepEqual(Store.load(file)?.network, r.network);
        assert.deepEqual(await recoverFromRecord(r, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER), []);
        assert.equal(spawnSync('ip', ['-n', ns, 'link', 'show', 'tap0_hull']).status !== 0, true, 'the tap is gone');
        const gone = { ...record(dir), network: { netnsPath: '/run/netns/hull-st-none', taps: ['tap0_hull'] } };
        new Store(file).save(gone);
        assert.deepEqual(await recoverFromRecord(gone, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER), []);
      } finally {
        spawnSync('ip', ['netns', 'del', ns]);
      }
    });

    it('reports each failure and keeps the record while the share is still mounted, so a later delete can retry', async () => {
      const dir = path.join(tmp, 'state', 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const r = record(dir);
      new Store(file).save(r);
      const share = new FakeShare(dir, 'share');
      share.fail.cleanup = new Error('umount: target is busy');
      const problems = await recoverFromRecord(r, file, undefined, share, NOOP_LOGGER);
      assert.equal(problems.length, 1);
      assert.match(problems[0]!, /unmount the share: umount: target is busy/);
      assert.deepEqual(Store.load(file), r, 'the record is kept');
    });
  });

  it('processMatches: only a live pid whose argv contains the marker', async () => {
    const child = await spawned(['sleep', '30']);
    children.push(child);
    assert.equal(processMatches(child.pid, 'sleep'), true);
    assert.equal(processMatches(child.pid, '/run/hull/sb/vm'), false);
    assert.equal(processMatches(undefined, 'sleep'), false);
    assert.equal(processMatches(1, ''), false, 'never pid 1');
    assert.equal(processMatches(0, ''), false);
  });
});
