/**
 * A real VM from the real guest image: QEMU under whatever acceleration this host allows (TCG here), the agent
 * answering on its channel, a virtio-fs share read back from inside the guest, and nothing left behind.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SandboxVm } from '../core/vm';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, UnavailableError } from '../errors';
import { QemuHypervisor } from '../hypervisor';
import type { GuestDetails } from '../agent-client';
import { type VmConfig } from '../hypervisor/types';
import { NOOP_LOGGER } from '../log';
import { childProcesses, guestArtifacts, mountsContaining } from './lib/guest';
import { sharedDirStorage } from '../core/pod';

const SHARED_MOUNT = '/run/kata-containers/shared/containers';

describe('a real VM with the agent (QEMU, guest image)', function () {
  this.timeout(180_000);
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-vm-test-'));
    fs.mkdirSync(path.join(dir, 'shared'));
  });

  afterEach(() => {
    assert.deepEqual(
      childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']),
      [],
      'no QEMU or virtiofsd left running',
    );
    assert.deepEqual(mountsContaining(dir), [], 'no mount left');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function config(overrides: Partial<VmConfig> = {}): VmConfig {
    const guest = guestArtifacts();
    return {
      id: 'vmtest',
      stateDir: path.join(dir, 'vm'),
      kernel: guest.kernel,
      initrd: guest.initrd,
      image: guest.image,
      vcpus: 1,
      memoryMiB: 512,
      accel: 'auto',
      agentTransport: 'serial',
      sharedDir: path.join(dir, 'shared'),
      ...overrides,
    };
  }

  it('boots, answers Health.Check, reports the guest kernel, shares a folder, and powers off cleanly', async () => {
    const guest = guestArtifacts();
    const payload = `hello from the host ${Date.now()}\n`;
    fs.writeFileSync(path.join(dir, 'shared', 'probe.txt'), payload);
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    // Confined, as the shim's defaults are: QEMU under its seccomp filter, as nobody once its devices are open.
    const vm = await SandboxVm.boot(hv, config({ seccomp: true, qemuUser: 'nobody' }), {
      bootTimeoutMs: 120_000,
      logger: NOOP_LOGGER,
    });
    let exitCode: number | null;
    try {
      const status = fs.readFileSync(`/proc/${hv.pid()!}/status`, 'utf8');
      assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'QEMU runs as nobody');
      assert.match(status, /^Seccomp:\s+2$/m, 'QEMU runs under its seccomp filter');
      assert.equal(await vm.agent.check(), 'serving');
      const details = await vm.agent.guestDetails();
      assert.equal(details.kernelRelease, guest.manifest.kernelRelease, 'the guest kernel, from the image');
      assert.notEqual(details.kernelRelease, os.release(), 'not the host kernel');
      assert.equal(details.initDaemon, true, 'the agent is the guest init');
      assert.equal(details.transport, 'serial');
      // The boot's points, in order on the guest's clock (agent-client/guest-boot.ts drops any out of order): the
      // initramfs's /init handed its start through switch_root and hull-init to the agent.
      const points = [details.initStartedMs, details.agentStartedMs, details.agentMainMs, details.agentReadyMs];
      assert.ok(
        points.every((p) => p > 0) && details.uptimeMs >= details.agentReadyMs,
        `boot points ${points.join(', ')}, uptime ${details.uptimeMs}`,
      );
      assert.ok(
        details.agentPssKiB > 10_000 && details.agentRssKiB >= details.agentPssKiB,
        'the agent measures itself',
      );

      await vm.agent.createSandbox({
        sandboxId: 'vmtest',
        hostname: 'vmtest',
        storages: [sharedDirStorage()],
      });
      const file = await vm.agent.readSharedFile(`${SHARED_MOUNT}/probe.txt`);
      assert.equal(file.data.toString(), payload, 'the guest reads the host file through virtio-fs');
      assert.equal(file.size, Buffer.byteLength(payload));
      // /etc/passwd exists in the guest, so only the agent's confinement check can refuse this.
      fs.symlinkSync('/etc/passwd', path.join(dir, 'shared', 'escape'));
      await assert.rejects(
        vm.agent.readSharedFile(`${SHARED_MOUNT}/escape`),
        (e: Error) => e instanceof InvalidArgumentError && /resolves outside/.test(e.message),
        'a symlink in the share does not lead out of it',
      );
    } finally {
      const exit = await vm.shutdown({ gracefulMs: 30_000 });
      exitCode = exit.code;
    }
    assert.equal(exitCode, 0, 'the guest powered itself off (DestroySandbox)');
    assert.equal(fs.existsSync(path.join(dir, 'vm')), false, 'the VM state folder is removed');
    assert.equal(hv.pid(), undefined);
  });

  it('boot time to the agent answering, confined and not (measured, alternating)', async () => {
    const bootMs = async (confined: boolean): Promise<number> => {
      const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
      const t0 = performance.now();
      const vm = await SandboxVm.boot(
        hv,
        config(confined ? { seccomp: true, qemuUser: 'nobody' } : { seccomp: false, qemuUser: '' }),
        { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
      );
      const ms = performance.now() - t0;
      try {
        assert.match(
          fs.readFileSync(`/proc/${hv.pid()!}/status`, 'utf8'),
          confined ? /^Seccomp:\s+2$/m : /^Seccomp:\s+0$/m,
        );
      } finally {
        assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0);
      }
      return ms;
    };
    const plain: number[] = [];
    const confined: number[] = [];
    for (let round = 0; round < 2; round++) {
      plain.push(await bootMs(false));
      confined.push(await bootMs(true));
    }
    const fmt = (xs: number[]): string => xs.map((x) => Math.round(x)).join(', ');
    console.log(
      `      measured: boot to agent ready (TCG, share): unconfined ${fmt(plain)} ms; confined (seccomp + nobody) ${fmt(confined)} ms`,
    );
  });

  describe('CPU and memory hot-plug', () => {
    // With the shipped configuration's TCG translation cache (64 MiB, which the boot alone nearly fills), and with the
    // root image on a virtio-blk disk and through DAX (an nvdimm, the default: DIMMs must go on 128 MiB boundaries
    // behind it).
    for (const root of ['virtio-blk', 'nvdimm'] as const)
      it(`grows from 1 vCPU / 512 MiB to 2 vCPUs / 768 MiB (maxima 2 / 1024), root image on ${root}: QEMU plugs, the agent onlines, the guest sees it; virtio-fs still works`, async () => {
        fs.writeFileSync(path.join(dir, 'shared', 'probe.txt'), 'after hot-plug\n');
        const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
        const vm = await SandboxVm.boot(
          hv,
          config({
            seccomp: true,
            qemuUser: 'nobody',
            maxVcpus: 2,
            maxMemoryMiB: 1024,
            tcgTbSizeMiB: 64,
            rootImageDevice: root,
          }),
          { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
        );
        try {
          assert.equal(hv.rootImage().device, root);
          const before = await vm.agent.guestDetails();
          assert.equal(before.onlineCpus, 1);
          assert.ok(before.memTotalMiB > 256 && before.memTotalMiB <= 512, `MemTotal ${before.memTotalMiB} MiB`);
          await assert.rejects(hv.resize({ vcpus: 3 }), FailedPreconditionError);
          await assert.rejects(hv.resize({ memoryMiB: 1100 }), FailedPreconditionError);

          // Until the guest says what `done` wants (at most 20 s); returns its last answer.
          const until = async (done: (d: GuestDetails) => boolean): Promise<GuestDetails> => {
            let d = await vm.agent.guestDetails();
            for (let i = 0; i < 100 && !done(d); i++) {
              await new Promise((r) => setTimeout(r, 200));
              d = await vm.agent.guestDetails();
            }
            return d;
          };
          // One vCPU: QEMU plugs it, the agent onlines it (waiting for it to appear), the guest runs on it.
          const t0 = performance.now();
          assert.deepEqual(await hv.resize({ vcpus: 2 }), { vcpus: 2, memoryMiB: 512 });
          const cpuPlugged = performance.now() - t0;
          await vm.agent.onlineCpuMem({ nbCpus: 1, cpuOnly: true, wait: true });
          const cpu = await until((d) => d.onlineCpus >= 2);
          const cpuSeen = performance.now() - t0;
          assert.equal(cpu.onlineCpus, 2, 'the guest runs on 2 CPUs');
          // 256 MiB (two DIMMs): the guest kernel onlines them itself (memhp_default_state=online); the agent's
          // OnlineCPUMem afterwards finds nothing left to do, or onlines what is still offline.
          const t1 = performance.now();
          assert.deepEqual(await hv.resize({ memoryMiB: 768 }), { vcpus: 2, memoryMiB: 768 });
          const memPlugged = performance.now() - t1;
          const mem = await until((d) => d.memTotalMiB >= before.memTotalMiB + 256);
          const memSeen = performance.now() - t1;
          await vm.agent.onlineCpuMem({ nbCpus: 0, cpuOnly: false, wait: false });
          const after = await vm.agent.guestDetails();
          assert.ok(
            !hv.consoleTail().some((l) => /unaligned hotplug range|add_memory failed/.test(l)),
            hv.consoleTail().join('\n'),
          );
          assert.equal(mem.memTotalMiB - before.memTotalMiB, 256, 'the guest onlined 256 MiB by itself');
          assert.equal(after.memTotalMiB - before.memTotalMiB, 256, 'the guest has 256 MiB more');
          assert.equal(after.onlineCpus, 2);
          // Growing again to the same size changes nothing; a smaller target neither.
          assert.deepEqual(await hv.resize({ vcpus: 1, memoryMiB: 600 }), { vcpus: 2, memoryMiB: 768 });
          await vm.agent.onlineCpuMem({ nbCpus: 0, cpuOnly: false, wait: false });

          await vm.agent.createSandbox({
            sandboxId: 'vmtest',
            hostname: 'vmtest',
            storages: [sharedDirStorage()],
          });
          assert.equal(
            (await vm.agent.readSharedFile(`${SHARED_MOUNT}/probe.txt`)).data.toString(),
            'after hot-plug\n',
          );
          console.log(
            `      measured (TCG): +1 vCPU: QMP ${Math.round(cpuPlugged)} ms, online in the guest at ${Math.round(cpuSeen)} ms; +256 MiB: QMP ${Math.round(memPlugged)} ms, in the guest's MemTotal at ${Math.round(memSeen)} ms`,
          );
        } finally {
          assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0);
        }
      });

    it('boot time to the agent answering, with and without hot-plug room (measured, alternating)', async () => {
      const bootMs = async (room: boolean): Promise<number> => {
        const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
        const t0 = performance.now();
        const vm = await SandboxVm.boot(hv, config(room ? { maxVcpus: 2, maxMemoryMiB: 1024 } : {}), {
          bootTimeoutMs: 120_000,
          logger: NOOP_LOGGER,
        });
        const ms = performance.now() - t0;
        assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0);
        return ms;
      };
      const plain: number[] = [];
      const room: number[] = [];
      for (let round = 0; round < 3; round++) {
        plain.push(await bootMs(false));
        room.push(await bootMs(true));
      }
      const fmt = (xs: number[]): string => xs.map((x) => Math.round(x)).join(', ');
      console.log(
        `      measured: boot to agent ready (TCG, share): no room ${fmt(plain)} ms; room for 2 vCPUs / 1024 MiB ${fmt(room)} ms`,
      );
    });
  });

  it('names the missing kernel and the make target that builds it', async () => {
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    await assert.rejects(
      SandboxVm.boot(hv, config({ kernel: path.join(dir, 'no-vmlinuz') }), {
        bootTimeoutMs: 10_000,
        logger: NOOP_LOGGER,
      }),
      (e: Error) =>
        e instanceof FailedPreconditionError &&
        e.message.includes(path.join(dir, 'no-vmlinuz')) &&
        e.message.includes('make guest'),
    );
  });

  it('reports QEMU exiting early with its stderr', async () => {
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    const corrupt = path.join(dir, 'corrupt-vmlinuz');
    fs.writeFileSync(corrupt, Buffer.alloc(4096, 0x5a));
    await assert.rejects(
      SandboxVm.boot(hv, config({ kernel: corrupt }), { bootTimeoutMs: 60_000, logger: NOOP_LOGGER }),
      (e: Error) => e instanceof UnavailableError && /kernel/i.test(e.message),
    );
    assert.equal(hv.pid(), undefined);
  });

  it('kills the VM when the agent never answers before the boot deadline', async () => {
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    const t0 = Date.now();
    // The agent waits for a serial port that does not exist, so it never answers.
    await assert.rejects(
      SandboxVm.boot(hv, config({ kernelParams: ['hull.agent_port=no.such.port'] }), {
        bootTimeoutMs: 15_000,
        logger: NOOP_LOGGER,
      }),
      // Two timers end at the deadline (the boot's and the agent dial's): either may report it.
      (e: Error) => {
        assert.ok(e instanceof DeadlineExceededError && /15000 ms|before the boot deadline/.test(e.message), String(e));
        // The guest console (kept in memory by the driver) still says what the guest did last.
        assert.match(e.message, /guest console: .*hull-agent/, e.message);
        return true;
      },
    );
    assert.ok(Date.now() - t0 < 30_000);
    assert.equal(hv.pid(), undefined);
    assert.equal(fs.existsSync(path.join(dir, 'vm')), false);
  });
});
