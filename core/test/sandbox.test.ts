import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { GuestSpanBatch, OciSpec } from '../../agent-client';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../../errors';
import { NOOP_LOGGER } from '../../log';
import type { VmConfig } from '../../hypervisor/types';
import { TEMPLATE_NIC_PORTS } from '../../hypervisor/types';
import { processStartTime } from '../../hypervisor/process';
import type { SandboxEvent, StdioPaths } from '../events';
import { FAILPOINT_ANNOTATION, FAILPOINT_STEPS, type FailpointStep } from '../failpoint';
import { HostCgroup, type CgroupLayout } from '../host-cgroup';
import { parseConfig, toVmConfig } from '../config';
import { Sandbox, type CreateRequest, type SandboxOptions } from '../sandbox';
import { sandboxTemplateVm, templateIdentity } from '../template';
import { Store, recoverFromRecord, type SandboxRecord } from '../store';
import type { SystemdSocket } from '../systemd';
import { FakeSystemd, startPrivateBus, type PrivateBus } from './fake-systemd';
import { FakeAgent, FakeHypervisor, FakeShare, testConfig } from './fakes';

const NO_STDIO: StdioPaths = { stdin: '', stdout: '', stderr: '', terminal: false };
const SPEC: OciSpec = {
  ociVersion: '1.0.2',
  process: { args: ['sh'], cwd: '/' },
  root: { path: 'rootfs' },
  hostname: 'pod',
};
const ROOTFS = [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/l', 'upperdir=/u', 'workdir=/w'] }];

/** One line per event, e.g. `create c1`, `exec-started c1/e1`, `exit c1/e1 3`, `delete c1 0`. */
function summary(e: SandboxEvent): string {
  switch (e.type) {
    case 'exec-added':
    case 'exec-started':
      return `${e.type} ${e.containerId}/${e.execId}`;
    case 'exit':
      return `exit ${e.containerId}${e.id === e.containerId ? '' : `/${e.id}`} ${e.exitStatus}`;
    case 'delete':
      return `delete ${e.containerId} ${e.exitStatus}`;
    default:
      return `${e.type} ${e.containerId}`;
  }
}

async function until(what: string, pred: () => boolean, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function mkfifo(p: string): string {
  const r = spawnSync('mkfifo', ['-m', '0600', p]);
  assert.equal(r.status, 0, `mkfifo ${p}: ${r.stderr?.toString()}`);
  return p;
}

/** A non-blocking reader of a FIFO: what its writers put in so far, and whether they have all closed it. */
class FifoReader {
  readonly fd: number;
  constructor(p: string) {
    this.fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  }
  drain(): { data: Buffer; eof: boolean } {
    const chunks: Buffer[] = [];
    const buf = Buffer.alloc(64 * 1024);
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return { data: Buffer.concat(chunks), eof: false };
        throw err;
      }
      if (n === 0) return { data: Buffer.concat(chunks), eof: true };
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
  }
  close(): void {
    fs.closeSync(this.fd);
  }
}

/** A sandbox `sb` over the fakes, in a temporary folder; events collected in order. */
class Harness {
  readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-sandbox-'));
  readonly dir = path.join(this.tmp, 'state', 'ns1', 'sb');
  readonly hv = new FakeHypervisor();
  readonly agent = new FakeAgent(this.hv);
  readonly shares: FakeShare[] = [];
  readonly events: SandboxEvent[] = [];
  readonly netCalls: string[] = [];
  /** Called synchronously with each event, as the sandbox emits it. */
  onEvent: ((e: SandboxEvent) => void) | undefined;
  readonly sandbox: Sandbox;
  private readonly fds: number[] = [];

  constructor(extra: Partial<SandboxOptions> = {}) {
    this.sandbox = new Sandbox({
      ...extra,
      namespace: 'ns1',
      id: 'sb',
      dir: this.dir,
      vmConfig:
        extra.vmConfig ?? ((vm) => ({ ...testConfig(), id: vm.id, stateDir: vm.stateDir, sharedDir: vm.sharedDir })),
      bootTimeoutMs: 1_000,
      hypervisor: () => this.hv,
      share: (root, id) => {
        const s = new FakeShare(root, id);
        this.shares.push(s);
        return s;
      },
      dial: async () => this.agent,
      connectNetwork: async (netnsPath, record) => {
        record(netnsPath, ['tap0_hull']);
        this.netCalls.push(`connect ${netnsPath}`);
        const calls = this.netCalls;
        return {
          taps: ['tap0_hull'],
          vmNetwork: () => ({ netnsPath, nics: [{ tap: 'tap0_hull', mac: '02:00:00:00:00:01', mtu: 1450 }] }),
          describe: () => ({}),
          configureGuest: async () =>
            void calls.push(`configureGuest (agent calls so far: ${this.agent.calls.join(',')})`),
          forwardLocalhost: async () =>
            void calls.push(`forwardLocalhost (agent calls so far: ${this.agent.calls.join(',')})`),
          disconnect: async () => void calls.push('disconnect'),
        };
      },
      logger: NOOP_LOGGER,
      events: (e) => {
        this.events.push(e);
        this.onEvent?.(e);
      },
      ...extra,
    });
  }

  get share(): FakeShare {
    assert.equal(this.shares.length, 1, 'one share per sandbox');
    return this.shares[0]!;
  }

  get recordFile(): string {
    return path.join(this.dir, 'state.json');
  }

  summaries(): string[] {
    return this.events.map(summary);
  }

  bundle(id: string): string {
    const b = path.join(this.tmp, 'bundles', id);
    fs.mkdirSync(path.join(b, 'rootfs'), { recursive: true });
    return b;
  }

  fifos(name: string, streams: ('stdin' | 'stdout' | 'stderr')[]): StdioPaths {
    const folder = path.join(this.tmp, 'fifo');
    fs.mkdirSync(folder, { recursive: true });
    const stdio = { ...NO_STDIO };
    for (const s of streams) stdio[s] = mkfifo(path.join(folder, `${name}-${s}`));
    return stdio;
  }

  reader(p: string): FifoReader {
    const r = new FifoReader(p);
    this.fds.push(r.fd);
    return r;
  }

  request(id: string, stdio: StdioPaths = NO_STDIO, spec: OciSpec = SPEC): CreateRequest {
    return { id, bundle: this.bundle(id), spec, rootfs: ROOTFS, stdio };
  }

  create(id: string, stdio: StdioPaths = NO_STDIO): Promise<number> {
    return this.sandbox.create(this.request(id, stdio));
  }

  /** The sandbox container, started. */
  async running(): Promise<void> {
    await this.create('sb');
    await this.sandbox.start('sb', '');
  }

  async dispose(): Promise<void> {
    for (const p of this.agent.procs.values()) p.exit(137); // ends every output copy
    await this.sandbox.teardown().catch(() => undefined);
    for (const fd of this.fds) fs.closeSync(fd);
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

describe("core Sandbox: the pod's host cgroup (fake cgroupfs v1)", () => {
  let h: Harness;
  let cgRoot: string;
  let layout: CgroupLayout;
  const POD = '/kubepods/burstable/pod1';
  const sandboxSpec = (memoryBytes?: number): OciSpec => ({
    ...SPEC,
    linux: { cgroupsPath: `${POD}/sb` },
    annotations: {
      'io.kubernetes.cri.container-type': 'sandbox',
      'io.kubernetes.cri.sandbox-id': 'sb',
      ...(memoryBytes ? { 'io.kubernetes.cri.sandbox-memory': String(memoryBytes) } : {}),
    },
  });
  beforeEach(() => {
    cgRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-sandbox-cg-'));
    layout = {
      version: 1,
      hierarchies: ['cpu', 'memory', 'pids'].map((c) => ({
        mountPoint: path.join(cgRoot, c),
        controllers: [c],
        version: 1 as const,
      })),
    };
    for (const hier of layout.hierarchies) fs.mkdirSync(path.join(hier.mountPoint, POD), { recursive: true });
    h = new Harness({
      memoryOverheadMiB: 160,
      hostCgroup: (p) => HostCgroup.forPath(p, { layout, removeDir: (d) => fs.rmSync(d, { recursive: true }) }),
    });
  });
  afterEach(async () => {
    await h.dispose();
    fs.rmSync(cgRoot, { recursive: true, force: true });
  });
  const limit = (mib: number): void =>
    fs.writeFileSync(path.join(cgRoot, 'memory', POD, 'memory.limit_in_bytes'), String(mib * 1024 * 1024));
  const procs = (hier: string): string => fs.readFileSync(path.join(cgRoot, hier, POD, 'sb', 'cgroup.procs'), 'utf8');

  it("the daemon joins the sandbox's cgroup (every hierarchy) before the VM starts, the record names it, teardown leaves and removes it", async () => {
    limit(256 + 100 + 160); // exactly what the VM needs: guest 256 + 100 from the pod, overhead 160
    h.hv.onStart = () => assert.equal(procs('memory'), String(process.pid), 'in the cgroup when QEMU starts');
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec(100 * 1024 * 1024)));
    for (const hier of ['cpu', 'memory', 'pids']) assert.equal(procs(hier), String(process.pid), hier);
    // Read raw: Store.load refuses cgroup folders outside /sys/fs/cgroup, which this fake's are.
    assert.deepEqual(
      (JSON.parse(fs.readFileSync(h.recordFile, 'utf8')) as { cgroup?: string[] }).cgroup,
      layout.hierarchies.map((x) => path.join(x.mountPoint, POD, 'sb')),
    );
    await h.sandbox.create(h.request('c2')); // a later container changes nothing
    await h.sandbox.delete('c2', '');
    await h.sandbox.delete('sb', '');
    for (const hier of ['cpu', 'memory', 'pids']) {
      assert.equal(fs.existsSync(path.join(cgRoot, hier, POD, 'sb')), false, `${hier}: the sandbox's folder is gone`);
      assert.ok(fs.existsSync(path.join(cgRoot, hier, POD)), `${hier}: the pod's folder stays`);
      assert.equal(
        fs.readFileSync(path.join(cgRoot, hier, 'cgroup.procs'), 'utf8'),
        String(process.pid),
        `${hier}: the daemon went back (this fake has no origin folders: the root)`,
      );
    }
  });

  it("a VM the pod's memory limit cannot hold is refused, naming both numbers and the RuntimeClass overhead, before anything is made", async () => {
    limit(400);
    await assert.rejects(
      h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec(100 * 1024 * 1024))),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, String(err));
        assert.match(err.message, /memory limit of 400 MiB/);
        assert.match(
          err.message,
          /356 MiB of guest memory \(100 MiB of it from the pod's containers\) \+ 160 MiB of host overhead .*= 516 MiB/,
        );
        assert.match(err.message, /overhead\.podFixed\.memory to at least 416Mi/);
        return true;
      },
    );
    assert.deepEqual(h.hv.calls, [], 'no VM');
    assert.equal(fs.existsSync(path.join(cgRoot, 'memory', POD, 'sb')), false, 'no cgroup');
    assert.equal(fs.existsSync(h.recordFile), false, 'no record');
  });

  it("hot-plug never grows the VM past the pod's cgroup: the growth is refused naming the limit and the need", async () => {
    const MIB = 1024 * 1024;
    const grown = new Harness({
      memoryOverheadMiB: 160,
      hostCgroup: (p) => HostCgroup.forPath(p, { layout, removeDir: (d) => fs.rmSync(d, { recursive: true }) }),
      vmConfig: (vm) => ({ ...testConfig(), maxVcpus: 4, maxMemoryMiB: 2048, id: vm.id, stateDir: vm.stateDir }),
      host: { cpus: 8, memoryMiB: 16384 },
    });
    try {
      limit(256 + 160 + 128); // the boot VM and one DIMM
      await grown.sandbox.create(grown.request('sb', NO_STDIO, sandboxSpec()));
      const c = (memMiB: number): OciSpec => ({
        ...SPEC,
        annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'sb' },
        linux: { resources: { memory: { limit: memMiB * MIB } } },
      });
      await assert.rejects(grown.sandbox.create(grown.request('c2', NO_STDIO, c(200))), (e: Error) => {
        assert.ok(e instanceof FailedPreconditionError, String(e));
        assert.match(e.message, /container c2: the pod's VM would grow to 512 MiB of guest memory \(from 256 MiB/);
        assert.match(e.message, /\+ 160 MiB of host overhead \(\[hypervisor\] memory_overhead\) = 672 MiB/);
        assert.match(e.message, /more than the memory limit of its cgroup .*, 544 MiB/);
        return true;
      });
      assert.equal(grown.hv.resizes.length, 0, 'not grown');
      await grown.sandbox.create(grown.request('c2', NO_STDIO, c(100))); // one DIMM fits
      assert.deepEqual(grown.hv.size, { vcpus: 1, memoryMiB: 384 });
      await assert.rejects(grown.sandbox.update('c2', { memory: { limit: 300 * MIB } }), /memory limit of its cgroup/);
      assert.ok(!grown.agent.calls.includes('updateContainer c2'));
    } finally {
      await grown.dispose();
    }
  });

  it('a cgroupsPath with ".." or in systemd form is refused before anything is made; none at all keeps today\'s behaviour', async () => {
    const spec = (cgroupsPath: string): OciSpec => ({ ...SPEC, linux: { cgroupsPath } });
    await assert.rejects(
      h.sandbox.create(h.request('sb', NO_STDIO, spec('/kubepods/../../../etc'))),
      /"\.\." component/,
    );
    const noSystemd = new Harness({
      hostCgroup: (p) =>
        HostCgroup.forPath(p, { layout, systemd: { sockets: [{ path: path.join(cgRoot, 'no-bus'), bus: true }] } }),
    });
    try {
      await assert.rejects(
        noSystemd.sandbox.create(noSystemd.request('sb', NO_STDIO, spec('kubepods.slice:cri-containerd:sb'))),
        (err: unknown) => err instanceof FailedPreconditionError && /systemd cannot be reached/.test(err.message),
      );
      assert.deepEqual(noSystemd.hv.calls, []);
      assert.equal(fs.existsSync(noSystemd.recordFile), false);
    } finally {
      await noSystemd.dispose();
    }
    assert.deepEqual(h.hv.calls, []);
    assert.equal(fs.existsSync(h.recordFile), false);
    await h.sandbox.create(h.request('sb'));
    assert.equal(Store.load(h.recordFile)?.cgroup, undefined);
    assert.deepEqual(fs.readdirSync(path.join(cgRoot, 'memory', POD)), []);
  });
});

