import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '../../errors';
import { resolveConfig, type FileProbe } from '../../hypervisor/config';
import { maxStateDirBytes, runChecks, type CheckItem } from '../checks';
import { hangs, healthyHost, missing, qemuWithBoot, removeHost, type FakeHost } from './fake-host';

const QEMU = '/usr/bin/qemu-system-x86_64';

async function check(h: FakeHost, hypervisor = '', rest = ''): Promise<Map<string, CheckItem>> {
  const items = await runChecks({
    host: h,
    config: h.config(hypervisor, rest),
    configSource: '/etc/hull/configuration.toml',
    testBootMs: 5000,
  });
  return new Map(items.map((i) => [i.name, i]));
}

const kvmBoots = (h: FakeHost): boolean => h.calls.some((c) => c.args.includes('-accel'));

describe('cli/checks (hull check, against a pretend host)', () => {
  let h: FakeHost;
  afterEach(() => removeHost(h));

  it('a healthy KVM host: every item ok, KVM proven by a test boot of the guest kernel', async () => {
    h = healthyHost();
    const items = await check(h);
    for (const i of items.values()) assert.equal(i.status, 'ok', `${i.name}: ${i.detail}`);
    assert.match(items.get('KVM')!.detail, /hardware virtualisation; a test boot under KVM reached the kernel/);
    const boot = h.calls.find((c) => c.args.includes('-accel'))!;
    assert.equal(boot.program, QEMU);
    assert.deepEqual(boot.args.slice(boot.args.indexOf('-kernel'), boot.args.indexOf('-kernel') + 2), [
      '-kernel',
      path.join(h.guestDir, 'vmlinuz'),
    ]);
    assert.ok(boot.args.includes('-no-reboot'));
  });

  describe('KVM', () => {
    it('PVM (kvm_pvm loaded, the test boot hangs): a warning naming TCG, the PVM reason and its cost', async () => {
      h = healthyHost({ [QEMU]: qemuWithBoot(hangs) }).mkdir('/sys/module/kvm_pvm');
      const kvm = (await check(h)).get('KVM')!;
      assert.equal(kvm.status, 'warning');
      assert.match(kvm.detail, /kvm_pvm is loaded/);
      assert.match(kvm.detail, /printed no kernel line in 5000 ms \(QEMU killed\)/);
      assert.match(kvm.detail, /chooses TCG: a pod VM boots in about 5 s/);
      assert.ok(kvm.fix);
    });

    it('PVM seen in /proc/modules counts too; with accel = "kvm" it is a fail with the fix', async () => {
      h = healthyHost({ [QEMU]: qemuWithBoot(hangs) }).put('/proc/modules', 'kvm_pvm 45056 0 - Live 0x0\nkvm 1 1\n');
      const kvm = (await check(h, 'accel = "kvm"')).get('KVM')!;
      assert.equal(kvm.status, 'fail');
      assert.match(kvm.fix!, /accel = "auto"/);
    });

    it('nested virtualisation that does not boot: a fail (auto would choose KVM and hang) with the nested fix', async () => {
      h = healthyHost({ [QEMU]: qemuWithBoot(hangs) }).put('/proc/cpuinfo', 'flags\t\t: fpu vmx hypervisor\n');
      const kvm = (await check(h)).get('KVM')!;
      assert.equal(kvm.status, 'fail');
      assert.match(kvm.detail, /nested virtualisation \(this host is itself a VM\)/);
      assert.match(kvm.fix!, /nested=1/);
    });

    it('nested virtualisation that boots: ok, and says nested', async () => {
      h = healthyHost().put('/proc/cpuinfo', 'flags\t\t: fpu vmx hypervisor\n');
      const kvm = (await check(h)).get('KVM')!;
      assert.equal(kvm.status, 'ok');
      assert.match(kvm.detail, /nested virtualisation/);
    });

    it('no /dev/kvm: a warning naming TCG and its cost, and no test boot; a fail when accel = "kvm"', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.root, 'dev/kvm'));
      const kvm = (await check(h)).get('KVM')!;
      assert.equal(kvm.status, 'warning');
      assert.match(kvm.detail, /\/dev\/kvm does not exist: VMs run under TCG; a pod VM boots in about 5 s/);
      assert.equal(kvmBoots(h), false);
      assert.equal((await check(h, 'accel = "kvm"')).get('KVM')!.status, 'fail');
    });

    it('accel = "tcg": a warning that says so, and no test boot', async () => {
      h = healthyHost();
      const kvm = (await check(h, 'accel = "tcg"')).get('KVM')!;
      assert.equal(kvm.status, 'warning');
      assert.match(kvm.detail, /accel = "tcg" is configured/);
      assert.equal(kvmBoots(h), false);
    });
  });

  describe('programs and artefacts', () => {
    it('a wrong QEMU path: a fail that names the key and the file to fix', async () => {
      h = healthyHost();
      const qemu = (await check(h, 'path = "/nowhere/qemu"')).get('QEMU')!;
      assert.equal(qemu.status, 'fail');
      assert.equal(qemu.detail, '/nowhere/qemu: not found');
      assert.match(qemu.fix!, /set \[hypervisor\] path in \/etc\/hull\/configuration.toml/);
    });

    it('virtiofsd missing: a fail with the package', async () => {
      h = healthyHost({ '/usr/lib/qemu/virtiofsd': missing });
      const v = (await check(h)).get('virtiofsd')!;
      assert.equal(v.status, 'fail');
      assert.match(v.fix!, /apt-get install qemu-system-common/);
    });

    it('a missing kernel: a fail with `make guest`', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.guestDir, 'vmlinuz'));
      const k = (await check(h)).get('guest kernel')!;
      assert.equal(k.status, 'fail');
      assert.match(k.detail, /vmlinuz does not exist/);
      assert.match(k.fix!, /make guest/);
      assert.match(k.fix!, /\[hypervisor\] kernel/);
    });

    it('an artefact that does not match its fingerprint (same size, other bytes): a fail', async () => {
      h = healthyHost();
      fs.writeFileSync(path.join(h.guestDir, 'rootfs.img'), 'IMAGE BYTES');
      const i = (await check(h)).get('guest image')!;
      assert.equal(i.status, 'fail');
      assert.match(i.detail, /does not match its fingerprint \(sha256/);
    });

    it('artefacts without a manifest: a warning (not checked)', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.guestDir, 'manifest.json'));
      assert.equal((await check(h)).get('guest initrd')!.status, 'warning');
    });
  });

  describe('devices, modules, cgroups, iptables', () => {
    it('no /dev/vhost-vsock: a warning (serial port used); a fail when transport = "vsock"', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.root, 'dev/vhost-vsock'));
      const v = (await check(h)).get('vhost-vsock')!;
      assert.equal(v.status, 'warning');
      assert.match(v.fix!, /modprobe vhost_vsock/);
      assert.equal((await check(h, '', '[agent]\ntransport = "vsock"')).get('vhost-vsock')!.status, 'fail');
    });

    it('no /dev/vhost-net: a warning under KVM only', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.root, 'dev/vhost-net'));
      assert.equal((await check(h)).get('vhost-net')!.status, 'warning');
      assert.equal((await check(h, 'accel = "tcg"')).get('vhost-net')!.status, 'ok');
    });

    it('no /dev/net/tun: a fail with modprobe tun', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.root, 'dev/net/tun'));
      const t = (await check(h)).get('kernel modules')!;
      assert.equal(t.status, 'fail');
      assert.equal(t.fix, 'modprobe tun');
    });

    it('cgroup v2 without the memory controller: a warning; no cgroup mounted: a fail', async () => {
      h = healthyHost();
      h.put('/proc/self/mountinfo', '40 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n');
      h.put('/sys/fs/cgroup/cgroup.controllers', 'cpuset cpu io pids\n');
      const c = (await check(h)).get('cgroups')!;
      assert.equal(c.status, 'warning');
      assert.match(c.detail, /cgroup v2; controllers cpu, cpuset, io, pids; missing memory/);
      h.put('/proc/self/mountinfo', '');
      assert.equal((await check(h)).get('cgroups')!.status, 'fail');
    });

    it('iptables missing: a warning (port forwarding only)', async () => {
      h = healthyHost({ iptables: missing });
      const i = (await check(h)).get('iptables (nat)')!;
      assert.equal(i.status, 'warning');
      assert.match(i.detail, /port forwarding/);
    });
  });

  describe('containerd', () => {
    it('hull registered, root may not lower oom_score_adj, restrict_oom_score_adj unset: a fail with the fix', async () => {
      h = healthyHost();
      fs.rmSync(path.join(h.root, 'proc/self/oom_score_adj'));
      h.mkdir('/proc/self/oom_score_adj'); // a write fails, as under a host that forbids lowering it
      const items = await check(h);
      assert.equal(items.get('containerd runtime')!.status, 'ok');
      const oom = items.get('restrict_oom_score_adj')!;
      assert.equal(oom.status, 'fail');
      assert.match(oom.fix!, /restrict_oom_score_adj = true/);
      h.put(
        '/etc/containerd/config.toml',
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n' +
          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]\n  runtime_type = "io.containerd.hull.v2"\n',
      );
      assert.equal((await check(h)).get('restrict_oom_score_adj')!.status, 'ok');
    });

    it('not root: restrict_oom_score_adj is not checked (a warning saying so)', async () => {
      h = healthyHost({}, 1000);
      const oom = (await check(h)).get('restrict_oom_score_adj')!;
      assert.equal(oom.status, 'warning');
      assert.match(oom.detail, /uid 1000/);
    });

    it('hull not registered: a warning with the fragment to add; containerd missing: a fail', async () => {
      h = healthyHost({ containerd: missing });
      h.put('/etc/containerd/config.toml', 'version = 2\n');
      const items = await check(h);
      assert.equal(items.get('containerd')!.status, 'fail');
      const rt = items.get('containerd runtime')!;
      assert.equal(rt.status, 'warning');
      assert.match(rt.fix!, /runtime_type = "io.containerd.hull.v2"/);
    });
  });

  describe('state_dir', () => {
    it('too long for a CRI pod socket path: a fail with the longest allowed', async () => {
      h = healthyHost();
      const s = (await check(h, '', `[runtime]\nstate_dir = "/var/lib/a/rather/long/state"`)).get('state_dir')!;
      assert.equal(s.status, 'fail');
      assert.match(s.fix!, new RegExp(`at most ${maxStateDirBytes()} bytes`));
    });

    it("the limit is the VM driver's own: a CRI pod VM under the longest allowed state_dir resolves, one byte more does not", () => {
      const max = maxStateDirBytes();
      const id = 'a'.repeat(64);
      const vmDir = (stateDir: string): string => path.join(stateDir, 'k8s.io', id, 'vm');
      const files: FileProbe = { kind: () => 'file', executable: () => true };
      const resolve = (stateDir: string): unknown =>
        resolveConfig(
          {
            id,
            stateDir: vmDir(stateDir),
            kernel: '/k',
            initrd: '/i',
            image: '/r',
            vcpus: 1,
            memoryMiB: 512,
            accel: 'tcg',
            agentTransport: 'serial',
          },
          files,
        );
      const atMax = `/${'s'.repeat(max - 1)}`;
      assert.equal(Buffer.byteLength(atMax), max);
      assert.doesNotThrow(() => resolve(atMax));
      assert.throws(() => resolve(`${atMax}x`), InvalidArgumentError);
    });
  });
});
