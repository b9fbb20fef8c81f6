/**
 * The QEMU driver against real QEMU (TCG where /dev/kvm cannot run a stock guest, e.g. under kvm_pvm) and the real
 * virtiofsd. No hull guest image is needed: the host's cloud kernel boots with an empty initramfs, and
 * `root=/dev/nonexistent` makes it panic at once (panic=-1 + -no-reboot: QEMU exits), while adding `rootwait` makes
 * it wait for that root forever, a quiet idle VM. Every test stops what it started, by pid, and removes its folders.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, UnavailableError } from '../errors';
import { QemuHypervisor, type VmConfig } from '../hypervisor';

/** The guest kernel: Debian's cloud kernel from /boot (package linux-image-cloud-amd64, installed by `make deps`). */
function hostKernel(): string {
  const name = fs
    .readdirSync('/boot')
    .filter((f) => /^vmlinuz-.*-cloud-amd64$/.test(f))
    .sort()
    .pop();
  if (!name)
    throw new Error('no /boot/vmlinuz-*-cloud-amd64: run `make deps` (Debian package linux-image-cloud-amd64)');
  return path.join('/boot', name);
}

/** An empty newc cpio archive (just the trailer): a valid initramfs with no /init, so the kernel mounts root= itself. */
function emptyInitramfs(): Buffer {
  const name = 'TRAILER!!!\0';
  const fields = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, name.length, 0].map((n) => n.toString(16).padStart(8, '0'));
  let head = `070701${fields.join('')}${name}`;
  while (head.length % 4) head += '\0';
  const out = Buffer.alloc(512);
  out.write(head, 'latin1');
  return out;
}

/** Every live process whose argv mentions `needle` (our temp root): there must be none after a test. */
function processesMentioning(needle: string): Array<{ pid: number; argv: string }> {
  const found: Array<{ pid: number; argv: string }> = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      if (argv.includes(needle)) found.push({ pid: Number(entry), argv });
    } catch {
      // gone
    }
  }
  return found;
}