describe('core Sandbox: the systemd cgroup driver (a private dbus-daemon, a fake systemd Manager, a fake cgroupfs v1)', () => {
  const CGROUPS_PATH = 'kubepods-burstable-pod123.slice:cri-containerd:sb';
  const SCOPE = 'cri-containerd-sb.scope';
  const SLICE_DIR = 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice';
  const HIERARCHIES = ['systemd', 'cpu', 'memory', 'cpuset'];
  let tmp: string;
  let bus: PrivateBus | undefined;
  let systemd: FakeSystemd | undefined;
  let layout: CgroupLayout;
  let h: Harness;
  const hier = (name: string): string => path.join(tmp, 'cg', name);
  const leaf = (name: string): string => path.join(hier(name), SLICE_DIR, SCOPE);
  const procs = (name: string): string => fs.readFileSync(path.join(leaf(name), 'cgroup.procs'), 'utf8');
  const sockets = (): SystemdSocket[] => [{ path: bus!.socketPath, bus: true }];
  const spec: OciSpec = {
    ...SPEC,
    linux: { cgroupsPath: CGROUPS_PATH },
    annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': 'sb' },
  };

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-sandbox-systemd-'));
    bus = await startPrivateBus(tmp);
  });
  after(async () => {
    await bus?.stop(); // by its pid
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(async () => {
    fs.rmSync(path.join(tmp, 'cg'), { recursive: true, force: true });
    layout = {
      version: 1,
      hierarchies: HIERARCHIES.map((c) => ({
        mountPoint: hier(c),
        controllers: [c === 'systemd' ? 'name=systemd' : c],
        version: 1 as const,
      })),
    };
    for (const x of layout.hierarchies) fs.mkdirSync(x.mountPoint, { recursive: true });
    systemd = await FakeSystemd.start(bus!.socketPath, [hier('systemd'), hier('memory'), hier('cpu')]);
    h = new Harness({
      hostCgroup: (p) =>
        HostCgroup.forPath(p, {
          layout,
          systemd: { sockets: sockets() },
          removeDir: (d) => fs.rmSync(d, { recursive: true }),
        }),
    });
  });
  afterEach(async () => {
    await h.dispose();
    systemd?.close();
  });

  it("the daemon is in systemd's scope on every hierarchy before QEMU starts; the record names the unit; teardown stops it", async () => {
    const atQemuStart: string[] = [];
    h.hv.onStart = () => HIERARCHIES.forEach((x) => atQemuStart.push(`${x}=${procs(x)}`));
    await h.sandbox.create(h.request('sb', NO_STDIO, spec));
    assert.deepEqual(
      atQemuStart,
      HIERARCHIES.map((x) => `${x}=${process.pid}`),
      'QEMU and virtiofsd are spawned by the daemon already in the scope: they start in it',
    );
    assert.equal(systemd!.started.length, 1);
    assert.deepEqual(systemd!.started[0]!.properties.PIDs, { signature: 'au', value: [process.pid] });
    assert.deepEqual(systemd!.started[0]!.properties.Slice, {
      signature: 's',
      value: 'kubepods-burstable-pod123.slice',
    });
    const record = JSON.parse(fs.readFileSync(h.recordFile, 'utf8')) as SandboxRecord;
    assert.equal(record.systemdUnit, SCOPE);
    assert.deepEqual(record.cgroup, HIERARCHIES.map(leaf));
    await h.sandbox.delete('sb', '');
    assert.ok(systemd!.calls.includes(`StopUnit ${SCOPE}`));
    assert.equal(systemd!.units.size, 0);
    for (const x of HIERARCHIES) {
      assert.equal(fs.existsSync(leaf(x)), false, `${x}: the scope's folder is gone`);
      assert.equal(
        fs.readFileSync(path.join(hier(x), 'cgroup.procs'), 'utf8'),
        String(process.pid),
        `${x}: the daemon left first`,
      );
    }
  });

  it('crash recovery (delete after a dead shim) stops the recorded unit and removes its folders', async () => {
    await h.sandbox.create(h.request('sb', NO_STDIO, spec));
    const record = JSON.parse(fs.readFileSync(h.recordFile, 'utf8')) as SandboxRecord;
    // The daemon "died": nothing of its teardown runs. Plain folders cannot be rmdir'ed with files in them.
    for (const d of record.cgroup!) for (const f of fs.readdirSync(d)) fs.rmSync(path.join(d, f));
    const problems = await recoverFromRecord(record, h.recordFile, undefined, h.share, NOOP_LOGGER, {
      sockets: sockets(),
    });
    assert.deepEqual(problems, []);
    assert.ok(systemd!.calls.includes(`StopUnit ${SCOPE}`));
    assert.equal(systemd!.units.size, 0);
    for (const x of HIERARCHIES) assert.equal(fs.existsSync(leaf(x)), false, x);
    assert.equal(fs.existsSync(h.recordFile), false);
  });

  it('systemd unreachable: Create is refused (FailedPrecondition naming the socket tried) before anything is made', async () => {
    const missing = path.join(tmp, 'no-such-bus');
    const alone = new Harness({
      hostCgroup: (p) => HostCgroup.forPath(p, { layout, systemd: { sockets: [{ path: missing, bus: true }] } }),
    });
    try {
      await assert.rejects(alone.sandbox.create(alone.request('sb', NO_STDIO, spec)), (err: unknown) => {
        assert.ok(err instanceof FailedPreconditionError, String(err));
        assert.match(err.message, new RegExp(`systemd cannot be reached over D-Bus: tried ${missing} \\(.*ENOENT`));
        assert.match(err.message, /SystemdCgroup = false/);
        return true;
      });
      assert.deepEqual(alone.hv.calls, [], 'no VM');
      assert.equal(fs.existsSync(alone.recordFile), false, 'no record');
      assert.equal(systemd!.started.length, 0, 'no unit');
      for (const x of HIERARCHIES) assert.deepEqual(fs.readdirSync(hier(x)), [], `${x}: nothing made`);
    } finally {
      await alone.dispose();
    }
  });
});

