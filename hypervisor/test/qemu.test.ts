/** QemuHypervisor's lifecycle against a fake QEMU (fake-qemu.ts): fast, and able to misbehave on demand. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotImplementedError,
  UnavailableError,
} from '../../errors';
import { VHOST_VSOCK_DEVICE, cidCandidates, type HostProbe } from '../accel';
import { processStartTime } from '../process';
import { QemuHypervisor, type QemuHypervisorOptions } from '../qemu/qemu';
import { PFN_INFO_OFFSET, PFN_SIGNATURE, ROOT_IMAGE_DATA_OFFSET, type ImageProbe } from '../root-image';
import { TEMPLATE_NIC_PORTS, type VmConfig } from '../types';
import type { Logger } from '../../log';
import { pidExists } from '../util';
import { writeFakeQemu } from './fake-qemu';

const noKvmNoVsock: HostProbe = { exists: () => false, openReadWrite: () => false };
const vsockHost: HostProbe = {
  exists: (p) => p === VHOST_VSOCK_DEVICE,
  openReadWrite: (p) => p === VHOST_VSOCK_DEVICE,
};

function recordingLogger(): Logger & { lines: Array<{ level: string; msg: string; obj: object }> } {
  const lines: Array<{ level: string; msg: string; obj: object }> = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void => {
      lines.push({ level, msg, obj });
    };
  return { lines, info: at('info'), warn: at('warn'), debug: at('debug'), error: at('error') };
}

describe('hypervisor/qemu/qemu (fake QEMU)', function () {
  this.timeout(20_000);
  let dir: string;
  let cfg: VmConfig;
  let vms: QemuHypervisor[] = [];

  const make = (opts: QemuHypervisorOptions = {}): QemuHypervisor => {
    const vm = new QemuHypervisor({ hostProbe: noKvmNoVsock, quitTimeoutMs: 2000, termTimeoutMs: 2000, ...opts });
    vms.push(vm);
    return vm;
  };
  const withMode = (...modes: string[]): VmConfig => ({ ...cfg, kernelParams: modes.map((m) => `fake.mode=${m}`) });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-qemu-'));
    for (const f of ['vmlinuz', 'initrd.img', 'rootfs.img']) fs.writeFileSync(path.join(dir, f), '');
    cfg = {
      id: 'pod-1',
      stateDir: path.join(dir, 'state'),
      kernel: path.join(dir, 'vmlinuz'),
      initrd: path.join(dir, 'initrd.img'),
      image: path.join(dir, 'rootfs.img'),
      vcpus: 1,
      memoryMiB: 128,
      accel: 'auto',
      agentTransport: 'auto',
      qemuPath: writeFakeQemu(dir),
    };
  });
  afterEach(async () => {
    for (const vm of vms) {
      await vm.stop({ force: true }).catch(() => undefined);
      await vm.cleanup().catch(() => undefined);
    }
    vms = [];
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('onSpawn hears of QEMU synchronously at spawn, with its pid and start time; a throwing onSpawn kills it and fails start', async () => {
    const seen: Array<{ name: string; pid: number; startTime: string; argvNamesState: boolean }> = [];
    const vm = make();
    await vm.prepare({
      ...cfg,
      onSpawn: (h) => {
        const argv = fs.readFileSync(`/proc/${h.pid}/cmdline`, 'latin1');
        seen.push({ ...h, argvNamesState: argv.includes(cfg.stateDir) });
      },
    });
    await vm.start(AbortSignal.timeout(10_000));
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.name, 'qemu');
    assert.equal(seen[0]!.pid, vm.pid());
    assert.equal(seen[0]!.startTime, processStartTime(vm.pid()!), 'the start time of that very process');
    assert.ok(seen[0]!.argvNamesState, "its argv (already exec'd) names the state folder");

    let spawned = 0;
    const refused = make();
    await refused.prepare({
      ...cfg,
      stateDir: path.join(dir, 'state2'),
      onSpawn: (h) => {
        spawned = h.pid;
        throw new Error('cannot record it');
      },
    });
    await assert.rejects(refused.start(AbortSignal.timeout(10_000)), /cannot record it/);
    for (let i = 0; i < 100 && pidExists(spawned) && processStartTime(spawned) !== undefined; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.ok(spawned > 0);
    assert.equal(
      fs.existsSync(`/proc/${spawned}/cmdline`) && fs.readFileSync(`/proc/${spawned}/cmdline`, 'latin1').length > 0,
      false,
      'the unrecorded QEMU is killed',
    );
  });

  it('prepare -> start -> pause/resume -> graceful stop -> cleanup, with every waiter told once', async () => {
    const log = recordingLogger();
    const vm = make({ logger: log });
    await vm.prepare(cfg);
    assert.equal(vm.accel(), 'tcg');
    assert.deepEqual(vm.agentAddress(), { transport: 'serial', path: path.join(cfg.stateDir, 'agent.sock') });
    assert.deepEqual(vm.consoleTail(), [], 'no console before QEMU runs');
    assert.ok(log.lines.some((l) => l.msg === 'accel: tcg' && /does not exist/.test((l.obj as { why: string }).why)));
    const early = vm.wait();
    await vm.start(AbortSignal.timeout(10_000));
    const pid = vm.pid()!;
    assert.ok(pid > 0 && pidExists(pid));
    assert.ok((vm.timings().qmpReadyMs ?? 0) > 0);
    await vm.pause();
    assert.equal((await vm.queryStatus()).status, 'paused');
    await assert.rejects(vm.pause(), FailedPreconditionError);
    await vm.resume();
    assert.equal((await vm.queryStatus()).status, 'running');
    await assert.rejects(vm.cleanup(), FailedPreconditionError);

    await vm.stop({ force: false });
    const exit = await early;
    assert.deepEqual(
      { code: exit.code, signal: exit.signal, expected: exit.expected },
      { code: 0, signal: null, expected: true },
    );
    assert.ok(exit.consoleTail.some((l) => l.includes('fake qemu booting hull-pod-1')));
    assert.equal(await vm.wait(), exit);
    assert.equal(vm.pid(), undefined);
    assert.equal(pidExists(pid), false);
    assert.equal(fs.existsSync(path.join(cfg.stateDir, 'qmp.sock')), false);
    await vm.stop({ force: false }); // idempotent
    await vm.cleanup();
    assert.equal(fs.existsSync(cfg.stateDir), false);
    await vm.cleanup();
  });

  it('QEMU exiting during start is an UnavailableError with its stderr and console lines; nothing is left', async () => {
    const vm = make();
    await vm.prepare(withMode('exit-early'));
    await assert.rejects(vm.start(AbortSignal.timeout(10_000)), (e: Error) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.match(e.message, /exited with code 1/);
      assert.match(e.message, /fake failure for the test/);
      assert.match(e.message, /Kernel panic - not syncing/);
      return true;
    });
    const exit = await vm.wait();
    assert.equal(exit.code, 1);
    assert.equal(exit.expected, false);
    assert.match(exit.stderrTail, /fake failure/);
    assert.equal(vm.pid(), undefined);
    assert.deepEqual(fs.readdirSync(cfg.stateDir).sort(), [], 'the console is kept in memory, not in a file');
    assert.deepEqual(vm.consoleTail(1), ['fake: Kernel panic - not syncing: nothing to do']);
    await assert.rejects(vm.start(AbortSignal.timeout(1000)), FailedPreconditionError); // a VM starts once
  });

  it('a guest flooding its console (8 MiB and a 1 MiB line): bounded memory, nothing on disk, the log rate-limited and counting', async () => {
    const log = recordingLogger();
    const vm = make({
      logger: log,
      consoleLimits: { maxLines: 100, maxBytes: 32 * 1024, linesPerWindow: 50, windowMs: 60_000 },
    });
    await vm.prepare({ ...withMode('flood=8'), debug: true });
    await vm.start(AbortSignal.timeout(10_000));
    const t0 = Date.now();
    while (!vm.consoleTail(1).includes('fake: flood done') && Date.now() - t0 < 15_000)
      await new Promise((r) => setTimeout(r, 20));
    const tail = vm.consoleTail();
    assert.equal(tail.at(-1), 'fake: flood done');
    assert.ok(tail.length <= 100, `${tail.length} lines kept`);
    assert.ok(tail.join('').length <= 33 * 1024, `${tail.join('').length} characters kept`);
    const long = tail.at(-2)!;
    assert.equal(long, `${'y'.repeat(1024)}…(${(1 << 20) - 1024} bytes more)`, 'a 1 MiB line is kept as its first KiB');
    assert.ok(vm.consoleTotals().bytes > 8 * 1024 * 1024);
    const files = fs.readdirSync(cfg.stateDir).map((f) => fs.statSync(path.join(cfg.stateDir, f)));
    assert.ok(
      files.every((f) => !f.isFile() || f.size < 4096),
      'no console file in the state folder',
    );
    await vm.stop({ force: false });
    const logged = log.lines.filter((l) => l.msg === 'guest console');
    assert.equal(logged.length, 50, 'at most 50 lines per window went into the log');
    const dropped = log.lines.filter((l) => /guest console lines not logged/.test(l.msg));
    assert.equal(dropped.length, 1, 'one report, when the console ended');
    const notLogged = (dropped[0]!.obj as { notLogged: number }).notLogged;
    assert.equal(
      notLogged,
      8 * 1024 + 3 - 50,
      'every line past the limit is counted (the booting line, 8192 flood lines, the long one, done)',
    );
    assert.equal(vm.consoleTotals().notLogged, notLogged);
  });

  it("the agent's log port: records into the log with source agent (debug unless warn/error), rate-limited and counted, a tail in memory", async () => {
    const log = recordingLogger();
    const vm = make({ logger: log, agentLogLimits: { linesPerWindow: 20, windowMs: 60_000, maxLines: 10 } });
    await vm.prepare(withMode('agent-log=100'));
    assert.ok(vm.argv().includes(`socket,id=agentlog,path=${cfg.stateDir}/agent-log.sock,server=on,wait=off`));
    assert.ok(!vm.argv().some((a) => a.includes('hull.debug.0')), 'no test-only raw port unless asked for');
    await vm.start(AbortSignal.timeout(10_000));
    const t0 = Date.now();
    while (!vm.agentLogTail(1).includes('hull-agent info fake agent log done') && Date.now() - t0 < 10_000)
      await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(vm.agentLogTail(2), ['hull-agent info fake flood 99', 'hull-agent info fake agent log done']);
    assert.equal(vm.agentLogTail().length, 10, 'the tail is bounded');
    const agent = log.lines.filter((l) => (l.obj as { source?: string }).source === 'agent');
    assert.deepEqual(
      agent.slice(0, 3).map((l) => [l.level, l.msg, l.obj]),
      [
        ['debug', 'fake agent ready', { source: 'agent', guestLevel: 'info', fields: { transport: 'serial' } }],
        ['error', 'fake agent failure', { source: 'agent', fields: { error: 'boom' } }],
        ['debug', 'hull-agent error forged', { source: 'agent', invalidRecord: 'not JSON' }],
      ],
    );
    assert.equal(agent.length, 20, 'at most 20 records per window went into the log');
    await vm.stop({ force: false });
    const report = log.lines.filter((l) => /agent log records not logged/.test(l.msg));
    assert.equal(report.length, 1, 'one report, when the port closed');
    assert.equal((report[0]!.obj as { notLogged: number }).notLogged, 104 - 20);
    assert.deepEqual(vm.agentLogTotals(), {
      bytes: vm.agentLogTotals().bytes,
      records: 104,
      invalid: 1,
      notLogged: 84,
      droppedInGuest: 0,
    });
  });

  it('a boot that never reaches QMP: the deadline kills QEMU (DeadlineExceededError), an abort too (CancelledError)', async () => {
    const a = make();
    await a.prepare(withMode('no-qmp'));
    await assert.rejects(a.start(AbortSignal.timeout(300)), DeadlineExceededError);
    const ea = await a.wait();
    assert.equal(ea.signal, 'SIGKILL');
    assert.equal(ea.expected, true);

    const b = make();
    await b.prepare({ ...withMode('no-qmp'), id: 'pod-2', stateDir: path.join(dir, 'state2') });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(b.start(ac.signal), CancelledError);
    assert.equal((await b.wait()).signal, 'SIGKILL');
  });

  it('stop() during a start aborts it instead of waiting behind it', async () => {
    const vm = make();
    await vm.prepare(withMode('no-qmp'));
    const starting = vm.start(AbortSignal.timeout(60_000));
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    await vm.stop({ force: false });
    assert.ok(performance.now() - t0 < 5000);
    await assert.rejects(starting, CancelledError);
    assert.equal((await vm.wait()).expected, true);
  });

  it('graceful stop escalates to SIGKILL when QEMU ignores quit and SIGTERM', async () => {
    const log = recordingLogger();
    const vm = make({ logger: log, quitTimeoutMs: 200, termTimeoutMs: 200 });
    await vm.prepare(withMode('stubborn'));
    await vm.start(AbortSignal.timeout(10_000));
    await vm.stop({ force: false });
    const exit = await vm.wait();
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(log.lines.some((l) => /after SIGTERM; sending SIGKILL/.test(l.msg)));
  });

  it('force stop sends SIGKILL at once', async () => {
    const vm = make();
    await vm.prepare(cfg);
    await vm.start(AbortSignal.timeout(10_000));
    await vm.stop({ force: true });
    assert.equal((await vm.wait()).signal, 'SIGKILL');
  });

  it('an exit nobody asked for is recorded once as unexpected, and the VM is stopped', async () => {
    const vm = make();
    await vm.prepare(withMode('crash-after=300'));
    await vm.start(AbortSignal.timeout(10_000));
    const [a, b] = await Promise.all([vm.wait(), vm.wait()]);
    assert.equal(a, b);
    assert.deepEqual({ code: a.code, expected: a.expected }, { code: 3, expected: false });
    assert.ok(a.consoleTail.includes('fake: crashing'));
    await assert.rejects(vm.pause(), FailedPreconditionError);
    await vm.stop({ force: false });
    assert.equal((await vm.wait()).expected, false);
  });

  it('free page reporting adds the balloon; tcgTbSizeMiB goes to -accel under TCG only, never under KVM', async () => {
    const kvmHost: HostProbe = { exists: (p) => p === '/dev/kvm', openReadWrite: (p) => p === '/dev/kvm' };
    const plain = make();
    await plain.prepare(cfg);
    assert.ok(!plain.argv().some((w) => w.includes('balloon') || w.includes('tb-size')), 'neither by default');
    assert.ok(plain.argv().includes('q35,accel=tcg,memory-backend=mem'));

    const tcg = make();
    await tcg.prepare({ ...cfg, stateDir: path.join(dir, 'tcg'), freePageReporting: true, tcgTbSizeMiB: 64 });
    const argv = tcg.argv();
    assert.deepEqual(argv.slice(argv.indexOf('-machine'), argv.indexOf('-machine') + 6), [
      '-machine',
      'q35,memory-backend=mem',
      '-accel',
      'tcg,tb-size=64',
      '-cpu',
      'max',
    ]);
    assert.ok(argv.includes('virtio-balloon-pci,id=balloon0,free-page-reporting=on'));

    const kvm = make({ hostProbe: kvmHost });
    await kvm.prepare({ ...cfg, stateDir: path.join(dir, 'kvm'), freePageReporting: true, tcgTbSizeMiB: 64 });
    assert.equal(kvm.accel(), 'kvm');
    assert.ok(kvm.argv().includes('q35,accel=kvm,memory-backend=mem'));
    assert.ok(!kvm.argv().some((w) => w === '-accel' || w.includes('tb-size')), 'no translation cache under KVM');
    assert.ok(kvm.argv().includes('virtio-balloon-pci,id=balloon0,free-page-reporting=on'));

    await assert.rejects(
      make().prepare({ ...cfg, stateDir: path.join(dir, 'bad'), tcgTbSizeMiB: -1 }),
      InvalidArgumentError,
    );
  });

  it('auto picks vsock where /dev/vhost-vsock opens (logged with the reason); agentTransport=serial overrides it', async () => {
    const log = recordingLogger();
    const vm = make({ hostProbe: vsockHost, logger: log });
    await vm.prepare(cfg);
    const cid = cidCandidates(cfg.id).next().value as number;
    assert.deepEqual(vm.agentAddress(), { transport: 'vsock', cid, port: 1024 });
    const argv = vm.argv();
    assert.deepEqual(argv.slice(argv.indexOf(`vhost-vsock-pci,guest-cid=${cid}`) - 1).slice(0, 2), [
      '-device',
      `vhost-vsock-pci,guest-cid=${cid}`,
    ]);
    assert.match(argv[argv.indexOf('-append') + 1]!, / hull\.agent=vsock( |$)/);
    assert.ok(!argv.some((w) => w.includes('agent.channel.0') || w.includes('id=agent,')), 'no agent serial port');
    assert.ok(
      argv.includes('virtserialport,chardev=agentlog,name=agent.log.0'),
      "the agent's log port is serial still",
    );
    assert.ok(
      log.lines.some(
        (l) =>
          l.msg === 'agent transport: vsock' &&
          (l.obj as { why: string }).why === '/dev/vhost-vsock opens read-write; using vsock',
      ),
    );

    const serial = make({ hostProbe: vsockHost });
    await serial.prepare({ ...cfg, stateDir: path.join(dir, 'state2'), agentTransport: 'serial' });
    assert.equal(serial.agentAddress().transport, 'serial');
    assert.ok(!serial.argv().some((w) => w.includes('vhost-vsock')));
  });

  it('confinement is chosen at prepare for the host and logged with the reason; the argv follows it', async () => {
    const log = recordingLogger();
    const rootHost = { euid: () => 0, kernelSeccomp: () => true, userExists: (n: string) => n === 'nobody' };
    const vm = make({ logger: log, confineProbe: rootHost });
    await vm.prepare({ ...cfg, qemuUser: 'nobody' });
    assert.deepEqual(vm.confinement(), { seccomp: true, runAs: 'nobody' });
    assert.deepEqual(vm.argv().slice(-4), [
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny',
      '-runas',
      'nobody',
    ]);
    const line = log.lines.find((l) => l.msg === 'qemu confinement: seccomp, runs as nobody');
    assert.ok(
      line && /QEMU drops to nobody/.test((line.obj as { why: string }).why),
      JSON.stringify(log.lines.map((l) => l.msg)),
    );

    // Not root: no -runas, and then set*id is denied too. The defaults (no qemuUser) are the same.
    const log2 = recordingLogger();
    const user = make({ logger: log2, confineProbe: { ...rootHost, euid: () => 1000 } });
    await user.prepare({ ...cfg, stateDir: path.join(dir, 'state2'), qemuUser: 'nobody' });
    assert.deepEqual(user.argv().slice(-2), [
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ]);
    assert.ok(
      log2.lines.some(
        (l) => l.msg === 'qemu confinement: seccomp, no -runas' && /not root/.test((l.obj as { why: string }).why),
      ),
    );
    const dflt = make({ confineProbe: rootHost });
    await dflt.prepare({ ...cfg, stateDir: path.join(dir, 'state3') });
    assert.deepEqual(dflt.confinement(), { seccomp: true });
  });

  it('vsock: retries with another guest CID when QEMU says the first is taken', async () => {
    const log = recordingLogger();
    const first = cidCandidates(cfg.id).next().value as number;
    const vm = make({ hostProbe: vsockHost, logger: log });
    await vm.prepare(withMode(`cid-busy=${first}`));
    assert.deepEqual(vm.agentAddress(), { transport: 'vsock', cid: first, port: 1024 });
    await vm.start(AbortSignal.timeout(10_000));
    const addr = vm.agentAddress();
    assert.ok(addr.transport === 'vsock' && addr.cid !== first && addr.port === 1024);
    assert.ok(vm.argv().includes(`vhost-vsock-pci,guest-cid=${addr.cid}`));
    assert.ok(log.lines.some((l) => l.msg === 'guest CID in use, trying another'));
  });

  it('refuses operations out of order; addDevice is not implemented yet', async () => {
    const vm = make();
    await assert.rejects(vm.start(AbortSignal.timeout(1000)), FailedPreconditionError);
    assert.throws(() => vm.agentAddress(), FailedPreconditionError);
    assert.throws(() => vm.accel(), FailedPreconditionError);
    await assert.rejects(vm.pause(), FailedPreconditionError);
    await assert.rejects(
      vm.addDevice({ kind: 'block', id: 'd', hostPath: '/dev/null', readOnly: true }),
      NotImplementedError,
    );
    await vm.prepare(cfg);
    await assert.rejects(vm.prepare(cfg), FailedPreconditionError);
    await assert.rejects(vm.resume(), FailedPreconditionError);
  });

  describe('resize (CPU and memory hot-plug)', () => {
    const GiB = 1024 * 1024 * 1024;
    const qmpLog = (): Array<{ execute: string; arguments?: Record<string, unknown> }> =>
      fs
        .readFileSync(path.join(cfg.stateDir, 'qmp.sock.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { execute: string; arguments?: Record<string, unknown> })
        .filter((c) => c.execute !== 'qmp_capabilities' && c.execute !== 'query-status');

    it('grows to the target with device_add of CPUs and memfd-backed DIMMs, never shrinks, refuses beyond the maxima', async () => {
      const vm = make();
      await vm.prepare({ ...cfg, vcpus: 1, memoryMiB: 512, maxVcpus: 3, maxMemoryMiB: 1024 });
      await assert.rejects(vm.resize({ vcpus: 2 }), UnavailableError, 'not running yet');
      await vm.start(AbortSignal.timeout(10_000));
      assert.deepEqual(await vm.resize({ vcpus: 2, memoryMiB: 700 }), { vcpus: 2, memoryMiB: 768 });
      assert.deepEqual(qmpLog(), [
        { execute: 'query-hotpluggable-cpus' },
        {
          execute: 'device_add',
          arguments: {
            driver: 'max-x86_64-cpu',
            id: 'cpu-0-1-0',
            'core-id': 1,
            'thread-id': 0,
            'node-id': 0,
            'socket-id': 0,
          },
        },
        { execute: 'query-memory-size-summary' },
        {
          execute: 'object-add',
          arguments: { 'qom-type': 'memory-backend-memfd', id: 'dimm0-mem', size: 128 * 1024 * 1024, share: true },
        },
        // No memory device yet: QEMU's own place (the start of device memory, 1 GiB aligned).
        { execute: 'query-memory-devices' },
        { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'dimm0', memdev: 'dimm0-mem' } },
        {
          execute: 'object-add',
          arguments: { 'qom-type': 'memory-backend-memfd', id: 'dimm1-mem', size: 128 * 1024 * 1024, share: true },
        },
        { execute: 'query-memory-devices' },
        {
          execute: 'device_add',
          arguments: { driver: 'pc-dimm', id: 'dimm1', memdev: 'dimm1-mem', addr: 4 * GiB + 128 * 1024 * 1024 },
        },
        { execute: 'query-cpus-fast' },
        { execute: 'query-memory-size-summary' },
      ]);
      // A smaller target changes nothing.
      assert.deepEqual(await vm.resize({ vcpus: 1, memoryMiB: 256 }), { vcpus: 2, memoryMiB: 768 });
      assert.equal(qmpLog().filter((c) => c.execute === 'device_add' || c.execute === 'object-add').length, 5);
      // Beyond the maxima: nothing is sent, and the error names them.
      const before = qmpLog().length;
      await assert.rejects(vm.resize({ vcpus: 4 }), (err: Error) => {
        assert.ok(err instanceof FailedPreconditionError);
        assert.match(err.message, /maxVcpus 3, maxMemoryMiB 1024/);
        return true;
      });
      await assert.rejects(vm.resize({ memoryMiB: 1025 }), FailedPreconditionError);
      await assert.rejects(vm.resize({ vcpus: 1.5 }), InvalidArgumentError);
      await assert.rejects(vm.resize({ memoryMiB: -1 }), InvalidArgumentError);
      assert.equal(qmpLog().length, before);
      assert.deepEqual(await vm.resize({ vcpus: 3, memoryMiB: 1024 }), { vcpus: 3, memoryMiB: 1024 });
      await vm.stop({ force: false });
      await assert.rejects(vm.resize({ vcpus: 3 }), UnavailableError, 'stopped');
    });

    it('with a pmem root image (DAX): the image is not guest RAM, resize counts only RAM; DIMMs go on 128 MiB boundaries behind it', async () => {
      const image = 150 * 1024 * 1024;
      const daxImage: ImageProbe = {
        size: () => image,
        read: (_f, offset, length) => {
          const b = Buffer.alloc(length);
          if (offset === ROOT_IMAGE_DATA_OFFSET + 1080) b.writeUInt16LE(0xef53, 0);
          if (offset === PFN_INFO_OFFSET) b.write(PFN_SIGNATURE, 0, 'latin1');
          return b;
        },
      };
      const vm = make({ imageProbe: daxImage });
      await vm.prepare({ ...cfg, memoryMiB: 512, rootImageDevice: 'nvdimm' });
      assert.equal(vm.rootImage().device, 'nvdimm');
      await vm.start(AbortSignal.timeout(10_000));
      assert.deepEqual(await vm.resize({ memoryMiB: 512 }), { vcpus: 1, memoryMiB: 512 });
      assert.equal(qmpLog().filter((c) => c.execute === 'device_add').length, 0, 'the image is not missing RAM');
      await vm.stop({ force: false });
      // With hot-plug room the root is on the nvdimm too, and the DIMMs go where the guest can add them: not right
      // behind the 150 MiB image (4 GiB + 150 MiB, QEMU's own choice), but on the next 128 MiB boundaries.
      const grows = make({ imageProbe: daxImage });
      await grows.prepare({
        ...cfg,
        stateDir: path.join(dir, 'grows'),
        memoryMiB: 512,
        maxVcpus: 2,
        maxMemoryMiB: 768,
        rootImageDevice: 'nvdimm',
      });
      assert.equal(grows.rootImage().device, 'nvdimm');
      await grows.start(AbortSignal.timeout(10_000));
      assert.deepEqual(await grows.resize({ vcpus: 2, memoryMiB: 768 }), { vcpus: 2, memoryMiB: 768 });
      const dimms = fs
        .readFileSync(path.join(dir, 'grows', 'qmp.sock.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { execute: string; arguments?: Record<string, unknown> })
        .filter((c) => c.execute === 'device_add' && c.arguments?.driver === 'pc-dimm')
        .map((c) => c.arguments?.addr);
      assert.deepEqual(dimms, [4 * GiB + 256 * 1024 * 1024, 4 * GiB + 384 * 1024 * 1024]);
      await grows.stop({ force: false });
    });

    it('without maxima nothing can grow; a failed DIMM is rolled back (its backend deleted); an abort stops between steps', async () => {
      const vm = make();
      await vm.prepare({ ...cfg, memoryMiB: 512, kernelParams: ['fake.mode=dimm-fail'], maxMemoryMiB: 768 });
      await vm.start(AbortSignal.timeout(10_000));
      await assert.rejects(vm.resize({ vcpus: 2 }), /maxVcpus 1, maxMemoryMiB 768/);
      assert.deepEqual(await vm.resize({ vcpus: 1, memoryMiB: 512 }), { vcpus: 1, memoryMiB: 512 });
      await assert.rejects(vm.resize({ memoryMiB: 640 }), /fake: cannot plug dimm0/);
      const log = qmpLog();
      assert.deepEqual(log[log.length - 1], { execute: 'object-del', arguments: { id: 'dimm0-mem' } });
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(vm.resize({ memoryMiB: 640 }, ac.signal), CancelledError);
      // The next DIMM gets a fresh id: ids are never reused.
      await assert.rejects(vm.resize({ memoryMiB: 640 }), /fake: cannot plug dimm1/);
    });
  });

  it('stop before start resolves wait() and prevents a later start', async () => {
    const vm = make();
    await vm.prepare(cfg);
    await vm.stop({ force: false });
    assert.deepEqual(await vm.wait(), { code: null, signal: null, expected: true, stderrTail: '', consoleTail: [] });
    await assert.rejects(vm.start(AbortSignal.timeout(1000)), FailedPreconditionError);
    await vm.cleanup();
    assert.equal(fs.existsSync(cfg.stateDir), false);
  });

  it('a template clone takes up to TEMPLATE_NIC_PORTS NICs (netdevs on its command line), a template VM none', async () => {
    const name = `hull-t-${crypto.randomBytes(4).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name]);
    try {
      const nic = (i: number): { tap: string; mac: string } => ({
        tap: `tap${i}_hull`,
        mac: `02:00:00:00:00:0${i + 1}`,
      });
      const network = (n: number): VmConfig['network'] => ({
        netnsPath: `/run/netns/${name}`,
        nics: Array.from({ length: n }, (_, i) => nic(i)),
      });
      const clone = {
        role: 'clone' as const,
        memoryFile: path.join(dir, 'memory'),
        stateFile: path.join(dir, 'state'),
      };
      const vm = make();
      await vm.prepare({ ...cfg, network: network(TEMPLATE_NIC_PORTS), template: clone });
      const argv = vm.argv();
      assert.ok(argv.includes('tap,id=net1,ifname=tap1_hull,script=no,downscript=no'));
      assert.ok(!argv.some((w) => w.startsWith('virtio-net-pci')), 'the NICs are hot-plugged after the state load');
      assert.equal(vm.command().file, '/usr/bin/nsenter', 'QEMU runs in the pod netns');
      await assert.rejects(
        make().prepare({ ...cfg, network: network(TEMPLATE_NIC_PORTS + 1), template: clone }),
        (e: Error) =>
          e instanceof InvalidArgumentError && /room for 2 NICs, this VM has 3: boot it cold/.test(e.message),
      );
      await assert.rejects(
        make().prepare({ ...cfg, network: network(1), template: { role: 'make', memoryFile: path.join(dir, 'm') } }),
        (e: Error) => e instanceof InvalidArgumentError && /a template VM has no NICs/.test(e.message),
      );
    } finally {
      execFileSync('ip', ['netns', 'delete', name]);
    }
  });

  it('with a network, QEMU runs in that namespace through nsenter, keeping its pid and its own argv', async () => {
    // A namespace of our own, removed at the end whatever happens.
    const name = `hull-t-${crypto.randomBytes(4).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name]);
    try {
      const log = recordingLogger();
      const vm = make({ logger: log });
      await vm.prepare({
        ...cfg,
        network: { netnsPath: `/run/netns/${name}`, nics: [{ tap: 'tap0_kata', mac: '02:00:00:00:00:01' }] },
      });
      const { file, args } = vm.command();
      assert.equal(file, '/usr/bin/nsenter');
      assert.deepEqual(args.slice(0, 3), [`--net=/run/netns/${name}`, '--', cfg.qemuPath]);
      assert.deepEqual(args.slice(3), vm.argv());
      assert.ok(vm.argv().includes('tap,id=net0,ifname=tap0_kata,script=no,downscript=no'), 'no vhost under TCG');
      assert.ok(log.lines.some((l) => /^network: 1 NIC/.test(l.msg) && /TCG/.test((l.obj as { why: string }).why)));
      await vm.start(AbortSignal.timeout(10_000));
      const pid = vm.pid()!;
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      assert.ok(!cmdline.some((w) => w.includes('nsenter')), "nsenter exec'd: the pid is QEMU's");
      assert.ok(
        cmdline.some((w) => w.includes(cfg.stateDir)),
        'the argv names the state folder (crash recovery matches on it)',
      );
      assert.equal(
        fs.statSync(`/proc/${pid}/ns/net`).ino,
        fs.statSync(`/run/netns/${name}`).ino,
        'QEMU is in the pod namespace',
      );
      await vm.stop({ force: false });
      assert.equal((await vm.wait()).code, 0);
    } finally {
      execFileSync('ip', ['netns', 'delete', name]);
    }
  });
});
