/**
 * Issue 13: the systemd cgroup driver through containerd's CRI plugin, on this host's real cgroups (v1 + the hybrid
 * unified hierarchy) without systemd as init: a private dbus-daemon (its own configuration and socket in a
 * temporary folder) with a fake systemd Manager on it (core/test/fake-systemd.ts), which makes and removes the
 * scope's folders on the hierarchies systemd owns (name=systemd, the unified one) as systemd would. containerd gets
 * HULL_SYSTEMD_SOCKETS in its environment and passes it to the shim. A cgroup_parent ending in `.slice` makes
 * containerd's CRI write the systemd form `<slice>:cri-containerd:<sandbox id>`, in containerd 1.x and 2.x alike (a
 * describe per generation).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hostCgroupLayout } from '../core/host-cgroup';
import { FakeSystemd, startPrivateBus, type PrivateBus } from '../core/test/fake-systemd';
import {
  CONTAINERD_GENERATIONS,
  startContainerd,
  type ContainerdGeneration,
  type PrivateContainerd,
} from './lib/containerd';
import { cri, CriStatus, removePodSandboxAfterShimDeath, type CriError } from './lib/cri';
import { guestArtifacts } from './lib/guest';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Pids whose argv mentions `marker` (QEMU and virtiofsd name the sandbox's state folder). */
function pidsMentioning(marker: string, name: RegExp): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (Number(pid) !== process.pid && argv.join(' ').includes(marker) && name.test(path.basename(argv[0] ?? '')))
        out.push(Number(pid));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** hull's shim daemon of `podId` (`… containerd-shim-hull-v2 … -id <podId>`, no subcommand). */
function shimDaemons(podId: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      const at = argv.indexOf('-id');
      if (at < 0 || argv[at + 1] !== podId) continue;
      if (!argv.some((a) => path.basename(a) === 'containerd-shim-hull-v2')) continue;
      if (argv.includes('start') || argv.includes('delete')) continue;
      out.push(Number(pid));
    } catch {
      /* gone */
    }
  }
  return out;
}

for (const { generation, title } of CONTAINERD_GENERATIONS) {
  describe(`cri: the pod's cgroup through the systemd driver (a private dbus-daemon, a fake systemd, this host's cgroups, ${title})`, function () {
    systemdSuite.call(this, generation);
  });
}

