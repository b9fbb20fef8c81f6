import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError } from '../../errors';
import { NOOP_LOGGER } from '../../log';
import { childPids, processStartTime } from '../../hypervisor/process';
import {
  BUNDLE_POINTER,
  RecordLock,
  Store,
  processMatches,
  readBundlePointer,
  recoverFromRecord,
  recoverLocked,
  writeBundlePointer,
  type SandboxRecord,
} from '../store';
import { FakeShare } from './fakes';

function spawned(argv: string[]): Promise<ChildProcess> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' }); // spawns: wrapper; the callers' argv[0]
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

    it("keeps the VM's accel and size and the debug console flag (hull list), and refuses bad ones", () => {
      const file = path.join(tmp, 'ns1', 'sb', 'state.json');
      const r = record(path.join(tmp, 'ns1', 'sb'), {
        vm: { accel: 'tcg', vcpus: 2, memoryMiB: 2048 },
        debugConsole: true,
      });
      new Store(file).save(r);
      assert.deepEqual(Store.load(file), r);
      for (const bad of [
        { vm: { accel: 'tcg', vcpus: 0, memoryMiB: 2048 } },
        { vm: { accel: 'tcg', vcpus: 1, memoryMiB: '2048' } },
        { vm: { accel: 'TCG; rm', vcpus: 1, memoryMiB: 2048 } },
        { vm: null },
        { debugConsole: 'yes' },
      ]) {
        fs.writeFileSync(file, JSON.stringify({ ...r, ...bad }));
        assert.throws(() => Store.load(file), /not a hull sandbox record/, JSON.stringify(bad));
      }
    });

    it("refuses a record that is not in its sandbox's folder or names a path outside it", () => {
      const stateDir = path.join(tmp, 'state');
      const dir = path.join(stateDir, 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const save = (r: object): void => {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(file, JSON.stringify(r));
      };
      save(record(dir));
      assert.ok(Store.load(file, stateDir));
      assert.throws(
        () => Store.load(file, path.join(tmp, 'other')),
        /is not where the record of sandbox ns1\/sb belongs/,
      );
      for (const [key, value] of [
        ['vmStateDir', '/'],
        ['vmStateDir', path.join(dir, '..', 'sb2', 'vm')],
        ['shareRoot', stateDir],
        ['shareRoot', `${dir}2`],
        ['vmStateDir', `${dir}//vm`],
      ] as const) {
        save({ ...record(dir), [key]: value });
        assert.throws(() => Store.load(file, stateDir), /outside the sandbox folder/, `${key} = ${value}`);
      }
      save({ ...record(dir), sandboxId: 'other' });
      assert.throws(() => Store.load(file, stateDir), /is not where the record of sandbox ns1\/other belongs/);
      save({ ...record(dir), namespace: '../..' });
      assert.throws(() => Store.load(file, stateDir), /not a hull sandbox record/);
      save({ ...record(dir), containers: { '../x': { bundle: '/b' } } });
      assert.throws(() => Store.load(file, stateDir), /container id/);
      save({ ...record(dir), helpers: [{ name: 'qemu', pid: 1, startTime: '5' }] });
      assert.throws(() => Store.load(file, stateDir), /not a hull sandbox record/, 'pid 1 is never a helper');
      save({ ...record(dir), network: { netnsPath: '/run/netns/x', taps: ['eth0; rm'] } });
      assert.throws(() => Store.load(file, stateDir), /not a hull sandbox record/);
    });
  });

  describe('bundle pointer', () => {
    it('writes and reads the record path and the state folder back', () => {
      const recordFile = path.join(tmp, 'state', 'ns', 'sb', 'state.json');
      writeBundlePointer(tmp, recordFile, path.join(tmp, 'state'));
      assert.deepEqual(readBundlePointer(tmp), { record: recordFile, stateDir: path.join(tmp, 'state') });
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(tmp, BUNDLE_POINTER), 'utf8')), {
        record: recordFile,
        stateDir: path.join(tmp, 'state'),
      });
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
      const virtiofsd = await spawned([
        process.execPath,
        '-e',
        'setTimeout(() => {}, 30_000)',
        path.join(vmStateDir, 'vfsd.sock'),
      ]);
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

    it("removes the taps a pod's record names from its network namespace, and is fine when the namespace is gone", async () => {
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

    describe('a pod whose network namespace containerd unmounted (StopPodSandbox) before or while `delete` runs', () => {
      const run = (cmd: string, ...args: string[]): void => {
        // spawns: ip, tc, umount
        const r = spawnSync(cmd, args);
        assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr?.toString()}`);
      };
      let ns = '';
      beforeEach(() => {
        ns = `hull-t-${crypto.randomBytes(4).toString('hex')}`;
        run('ip', 'netns', 'add', ns);
        run('ip', '-n', ns, 'tuntap', 'add', 'dev', 'tap0_hull', 'mode', 'tap');
        run('ip', '-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
      });
      afterEach(() => {
        spawnSync('umount', [`/run/netns/${ns}`]);
        spawnSync('ip', ['netns', 'del', ns]);
        fs.rmSync(`/run/netns/${ns}`, { force: true });
      });

      /** A record of the sandbox naming the netns and its tap. */
      function podRecord(): { r: SandboxRecord; file: string; dir: string } {
        const dir = path.join(tmp, 'state', 'ns1', 'sb');
        const file = path.join(dir, 'state.json');
        const r = { ...record(dir), network: { netnsPath: `/run/netns/${ns}`, taps: ['tap0_hull'] } };
        new Store(file).save(r);
        return { r, file, dir };
      }

      it('unmounted, its file left (a plain file, not nsfs): the namespace is gone, recovery finishes and removes the folder', async () => {
        const { r, file, dir } = podRecord();
        run('umount', `/run/netns/${ns}`);
        assert.equal(fs.statSync(`/run/netns/${ns}`).isFile(), true, 'the file is left');
        assert.deepEqual(await recoverFromRecord(r, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER), []);
        assert.equal(fs.existsSync(dir), false, 'the sandbox folder is removed');
      });

      it('unmounted while recovery runs (after its first look at the file): recovery finishes and removes the folder', async () => {
        const { r, file, dir } = podRecord();
        for (const dev of ['eth0', 'eth1']) run('tc', '-n', ns, 'qdisc', 'add', 'dev', dev, 'ingress'); // more for detach to look at
        const recovering = recoverFromRecord(r, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER);
        // spawnSync blocks the event loop: recovery's statfs (threadpool) has seen the nsfs file, its nsenter has not run.
        run('umount', `/run/netns/${ns}`);
        assert.deepEqual(await recovering, []);
        assert.equal(fs.existsSync(dir), false, 'the sandbox folder is removed');
      });

      it("the host's own network namespace named by a record is never acted on: a problem, the record kept", async () => {
        const dir = path.join(tmp, 'state', 'ns1', 'sb');
        const file = path.join(dir, 'state.json');
        const r = { ...record(dir), network: { netnsPath: `/proc/${process.pid}/ns/net`, taps: ['tap0_hull'] } };
        new Store(file).save(r);
        const problems = await recoverFromRecord(r, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER);
        assert.equal(problems.length, 2, problems.join('\n'));
        for (const p of problems) assert.match(p, /host's own network namespace/);
        assert.deepEqual(Store.load(file), r, 'the record is kept');
      });
    });

    it('kills a recorded helper only while its start time matches (a reused pid is left alone), and its forked child', async () => {
      const dir = path.join(tmp, 'state', 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const marker = path.join(dir, 'vm', 'virtiofsd.sock');
      // Stands for virtiofsd in sandbox=namespace: a process that forks a child with the same argv.
      const forker = await spawned([
        process.execPath,
        '-e',
        "require('child_process').spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', process.argv[1]], { stdio: 'ignore' }); setTimeout(() => {}, 30000)",
        marker,
      ]);
      children.push(forker);
      let kids: number[] = [];
      for (let i = 0; i < 100 && kids.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
        kids = childPids(forker.pid!).filter((k) => processMatches(k, marker));
      }
      assert.equal(kids.length, 1, 'the helper forked its child');
      // A process at a recorded pid, with the marker in its argv, but started later than the recorded helper.
      const reused = await spawned([process.execPath, '-e', 'setTimeout(() => {}, 30000)', marker]);
      children.push(reused);
      const r = record(dir, {
        helpers: [
          { name: 'virtiofsd', pid: forker.pid!, startTime: processStartTime(forker.pid!)! },
          { name: 'qemu', pid: reused.pid!, startTime: String(Number(processStartTime(reused.pid!)) - 1) },
        ],
      });
      new Store(file).save(r);
      assert.deepEqual(await recoverFromRecord(r, file, 'sb', new FakeShare(dir, 'share'), NOOP_LOGGER), []);
      assert.equal(await exited(forker), 'SIGKILL');
      for (let i = 0; i < 100 && processStartTime(kids[0]!) !== undefined; i++)
        await new Promise((res) => setTimeout(res, 20));
      assert.equal(processStartTime(kids[0]!), undefined, 'the forked child is gone');
      assert.equal(reused.exitCode, null, 'the process at a reused pid still runs');
      assert.equal(reused.signalCode, null);
    });

    it('concurrent recoveries of one sandbox (a delete per container, all at once) lose no update and resurrect nothing', async () => {
      const stateDir = path.join(tmp, 'state');
      const dir = path.join(stateDir, 'ns1', 'sb');
      const file = path.join(dir, 'state.json');
      const ids = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
      const containers = Object.fromEntries(
        ['sb', ...ids].map((id) => [id, { bundle: path.join(tmp, 'bundles', id) }]),
      );
      /** A share whose unshare takes a while, as unmounting does: without the lock the read-modify-writes interleave. */
      class SlowShare extends FakeShare {
        override async unshare(containerId: string): Promise<void> {
          await new Promise((r) => setTimeout(r, 30));
          await super.unshare(containerId);
        }
      }
      const run = (containerId: string): Promise<string[]> =>
        recoverLocked({
          recordFile: file,
          stateDir,
          namespace: 'ns1',
          containerId,
          share: () => new SlowShare(dir, 'share'),
          logger: NOOP_LOGGER,
          lockTimeoutMs: 10_000,
        });

      // The pod's containers only: each one goes, none comes back.
      new Store(file).save(record(dir, { containers }));
      assert.deepEqual(await Promise.all(ids.slice(0, 4).map(run)), [[], [], [], []]);
      assert.deepEqual(Object.keys(Store.load(file, stateDir)!.containers).sort(), ['c5', 'c6', 'sb']);

      // The sandbox with the rest at the same time: whatever the order, the record and the folder are gone at the end.
      assert.deepEqual(await Promise.all(['c5', 'sb', 'c6'].map(run)), [[], [], []]);
      assert.equal(fs.existsSync(file), false);
      assert.equal(fs.existsSync(dir), false, "no container's delete brought the folder back");
    });

    it('RecordLock: one holder at a time; a waiter gets it once released, or gives up after its timeout', async () => {
      const file = path.join(tmp, 'state', 'ns1', 'sb', 'state.json');
      const first = await RecordLock.acquire(file, 1_000);
      await assert.rejects(RecordLock.acquire(file, 100), /held its lock for 100 ms/);
      const other = await RecordLock.acquire(`${file}.other`, 100); // another sandbox: its own lock
      await other.release();
      const waiter = RecordLock.acquire(file, 5_000);
      await new Promise((r) => setTimeout(r, 100));
      await first.release();
      await (await waiter).release();
    });

    it('RecordLock is released when its holder dies, even by SIGKILL (no stale lock)', async () => {
      const file = path.join(tmp, 'state', 'ns1', 'sb', 'state.json');
      const name = RecordLock.lockName(file);
      const holder = spawn(
        process.execPath,
        [
          '-e',
          `require('net').createServer().listen({ path: ${JSON.stringify(name)}, exclusive: true }, () => process.stdout.write('held')); setTimeout(() => {}, 30000)`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      children.push(holder);
      await new Promise((r) => holder.stdout.once('data', r));
      await assert.rejects(RecordLock.acquire(file, 100), /held its lock/);
      holder.kill('SIGKILL');
      await exited(holder);
      await (await RecordLock.acquire(file, 2_000)).release();
    });

    it('RecordLock held by another user (a squatter, not a recovery) is refused at once rather than waited for', async function () {
      if (process.getuid?.() !== 0) this.skip();
      const file = path.join(tmp, 'state', 'ns1', 'sb', 'state.json');
      const name = RecordLock.lockName(file);
      const squatter = spawn(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          '-e',
          `require('net').createServer().listen({ path: ${JSON.stringify(name)}, exclusive: true }, () => process.stdout.write('held')); setTimeout(() => {}, 30000)`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'], cwd: '/' },
      );
      children.push(squatter);
      await new Promise((r) => squatter.stdout.once('data', r));
      const t0 = Date.now();
      await assert.rejects(
        RecordLock.acquire(file, 3_000),
        (e: Error) => e instanceof FailedPreconditionError && /held by another user \(uid 65534\)/.test(e.message),
      );
      assert.ok(Date.now() - t0 < 1_500, 'refused without waiting out the timeout');
      // recoverLocked goes ahead without it: a squatter must not keep a crashed sandbox's VM running.
      const dir = path.dirname(file);
      new Store(file).save(record(dir));
      const problems = await recoverLocked({
        recordFile: file,
        stateDir: path.join(tmp, 'state'),
        namespace: 'ns1',
        containerId: 'sb',
        share: () => new FakeShare(dir, 'share'),
        logger: NOOP_LOGGER,
      });
      assert.equal(problems.length, 1);
      assert.match(problems[0]!, /held by another user .*: recovering without the lock/);
      assert.equal(fs.existsSync(dir), false, 'the sandbox is recovered');
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