/** Our own children that are QEMU or virtiofsd. */
function helperChildren(): number[] {
  const pids: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${process.pid}/task`)) {
    const text = fs.readFileSync(`/proc/${process.pid}/task/${tid}/children`, 'utf8').trim();
    for (const p of text ? text.split(/\s+/).map(Number) : []) {
      try {
        if (/qemu-system|virtiofsd/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'))) pids.push(p);
      } catch {
        // gone
      }
    }
  }
  return pids;
}

function pssKiB(pid: number): number {
  const line = fs
    .readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Pss:'));
  return Number(line?.split(/\s+/)[1] ?? NaN);
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      for (const c of text ? text.split(/\s+/).map(Number) : []) out.push(c, ...descendants(c));
    }
  } catch {
    // gone
  }
  return out;
}

/** The fields of /proc/<pid>/status ("Uid" -> "0\t0\t0\t0"). */
function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const at = line.indexOf(':');
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('hypervisor: real QEMU (TCG) and virtiofsd', function () {
  this.timeout(120_000);
  let root: string;
  let base: VmConfig;
  let vms: QemuHypervisor[];

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-hv-it-'));
    fs.writeFileSync(path.join(root, 'initrd.img'), emptyInitramfs());
    fs.writeFileSync(path.join(root, 'rootfs.img'), Buffer.alloc(1024 * 1024));
    base = {
      id: 'it',
      stateDir: '',
      kernel: hostKernel(),
      initrd: path.join(root, 'initrd.img'),
      image: path.join(root, 'rootfs.img'),
      vcpus: 1,
      memoryMiB: 256,
      accel: 'auto',
      agentTransport: 'auto',
    };
  });
  beforeEach(() => {
    vms = [];
  });
  afterEach(async () => {
    for (const vm of vms) {
      await vm.stop({ force: true }).catch(() => undefined);
      await vm.cleanup().catch(() => undefined);
    }
    assert.deepEqual(helperChildren(), [], 'no QEMU or virtiofsd child of this process is left');
    assert.deepEqual(processesMentioning(root), [], 'no process using our temp folders is left');
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  const vmFor = (id: string, patch: Partial<VmConfig> = {}): { vm: QemuHypervisor; cfg: VmConfig } => {
    const vm = new QemuHypervisor();
    vms.push(vm);
    return { vm, cfg: { ...base, id, stateDir: path.join(root, id), ...patch } };
  };

  it('(a) a guest kernel panic ends QEMU by itself; wait() reports it with the console lines', async () => {
    const { vm, cfg } = vmFor('panic', { kernelParams: ['root=/dev/nonexistent'] });
    await vm.prepare(cfg);
    const t0 = performance.now();
    try {
      await vm.start(AbortSignal.timeout(60_000));
    } catch (err) {
      // The panic may even beat QMP: then start() says so, with the console.
      assert.ok(err instanceof UnavailableError, String(err));
      assert.match(err.message, /Kernel panic/);
    }
    const exit = await vm.wait();
    const panicMs = performance.now() - t0;
    assert.equal(exit.expected, false);
    assert.equal(exit.code, 0, 'with -no-reboot, the panic reboot makes QEMU exit 0');
    assert.ok(
      exit.consoleTail.some((l) => l.includes('Kernel panic - not syncing')),
      exit.consoleTail.join('\n'),
    );
    assert.equal(vm.pid(), undefined);
    console.log(
      `      measured: spawn -> guest panic -> QEMU exit ${Math.round(panicMs)} ms (TCG, accel=${vm.accel()})`,
    );
    await vm.cleanup();
    assert.equal(fs.existsSync(cfg.stateDir), false);
  });

  it('(b) idle VM with virtio-fs: start, pause, resume, status, graceful stop; nothing left after cleanup', async () => {
    const share = path.join(root, 'share');
    fs.mkdirSync(share);
    fs.writeFileSync(path.join(share, 'hello'), 'hi');
    const { vm, cfg } = vmFor('idle', { sharedDir: share, kernelParams: ['root=/dev/nonexistent', 'rootwait'] });
    await vm.prepare(cfg);
    assert.equal(vm.accel(), fs.existsSync('/sys/module/kvm_pvm') ? 'tcg' : vm.accel());
    await vm.start(AbortSignal.timeout(60_000));
    const qemuPid = vm.pid()!;
    const vfsPid = vm.virtiofsdPid()!;
    assert.ok(qemuPid > 0 && alive(qemuPid));
    assert.ok(vfsPid > 0 && alive(vfsPid));
    const timings = vm.timings();
    assert.ok(timings.virtiofsdSandbox === 'namespace' || timings.virtiofsdSandbox === 'chroot');

    // QEMU is connected to virtiofsd: its 'fs' chardev is a unix socket that is not "disconnected:".
    const chardevs = await vm.qmpExecute<Array<{ label: string; filename: string }>>('query-chardev');
    const fsDev = chardevs.find((c) => c.label === 'fs');
    assert.ok(fsDev && fsDev.filename.startsWith('unix:'), JSON.stringify(fsDev));
    const vfsTree = [vfsPid, ...descendants(vfsPid)];
    if (timings.virtiofsdSandbox === 'namespace')
      assert.ok(vfsTree.length >= 2, 'the namespace sandbox child exists once QEMU connected');

    assert.deepEqual(await vm.queryStatus(), { status: 'running', running: true });
    await vm.pause();
    assert.deepEqual(await vm.queryStatus(), { status: 'paused', running: false });
    await vm.resume();
    assert.deepEqual(await vm.queryStatus(), { status: 'running', running: true });

    await new Promise((r) => setTimeout(r, 5000)); // let the guest settle into waiting for its root
    const qemuPss = pssKiB(qemuPid);
    const vfsPss = vfsTree.filter(alive).reduce((sum, p) => sum + pssKiB(p), 0);
    console.log(
      `      measured: accel=${vm.accel()} QEMU spawn -> QMP running ${Math.round(timings.qmpReadyMs ?? NaN)} ms; ` +
        `virtiofsd spawn -> socket ${Math.round(timings.virtiofsdReadyMs ?? NaN)} ms (sandbox=${timings.virtiofsdSandbox}, ` +
        `chosen in ${Math.round(timings.sandboxProbeMs ?? NaN)} ms); ` +
        `idle PSS: QEMU ${Math.round(qemuPss / 1024)} MiB (guest RAM ${cfg.memoryMiB} MiB), virtiofsd ${(vfsPss / 1024).toFixed(1)} MiB (${vfsTree.length} processes)`,
    );

    const t0 = performance.now();
    await vm.stop({ force: false });
    const stopMs = performance.now() - t0;
    const exit = await vm.wait();
    assert.deepEqual(
      { code: exit.code, signal: exit.signal, expected: exit.expected },
      { code: 0, signal: null, expected: true },
    );
    assert.ok(stopMs < 5000, `graceful stop took ${stopMs} ms: QMP quit should end QEMU at once`);
    console.log(`      measured: graceful stop (QMP quit) ${Math.round(stopMs)} ms`);
    for (const p of [qemuPid, ...vfsTree]) assert.equal(alive(p), false, `pid ${p} is gone`);
    assert.equal(vm.pid(), undefined);
    assert.equal(vm.virtiofsdPid(), undefined);
    assert.deepEqual(
      fs.readdirSync(cfg.stateDir),
      [],
      'after the exit nothing is kept on disk (the console is in memory)',
    );
    await vm.cleanup();
    assert.equal(fs.existsSync(cfg.stateDir), false);
    assert.equal(fs.readFileSync(path.join(share, 'hello'), 'utf8'), 'hi', 'the share itself is untouched');
  });

  it('virtiofsd in chroot mode (the fallback where namespaces are not permitted) serves QEMU too', async () => {
    const share = path.join(root, 'share-chroot');
    fs.mkdirSync(share);
    const vm = new QemuHypervisor({ virtiofsdSandbox: 'chroot' });
    vms.push(vm);
    const cfg = {
      ...base,
      id: 'chroot',
      stateDir: path.join(root, 'chroot'),
      sharedDir: share,
      kernelParams: ['root=/dev/nonexistent', 'rootwait'],
    };
    await vm.prepare(cfg);
    await vm.start(AbortSignal.timeout(60_000));
    const vfsPid = vm.virtiofsdPid()!;
    assert.equal(vm.timings().virtiofsdSandbox, 'chroot');
    assert.equal(fs.readlinkSync(`/proc/${vfsPid}/root`), share, 'virtiofsd is chrooted into the share');
    assert.deepEqual(await vm.queryStatus(), { status: 'running', running: true });
    await vm.stop({ force: false });
    assert.equal((await vm.wait()).expected, true);
    assert.equal(alive(vfsPid), false);
    await vm.cleanup();
  });

  it('(c) a missing guest kernel is a FailedPreconditionError naming the file and `make guest`', async () => {
    const missing = path.join(root, 'no-such-vmlinuz');
    const { vm, cfg } = vmFor('nokernel', { kernel: missing });
    await assert.rejects(vm.prepare(cfg), (e: Error) => {
      assert.ok(e instanceof FailedPreconditionError, String(e));
      assert.ok(e.message.includes(missing) && e.message.includes('make guest'), e.message);
      return true;
    });
    assert.equal(fs.existsSync(cfg.stateDir), false, 'a failed prepare creates nothing');
  });

  it('(d) QEMU refusing to start (impossible memory size) is an UnavailableError with its stderr; nothing is left', async () => {
    const { vm, cfg } = vmFor('toobig', {
      memoryMiB: 4 * 1024 * 1024,
      sharedDir: root,
      kernelParams: ['root=/dev/nonexistent'],
    });
    await vm.prepare(cfg);
    await assert.rejects(vm.start(AbortSignal.timeout(60_000)), (e: Error) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.match(e.message, /exited with code 1 during start; stderr: qemu-system-x86_64: /);
      return true;
    });
    const exit = await vm.wait();
    assert.equal(exit.expected, false);
    assert.match(exit.stderrTail, /qemu-system-x86_64/);
    assert.equal(vm.virtiofsdPid(), undefined, 'virtiofsd was stopped too');
    assert.deepEqual(
      fs.readdirSync(cfg.stateDir).filter((f) => f.endsWith('.sock')),
      [],
      'no sockets are left',
    );
    await vm.cleanup();
  });

  describe('confinement', () => {
    it('(e) QEMU under its seccomp filter as nobody, virtiofsd under its sandbox and seccomp; the VM still runs, pauses and stops', async () => {
      const share = path.join(root, 'share-confined');
      fs.mkdirSync(share);
      const secret = path.join(root, 'root-only');
      fs.writeFileSync(secret, 'x', { mode: 0o600 });
      const { vm, cfg } = vmFor('confined', {
        sharedDir: share,
        seccomp: true,
        qemuUser: 'nobody',
        kernelParams: ['root=/dev/nonexistent', 'rootwait'],
      });
      await vm.prepare(cfg);
      assert.deepEqual(vm.confinement(), { seccomp: true, runAs: 'nobody' });
      const argv = vm.argv();
      assert.equal(
        argv[argv.indexOf('-sandbox') + 1],
        'on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny',
      );
      assert.equal(argv[argv.indexOf('-runas') + 1], 'nobody');
      await vm.start(AbortSignal.timeout(60_000));
      const qemuPid = vm.pid()!;
      const q = procStatus(qemuPid);
      assert.equal(q.Seccomp, '2', 'QEMU runs under a seccomp filter (mode 2)');
      assert.equal(q.Uid, '65534\t65534\t65534\t65534', 'QEMU runs as nobody (real, effective, saved, fs uid)');
      assert.equal(q.Gid, '65534\t65534\t65534\t65534');
      assert.equal(q.Groups, '65534', 'and only nogroup');
      assert.equal(q.CapEff, '0000000000000000', 'with no capabilities');
      assert.equal(q.CapPrm, '0000000000000000');
      assert.equal(q.NoNewPrivs, '1');
      // The dropped privileges are in effect: QEMU can no longer open what only root may read.
      await assert.rejects(
        vm.qmpExecute('blockdev-add', { driver: 'file', filename: secret, 'node-name': 'secret', 'read-only': true }),
        (e: Error) => /Permission denied/.test(e.message),
      );

      // virtiofsd: the process that serves the guest (the namespace sandbox's child, or the daemon itself under chroot).
      const vfsPid = vm.virtiofsdPid()!;
      const server = vm.timings().virtiofsdSandbox === 'namespace' ? descendants(vfsPid)[0]! : vfsPid;
      const v = procStatus(server);
      assert.equal(v.Seccomp, '2', 'virtiofsd serves under its own seccomp filter');
      assert.notEqual(v.CapEff, procStatus(process.pid).CapEff, 'with fewer capabilities than root');
      if (vm.timings().virtiofsdSandbox === 'namespace') {
        assert.equal(fs.readlinkSync(`/proc/${server}/root`), '/', 'pivot_root: its / is the share');
        assert.notEqual(
          fs.statSync(`/proc/${server}/ns/mnt`).ino,
          fs.statSync('/proc/self/ns/mnt').ino,
          'in its own mount namespace',
        );
        assert.notEqual(
          fs.statSync(`/proc/${server}/ns/net`).ino,
          fs.statSync('/proc/self/ns/net').ino,
          'and its own (empty) network namespace',
        );
      }
      console.log(
        `      measured: confined QEMU spawn -> QMP running ${Math.round(vm.timings().qmpReadyMs ?? NaN)} ms; ` +
          `QEMU Seccomp=${q.Seccomp} Uid=${q.Uid.split('\t')[0]} CapEff=${q.CapEff}; virtiofsd (${vm.timings().virtiofsdSandbox}) Seccomp=${v.Seccomp} CapEff=${v.CapEff}`,
      );

      await vm.pause();
      assert.deepEqual(await vm.queryStatus(), { status: 'paused', running: false });
      await vm.resume();
      await vm.stop({ force: false });
      const exit = await vm.wait();
      assert.deepEqual(
        { code: exit.code, signal: exit.signal, expected: exit.expected },
        { code: 0, signal: null, expected: true },
      );
      assert.equal(alive(qemuPid), false);
      assert.deepEqual(fs.readdirSync(cfg.stateDir), [], 'nothing left in the state folder after the exit');
      await vm.cleanup();
    });

    it('(f) the filter is enforced: a QEMU that tries to run a program (exec: migration) is killed with SIGSYS; without the filter the program runs', async () => {
      const run = async (id: string, seccomp: boolean): Promise<{ ran: boolean; signal: string | null }> => {
        const marker = path.join(root, `${id}.ran`);
        const { vm, cfg } = vmFor(id, { seccomp, qemuUser: '', kernelParams: ['root=/dev/nonexistent', 'rootwait'] });
        await vm.prepare(cfg);
        if (seccomp)
          assert.equal(
            vm.argv()[vm.argv().indexOf('-sandbox') + 1],
            'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
          );
        else assert.equal(vm.argv().includes('-sandbox'), false);
        await vm.start(AbortSignal.timeout(60_000));
        const pid = vm.pid()!;
        assert.equal(procStatus(pid).Seccomp, seccomp ? '2' : '0');
        try {
          // QEMU forks a child that execs /bin/sh -c <command> and streams the VM state to its stdin.
          await vm.qmpExecute('migrate', { uri: `exec:touch ${marker}` });
          for (let i = 0; i < 300 && alive(pid); i++) {
            const m = await vm.qmpExecute<{ status?: string }>('query-migrate');
            if (m.status === 'failed' || m.status === 'completed') break;
            await new Promise((r) => setTimeout(r, 100));
          }
        } catch (err) {
          assert.ok(seccomp, `only the filter ends QMP here: ${String(err)}`);
        }
        let signal: string | null = null;
        if (seccomp) {
          const exit = await vm.wait();
          assert.equal(exit.expected, false, 'an exit hull did not ask for');
          signal = exit.signal;
        } else {
          assert.ok(alive(pid), 'without the filter QEMU runs on (only the migration failed: touch reads nothing)');
          await vm.stop({ force: true });
        }
        await vm.cleanup();
        return { ran: fs.existsSync(marker), signal };
      };
      assert.deepEqual(
        await run('spawn-allowed', false),
        { ran: true, signal: null },
        'without the filter the program runs (the check is meaningful)',
      );
      assert.deepEqual(
        await run('spawn-denied', true),
        { ran: false, signal: 'SIGSYS' },
        'spawn=deny: QEMU is killed at the attempt, the program never runs',
      );
    });
  });
});