describe('core Sandbox (fake hypervisor, agent and share)', () => {
  let h: Harness;
  beforeEach(() => (h = new Harness()));
  afterEach(() => h.dispose());

  describe('Create', () => {
    it('boots the VM with the first Create, which must be the sandbox container; a second container joins', async () => {
      await assert.rejects(h.create('c2'), FailedPreconditionError);
      assert.deepEqual(h.hv.calls, [], 'no VM for a container that cannot own it');
      assert.equal(fs.existsSync(h.recordFile), false);

      assert.equal(await h.create('sb'), 4242, 'the pid is the VM host pid');
      assert.deepEqual(h.hv.calls, ['prepare', 'start']);
      assert.equal(h.hv.config?.id, 'sb');
      assert.equal(h.hv.config?.sharedDir, path.join(h.dir, 'share', 'shared'));
      assert.equal(h.hv.config?.stateDir, path.join(h.dir, 'vm'));
      assert.equal(h.agent.sandbox?.sandboxId, 'sb');
      assert.equal(h.agent.sandbox?.hostname, 'pod');

      assert.equal(await h.create('c2'), 4242);
      assert.deepEqual(h.hv.calls, ['prepare', 'start'], 'one VM per sandbox');
      assert.deepEqual(h.share.calls, ['prepare', 'shareRootfs sb', 'shareRootfs c2']);
      assert.deepEqual(h.agent.calls, ['createSandbox', 'createOciContainer sb', 'createOciContainer c2']);
      assert.deepEqual(h.summaries(), ['create sb', 'create c2']);
      const created = h.events[1]!;
      assert.ok(created.type === 'create');
      assert.deepEqual(created, {
        type: 'create',
        containerId: 'c2',
        bundle: h.bundle('c2'),
        rootfs: ROOTFS,
        io: NO_STDIO,
        pid: 4242,
      });
    });

    it('refuses a duplicate id, and leaves the existing container alone', async () => {
      await h.create('sb');
      await h.create('c2');
      await assert.rejects(h.create('sb'), AlreadyExistsError);
      await assert.rejects(h.create('c2'), AlreadyExistsError);
      assert.deepEqual(Object.keys(Store.load(h.recordFile)!.containers).sort(), ['c2', 'sb']);
      assert.equal(h.sandbox.state('c2', '').status, 'created');
      assert.deepEqual(h.hv.calls, ['prepare', 'start']);
    });

    it('refuses bad ids, relative bundles, and a terminal with a separate stderr', async () => {
      await assert.rejects(h.sandbox.create({ ...h.request('sb'), id: '../sb' }), InvalidArgumentError);
      await assert.rejects(h.sandbox.create({ ...h.request('sb'), bundle: 'relative/bundle' }), InvalidArgumentError);
      assert.deepEqual(h.hv.calls, []);
    });

    it('refuses a pod asking for a host namespace before anything is made (no record, VM, share, network or bundle pointer), and accepts the same id once fixed', async () => {
      const ann = { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': 'sb' };
      // containerd 1.6's sandbox spec for hostNetwork: no network and no uts entry.
      const hostNet: OciSpec = {
        ...SPEC,
        annotations: ann,
        linux: { namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'mount' }] },
      };
      const req = h.request('sb', NO_STDIO, hostNet);
      await assert.rejects(
        h.sandbox.create(req),
        (e: Error) =>
          e instanceof InvalidArgumentError &&
          /host's network namespace .*hostNetwork.*a VM cannot share/.test(e.message),
      );
      assert.deepEqual([h.hv.calls, h.shares.length, h.netCalls, h.agent.calls], [[], 0, [], []]);
      assert.equal(fs.existsSync(h.dir), false, 'no state folder');
      assert.equal(fs.existsSync(path.join(req.bundle, 'hull-sandbox.json')), false, 'no bundle pointer');
      assert.equal(h.sandbox.empty, true);
      const fixed: OciSpec = {
        ...hostNet,
        linux: {
          namespaces: [
            ...hostNet.linux!.namespaces!,
            { type: 'uts' },
            { type: 'network', path: '/var/run/netns/cni-2' },
          ],
        },
      };
      assert.equal(await h.sandbox.create(h.request('sb', NO_STDIO, fixed)), 4242);
    });

    it('shares bind-mount volumes and hands the agent their guest paths; other mounts pass through', async () => {
      const spec: OciSpec = {
        ...SPEC,
        mounts: [
          { destination: '/proc', type: 'proc', source: 'proc' },
          { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind', 'ro'] },
        ],
      };
      await h.sandbox.create(h.request('sb', NO_STDIO, spec));
      assert.deepEqual(h.share.calls, ['prepare', 'shareRootfs sb', 'shareVolume sb /srv/data ro']);
      assert.deepEqual(h.agent.lastMounts, [
        { destination: '/proc', type: 'proc', source: 'proc', options: [] },
        {
          destination: '/data',
          type: 'bind',
          source: '/run/kata-containers/shared/containers/sb/volumes/data',
          options: ['rbind', 'ro'],
        },
      ]);
      const relative: OciSpec = {
        ...SPEC,
        mounts: [{ destination: '/x', type: 'bind', source: 'rel', options: ['rbind'] }],
      };
      await assert.rejects(h.sandbox.create(h.request('c2', NO_STDIO, relative)), InvalidArgumentError);
    });

    it("a Kubernetes pod: VM sized from the annotations, shm made in the guest, pod namespaces and host name the VM's", async () => {
      const shmDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-shm-'));
      const ann = {
        'io.kubernetes.cri.container-type': 'sandbox',
        'io.kubernetes.cri.sandbox-id': 'sb',
        'io.kubernetes.cri.sandbox-cpu-quota': '150000',
        'io.kubernetes.cri.sandbox-cpu-period': '100000',
        'io.kubernetes.cri.sandbox-memory': String(100 * 1024 * 1024),
      };
      const pause: OciSpec = {
        ...SPEC,
        hostname: 'web-0',
        annotations: ann,
        mounts: [
          {
            destination: '/dev/shm',
            type: 'bind',
            source: shmDir,
            options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
          },
        ],
        linux: {
          namespaces: [
            { type: 'pid' },
            { type: 'ipc' },
            { type: 'uts' },
            { type: 'mount' },
            { type: 'network', path: '/var/run/netns/cni-1' },
          ],
        },
      };
      try {
        await h.sandbox.create(h.request('sb', NO_STDIO, pause));
        const base = testConfig();
        assert.equal(h.hv.config?.vcpus, Math.min(base.vcpus + 2, Math.max(os.availableParallelism(), base.vcpus)));
        assert.equal(h.hv.config?.memoryMiB, base.memoryMiB + 100);
        assert.equal(h.agent.sandbox?.hostname, 'web-0');
        assert.deepEqual(h.agent.sandbox?.storages[1], {
          driver: 'ephemeral',
          source: 'shm',
          fstype: 'tmpfs',
          options: ['size=67108864', 'mode=1777', 'nosuid', 'nodev', 'noexec'],
          mountPoint: '/run/kata-containers/sandbox/shm',
        });
        assert.equal(h.agent.lastSpec?.hostname, undefined);
        assert.deepEqual(h.agent.lastSpec?.linux?.namespaces, [
          { type: 'pid' },
          { type: 'mount' },
          { type: 'network', path: '/var/run/netns/cni-1' },
        ]);
        assert.deepEqual(h.agent.lastMounts, [
          {
            destination: '/dev/shm',
            type: 'bind',
            source: '/run/kata-containers/sandbox/shm',
            options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
          },
        ]);

        const app: OciSpec = {
          ...SPEC,
          hostname: undefined,
          annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'sb' },
          mounts: [
            { destination: '/etc/hosts', type: 'bind', source: '/srv/pod/hosts', options: ['rbind', 'rw'] },
            { destination: '/dev/shm', type: 'bind', source: shmDir, options: ['rbind', 'rw'] },
          ],
          linux: {
            namespaces: [
              { type: 'ipc', path: '/proc/1/ns/ipc' },
              { type: 'uts', path: '/proc/1/ns/uts' },
              { type: 'pid' },
              { type: 'mount' },
              { type: 'network', path: '/proc/1/ns/net' },
            ],
          },
        };
        await h.sandbox.create(h.request('app', NO_STDIO, app));
        assert.deepEqual(
          h.share.calls.filter((c) => c.startsWith('shareVolume')),
          ['shareVolume app /srv/pod/hosts'],
        );
        assert.deepEqual(
          h.agent.lastMounts?.map((m) => m.source),
          ['/run/kata-containers/shared/containers/app/volumes/etc/hosts', '/run/kata-containers/sandbox/shm'],
        );
        assert.deepEqual(
          h.agent.lastSpec?.linux?.namespaces,
          app.linux?.namespaces,
          'joined namespaces go to the agent as they are',
        );

        assert.deepEqual(h.hv.config?.network, {
          netnsPath: '/var/run/netns/cni-1',
          nics: [{ tap: 'tap0_hull', mac: '02:00:00:00:00:01', mtu: 1450 }],
        });
        assert.deepEqual(JSON.parse(fs.readFileSync(h.recordFile, 'utf8')).network, {
          netnsPath: '/var/run/netns/cni-1',
          taps: ['tap0_hull'],
        });
        await h.sandbox.delete('app', '');
        await h.sandbox.delete('sb', '');
        assert.equal(h.netCalls[0], 'connect /var/run/netns/cni-1');
        assert.match(h.netCalls[1]!, /^configureGuest/);
        assert.doesNotMatch(h.netCalls[1]!, /createSandbox/, 'the guest network is configured before CreateSandbox');
        assert.match(
          h.netCalls[2]!,
          /^forwardLocalhost .*createSandbox/,
          'port forwarding starts once the sandbox is made',
        );
        assert.deepEqual(h.netCalls.slice(3), ['disconnect']);
      } finally {
        fs.rmSync(shmDir, { recursive: true, force: true });
      }
    });

    it("Update reaches the agent within the VM's size, and says clearly that it does not hot-plug beyond it", async () => {
      await h.sandbox.create(h.request('sb'));
      const base = testConfig();
      await h.sandbox.update('sb', { memory: { limit: 16 * 1024 * 1024 }, cpu: { quota: 50_000, period: 100_000 } });
      assert.ok(h.agent.calls.includes('updateContainer sb'));
      await assert.rejects(
        h.sandbox.update('sb', { memory: { limit: (base.memoryMiB + 1) * 1024 * 1024 } }),
        (e: Error) =>
          e instanceof FailedPreconditionError &&
          /does not hot-plug/.test(e.message) &&
          e.message.includes(`${base.memoryMiB} MiB`),
      );
      await assert.rejects(
        h.sandbox.update('sb', { cpu: { quota: (base.vcpus + 1) * 100_000, period: 100_000 } }),
        /CPUs, more than the pod's VM has/,
      );
    });

    it('refuses a pod whose annotations are not numbers or ask for more memory than the host has', async () => {
      const role: OciSpec = { ...SPEC, annotations: { 'io.kubernetes.cri.container-type': 'pause' } };
      await assert.rejects(h.sandbox.create(h.request('sb', NO_STDIO, role)), InvalidArgumentError);
      const bad: OciSpec = {
        ...SPEC,
        annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-memory': '12x' },
      };
      await assert.rejects(h.sandbox.create(h.request('sb', NO_STDIO, bad)), /sandbox-memory="12x" is not an integer/);
      assert.deepEqual(h.hv.calls, [], 'checked before anything was made');
      const huge: OciSpec = {
        ...SPEC,
        annotations: {
          'io.kubernetes.cri.container-type': 'sandbox',
          'io.kubernetes.cri.sandbox-memory': String(2 ** 60),
        },
      };
      await assert.rejects(h.sandbox.create(h.request('sb', NO_STDIO, huge)), /more than the host's/);
      assert.equal(fs.existsSync(h.dir), false, 'nothing left');
    });

    it('a failed sandbox Create undoes everything (VM stopped, share cleaned, record removed) and throws the agent error', async () => {
      const boom = new UnavailableError('agent: create container failed');
      h.agent.createOciContainer = async () => {
        throw boom;
      };
      await assert.rejects(h.create('sb'), (e) => e === boom);
      assert.deepEqual(h.agent.calls, ['createSandbox', 'destroySandbox', 'close']);
      assert.deepEqual(h.hv.calls, ['prepare', 'start', 'stop', 'cleanup']);
      assert.equal(h.hv.running, false);
      assert.deepEqual(h.share.calls, ['prepare', 'shareRootfs sb', 'cleanup']);
      assert.equal(fs.existsSync(h.recordFile), false);
      assert.equal(fs.existsSync(h.dir), false);
      assert.deepEqual(h.events, []);
    });

    it('a failed VM boot undoes the share and the record', async () => {
      h.hv.failStart = new UnavailableError('qemu: bad option');
      await assert.rejects(h.create('sb'), /bad option/);
      assert.deepEqual(h.hv.calls, ['prepare', 'start', 'stop(force)', 'cleanup']);
      assert.deepEqual(h.share.calls, ['prepare', 'cleanup']);
      assert.equal(fs.existsSync(h.dir), false);
      assert.deepEqual(h.events, []);
    });

    it('a failed pod container Create removes it from the guest, the share and the record, and keeps the VM', async () => {
      await h.create('sb');
      const boom = new UnavailableError('share: mount failed');
      h.share.fail.shareRootfs = boom;
      await assert.rejects(h.create('c2'), (e) => e === boom);
      assert.deepEqual(h.share.calls.slice(-2), ['shareRootfs c2', 'unshare c2']);
      assert.ok(h.agent.calls.includes('removeContainer c2'));
      assert.deepEqual(Object.keys(Store.load(h.recordFile)!.containers), ['sb']);
      assert.ok(h.hv.running);
      delete h.share.fail.shareRootfs;
      await h.create('c2');
      assert.deepEqual(h.summaries(), ['create sb', 'create c2']);
    });

    it('a failed pod container Create closes its FIFOs', async () => {
      await h.create('sb');
      const stdio = h.fifos('c2', ['stdin', 'stdout']);
      h.agent.createOciContainer = async () => {
        throw new UnavailableError('agent gone');
      };
      await assert.rejects(h.create('c2', stdio), UnavailableError);
      // Nothing of the shim holds the stdout FIFO any more: a reader sees end of file.
      const r = h.reader(stdio.stdout);
      await until('the shim to close stdout', () => r.drain().eof);
    });
  });

  describe('a container life', () => {
    it('publishes create, start, exit, delete in that order; the pod container goes from the guest and the share', async () => {
      await h.running();
      await h.create('c2');
      assert.equal(await h.sandbox.start('c2', ''), 4242);
      h.agent.exitProcess('c2', '', 7);
      assert.deepEqual(await h.sandbox.wait('c2', ''), {
        exitStatus: 7,
        exitedAt: h.sandbox.state('c2', '').exit!.exitedAt,
      });
      const { pid, exit } = await h.sandbox.delete('c2', '');
      assert.equal(pid, 4242);
      assert.equal(exit.exitStatus, 7);
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'start c2', 'exit c2 7', 'delete c2 7']);
      const exitEvent = h.events[4]!;
      assert.ok(exitEvent.type === 'exit');
      assert.deepEqual(exitEvent, {
        type: 'exit',
        containerId: 'c2',
        id: 'c2',
        pid: 4242,
        exitStatus: 7,
        exitedAt: exit.exitedAt,
      });
      assert.ok(h.agent.calls.includes('removeContainer c2'));
      assert.deepEqual(h.share.calls.slice(-1), ['unshare c2']);
      assert.throws(() => h.sandbox.state('c2', ''), NotFoundError);
      await assert.rejects(h.sandbox.delete('c2', ''), NotFoundError);
      assert.ok(h.hv.running, 'the VM stays for the sandbox container');
    });

    it('deleting a container that never started publishes no exit; its init stopped with status 0', async () => {
      await h.running();
      await h.create('c2');
      const { exit } = await h.sandbox.delete('c2', '');
      assert.equal(exit.exitStatus, 0);
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'delete c2 0']);
    });

    it('refuses to delete a running container, and to start one twice', async () => {
      await h.running();
      await assert.rejects(h.sandbox.delete('sb', ''), FailedPreconditionError);
      await assert.rejects(h.sandbox.start('sb', ''), FailedPreconditionError);
      assert.ok(h.hv.running);
      assert.equal(h.sandbox.state('sb', '').status, 'running');
    });

    it('state() reports created, running, paused and stopped, with the exit', async () => {
      await h.create('sb');
      assert.deepEqual(h.sandbox.state('sb', ''), {
        id: 'sb',
        execId: '',
        bundle: h.bundle('sb'),
        pid: 4242,
        status: 'created',
        stdio: NO_STDIO,
        exit: undefined,
      });
      await h.create('c2');
      await h.sandbox.start('sb', '');
      assert.equal(h.sandbox.state('sb', '').status, 'running');
      await h.sandbox.pause('sb');
      assert.equal(h.sandbox.state('sb', '').status, 'paused');
      await h.sandbox.resume('sb');
      assert.equal(h.sandbox.state('sb', '').status, 'running');
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      const s = h.sandbox.state('sb', '');
      assert.equal(s.status, 'stopped');
      assert.equal(s.exit?.exitStatus, 0);
      assert.ok(s.exit?.exitedAt instanceof Date);
      assert.equal(h.sandbox.state('c2', '').status, 'created');
      assert.throws(() => h.sandbox.state('nope', ''), NotFoundError);
      assert.throws(() => h.sandbox.state('sb', 'nope'), NotFoundError);
    });

    it('pause and resume: agent calls, events, and refusals in the wrong state', async () => {
      await h.create('sb');
      await assert.rejects(h.sandbox.pause('sb'), FailedPreconditionError, 'created');
      await h.sandbox.start('sb', '');
      await assert.rejects(h.sandbox.resume('sb'), FailedPreconditionError, 'not paused');
      await h.sandbox.pause('sb');
      await assert.rejects(h.sandbox.pause('sb'), FailedPreconditionError, 'already paused');
      await assert.rejects(h.sandbox.delete('sb', ''), FailedPreconditionError, 'a paused container still runs');
      await h.sandbox.resume('sb');
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'paused sb', 'resumed sb']);
      assert.deepEqual(
        h.agent.calls.filter((c) => /pause|resume/.test(c)),
        ['pauseContainer sb', 'resumeContainer sb'],
      );
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await assert.rejects(h.sandbox.pause('sb'), FailedPreconditionError, 'stopped');
    });

    it('pids lists the guest pids the agent reports once the container runs; Connect taskPid is the VM pid', async () => {
      await h.create('sb');
      h.agent.listProcesses = async () => [1, 7];
      assert.deepEqual(await h.sandbox.pids('sb'), []);
      assert.equal(h.sandbox.taskPid('sb'), 4242);
      await h.sandbox.start('sb', '');
      assert.deepEqual(await h.sandbox.pids('sb'), [1, 7]);
    });
  });

  describe('stdio', () => {
    it('publishes the exit only after the output reached the FIFOs (stdout and stderr bytes exact)', async () => {
      const stdio = h.fifos('sb', ['stdout', 'stderr']);
      await h.create('sb', stdio);
      const out = h.reader(stdio.stdout);
      const err = h.reader(stdio.stderr);
      let atExit: { out: { data: Buffer; eof: boolean }; err: { data: Buffer; eof: boolean } } | undefined;
      h.onEvent = (e) => {
        if (e.type === 'exit') atExit = { out: out.drain(), err: err.drain() };
      };
      await h.sandbox.start('sb', '');
      h.agent.emit('sb', '', 'hello\n');
      h.agent.emit('sb', '', 'oops\n', 'stderr');
      h.agent.emit('sb', '', Buffer.from([0, 1, 2, 0xff, 0xfe]));
      h.agent.emit('sb', '', 'world\n');
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      assert.ok(atExit, 'exit published');
      assert.deepEqual(
        atExit.out.data,
        Buffer.concat([Buffer.from('hello\n'), Buffer.from([0, 1, 2, 0xff, 0xfe]), Buffer.from('world\n')]),
      );
      assert.equal(atExit.err.data.toString(), 'oops\n');
      assert.ok(atExit.out.eof && atExit.err.eof, 'the shim closed both FIFOs before publishing the exit');
    });

    it('copies 4 MiB of stdout exactly, waiting for a slow reader, and publishes the exit after it', async function () {
      const stdio = h.fifos('sb', ['stdout']);
      await h.create('sb', stdio);
      const fd = fs.openSync(stdio.stdout, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const sock = new net.Socket({ fd, readable: true, writable: false });
      const chunks: Buffer[] = [];
      let received = 0;
      const done = new Promise<Buffer>((resolve, reject) => {
        sock.on('data', (c: Buffer) => {
          chunks.push(c);
          received += c.length;
          // A slow reader: the shim has to wait for the pipe to drain.
          sock.pause();
          setTimeout(() => sock.resume(), 1);
        });
        sock.once('end', () => resolve(Buffer.concat(chunks)));
        sock.once('error', reject);
      });
      let receivedAtExit = -1;
      h.onEvent = (e) => {
        if (e.type === 'exit') receivedAtExit = received;
      };
      const total = 4 << 20;
      const data = crypto.randomBytes(total);
      await h.sandbox.start('sb', '');
      for (let off = 0; off < total; off += 100_000) h.agent.emit('sb', '', data.subarray(off, off + 100_000));
      h.agent.exitProcess('sb', '', 0);
      const got = await done;
      sock.destroy();
      await h.sandbox.wait('sb', '');
      assert.equal(got.length, total);
      assert.ok(got.equals(data), 'stdout bytes differ');
      // At the exit, everything had been written: only what fits in the pipe and the reader buffers was still unread.
      assert.ok(
        receivedAtExit >= total - 256 * 1024,
        `only ${receivedAtExit} of ${total} bytes had been read at the exit`,
      );
    });

    it('forwards stdin and closes it after CloseIO, once the writer closed and the pipe was read', async () => {
      const stdio = h.fifos('sb', ['stdin']);
      await h.create('sb', stdio);
      await assert.rejects(h.sandbox.closeIO('sb', ''), FailedPreconditionError, 'not started');
      await h.sandbox.start('sb', '');
      const w = fs.openSync(stdio.stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      fs.writeSync(w, 'line 1\n');
      await until('the first line', () => h.agent.stdinOf('sb', '').data === 'line 1\n');
      fs.writeSync(w, 'line 2\n');
      fs.closeSync(w);
      await until('the second line', () => h.agent.stdinOf('sb', '').data === 'line 1\nline 2\n');
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(h.agent.stdinOf('sb', '').closed, false, 'containerd may reopen stdin until CloseIO');
      await h.sandbox.closeIO('sb', '');
      assert.deepEqual(h.agent.stdinOf('sb', ''), { data: 'line 1\nline 2\n', closed: true });
    });

    it('CloseIO after the process exited returns at once', async () => {
      const stdio = h.fifos('sb', ['stdin']);
      await h.create('sb', stdio);
      await h.sandbox.start('sb', '');
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      const closed = h.sandbox.closeIO('sb', '').then(() => 'closed');
      assert.equal(await Promise.race([closed, new Promise((r) => setTimeout(() => r('hung'), 1_000))]), 'closed');
    });
  });

  describe('exits are not hostage to stdout (a background child holds it)', () => {
    it("an exec's exit is published, bounded, after its earlier output; later output flows until Delete closes the FIFO", async () => {
      await h.running();
      const stdio = h.fifos('bg', ['stdout', 'stderr']);
      await h.sandbox.exec('sb', 'bg', { args: ['sh', '-c', 'sleep 300 & echo started'], cwd: '/' }, stdio);
      await h.sandbox.start('sb', 'bg');
      const out = h.reader(stdio.stdout);
      const err = h.reader(stdio.stderr);
      let atExit: { data: Buffer; eof: boolean } | undefined;
      h.onEvent = (e) => {
        if (e.type === 'exit') atExit = out.drain();
      };
      h.agent.emit('sb', 'bg', 'started\n');
      h.agent.exitProcessHoldingOutput('sb', 'bg', 0);
      assert.equal((await h.sandbox.wait('sb', 'bg')).exitStatus, 0);
      assert.deepEqual(
        atExit,
        { data: Buffer.from('started\n'), eof: false },
        'the output before the exit, the FIFO still open',
      );
      h.agent.emit('sb', 'bg', 'later\n');
      let later = '';
      await until("the child's output after the exit", () => (later += out.drain().data.toString()) === 'later\n');
      await h.sandbox.delete('sb', 'bg');
      await until('Delete to close stdout', () => out.drain().eof);
      await until('Delete to close stderr', () => err.drain().eof);
    });

    it("a container's init: the exit is published and Delete closes its FIFO", async () => {
      await h.running();
      const stdio = h.fifos('c2', ['stdout']);
      await h.create('c2', stdio);
      await h.sandbox.start('c2', '');
      const out = h.reader(stdio.stdout);
      h.agent.emit('c2', '', 'up\n');
      h.agent.exitProcessHoldingOutput('c2', '', 0);
      assert.equal((await h.sandbox.wait('c2', '')).exitStatus, 0);
      assert.deepEqual(out.drain(), { data: Buffer.from('up\n'), eof: false });
      await h.sandbox.delete('c2', '');
      await until('Delete to close stdout', () => out.drain().eof);
    });
  });

  describe('Exec', () => {
    it('publishes exec-added, exec-started, exit; output exact; the exec can be deleted once stopped', async () => {
      await h.running();
      const stdio = h.fifos('e1', ['stdout']);
      await h.sandbox.exec('sb', 'e1', { args: ['echo', 'hi'], cwd: '/' }, stdio);
      assert.equal(h.sandbox.state('sb', 'e1').status, 'created');
      assert.equal(await h.sandbox.start('sb', 'e1'), 4242);
      assert.ok(h.agent.calls.includes('execOciProcess sb e1'));
      const out = h.reader(stdio.stdout);
      let atExit: Buffer | undefined;
      h.onEvent = (e) => {
        if (e.type === 'exit') atExit = out.drain().data;
      };
      h.agent.emit('sb', 'e1', 'hi\n');
      h.agent.exitProcess('sb', 'e1', 3);
      assert.equal((await h.sandbox.wait('sb', 'e1')).exitStatus, 3);
      assert.equal(atExit?.toString(), 'hi\n');
      assert.deepEqual(h.summaries(), [
        'create sb',
        'start sb',
        'exec-added sb/e1',
        'exec-started sb/e1',
        'exit sb/e1 3',
      ]);
      const exit = h.events[4]!;
      assert.ok(exit.type === 'exit' && exit.id === 'e1' && exit.pid === 4242);
      assert.equal(h.sandbox.state('sb', '').status, 'running', 'the init still runs');

      const { exit: deleted } = await h.sandbox.delete('sb', 'e1');
      assert.equal(deleted.exitStatus, 3);
      assert.throws(() => h.sandbox.state('sb', 'e1'), NotFoundError);
      await assert.rejects(h.sandbox.delete('sb', 'e1'), NotFoundError);
    });

    it('refuses duplicate exec ids, execs in a container that does not run, and a running exec delete', async () => {
      await h.create('sb');
      await assert.rejects(
        h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO),
        FailedPreconditionError,
        'created',
      );
      await h.sandbox.start('sb', '');
      await h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO);
      await assert.rejects(h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO), AlreadyExistsError);
      await assert.rejects(h.sandbox.exec('sb', 'sb', { args: ['true'] }, NO_STDIO), AlreadyExistsError);
      await assert.rejects(h.sandbox.exec('sb', 'e/2', { args: ['true'] }, NO_STDIO), InvalidArgumentError);
      await assert.rejects(
        h.sandbox.exec('sb', 'e2', { args: ['true'], terminal: true }, NO_STDIO),
        InvalidArgumentError,
      );
      await assert.rejects(h.sandbox.exec('nope', 'e2', { args: ['true'] }, NO_STDIO), NotFoundError);
      await h.sandbox.start('sb', 'e1');
      await assert.rejects(h.sandbox.start('sb', 'e1'), FailedPreconditionError);
      await assert.rejects(h.sandbox.delete('sb', 'e1'), FailedPreconditionError);
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await assert.rejects(
        h.sandbox.exec('sb', 'e3', { args: ['true'] }, NO_STDIO),
        FailedPreconditionError,
        'stopped',
      );
    });

    it('an exec deleted before it started is gone without events', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO);
      const { exit } = await h.sandbox.delete('sb', 'e1');
      assert.equal(exit.exitStatus, 0);
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'exec-added sb/e1']);
      await assert.rejects(h.sandbox.start('sb', 'e1'), NotFoundError);
    });
  });

  describe('Wait and Kill', () => {
    it('Wait resolves for several waiters, and for one that comes after the exit', async () => {
      await h.running();
      const w1 = h.sandbox.wait('sb', '');
      const w2 = h.sandbox.wait('sb', '');
      let settled = false;
      void w1.then(() => (settled = true));
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(settled, false);
      h.agent.exitProcess('sb', '', 143);
      const [a, b] = await Promise.all([w1, w2]);
      assert.equal(a.exitStatus, 143);
      assert.deepEqual(a, b);
      assert.deepEqual(await h.sandbox.wait('sb', ''), a);
      assert.throws(() => h.sandbox.wait('nope', ''), NotFoundError);
    });

    it('Kill signals the init, all processes, or an exec through the agent', async () => {
      await h.create('sb');
      await h.sandbox.kill('sb', '', 9, false); // a created init can be killed (containerd does so on a failed start)
      await h.sandbox.start('sb', '');
      await h.sandbox.exec('sb', 'e1', { args: ['sleep', '1'] }, NO_STDIO);
      await assert.rejects(h.sandbox.kill('sb', 'e1', 15, false), NotFoundError, 'an exec that has not started');
      await h.sandbox.start('sb', 'e1');
      await h.sandbox.kill('sb', '', 15, false);
      await h.sandbox.kill('sb', '', 9, true);
      await h.sandbox.kill('sb', 'e1', 2, false);
      assert.deepEqual(
        h.agent.calls.filter((c) => c.startsWith('signalProcess')),
        ['signalProcess sb sb 9', 'signalProcess sb sb 15', 'signalProcess sb  9', 'signalProcess sb e1 2'],
      );
    });

    it('Kill of a stopped process is NotFound; kill all on an exec and bad signals are InvalidArgument', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO);
      await h.sandbox.start('sb', 'e1');
      await assert.rejects(h.sandbox.kill('sb', 'e1', 9, true), InvalidArgumentError);
      for (const signal of [0, -1, 65, 1.5])
        await assert.rejects(h.sandbox.kill('sb', '', signal, false), InvalidArgumentError, `signal ${signal}`);
      await assert.rejects(h.sandbox.kill('sb', 'nope', 9, false), NotFoundError);
      h.agent.exitProcess('sb', 'e1', 0);
      await h.sandbox.wait('sb', 'e1');
      await assert.rejects(h.sandbox.kill('sb', 'e1', 9, false), NotFoundError);
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await assert.rejects(h.sandbox.kill('sb', '', 9, false), NotFoundError);
      await assert.rejects(h.sandbox.kill('sb', '', 9, true), NotFoundError);
    });
  });

  describe('teardown', () => {
    it('deleting the sandbox container shuts the VM down through the agent, cleans the share and removes its folder', async () => {
      await h.running();
      assert.ok(fs.existsSync(h.recordFile));
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      const { exit } = await h.sandbox.delete('sb', '');
      assert.equal(exit.exitStatus, 0);
      assert.deepEqual(h.agent.calls.slice(-2), ['destroySandbox', 'close']);
      assert.deepEqual(h.hv.calls, ['prepare', 'start', 'stop', 'cleanup']);
      assert.equal(h.hv.running, false);
      assert.deepEqual(h.share.calls.slice(-1), ['cleanup']);
      assert.equal(fs.existsSync(h.recordFile), false);
      assert.equal(fs.existsSync(h.dir), false);
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'exit sb 0', 'delete sb 0']);
      assert.ok(h.sandbox.empty);
      await assert.rejects(h.create('sb'), FailedPreconditionError, 'a torn-down sandbox takes no more containers');
    });

    it("the guest's spans drained as the VM powers off come out of drainGuestSpans once, after the VM is gone", async () => {
      const last: GuestSpanBatch = { spans: [], dropped: 0, refused: 2 };
      const drains: string[] = [];
      Object.assign(h.agent, {
        drainSpans: async () => {
          drains.push(h.agent.calls.at(-1) ?? '');
          return drains.length === 1 ? last : { spans: [], dropped: 0, refused: 0 };
        },
      });
      await h.running();
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await h.sandbox.delete('sb', '');
      assert.deepEqual(drains, ['destroySandbox'], 'drained right after DestroySandbox');
      assert.equal(await h.sandbox.drainGuestSpans(), last);
      assert.equal(await h.sandbox.drainGuestSpans(), undefined, 'once');
    });

    it('teardown() reports every running process exited (137) and resolves their waiters', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['sleep', '9'] }, NO_STDIO);
      await h.sandbox.start('sb', 'e1');
      await h.create('c2'); // created, never started: no exit
      await h.sandbox.teardown();
      assert.equal((await h.sandbox.wait('sb', 'e1')).exitStatus, 137);
      assert.equal((await h.sandbox.wait('sb', '')).exitStatus, 137);
      assert.deepEqual(
        h
          .summaries()
          .filter((s) => s.startsWith('exit'))
          .sort(),
        ['exit sb 137', 'exit sb/e1 137'],
      );
      assert.deepEqual(h.agent.calls.slice(-2), ['destroySandbox', 'close']);
      assert.equal(fs.existsSync(h.dir), false);
      await h.sandbox.teardown(); // idempotent
    });

    it('a pod container left when the sandbox container was deleted can still be deleted, and the sandbox empties', async () => {
      await h.running();
      await h.create('c2');
      await h.sandbox.start('c2', '');
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await h.sandbox.delete('sb', ''); // tears the VM down under c2
      assert.equal((await h.sandbox.wait('c2', '')).exitStatus, 137);
      assert.equal(h.sandbox.empty, false);
      const { exit } = await h.sandbox.delete('c2', '');
      assert.equal(exit.exitStatus, 137);
      assert.ok(h.sandbox.empty, 'Shutdown may now end the daemon');
      assert.deepEqual(
        h.summaries().filter((e) => e.startsWith('delete')),
        ['delete sb 0', 'delete c2 137'],
      );
      assert.equal(fs.existsSync(h.dir), false, 'the sandbox folder is not made again');
    });

    it('keeps the record when the share cannot be cleaned, so that `delete` can try again', async () => {
      await h.create('sb');
      h.share.fail.cleanup = new UnavailableError('device busy');
      await assert.rejects(h.sandbox.teardown(), /device busy/);
      assert.ok(fs.existsSync(h.recordFile));
      assert.equal(h.hv.running, false);
    });

    it('a lost VM reports every started process exited with 255', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['sleep', '9'] }, NO_STDIO);
      await h.sandbox.start('sb', 'e1');
      h.agent.lose(new Error('connection reset'));
      assert.equal((await h.sandbox.wait('sb', '')).exitStatus, 255);
      assert.equal((await h.sandbox.wait('sb', 'e1')).exitStatus, 255);
    });
  });

  describe('concurrent operations on one container (the fake agent holds a call open)', () => {
    /** Rejects with `type`, whose message matches `message`. */
    const refused = (p: Promise<unknown>, type: new (...a: never[]) => Error, message: RegExp) =>
      assert.rejects(p, (err: unknown) => {
        assert.ok(err instanceof type, `${String(err)} is a ${type.name}`);
        assert.match(err.message, message);
        return true;
      });

    it('pause + pause: one pauses, the other is refused naming the state paused; one agent call, one event', async () => {
      await h.running();
      const held = h.agent.hold('pauseContainer');
      const first = h.sandbox.pause('sb');
      await held.entered;
      const second = h.sandbox.pause('sb');
      held.release();
      await first;
      await refused(second, FailedPreconditionError, /cannot pause container sb in state paused/);
      assert.equal(h.sandbox.state('sb', '').status, 'paused');
      assert.deepEqual(
        h.agent.calls.filter((c) => c.startsWith('pause')),
        ['pauseContainer sb'],
      );
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'paused sb']);
    });

    it('resume + pause: the pause waits for the resume, then pauses again', async () => {
      await h.running();
      await h.sandbox.pause('sb');
      const held = h.agent.hold('resumeContainer');
      const resume = h.sandbox.resume('sb');
      await held.entered;
      const pause = h.sandbox.pause('sb');
      held.release();
      await Promise.all([resume, pause]);
      assert.equal(h.sandbox.state('sb', '').status, 'paused');
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'paused sb', 'resumed sb', 'paused sb']);
    });

    it('start + start: the second is refused naming the state running; one start event', async () => {
      await h.running();
      await h.create('c2');
      const held = h.agent.hold('startContainer');
      const first = h.sandbox.start('c2', '');
      await held.entered;
      const second = h.sandbox.start('c2', '');
      held.release();
      assert.equal(await first, 4242);
      await refused(second, FailedPreconditionError, /cannot start container c2 in state running/);
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'start c2']);
    });

    it('start + delete: the delete waits for the start and is refused (running); the container runs', async () => {
      await h.running();
      await h.create('c2');
      const held = h.agent.hold('startContainer');
      const start = h.sandbox.start('c2', '');
      await held.entered;
      const del = h.sandbox.delete('c2', '');
      held.release();
      await start;
      await refused(del, FailedPreconditionError, /cannot delete container c2 in state running/);
      assert.equal(h.sandbox.state('c2', '').status, 'running');
      assert.ok(!h.agent.calls.includes('removeContainer c2'));
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'start c2']);
    });

    it('delete + start: the start waits for the delete and finds no container', async () => {
      await h.running();
      await h.create('c2');
      const held = h.agent.hold('removeContainer');
      const del = h.sandbox.delete('c2', '');
      await held.entered;
      const start = h.sandbox.start('c2', '');
      held.release();
      assert.equal((await del).exit.exitStatus, 0);
      await refused(start, NotFoundError, /container c2 in state deleted/);
      assert.ok(!h.agent.calls.includes('startContainer c2'));
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'delete c2 0']);
    });

    it('delete + delete: one deletes, the other is NotFound; one delete event', async () => {
      await h.running();
      await h.create('c2');
      const held = h.agent.hold('removeContainer');
      const first = h.sandbox.delete('c2', '');
      await held.entered;
      const second = h.sandbox.delete('c2', '');
      held.release();
      await first;
      await refused(second, NotFoundError, /cannot delete container c2 in state deleted/);
      assert.deepEqual(
        h.agent.calls.filter((c) => c.startsWith('removeContainer')),
        ['removeContainer c2'],
      );
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'create c2', 'delete c2 0']);
    });

    it('exec start + exec delete: the delete waits and is refused (running); after the exit it deletes', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['sleep', '1'] }, NO_STDIO);
      const held = h.agent.hold('execOciProcess');
      const start = h.sandbox.start('sb', 'e1');
      await held.entered;
      const del = h.sandbox.delete('sb', 'e1');
      held.release();
      await start;
      await refused(del, FailedPreconditionError, /cannot delete exec e1 of container sb in state running/);
      assert.equal(h.sandbox.state('sb', 'e1').status, 'running');
      h.agent.exitProcess('sb', 'e1', 0);
      await h.sandbox.wait('sb', 'e1');
      await h.sandbox.delete('sb', 'e1');
      assert.deepEqual(h.summaries(), [
        'create sb',
        'start sb',
        'exec-added sb/e1',
        'exec-started sb/e1',
        'exit sb/e1 0',
      ]);
    });

    it('kill + delete: an exit while the kill holds the container is recorded at once; the delete then succeeds; each event once', async () => {
      await h.running();
      await h.create('c2');
      await h.sandbox.start('c2', '');
      const held = h.agent.hold('signalProcess');
      const kill = h.sandbox.kill('c2', '', 9, false);
      await held.entered;
      const del = h.sandbox.delete('c2', '');
      h.agent.exitProcess('c2', '', 137);
      assert.equal((await h.sandbox.wait('c2', '')).exitStatus, 137, 'Wait answers while the kill is in flight');
      assert.equal(h.sandbox.state('c2', '').status, 'stopped', 'State too');
      held.release();
      await kill;
      assert.equal((await del).exit.exitStatus, 137);
      assert.deepEqual(h.summaries(), [
        'create sb',
        'start sb',
        'create c2',
        'start c2',
        'exit c2 137',
        'delete c2 137',
      ]);
    });

    it('kill + delete of a running container: the delete is refused (running), kill of the stopped one is NotFound', async () => {
      await h.running();
      await h.create('c2');
      await h.sandbox.start('c2', '');
      const held = h.agent.hold('signalProcess');
      const kill = h.sandbox.kill('c2', '', 15, false);
      await held.entered;
      const del = h.sandbox.delete('c2', '');
      held.release();
      await kill;
      await refused(del, FailedPreconditionError, /cannot delete container c2 in state running/);
      h.agent.exitProcess('c2', '', 143);
      await h.sandbox.wait('c2', '');
      await refused(h.sandbox.kill('c2', '', 9, false), NotFoundError, /container c2 in state stopped/);
      await h.sandbox.delete('c2', '');
      assert.deepEqual(h.summaries(), [
        'create sb',
        'start sb',
        'create c2',
        'start c2',
        'exit c2 143',
        'delete c2 143',
      ]);
    });

    it('a paused container refuses an exec and the start of an exec added before the pause (as runc does)', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO);
      await h.sandbox.pause('sb');
      await refused(
        h.sandbox.exec('sb', 'e2', { args: ['true'] }, NO_STDIO),
        FailedPreconditionError,
        /cannot exec in container sb in state paused/,
      );
      await refused(
        h.sandbox.start('sb', 'e1'),
        FailedPreconditionError,
        /cannot exec in container sb in state paused/,
      );
      assert.equal(h.sandbox.state('sb', 'e1').status, 'created');
      assert.ok(!h.agent.calls.some((c) => c.startsWith('execOciProcess')));
      await h.sandbox.resume('sb');
      await h.sandbox.start('sb', 'e1');
      assert.deepEqual(h.summaries(), [
        'create sb',
        'start sb',
        'exec-added sb/e1',
        'paused sb',
        'resumed sb',
        'exec-started sb/e1',
      ]);
    });

    it('a paused container can be killed; once its init exited it is stopped, not paused, and resume is refused', async () => {
      await h.running();
      await h.sandbox.pause('sb');
      await h.sandbox.kill('sb', '', 9, false);
      h.agent.exitProcess('sb', '', 137);
      await h.sandbox.wait('sb', '');
      assert.equal(h.sandbox.state('sb', '').status, 'stopped');
      await refused(h.sandbox.resume('sb'), FailedPreconditionError, /cannot resume container sb in state stopped/);
      assert.ok(!h.agent.calls.includes('resumeContainer sb'));
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'paused sb', 'exit sb 137']);
    });

    it('the VM lost while a start is in flight: the exit stands, the start fails, no start event after the exit', async () => {
      await h.running();
      await h.create('c2');
      const held = h.agent.hold('startContainer');
      const start = h.sandbox.start('c2', '');
      await held.entered;
      h.agent.lose(new Error('connection reset'));
      assert.equal((await h.sandbox.wait('c2', '')).exitStatus, 255);
      held.release();
      await refused(start, FailedPreconditionError, /cannot start container c2: it became stopped meanwhile/);
      assert.equal(h.sandbox.state('c2', '').status, 'stopped');
      assert.deepEqual(
        h.summaries().filter((e) => e.includes('c2')),
        ['create c2', 'exit c2 255'],
      );
    });

    it('exec delete + exec start: the start waits for the delete and finds no exec; exec delete + delete: one NotFound', async () => {
      await h.running();
      await h.sandbox.exec('sb', 'e1', { args: ['true'] }, NO_STDIO);
      const held = h.agent.hold('signalProcess'); // holds the container while both ask
      const kill = h.sandbox.kill('sb', '', 1, false);
      await held.entered;
      const del = h.sandbox.delete('sb', 'e1');
      const start = h.sandbox.start('sb', 'e1');
      const again = h.sandbox.delete('sb', 'e1');
      held.release();
      await kill;
      assert.equal((await del).exit.exitStatus, 0);
      await refused(start, NotFoundError, /e1/);
      await refused(again, NotFoundError, /e1/);
      assert.ok(!h.agent.calls.some((c) => c.startsWith('execOciProcess')));
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'exec-added sb/e1']);
    });

    it("a CloseIO waiting for containerd's stdin writer does not hold the container: Kill and Pause go through", async () => {
      const stdio = h.fifos('sb', ['stdin']);
      await h.create('sb', stdio);
      await h.sandbox.start('sb', '');
      const w = fs.openSync(stdio.stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      let closed = false;
      const closeIO = h.sandbox.closeIO('sb', '').then(() => (closed = true));
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(closed, false, 'the writer is still open');
      await h.sandbox.kill('sb', '', 15, false);
      await h.sandbox.pause('sb');
      fs.closeSync(w);
      await closeIO;
      assert.deepEqual(h.summaries(), ['create sb', 'start sb', 'paused sb']);
    });

    it('Update waits for an operation in flight; a stopped container refuses Update', async () => {
      await h.running();
      const held = h.agent.hold('pauseContainer');
      const pause = h.sandbox.pause('sb');
      await held.entered;
      const update = h.sandbox.update('sb', { cpu: { shares: 512 } });
      await new Promise((r) => setTimeout(r, 10));
      assert.ok(!h.agent.calls.includes('updateContainer sb'), 'the update waits for the pause');
      held.release();
      await Promise.all([pause, update]);
      assert.deepEqual(
        h.agent.calls.filter((c) => /^(pause|update)/.test(c)),
        ['pauseContainer sb', 'updateContainer sb'],
      );
      await h.sandbox.resume('sb');
      h.agent.exitProcess('sb', '', 0);
      await h.sandbox.wait('sb', '');
      await refused(
        h.sandbox.update('sb', { cpu: { shares: 512 } }),
        FailedPreconditionError,
        /cannot update container sb in state stopped/,
      );
    });
  });

  describe('failpoints (crash tests)', () => {
    const POD_SPEC: OciSpec = {
      ...SPEC,
      linux: {
        namespaces: [
          { type: 'pid' },
          { type: 'ipc' },
          { type: 'uts' },
          { type: 'mount' },
          { type: 'network', path: '/var/run/netns/cni-1' },
        ],
      },
    };
    /** What the record on disk holds when the failpoint fires, and which step fired. */
    async function crashAt(
      step: string,
      enabled = true,
    ): Promise<{ fired: FailpointStep[]; record: ReturnType<typeof Store.load>; error: unknown }> {
      const fired: FailpointStep[] = [];
      let record: ReturnType<typeof Store.load>;
      const fh = new Harness({
        failpoints: enabled,
        crash: (s) => {
          fired.push(s);
          record = Store.load(fh.recordFile, path.dirname(path.dirname(fh.dir)));
          throw new Error(`crashed at ${s}`);
        },
      });
      let error: unknown;
      try {
        await fh.sandbox.create(
          fh.request('sb', NO_STDIO, { ...POD_SPEC, annotations: { [FAILPOINT_ANNOTATION]: step } }),
        );
        await fh.sandbox.start('sb', '');
      } catch (err) {
        error = err;
      } finally {
        await fh.dispose();
      }
      return { fired, record, error };
    }

    for (const step of FAILPOINT_STEPS) {
      it(`${step}: fires right after that step, with the record already naming what the step made`, async () => {
        const { fired, record, error } = await crashAt(step);
        assert.deepEqual(fired, [step]);
        assert.match(String(error), new RegExp(`crashed at ${step}`));
        assert.ok(record, 'the record is on disk');
        assert.deepEqual(Object.keys(record.containers), ['sb']);
        const at = FAILPOINT_STEPS.indexOf(step);
        assert.equal(
          record.network !== undefined,
          at >= FAILPOINT_STEPS.indexOf('taps-made'),
          'the taps are recorded once made (before, in fact)',
        );
        const names = (record.helpers ?? []).map((x) => x.name);
        assert.equal(
          names.includes('virtiofsd'),
          at >= FAILPOINT_STEPS.indexOf('virtiofsd-spawned'),
          `virtiofsd in the record: ${names.join()}`,
        );
        assert.equal(
          names.includes('qemu'),
          at >= FAILPOINT_STEPS.indexOf('qemu-spawned'),
          `qemu in the record: ${names.join()}`,
        );
      });
    }

    it('are ignored unless the configuration enables them; an unknown step is refused', async () => {
      const off = await crashAt('qemu-spawned', false);
      assert.deepEqual(off.fired, []);
      assert.equal(off.error, undefined);
      const typo = await crashAt('qemu-spawn');
      assert.deepEqual(typo.fired, []);
      assert.ok(
        typo.error instanceof InvalidArgumentError &&
          /io\.hull\.failpoint: "qemu-spawn" is not one of record-written, /.test(typo.error.message),
        String(typo.error),
      );
      assert.equal(typo.record, undefined, 'refused before anything was written');
    });
  });

  describe('the debug console', () => {
    it('off by default: CreateSandbox does not enable it, the record says so, debugConsole() refuses', async () => {
      await h.create('sb');
      assert.equal(h.agent.sandbox?.debugConsole, false);
      assert.equal(Store.load(h.recordFile)!.debugConsole, undefined);
      assert.throws(() => h.sandbox.debugConsole(), /created without the debug console/);
    });

    it('on: CreateSandbox tells the agent, the record says so', async () => {
      const on = new Harness({ debugConsole: true });
      try {
        await on.create('sb');
        assert.equal(on.agent.sandbox?.debugConsole, true);
        assert.equal(Store.load(on.recordFile)!.debugConsole, true);
        // The fake agent client has no debug console of its own.
        assert.throws(() => on.sandbox.debugConsole(), /agent client has no debug console/);
      } finally {
        await on.dispose();
      }
    });
  });

  describe('the crash-recovery record', () => {
    it('names the sandbox, the VM pids and state folder, the share and each container with its bundle', async () => {
      await h.create('sb');
      const bundleSb = h.bundle('sb');
      assert.deepEqual(Store.load(h.recordFile), {
        version: 1,
        namespace: 'ns1',
        sandboxId: 'sb',
        shimPid: process.pid,
        shimStartTime: processStartTime(process.pid),
        vmStateDir: path.join(h.dir, 'vm'),
        shareRoot: h.dir,
        shareId: 'share',
        qemuPid: 4242,
        virtiofsdPid: 4343,
        helpers: [
          { name: 'virtiofsd', pid: 4343, startTime: '12344' },
          { name: 'qemu', pid: 4242, startTime: '12345' },
        ],
        containers: { sb: { bundle: bundleSb } },
        vm: { accel: 'tcg', vcpus: 1, memoryMiB: 256 },
      });
      assert.equal(h.sandbox.recordFile, h.recordFile);
      assert.equal((fs.statSync(h.recordFile).mode & 0o777).toString(8), '600');
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(bundleSb, 'hull-sandbox.json'), 'utf8')), {
        record: h.recordFile,
        stateDir: path.dirname(path.dirname(h.dir)),
      });

      await h.create('c2');
      assert.deepEqual(Store.load(h.recordFile)!.containers, {
        sb: { bundle: bundleSb },
        c2: { bundle: h.bundle('c2') },
      });
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(h.bundle('c2'), 'hull-sandbox.json'), 'utf8')), {
        record: h.recordFile,
        stateDir: path.dirname(path.dirname(h.dir)),
      });

      await h.sandbox.delete('c2', '');
      assert.deepEqual(Store.load(h.recordFile)!.containers, { sb: { bundle: bundleSb } });
      assert.equal(fs.existsSync(`${h.recordFile}.tmp`), false);
    });
  });
});

