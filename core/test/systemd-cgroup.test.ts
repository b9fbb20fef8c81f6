/**
 * The systemd cgroup driver over a real wire: a private dbus-daemon, a fake systemd Manager on it (fake-systemd.ts),
 * a fake cgroupfs v1 (name=systemd, cpu, memory, cpuset, and a hybrid unified hierarchy).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, UnavailableError } from '../../errors';
import { NOOP_LOGGER } from '../../log';
import { HostCgroup, type CgroupLayout, type SystemdOptions } from '../host-cgroup';
import { recoverFromRecord, type SandboxRecord } from '../store';
import { SYSTEMD_SOCKETS, systemdSockets } from '../systemd';
import { FakeSystemd, startPrivateBus, type PrivateBus } from './fake-systemd';
import { FakeShare } from './fakes';

const CGROUPS_PATH = 'kubepods-burstable-pod123.slice:cri-containerd:sb1';
const SCOPE = 'cri-containerd-sb1.scope';
const SLICE_DIR = 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice';

describe('core host-cgroup: the systemd driver through a private dbus-daemon and a fake systemd', function () {
  let tmp: string;
  let bus: PrivateBus | undefined;
  let systemd: FakeSystemd | undefined;
  let layout: CgroupLayout;
  let options: SystemdOptions;
  const rmTree = (d: string): void => fs.rmSync(d, { recursive: true, force: true });
  const hier = (name: string): string => path.join(tmp, 'cg', name);
  const leaf = (name: string): string => path.join(hier(name), SLICE_DIR, SCOPE);
  const procs = (name: string): string => fs.readFileSync(path.join(leaf(name), 'cgroup.procs'), 'utf8');

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-systemd-'));
    bus = await startPrivateBus(tmp);
  });
  after(async () => {
    await bus?.stop(); // by its pid
    rmTree(tmp);
  });
  beforeEach(async () => {
    rmTree(path.join(tmp, 'cg'));
    layout = {
      version: 1,
      hierarchies: [
        { mountPoint: hier('systemd'), controllers: ['name=systemd'], version: 1 },
        { mountPoint: hier('cpu'), controllers: ['cpu'], version: 1 },
        { mountPoint: hier('memory'), controllers: ['memory'], version: 1 },
        { mountPoint: hier('cpuset'), controllers: ['cpuset'], version: 1 },
        { mountPoint: hier('unified'), controllers: [], version: 2 },
      ],
    };
    for (const h of layout.hierarchies) fs.mkdirSync(h.mountPoint, { recursive: true });
    fs.writeFileSync(path.join(hier('cpuset'), 'cpuset.cpus'), '0-1');
    fs.writeFileSync(path.join(hier('cpuset'), 'cpuset.mems'), '0');
    // systemd owns name=systemd and the unified hierarchy (it makes and removes the scope's folders there).
    systemd = await FakeSystemd.start(bus!.socketPath, [hier('systemd'), hier('unified')]);
    options = { sockets: [{ path: bus!.socketPath, bus: true }] };
  });
  afterEach(() => systemd?.close());

  const cgroup = (): HostCgroup => HostCgroup.forPath(CGROUPS_PATH, { layout, systemd: options, removeDir: rmTree });

  it("join starts the scope with runc's properties and the pid; the pid is on every hierarchy; remove stops it and every folder goes", async () => {
    const cg = cgroup();
    assert.equal(cg.unit, SCOPE);
    await cg.check();
    await cg.join(4242);
    assert.equal(systemd!.started.length, 1);
    const u = systemd!.started[0]!;
    assert.equal(u.name, SCOPE);
    assert.equal(u.mode, 'replace');
    assert.deepEqual(u.aux, []);
    assert.deepEqual(u.properties, {
      Description: { signature: 's', value: `hull pod sandbox ${SCOPE}` },
      Slice: { signature: 's', value: 'kubepods-burstable-pod123.slice' },
      Delegate: { signature: 'b', value: true },
      PIDs: { signature: 'au', value: [4242] },
      MemoryAccounting: { signature: 'b', value: true },
      CPUAccounting: { signature: 'b', value: true },
      BlockIOAccounting: { signature: 'b', value: true },
      TasksAccounting: { signature: 'b', value: true },
      DefaultDependencies: { signature: 'b', value: false },
    });
    for (const h of ['systemd', 'cpu', 'memory', 'cpuset', 'unified']) assert.equal(procs(h), '4242', h);
    assert.deepEqual(
      cg.dirs,
      ['systemd', 'cpu', 'memory', 'cpuset', 'unified'].map(leaf),
      'the slice expanded the systemd way',
    );
    assert.equal(fs.readFileSync(path.join(leaf('cpuset'), 'cpuset.cpus'), 'utf8'), '0-1', 'cpuset inherited');
    await cg.remove();
    assert.deepEqual(
      systemd!.calls.filter((c) => /Unit/.test(c)),
      [`StartTransientUnit ${SCOPE}`, `StopUnit ${SCOPE}`, `ResetFailedUnit ${SCOPE}`],
    );
    for (const h of ['systemd', 'cpu', 'memory', 'cpuset', 'unified']) {
      assert.equal(fs.existsSync(leaf(h)), false, `${h}: the scope's folder is gone`);
      assert.ok(
        fs.existsSync(path.join(hier(h), SLICE_DIR)) || h === 'systemd' || h === 'unified',
        `${h}: the slice stays`,
      );
    }
    await cg.remove(); // a unit systemd no longer has (NoSuchUnit) is stopped already
  });

  it("v2: IOAccounting instead of BlockIOAccounting, and the unified folder is systemd's alone", async () => {
    const v2: CgroupLayout = {
      version: 2,
      hierarchies: [{ mountPoint: hier('unified'), controllers: [], version: 2 }],
    };
    const cg = HostCgroup.forPath(CGROUPS_PATH, { layout: v2, systemd: options, removeDir: rmTree });
    await cg.join(77);
    const props = systemd!.started[0]!.properties;
    assert.deepEqual(props.IOAccounting, { signature: 'b', value: true });
    assert.equal(props.BlockIOAccounting, undefined);
    assert.equal(procs('unified'), '77');
    await cg.remove();
    assert.equal(fs.existsSync(leaf('unified')), false);
  });

  it('a leftover unit of the same name (UnitExists) is reset and the start tried once more, as runc does', async () => {
    systemd!.failed.add(SCOPE); // a failed unit systemd keeps loaded until it is reset
    await cgroup().join(3);
    assert.deepEqual(
      systemd!.calls.filter((c) => /Unit/.test(c)),
      [`StartTransientUnit ${SCOPE}`, `ResetFailedUnit ${SCOPE}`, `StartTransientUnit ${SCOPE}`],
    );
    assert.equal(procs('memory'), '3');
    await cgroup().remove();
  });

  it('a start job that ends "failed" is a FailedPrecondition naming the unit and the result; the unit is reset', async () => {
    systemd!.startResult = 'failed';
    await assert.rejects(cgroup().join(5), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError, String(err));
      assert.match(err.message, /systemd could not start unit cri-containerd-sb1\.scope: its job ended "failed"/);
      return true;
    });
    assert.ok(systemd!.calls.includes(`ResetFailedUnit ${SCOPE}`));
    assert.equal(fs.existsSync(leaf('memory')), false, 'nothing made on the other hierarchies');
  });

  it("no JobRemoved within the deadline: the unit's ActiveState decides", async () => {
    systemd!.silent = true;
    const cg = HostCgroup.forPath(CGROUPS_PATH, {
      layout,
      systemd: { ...options, jobTimeoutMs: 200 },
      removeDir: rmTree,
    });
    await cg.join(9);
    assert.ok(systemd!.calls.includes(`GetUnit ${SCOPE}`));
    assert.equal(procs('cpu'), '9');
    await cg.remove();
    assert.equal(fs.existsSync(leaf('systemd')), false);
  });

  it('systemd gone at teardown: the stop fails (and says so), the folders are removed all the same (runc does too)', async () => {
    const cg = cgroup();
    await cg.join(11);
    systemd!.close();
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(cg.remove(), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError, String(err));
      assert.match(err.message, /systemd cannot be reached over D-Bus/);
      return true;
    });
    for (const h of ['systemd', 'cpu', 'memory', 'cpuset', 'unified']) assert.equal(fs.existsSync(leaf(h)), false, h);
  });

  it("crash recovery: the record's unit is stopped and its folders removed", async () => {
    const cg = cgroup();
    await cg.join(4242);
    const sbDir = path.join(tmp, 'state', 'ns1', 'sb1');
    fs.mkdirSync(sbDir, { recursive: true });
    const file = path.join(sbDir, 'state.json');
    const record: SandboxRecord = {
      version: 1,
      namespace: 'ns1',
      sandboxId: 'sb1',
      shimPid: 999_999_999,
      vmStateDir: path.join(sbDir, 'vm'),
      shareRoot: sbDir,
      shareId: 'share',
      containers: {},
      cgroup: [...cg.dirs],
      systemdUnit: SCOPE,
    };
    fs.writeFileSync(file, JSON.stringify(record));
    // The fake cgroupfs's folders hold a cgroup.procs file: rmdir cannot remove them, as the kernel's could.
    for (const d of cg.dirs) for (const f of fs.readdirSync(d)) fs.rmSync(path.join(d, f));
    const problems = await recoverFromRecord(
      record,
      file,
      undefined,
      new FakeShare(sbDir, 'share'),
      NOOP_LOGGER,
      options,
    );
    assert.deepEqual(problems, []);
    assert.ok(systemd!.calls.includes(`StopUnit ${SCOPE}`));
    assert.equal(systemd!.units.size, 0);
    for (const d of cg.dirs) assert.equal(fs.existsSync(d), false, d);
    assert.equal(fs.existsSync(file), false, 'the record went last');
  });

  it('systemd unreachable: FailedPrecondition naming every socket tried, before anything is made', async () => {
    const missing = path.join(tmp, 'no-such-socket');
    const sockets = [
      { path: missing, bus: true },
      { path: path.join(tmp, 'no-private'), bus: false },
    ];
    const cg = HostCgroup.forPath(CGROUPS_PATH, { layout, systemd: { sockets }, removeDir: rmTree });
    await assert.rejects(cg.check(), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError, String(err));
      assert.match(
        err.message,
        /SystemdCgroup = true: unit cri-containerd-sb1\.scope in kubepods-burstable-pod123\.slice/,
      );
      assert.match(err.message, new RegExp(`tried ${missing} \\(.*ENOENT.*\\), ${tmp}/no-private \\(`));
      assert.match(err.message, /set SystemdCgroup = false/);
      return true;
    });
    // A bus without systemd on it: the name has no owner.
    systemd!.close();
    await new Promise((r) => setTimeout(r, 50));
    const noOwner = HostCgroup.forPath(CGROUPS_PATH, { layout, systemd: options, removeDir: rmTree });
    await assert.rejects(noOwner.check(), /NameHasNoOwner|org\.freedesktop\.systemd1/);
    assert.equal(fs.existsSync(path.join(hier('memory'), 'kubepods.slice')), false, 'nothing made');
  });
});

describe("core host-cgroup: the systemd driver peer to peer (systemd's private socket, a fake systemd)", () => {
  let tmp: string;
  let systemd: FakeSystemd | undefined;
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-systemd-p2p-'));
  });
  after(() => {
    systemd?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('with no system bus, the private socket serves: no Hello, no AddMatch, JobRemoved sent to the connection', async () => {
    const hier = (n: string): string => path.join(tmp, 'cg', n);
    const layout: CgroupLayout = {
      version: 1,
      hierarchies: [
        { mountPoint: hier('systemd'), controllers: ['name=systemd'], version: 1 },
        { mountPoint: hier('pids'), controllers: ['pids'], version: 1 },
      ],
    };
    for (const h of layout.hierarchies) fs.mkdirSync(h.mountPoint, { recursive: true });
    const privateSocket = path.join(tmp, 'private');
    systemd = await FakeSystemd.startPeer(privateSocket, [hier('systemd')]);
    const sockets = [
      { path: path.join(tmp, 'system_bus_socket'), bus: true }, // absent, as on a host without a bus daemon
      { path: privateSocket, bus: false },
    ];
    const cg = HostCgroup.forPath(CGROUPS_PATH, {
      layout,
      systemd: { sockets },
      removeDir: (d) => fs.rmSync(d, { recursive: true }),
    });
    await cg.check();
    await cg.join(31);
    for (const n of ['systemd', 'pids'])
      assert.equal(fs.readFileSync(path.join(hier(n), SLICE_DIR, SCOPE, 'cgroup.procs'), 'utf8'), '31', n);
    await cg.remove();
    assert.deepEqual(
      systemd.calls.filter((c) => !c.startsWith('Get')),
      [`StartTransientUnit ${SCOPE}`, `StopUnit ${SCOPE}`, `ResetFailedUnit ${SCOPE}`],
      'no bus daemon calls',
    );
    for (const n of ['systemd', 'pids']) assert.equal(fs.existsSync(path.join(hier(n), SLICE_DIR, SCOPE)), false, n);

    // The connection lost while hull waits for the job: Unavailable at once, not after the job's bound.
    systemd.silent = true;
    systemd.dropAfterStart = true;
    const t0 = Date.now();
    await assert.rejects(cg.join(32), (err: unknown) => {
      assert.ok(err instanceof UnavailableError, String(err));
      assert.match(err.message, /systemd \(.*private\), unit cri-containerd-sb1\.scope: D-Bus connection closed/);
      return true;
    });
    assert.ok(Date.now() - t0 < 5_000, `${Date.now() - t0} ms`);
  });
});

describe('core systemd: where systemd is reached', () => {
  it("the system bus, then systemd's private socket (go-systemd's order for root); HULL_SYSTEMD_SOCKETS replaces them", () => {
    assert.deepEqual(systemdSockets({}), [
      { path: '/run/dbus/system_bus_socket', bus: true },
      { path: '/run/systemd/private', bus: false },
    ]);
    assert.equal(systemdSockets({ HULL_SYSTEMD_SOCKETS: '' }), SYSTEMD_SOCKETS);
    assert.deepEqual(systemdSockets({ HULL_SYSTEMD_SOCKETS: 'bus:/tmp/x/bus,peer:/tmp//y' }), [
      { path: '/tmp/x/bus', bus: true },
      { path: '/tmp/y', bus: false },
    ]);
    for (const bad of ['/tmp/bus', 'bus:relative', 'tcp:/x', 'bus:/a\nb', 'bus:/a,bus:/b,bus:/c,bus:/d,bus:/e'])
      assert.throws(
        () => systemdSockets({ HULL_SYSTEMD_SOCKETS: bad }),
        (err: unknown) => err instanceof InvalidArgumentError && /HULL_SYSTEMD_SOCKETS/.test(err.message),
        bad,
      );
  });
});