function systemdSuite(this: Mocha.Suite, generation: ContainerdGeneration): void {
  this.timeout(600_000);
  const tag = crypto.randomBytes(4).toString('hex');
  const SLICE = `hulltest${tag}.slice`;
  const layout = hostCgroupLayout();
  const owned = layout.hierarchies.filter((h) => h.version === 2 || h.controllers.includes('name=systemd'));
  const memoryHier = layout.hierarchies.find((h) => h.version === 2 || h.controllers.includes('memory'))!;
  const scope = (pod: string): string => `cri-containerd-${pod}.scope`;
  const leaf = (mountPoint: string, pod: string): string => path.join(mountPoint, SLICE, scope(pod));
  const procs = (mountPoint: string, pod: string): number[] =>
    fs
      .readFileSync(path.join(leaf(mountPoint, pod), 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  const leftover = (): string[] =>
    layout.hierarchies.flatMap((h) =>
      fs.existsSync(path.join(h.mountPoint, SLICE))
        ? fs
            .readdirSync(path.join(h.mountPoint, SLICE), { withFileTypes: true })
            .filter((e) => e.isDirectory())
            .map((e) => path.join(h.mountPoint, SLICE, e.name))
        : [],
    );
  let tmp: string;
  let bus: PrivateBus | undefined;
  let systemd: FakeSystemd | undefined;
  let ctd: PrivateContainerd | undefined;
  const pods: string[] = [];

  const podConfig = (name: string): cri.IPodSandboxConfig => {
    const logDirectory = path.join(ctd!.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: crypto.randomUUID(), namespace: 'hulltest', attempt: 0 },
      hostname: name,
      logDirectory,
      portMappings: [],
      linux: { cgroupParent: SLICE },
    };
  };
  const sandboxDir = (pod: string): string => path.join(ctd!.stateDir, ctd!.namespace, pod);
  /**
   * `shimDied`: containerd 2.x's RemovePodSandbox can answer UNKNOWN ("failed to delete task: ttrpc: closed") until
   * it is done with the dead shim; retried as the kubelet does (removePodSandboxAfterShimDeath), once on 1.x.
   */
  const stopAndRemove = async (pod: string, shimDied = false): Promise<void> => {
    await ctd!.cri!.client.stopPodSandbox(pod);
    if (!shimDied) await ctd!.cri!.client.removePodSandbox(pod);
    else {
      const calls = await removePodSandboxAfterShimDeath(ctd!.cri!.client, pod);
      if (generation === 1) assert.equal(calls, 1, 'containerd 1.x removes the pod at the first RemovePodSandbox');
    }
    pods.splice(pods.indexOf(pod), 1);
  };

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    guestArtifacts(); // names `make guest` if the image is missing
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cri-systemd-'));
    bus = await startPrivateBus(tmp);
    systemd = await FakeSystemd.start(
      bus.socketPath,
      owned.map((h) => h.mountPoint),
    );
    systemd.removeDir = (d) => fs.rmdirSync(d); // the real cgroupfs
    // The pod's slice, as kubelet would have systemd make it, with the pod's memory limit.
    for (const h of layout.hierarchies) fs.mkdirSync(path.join(h.mountPoint, SLICE));
    fs.writeFileSync(
      path.join(memoryHier.mountPoint, SLICE, memoryHier.version === 2 ? 'memory.max' : 'memory.limit_in_bytes'),
      String(2048 * 1024 * 1024),
    );
    process.env.HULL_SYSTEMD_SOCKETS = `bus:${bus.socketPath}`;
    try {
      ctd = await startContainerd({ cri: true, generation });
    } finally {
      delete process.env.HULL_SYSTEMD_SOCKETS;
    }
  });

  after(async () => {
    for (const pod of [...pods]) await stopAndRemove(pod, true).catch(() => undefined);
    await ctd?.stop();
    systemd?.close();
    await bus?.stop(); // by its pid
    for (const d of leftover()) fs.rmdirSync(d);
    for (const h of layout.hierarchies) {
      try {
        fs.rmdirSync(path.join(h.mountPoint, SLICE));
      } catch {
        // not made
      }
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('RunPodSandbox: the scope unit holds the shim daemon, QEMU and virtiofsd on every hierarchy; Stop+Remove stop the unit and leave nothing', async function () {
    const pod = await ctd!.cri!.runPod(podConfig('sd-main'), 'hull');
    pods.push(pod);
    const unit = systemd!.started.find((u) => u.name === scope(pod));
    assert.ok(unit, `StartTransientUnit ${scope(pod)}: ${systemd!.calls.join(', ')}`);
    assert.deepEqual(unit.properties.Slice, { signature: 's', value: SLICE });
    assert.deepEqual(unit.properties.Delegate, { signature: 'b', value: true });
    const shims = shimDaemons(pod);
    assert.equal(shims.length, 1);
    assert.deepEqual(unit.properties.PIDs, { signature: 'au', value: shims });
    const vm = pidsMentioning(sandboxDir(pod), /^(qemu-system|virtiofsd)/);
    assert.ok(vm.length >= 2, `QEMU and virtiofsd: ${vm.join(' ')}`);
    for (const h of layout.hierarchies) {
      const inside = procs(h.mountPoint, pod);
      for (const p of [...shims, ...vm])
        assert.ok(inside.includes(p), `${h.mountPoint}: pid ${p} in ${inside.join(' ')}`);
    }
    await stopAndRemove(pod);
    assert.ok(systemd!.calls.includes(`StopUnit ${scope(pod)}`), systemd!.calls.join(', '));
    assert.equal(systemd!.units.has(scope(pod)), false);
    for (const h of layout.hierarchies) assert.equal(fs.existsSync(leaf(h.mountPoint, pod)), false, h.mountPoint);
    assert.deepEqual(leftover(), []);
  });

  it("the shim daemon SIGKILLed: Stop+RemovePodSandbox (the shim's `delete` from the record) stop the unit and remove the folders", async function () {
    const pod = await ctd!.cri!.runPod(podConfig('sd-crash'), 'hull');
    pods.push(pod);
    const shims = shimDaemons(pod);
    assert.equal(shims.length, 1);
    assert.ok(procs(memoryHier.mountPoint, pod).includes(shims[0]!));
    process.kill(shims[0]!, 'SIGKILL');
    const client = ctd!.cri!.client;
    const until = Date.now() + 60_000;
    while ((await client.podSandboxStatus(pod)).status!.state !== cri.PodSandboxState.SANDBOX_NOTREADY) {
      if (Date.now() > until) assert.fail('the pod is still READY 60 s after its shim died');
      await sleep(250);
    }
    await stopAndRemove(pod, true);
    for (let i = 0; i < 100 && leftover().length > 0; i++) await sleep(100);
    assert.deepEqual(leftover(), [], 'no scope folder is left');
    assert.ok(systemd!.calls.includes(`StopUnit ${scope(pod)}`), systemd!.calls.join(', '));
    assert.equal(systemd!.units.has(scope(pod)), false, 'the unit is stopped');
    assert.deepEqual(pidsMentioning(sandboxDir(pod), /^(qemu-system|virtiofsd)/), [], 'no QEMU or virtiofsd is left');
  });

  it('systemd unreachable (nobody owns org.freedesktop.systemd1 on the bus): RunPodSandbox fails with FAILED_PRECONDITION naming the socket; nothing is left', async function () {
    systemd!.close();
    await sleep(100);
    await assert.rejects(ctd!.cri!.runPod(podConfig('sd-none'), 'hull'), (e: CriError) => {
      assert.equal(e.code, CriStatus.FAILED_PRECONDITION, e.message);
      assert.match(e.details, new RegExp(`systemd cannot be reached over D-Bus: tried ${bus!.socketPath} \\(`));
      assert.match(e.details, /SystemdCgroup = false/);
      return true;
    });
    assert.deepEqual(leftover(), []);
  });
}