describe('core Sandbox: hot-plug sizing (fake hypervisor and agent)', () => {
  const MIB = 1024 * 1024;
  /** Base 1 vCPU / 256 MiB (testConfig), room up to 4 vCPUs / 1024 MiB, on a host of 8 CPUs / 16 GiB. */
  const hotplug = (max: { maxVcpus?: number; maxMemoryMiB?: number } = { maxVcpus: 4, maxMemoryMiB: 1024 }) =>
    ({
      vmConfig: (vm) => ({ ...testConfig(), ...max, id: vm.id, stateDir: vm.stateDir, sharedDir: vm.sharedDir }),
      host: { cpus: 8, memoryMiB: 16384 },
    }) satisfies Partial<SandboxOptions>;
  const POD_ANN = { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': 'sb' };
  const CTR_ANN = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'sb' };
  const sandboxSpec = (annotations: Record<string, string> = {}, linux: OciSpec['linux'] = {}): OciSpec => ({
    ...SPEC,
    linux,
    annotations: { ...POD_ANN, ...annotations },
  });
  /** A pod container with cpu quota/period `cpus` × 100000 / 100000 and a memory limit of `memMiB`. */
  const limited = (cpus: number, memMiB: number): OciSpec => ({
    ...SPEC,
    annotations: CTR_ANN,
    linux: {
      resources: {
        cpu: { quota: cpus > 0 ? Math.round(cpus * 100_000) : -1, period: 100_000, shares: 1024 },
        memory: memMiB > 0 ? { limit: memMiB * MIB } : {},
      },
    },
  });
  let h: Harness;
  afterEach(() => h.dispose());
  /** The hypervisor's and agent's hot-plug calls and the containers made in the guest, in order. */
  const hotplugCalls = (): string[] =>
    [...h.hv.calls.filter((c) => c.startsWith('resize')), ...h.agent.calls].filter((c) =>
      /^(resize|onlineCpuMem|createOciContainer|updateContainer)/.test(c),
    );
  const order = (): string[] => {
    // The fakes keep separate lists: merge by recording both into one through the agent's list.
    return h.agent.calls.filter((c) => /^(onlineCpuMem|createOciContainer|updateContainer)/.test(c));
  };

  it('a container with limits grows the VM before it is made in the guest: resize, then the guest onlines what was added', async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    assert.equal(h.hv.config!.vcpus, 1);
    assert.equal(h.hv.config!.memoryMiB, 256);
    assert.equal(h.hv.config!.maxVcpus, 4, 'the room reaches the hypervisor');
    assert.equal(h.hv.config!.maxMemoryMiB, 1024);
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(1.5, 200)));
    assert.deepEqual(h.hv.resizes, [{ vcpus: 3, memoryMiB: 456 }], 'base 1 + ceil(1.5) vCPUs, 256 + 200 MiB');
    assert.deepEqual(h.agent.onlines, [{ nbCpus: 2, cpuOnly: false, wait: true }]);
    assert.deepEqual(order().slice(-2), ['onlineCpuMem 2 wait', 'createOciContainer c2'], 'grown before it is made');
    assert.deepEqual(h.hv.size, { vcpus: 3, memoryMiB: 512 }, 'memory in whole 128 MiB DIMMs');
    assert.deepEqual(Store.load(h.recordFile)!.vm, { accel: 'tcg', vcpus: 3, memoryMiB: 512 }, 'hull list sees it');
    // A container without limits needs nothing more.
    await h.sandbox.create(h.request('c3', NO_STDIO, limited(0, 0)));
    assert.equal(h.hv.resizes.length, 1);
    assert.ok(hotplugCalls().includes('createOciContainer c3'));
  });

  it('a deleted container gives its share back logically (the VM does not shrink); the next container fits in it first', async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(2, 200)));
    assert.deepEqual(h.hv.size, { vcpus: 3, memoryMiB: 512 });
    await h.sandbox.delete('c2', '');
    assert.equal(h.hv.resizes.length, 1, 'no shrink');
    await h.sandbox.create(h.request('c3', NO_STDIO, limited(2, 200)));
    assert.equal(h.hv.resizes.length, 1, "c3 takes c2's place: no growth");
    await h.sandbox.create(h.request('c4', NO_STDIO, limited(1, 100)));
    assert.deepEqual(h.hv.resizes.at(-1), { vcpus: 4, memoryMiB: 556 }, 'c3 and c4 together: 1 + 2 + 1, 256 + 300');
    assert.deepEqual(h.agent.onlines.at(-1), { nbCpus: 1, cpuOnly: false, wait: true });
  });

  it('Update grows the VM, then applies the limit in the guest; the container then counts with its new limits', async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(0, 0)));
    assert.equal(h.hv.resizes.length, 0);
    await h.sandbox.update('c2', { cpu: { quota: 200_000, period: 100_000 }, memory: { limit: 300 * MIB } });
    assert.deepEqual(h.hv.resizes, [{ vcpus: 3, memoryMiB: 556 }]);
    assert.deepEqual(order().slice(-2), ['onlineCpuMem 2 wait', 'updateContainer c2'], 'grown, then applied');
    // Smaller again: nothing to grow, the limit is applied; the VM keeps its size.
    await h.sandbox.update('c2', { cpu: { quota: 50_000, period: 100_000 }, memory: { limit: 64 * MIB } });
    assert.equal(h.hv.resizes.length, 1);
    assert.equal(order().at(-1), 'updateContainer c2');
    // A new container now fits in what c2 gave back.
    await h.sandbox.create(h.request('c3', NO_STDIO, limited(1, 200)));
    assert.equal(h.hv.resizes.length, 1);
  });

  it('beyond the maxima an Update is refused with the figures (nothing grown, nothing applied); a Create grows to the maxima', async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(0, 0)));
    await assert.rejects(h.sandbox.update('c2', { cpu: { quota: 800_000, period: 100_000 } }), (e: Error) => {
      assert.ok(e instanceof FailedPreconditionError, String(e));
      assert.match(e.message, /container c2: the update asks for more than the VM can have/);
      assert.match(
        e.message,
        /would need 9 vCPUs and 256 MiB \(base 1 vCPU and 256 MiB \+ the containers' 8 vCPUs and 0 MiB\)/,
      );
      assert.match(e.message, /more than its maximum of 4 vCPUs and 1024 MiB \(\[hypervisor\] default_maxvcpus = 4/);
      assert.match(e.message, /capped at the host's 8 CPUs and 16384 MiB/);
      return true;
    });
    await assert.rejects(
      h.sandbox.update('c2', { memory: { limit: 2000 * MIB } }),
      /would need 1 vCPU and 2256 MiB .*more than its maximum of 4 vCPUs and 1024 MiB/,
    );
    assert.equal(h.hv.resizes.length, 0, 'nothing grown');
    assert.ok(!h.agent.calls.includes('updateContainer c2'), 'nothing applied');
    // Within the maxima the refused update did not count: 3 more vCPUs fit.
    await h.sandbox.update('c2', { cpu: { quota: 300_000, period: 100_000 } });
    assert.deepEqual(h.hv.resizes, [{ vcpus: 4, memoryMiB: 256 }]);
    assert.deepEqual(h.agent.onlines, [{ nbCpus: 3, cpuOnly: true, wait: true }], 'CPUs only');
    // A Create beyond them is not refused (a limit above the VM caps nothing): the VM grows to its maximum.
    await h.sandbox.create(h.request('c3', NO_STDIO, limited(2, 4000)));
    assert.deepEqual(h.hv.resizes.at(-1), { vcpus: 4, memoryMiB: 1024 });
  });

  it('the maxima are capped at the host and kept at least at the boot size; memory room in whole DIMMs', async () => {
    h = new Harness({ ...hotplug({ maxVcpus: 64, maxMemoryMiB: 1000 }), host: { cpus: 2, memoryMiB: 16384 } });
    await h.sandbox.create(
      h.request(
        'sb',
        NO_STDIO,
        sandboxSpec({
          'io.kubernetes.cri.sandbox-cpu-quota': '200000',
          'io.kubernetes.cri.sandbox-cpu-period': '100000',
        }),
      ),
    );
    assert.equal(h.hv.config!.vcpus, 2, 'base 1 + 2 from the pod, capped at the host');
    assert.equal(h.hv.config!.maxVcpus, 2, '64 capped at the host');
    assert.equal(h.hv.config!.maxMemoryMiB, 256 + 5 * 128, '1000 rounded down to whole DIMMs above the boot size');
  });

  it("the pod's annotations and its containers' limits are the same resources: the VM holds the larger, not their sum", async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(
      h.request('sb', NO_STDIO, sandboxSpec({ 'io.kubernetes.cri.sandbox-memory': String(300 * MIB) })),
    );
    assert.equal(h.hv.config!.memoryMiB, 556, 'booted with the annotations');
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(0, 200)));
    await h.sandbox.create(h.request('c3', NO_STDIO, limited(0, 100)));
    assert.equal(h.hv.resizes.length, 0, '200 + 100 MiB are the 300 the annotation announced');
    await h.sandbox.update('c3', { memory: { limit: 228 * MIB } });
    assert.deepEqual(h.hv.resizes, [{ vcpus: 1, memoryMiB: 684 }], 'beyond the annotation: 256 + 200 + 228');
  });

  it('with hot-plug, a container that owns its VM (ctr run) is booted with its limits; its Update grows the VM', async () => {
    h = new Harness(hotplug());
    const own: OciSpec = {
      ...SPEC,
      linux: { resources: { cpu: { quota: 200_000, period: 100_000 }, memory: { limit: 128 * MIB } } },
    };
    await h.sandbox.create(h.request('sb', NO_STDIO, own));
    assert.equal(h.hv.config!.vcpus, 3);
    assert.equal(h.hv.config!.memoryMiB, 384);
    await h.sandbox.update('sb', { cpu: { quota: 300_000, period: 100_000 }, memory: { limit: 128 * MIB } });
    assert.deepEqual(h.hv.resizes, [{ vcpus: 4, memoryMiB: 384 }]);
    assert.ok(h.agent.calls.includes('updateContainer sb'));
  });

  it("a failed resize or online fails the Create before the container is made; a failed Update's new limits do not count", async () => {
    h = new Harness(hotplug());
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    h.hv.failResize = new FailedPreconditionError('fake: QMP said no');
    await assert.rejects(h.sandbox.create(h.request('c2', NO_STDIO, limited(1, 0))), /QMP said no/);
    assert.ok(!h.agent.calls.includes('createOciContainer c2'));
    assert.equal(Store.load(h.recordFile)!.containers.c2, undefined, 'nothing of c2 recorded');
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(1, 0)));
    assert.deepEqual(h.hv.size, { vcpus: 2, memoryMiB: 256 });
  });

  it("without default_maxvcpus/default_maxmemory (0): no room, no resize, and Update's refusal is today's", async () => {
    h = new Harness(hotplug({}));
    await h.sandbox.create(h.request('sb', NO_STDIO, sandboxSpec()));
    assert.ok(!('maxVcpus' in h.hv.config!) && !('maxMemoryMiB' in h.hv.config!), 'QEMU gets no hot-plug room');
    await h.sandbox.create(h.request('c2', NO_STDIO, limited(2, 512)));
    assert.equal(h.hv.resizes.length, 0);
    assert.equal(h.agent.onlines.length, 0);
    await assert.rejects(
      h.sandbox.update('c2', { memory: { limit: 512 * MIB } }),
      (e: Error) =>
        e instanceof FailedPreconditionError &&
        /more than the pod's VM has \(1 vCPUs, 256 MiB, sized when the pod started\); hull does not hot-plug CPUs or memory/.test(
          e.message,
        ),
    );
    assert.equal(h.hv.resizes.length, 0);
  });
});

