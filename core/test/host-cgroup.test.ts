import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import { NOOP_LOGGER } from '../../log';
import {
  CGROUP_ROOT,
  HostCgroup,
  checkRecordedCgroupDirs,
  checkUnitName,
  expandSlice,
  hostCgroupLayout,
  parseCgroupMounts,
  parseCgroupsPath,
  scopeProperties,
  type CgroupLayout,
} from '../host-cgroup';
import { Store, recoverFromRecord, type SandboxRecord } from '../store';
import { FakeShare } from './fakes';

/** This machine's mountinfo lines for its cgroups (v1 + the hybrid unified hierarchy), and a unified host's. */
const V1_MOUNTINFO = [
  '25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755',
  '26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate',
  '27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd',
  '28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct',
  '29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory',
  '30 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuset',
  '31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids',
  '32 25 0:28 / /run/elsewhere/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids',
  '33 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw',
].join('\n');
const V2_MOUNTINFO =
  '30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n';

const rmTree = (d: string): void => fs.rmSync(d, { recursive: true, force: true });

describe('core host-cgroup', () => {
  describe('parseCgroupsPath', () => {
    it('cgroupfs form (SystemdCgroup = false): an absolute path, normalised', () => {
      assert.deepEqual(parseCgroupsPath('/kubepods/burstable/pod1234/abcd'), {
        driver: 'cgroupfs',
        path: '/kubepods/burstable/pod1234/abcd',
      });
      assert.equal(parseCgroupsPath('//hull-test//sb/').path, '/hull-test/sb');
    });

    it('systemd form (SystemdCgroup = true): slice:prefix:name expanded as runc does', () => {
      const p = parseCgroupsPath('kubepods-burstable-pod1234.slice:cri-containerd:abcd');
      assert.equal(p.driver, 'systemd');
      assert.equal(p.unit, 'cri-containerd-abcd.scope');
      assert.equal(
        p.path,
        '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcd.scope',
      );
      assert.equal(parseCgroupsPath(':cri-containerd:abcd').path, '/system.slice/cri-containerd-abcd.scope');
      assert.equal(parseCgroupsPath('-.slice::abcd').path, '/abcd.scope');
      assert.equal(parseCgroupsPath('system.slice:x:sub.slice').unit, 'sub.slice');
      assert.equal(expandSlice('a-b-c.slice'), '/a.slice/a-b.slice/a-b-c.slice');
    });

    for (const [value, why] of [
      ['/kubepods/../../etc', /"\.\." component/],
      ['/kubepods/./x', /"\." component/],
      ['/', /root cgroup/],
      ['kubepods/pod1', /neither an absolute cgroupfs path/],
      ['', /non-empty string/],
      [42, /non-empty string/],
      ['/a\nb', /control characters/],
      [`/${'x'.repeat(300)}`, /longer than 255/],
      ['a.slice:b', /3 fields/],
      ['a.slice:b:c:d', /3 fields/],
      ['a.slice:p:', /needs a name/],
      ['notaslice:p:n', /not a slice name/],
      ['a--b.slice:p:n', /not a valid slice name/],
      ['a.slice:p/q:n', /prefix .* not a systemd unit name/],
      ['a.slice:p:..', /name .* not a systemd unit name/],
    ] as const) {
      it(`refuses ${JSON.stringify(value).slice(0, 40)} (InvalidArgument)`, () => {
        assert.throws(
          () => parseCgroupsPath(value),
          (err: unknown) => err instanceof InvalidArgumentError && why.test(err.message),
        );
      });
    }
  });

  describe('parseCgroupMounts', () => {
    it("v1 (this machine's kind): one hierarchy per controller set under /sys/fs/cgroup, the hybrid unified one joined too", () => {
      const l = parseCgroupMounts(V1_MOUNTINFO);
      assert.equal(l.version, 1);
      assert.deepEqual(
        l.hierarchies.map((h) => `${h.mountPoint}=${h.controllers.join(',')}`),
        [
          '/sys/fs/cgroup/systemd=name=systemd',
          '/sys/fs/cgroup/cpu,cpuacct=cpu,cpuacct',
          '/sys/fs/cgroup/memory=memory',
          '/sys/fs/cgroup/cpuset=cpuset',
          '/sys/fs/cgroup/pids=pids',
          '/sys/fs/cgroup/unified=',
        ],
      );
    });

    it('v2: the one unified hierarchy at /sys/fs/cgroup', () => {
      assert.deepEqual(parseCgroupMounts(V2_MOUNTINFO), {
        version: 2,
        hierarchies: [{ mountPoint: '/sys/fs/cgroup', controllers: [], version: 2 }],
      });
    });

    it('no cgroup mounted there: FailedPrecondition', () => {
      assert.throws(() => parseCgroupMounts('33 22 0:5 / /proc rw - proc proc rw'), FailedPreconditionError);
    });
  });

  describe('HostCgroup on a fake cgroupfs', () => {
    let tmp: string;
    beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cgroup-'))));
    afterEach(() => rmTree(tmp));

    function v1(): CgroupLayout {
      const layout: CgroupLayout = {
        version: 1,
        hierarchies: ['cpu,cpuacct', 'cpuset', 'memory', 'pids'].map((c) => ({
          mountPoint: path.join(tmp, c),
          controllers: c.split(','),
          version: 1 as const,
        })),
      };
      for (const h of layout.hierarchies) fs.mkdirSync(h.mountPoint);
      fs.writeFileSync(path.join(tmp, 'cpuset', 'cpuset.cpus'), '0-1\n');
      fs.writeFileSync(path.join(tmp, 'cpuset', 'cpuset.mems'), '0\n');
      return layout;
    }

    it('v1: makes the folder in every hierarchy (parents too), cpuset inherited, the pid placed; the limit is the smallest above; removes only the leaf', async () => {
      const layout = v1();
      // kubelet's pod folder with the pod's limit, and a larger one above it; the root's is "unlimited".
      fs.mkdirSync(path.join(tmp, 'memory', 'kubepods', 'pod1'), { recursive: true });
      fs.writeFileSync(path.join(tmp, 'memory', 'memory.limit_in_bytes'), '9223372036854771712\n');
      fs.writeFileSync(path.join(tmp, 'memory', 'kubepods', 'memory.limit_in_bytes'), `${4 * 2 ** 30}\n`);
      fs.writeFileSync(path.join(tmp, 'memory', 'kubepods', 'pod1', 'memory.limit_in_bytes'), `${700 << 20}\n`);
      const cg = HostCgroup.forPath('/kubepods/pod1/sb', { layout, removeDir: rmTree });
      assert.equal(cg.memoryLimitBytes(), 700 << 20, 'the limit is read before the leaf exists');
      cg.create();
      cg.create(); // idempotent
      for (const h of layout.hierarchies)
        assert.ok(fs.statSync(path.join(h.mountPoint, 'kubepods', 'pod1', 'sb')).isDirectory(), h.mountPoint);
      assert.equal(fs.readFileSync(path.join(tmp, 'cpuset', 'kubepods', 'pod1', 'sb', 'cpuset.cpus'), 'utf8'), '0-1');
      assert.equal(fs.readFileSync(path.join(tmp, 'cpuset', 'kubepods', 'cpuset.mems'), 'utf8'), '0');
      cg.place(4242);
      for (const d of cg.dirs) assert.equal(fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8'), '4242');
      assert.throws(() => cg.place(0), InvalidArgumentError);
      // The daemon's origin from /proc/<pid>/cgroup, per hierarchy; restore writes there.
      const origin = cg.origin(1, '4:memory:/process_api/x\n3:cpuset:/\n2:cpu,cpuacct:/\n1:pids:/p\n0::/\n');
      assert.deepEqual(origin, [
        path.join(tmp, 'cpu,cpuacct'),
        path.join(tmp, 'cpuset'),
        path.join(tmp, 'memory', 'process_api', 'x'),
        path.join(tmp, 'pids', 'p'),
      ]);
      cg.restore(4242, origin); // missing folders: the hierarchy's root
      assert.equal(fs.readFileSync(path.join(tmp, 'memory', 'cgroup.procs'), 'utf8'), '4242');
      await cg.remove();
      await cg.remove(); // idempotent
      for (const h of layout.hierarchies) {
        assert.equal(fs.existsSync(path.join(h.mountPoint, 'kubepods', 'pod1', 'sb')), false);
        assert.ok(fs.existsSync(path.join(h.mountPoint, 'kubepods', 'pod1')), "kubelet's pod folder stays");
      }
    });

    it('v1: no limit anywhere is undefined; a garbled limit file is an error', () => {
      const layout = v1();
      const cg = HostCgroup.forPath('/a/b', { layout });
      assert.equal(cg.memoryLimitBytes(), undefined);
      fs.mkdirSync(path.join(tmp, 'memory', 'a'));
      fs.writeFileSync(path.join(tmp, 'memory', 'a', 'memory.limit_in_bytes'), 'lots\n');
      assert.throws(() => cg.memoryLimitBytes(), InvalidArgumentError);
    });

    it('v2: one folder; each folder above enables its controllers for the next; memory.max "max" is no limit', async () => {
      const root = path.join(tmp, 'unified');
      fs.mkdirSync(path.join(root, 'kubepods', 'pod1'), { recursive: true });
      for (const d of [root, path.join(root, 'kubepods'), path.join(root, 'kubepods', 'pod1')]) {
        fs.writeFileSync(path.join(d, 'cgroup.controllers'), 'cpuset cpu memory pids\n');
        fs.writeFileSync(path.join(d, 'cgroup.subtree_control'), d === root ? 'cpu memory\n' : '\n');
      }
      fs.writeFileSync(path.join(root, 'kubepods', 'memory.max'), 'max\n');
      fs.writeFileSync(path.join(root, 'kubepods', 'pod1', 'memory.max'), `${1 << 30}\n`);
      const layout: CgroupLayout = { version: 2, hierarchies: [{ mountPoint: root, controllers: [], version: 2 }] };
      const cg = HostCgroup.forPath('/kubepods/pod1/sb', { layout, removeDir: rmTree });
      assert.deepEqual(cg.dirs, [path.join(root, 'kubepods', 'pod1', 'sb')]);
      assert.equal(cg.memoryLimitBytes(), 1 << 30);
      cg.create();
      assert.equal(fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8'), '+cpuset +pids');
      assert.equal(
        fs.readFileSync(path.join(root, 'kubepods', 'pod1', 'cgroup.subtree_control'), 'utf8'),
        '+cpuset +cpu +memory +pids',
      );
      cg.place(77);
      assert.equal(fs.readFileSync(path.join(cg.dirs[0]!, 'cgroup.procs'), 'utf8'), '77');
      await cg.remove();
      assert.equal(fs.existsSync(cg.dirs[0]!), false);
    });

    it('systemd form: a scope unit in its slice, nothing made by forPath; a slice as the name is refused', () => {
      const layout = v1();
      const cg = HostCgroup.forPath('kubepods-pod1.slice:cri-containerd:sb', { layout });
      assert.equal(cg.unit, 'cri-containerd-sb.scope');
      assert.deepEqual(
        cg.dirs,
        layout.hierarchies.map((h) =>
          path.join(h.mountPoint, 'kubepods.slice/kubepods-pod1.slice/cri-containerd-sb.scope'),
        ),
      );
      assert.equal(HostCgroup.forPath('/kubepods/sb', { layout }).unit, undefined, 'cgroupfs: no unit');
      assert.throws(
        () => HostCgroup.forPath('system.slice:x:sub.slice', { layout }),
        (err: unknown) => err instanceof InvalidArgumentError && /names the slice sub\.slice/.test(err.message),
      );
      assert.deepEqual(fs.readdirSync(path.join(tmp, 'memory')), []);
    });

    it("systemd form: the transient scope's properties are runc's (v1: BlockIOAccounting, v2: IOAccounting)", () => {
      const v1props = scopeProperties('kubepods-besteffort.slice', 'cri-containerd-x.scope', 123, 1);
      assert.deepEqual(v1props, [
        ['Description', { signature: 's', value: 'hull pod sandbox cri-containerd-x.scope' }],
        ['Slice', { signature: 's', value: 'kubepods-besteffort.slice' }],
        ['Delegate', { signature: 'b', value: true }],
        ['PIDs', { signature: 'au', value: [123] }],
        ['MemoryAccounting', { signature: 'b', value: true }],
        ['CPUAccounting', { signature: 'b', value: true }],
        ['BlockIOAccounting', { signature: 'b', value: true }],
        ['TasksAccounting', { signature: 'b', value: true }],
        ['DefaultDependencies', { signature: 'b', value: false }],
      ]);
      const v2props = scopeProperties('a.slice', 'p-n.scope', 1, 2).map(([n]) => n);
      assert.ok(v2props.includes('IOAccounting') && !v2props.includes('BlockIOAccounting'));
    });

    it("systemd's unit name rule: [A-Za-z0-9:_.-], a .scope or .slice suffix, at most 255 characters", () => {
      for (const ok of ['cri-containerd-abc.scope', 'kubepods-burstable-pod1_2.slice', 'a:b.scope'])
        assert.equal(checkUnitName(ok), undefined, ok);
      for (const bad of [
        'x.service',
        '.scope',
        'a b.scope',
        'a@b.scope',
        'a\\x2d.scope',
        `${'a'.repeat(250)}.scope`,
        7,
        'a/b.scope',
      ])
        assert.notEqual(checkUnitName(bad), undefined, String(bad));
      assert.throws(
        () => parseCgroupsPath(`kubepods.slice:p:${'n'.repeat(250)}`),
        (err: unknown) => err instanceof InvalidArgumentError && /not a systemd/.test(err.message),
      );
    });

    it('a rmdir that stays EBUSY is reported with the processes still in the cgroup', async () => {
      const layout = v1();
      const cg = HostCgroup.forPath('/x', {
        layout,
        removeDir: () => {
          throw Object.assign(new Error('busy'), { code: 'EBUSY' });
        },
      });
      cg.create();
      cg.place(123);
      await assert.rejects(
        cg.remove(),
        (err: unknown) =>
          err instanceof FailedPreconditionError && /EBUSY \(processes still in it: 123\)/.test(err.message),
      );
    });
  });

  describe('the crash-recovery record', () => {
    it('cgroup folders must be normalised paths below /sys/fs/cgroup', () => {
      assert.equal(
        checkRecordedCgroupDirs(['/sys/fs/cgroup/memory/kubepods/sb', '/sys/fs/cgroup/pids/kubepods/sb']),
        undefined,
      );
      for (const bad of [
        [],
        ['/etc/passwd'],
        ['/sys/fs/cgroup/memory/../../../etc'],
        ['sys/fs/cgroup/memory/x'],
        ['/sys/fs/cgroup'],
        [7],
        'x',
        ['/sys/fs/cgroup//memory/x'],
      ]) {
        assert.notEqual(checkRecordedCgroupDirs(bad), undefined, JSON.stringify(bad));
      }
    });

    it('Store.load refuses a record whose cgroup lies outside /sys/fs/cgroup', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cgroup-rec-'));
      try {
        const sbDir = path.join(dir, 'ns1', 'sb');
        const file = path.join(sbDir, 'state.json');
        const r: SandboxRecord = {
          version: 1,
          namespace: 'ns1',
          sandboxId: 'sb',
          shimPid: 999_999_999,
          vmStateDir: path.join(sbDir, 'vm'),
          shareRoot: sbDir,
          shareId: 'share',
          containers: {},
          cgroup: ['/sys/fs/cgroup/memory/../../../tmp'],
        };
        new Store(file).save(r);
        assert.throws(
          () => Store.load(file),
          (err: unknown) => err instanceof InvalidArgumentError && /cgroup folder/.test(err.message),
        );
        new Store(file).save({ ...r, cgroup: ['/sys/fs/cgroup/memory/x/sb'] });
        assert.deepEqual(Store.load(file)?.cgroup, ['/sys/fs/cgroup/memory/x/sb']);
        // The systemd driver's unit: a scope unit name by systemd's rules, and only with the cgroup's folders.
        const dirs = ['/sys/fs/cgroup/memory/k.slice/cri-containerd-sb.scope'];
        new Store(file).save({ ...r, cgroup: dirs, systemdUnit: 'cri-containerd-sb.scope' });
        assert.equal(Store.load(file)?.systemdUnit, 'cri-containerd-sb.scope');
        for (const [bad, why] of [
          [{ cgroup: dirs, systemdUnit: 'sshd.service' }, /not a systemd scope/],
          [{ cgroup: dirs, systemdUnit: 'k.slice' }, /not a scope/],
          [{ cgroup: dirs, systemdUnit: 'a b.scope' }, /not a systemd scope/],
          [{ cgroup: undefined, systemdUnit: 'x.scope' }, /systemdUnit without cgroup/],
        ] as const) {
          new Store(file).save({ ...r, ...bad });
          assert.throws(
            () => Store.load(file),
            (err: unknown) => err instanceof InvalidArgumentError && why.test(err.message),
            JSON.stringify(bad),
          );
        }
      } finally {
        rmTree(dir);
      }
    });
  });

  // The real thing, where this machine allows it (root, a writable cgroup v1 or v2 hierarchy).
  describe("HostCgroup on this host's cgroups", function () {
    let layout: CgroupLayout | undefined;
    try {
      layout = hostCgroupLayout();
    } catch {
      layout = undefined;
    }
    const top = `/hull-unit-${crypto.randomBytes(4).toString('hex')}`;
    const children: ChildProcess[] = [];
    before(function () {
      if (!layout || process.getuid?.() !== 0) this.skip();
      try {
        fs.mkdirSync(path.join(layout.hierarchies[0]!.mountPoint, top));
      } catch {
        this.skip();
      }
    });
    after(() => {
      for (const c of children) c.kill('SIGKILL');
      for (const h of layout?.hierarchies ?? []) {
        for (const d of [path.join(h.mountPoint, top, 'sb'), path.join(h.mountPoint, top)]) {
          try {
            fs.rmdirSync(d);
          } catch {
            // not made
          }
        }
      }
    });

    it('create, place a process (every thread), read the limit set above, then remove, also from a crash-recovery record', async () => {
      const cg = HostCgroup.forPath(`${top}/sb`);
      cg.create();
      const memory = layout!.hierarchies.find((h) => h.version === 2 || h.controllers.includes('memory'))!;
      const limitFile = memory.version === 2 ? 'memory.max' : 'memory.limit_in_bytes';
      fs.writeFileSync(path.join(memory.mountPoint, top, limitFile), String(300 << 20));
      assert.equal(cg.memoryLimitBytes(), 300 << 20);
      const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
      children.push(child);
      await new Promise((r) => child.once('spawn', r));
      cg.place(child.pid!);
      for (const d of cg.dirs)
        assert.ok(fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').includes(String(child.pid)), d);
      // Every thread of node (its libuv and V8 workers) moved with it.
      const threads = fs.readdirSync(`/proc/${child.pid}/task`);
      const tasks = fs
        .readFileSync(path.join(cg.dirs[0]!, memory.version === 2 ? 'cgroup.threads' : 'tasks'), 'utf8')
        .split('\n');
      for (const t of threads) assert.ok(tasks.includes(t), `thread ${t}`);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      // A crash: the record names the folders, recovery removes them.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cgroup-rec-'));
      try {
        const sbDir = path.join(dir, 'ns1', 'sb');
        const file = path.join(sbDir, 'state.json');
        const r: SandboxRecord = {
          version: 1,
          namespace: 'ns1',
          sandboxId: 'sb',
          shimPid: 999_999_999,
          vmStateDir: path.join(sbDir, 'vm'),
          shareRoot: sbDir,
          shareId: 'share',
          containers: {},
          cgroup: [...cg.dirs],
        };
        new Store(file).save(r);
        assert.ok(cg.dirs.every((d) => d.startsWith(`${CGROUP_ROOT}/`)));
        const problems = await recoverFromRecord(
          Store.load(file)!,
          file,
          undefined,
          new FakeShare(sbDir, 'share'),
          NOOP_LOGGER,
        );
        assert.deepEqual(problems, []);
        for (const d of cg.dirs) assert.equal(fs.existsSync(d), false, d);
      } finally {
        rmTree(dir);
      }
    });
  });
});