describe('core Sandbox: VM templates (fake hypervisor and agent)', () => {
  const TEMPLATE = { role: 'clone' as const, memoryFile: '/t/memory', stateFile: '/t/state' };

  it("starts the VM from the template, then reseeds the guest's random pool and sets its clock before CreateSandbox", async () => {
    const asked: VmConfig[] = [];
    const h = new Harness({
      template: async (vm) => {
        asked.push(vm);
        return TEMPLATE;
      },
    });
    try {
      (h.agent as FakeAgent & { reseedRandomDev?: (seed: Uint8Array) => Promise<void> }).reseedRandomDev = async (
        seed: Uint8Array,
      ) => void h.agent.calls.push(`reseed ${seed.length}`);
      h.agent.setGuestDateTime = async (at) =>
        void h.agent.calls.push(`clock ${Math.abs(at.getTime() - Date.now()) < 5000 ? 'now' : at.toISOString()}`);
      await h.create('sb');
      assert.equal(asked.length, 1);
      assert.equal(asked[0]!.sharedDir, path.join(h.dir, 'share', 'shared'));
      assert.deepEqual(h.hv.config?.template, TEMPLATE);
      assert.deepEqual(h.agent.calls.slice(0, 3), ['reseed 64', 'clock now', 'createSandbox']);
      assert.equal(h.agent.sandbox?.hostname, 'pod', 'the identity comes with CreateSandbox');
    } finally {
      await h.dispose();
    }
  });

  it('asks for the template `hull template make` makes (sandboxTemplateVm): the same key and fingerprint', async () => {
    const config = parseConfig(
      '[hypervisor]\nenable_template = true\ndefault_maxvcpus = 4\ndefault_maxmemory = 4096\n',
      't.toml',
      '/opt/hull/bin',
    );
    const host = { cpus: 2, memoryMiB: 3000 };
    let asked: VmConfig | undefined;
    const h = new Harness({
      vmConfig: (place) => toVmConfig(config, place),
      host,
      template: async (vm) => {
        asked = vm;
        return undefined;
      },
    });
    try {
      await h.create('sb');
      assert.ok(asked);
      assert.equal(asked.maxMemoryMiB! < 4096, true, 'hot-plug room capped at the host');
      assert.deepEqual(templateIdentity(asked), templateIdentity(sandboxTemplateVm(config, host)));
    } finally {
      await h.dispose();
    }
  });

  it('no template (another sandbox is making it): boots normally, no reseed', async () => {
    const h = new Harness({ template: async () => undefined });
    try {
      await h.create('sb');
      assert.equal(h.hv.config?.template, undefined);
      assert.deepEqual(h.agent.calls.slice(0, 1), ['createSandbox']);
    } finally {
      await h.dispose();
    }
  });

  const NETNS_SPEC: OciSpec = {
    ...SPEC,
    linux: {
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'network', path: '/var/run/netns/cni-1' },
      ],
    },
  };

  it('a pod with a network namespace starts from the template too: its NICs go with the clone, then the guest is configured', async () => {
    const asked: VmConfig[] = [];
    const h = new Harness({
      template: async (vm) => {
        asked.push(vm);
        return TEMPLATE;
      },
    });
    try {
      (h.agent as FakeAgent & { reseedRandomDev?: (seed: Uint8Array) => Promise<void> }).reseedRandomDev = async (
        seed: Uint8Array,
      ) => void h.agent.calls.push(`reseed ${seed.length}`);
      await h.sandbox.create(h.request('sb', NO_STDIO, NETNS_SPEC));
      assert.equal(asked.length, 1);
      assert.deepEqual(h.hv.config?.template, TEMPLATE);
      assert.deepEqual(h.hv.config?.network?.nics, [{ tap: 'tap0_hull', mac: '02:00:00:00:00:01', mtu: 1450 }]);
      assert.equal(h.agent.calls[0], 'reseed 64');
      assert.ok(
        h.netCalls.some((c) => c.startsWith('configureGuest (agent calls so far: reseed 64')),
        `the guest's network is configured after the clone's identity: ${h.netCalls.join('; ')}`,
      );
    } finally {
      await h.dispose();
    }
  });

  it(`a pod with more NICs than a template has ports for (${TEMPLATE_NIC_PORTS}) boots normally: the template is not asked for`, async () => {
    let asked = 0;
    const nics = Array.from({ length: TEMPLATE_NIC_PORTS + 1 }, (_, i) => ({
      tap: `tap${i}_hull`,
      mac: `02:00:00:00:00:0${i + 1}`,
    }));
    const h = new Harness({
      template: async () => {
        asked++;
        return TEMPLATE;
      },
      connectNetwork: async (netnsPath, record) => {
        record(
          netnsPath,
          nics.map((n) => n.tap),
        );
        return {
          taps: nics.map((n) => n.tap),
          vmNetwork: () => ({ netnsPath, nics }),
          describe: () => ({}),
          configureGuest: async () => undefined,
          forwardLocalhost: async () => undefined,
          disconnect: async () => undefined,
        };
      },
    });
    try {
      await h.sandbox.create(h.request('sb', NO_STDIO, NETNS_SPEC));
      assert.equal(asked, 0);
      assert.equal(h.hv.config?.template, undefined);
      assert.equal(h.hv.config?.network?.nics.length, TEMPLATE_NIC_PORTS + 1, 'it has its NICs');
    } finally {
      await h.dispose();
    }
  });
});
