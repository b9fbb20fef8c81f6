/**
 * VM templates with the real guest (TCG): a template is made (core/template.ts, hypervisor/qemu/template.ts); a
 * clone boots from it with its own virtio-fs share hot-plugged and runs a container reading a file the host wrote
 * into the share, and an exec; five clones at once each have their own random bytes (after the reseed), host
 * name and clock; a changed guest kernel invalidates the template. Everything lives under a tmpfs folder the test
 * makes and removes; no QEMU or virtiofsd is left.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { parseConfig, toVmConfig } from '../core/config';
import { FAILPOINT_ANNOTATION } from '../core/failpoint';
import { VmTemplates, templateIdentity, type TemplateFiles } from '../core/template';
import type { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor, type VmConfig } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import {
  BUSYBOX_IMAGE,
  BUSYBOX_WWW_INDEX,
  REPO,
  importBusybox,
  startContainerd,
  type PrivateContainerd,
} from './lib/containerd';
import { cri } from './lib/cri';
import { busyboxRootfs, collectOutput } from './lib/containers';
import { childProcesses } from './lib/guest';
import { testProcess, testSpec } from './lib/oci-spec';
import { bootWithShare, shutDownAndCheck } from './lib/shared-vm';
import { processesMentioning } from './lib/processes';

const APPLETS = ['sh', 'cat', 'echo', 'head', 'od', 'date', 'tr'];

describe('VM templates (real QEMU, TCG)', function () {
  this.timeout(600_000);
  let dir: string;
  let templates: VmTemplates;
  let made: TemplateFiles | undefined;
  let rootfs: string;
  let kernelCopy: string;

  /** The VM configuration of hull's defaults with templates on; the kernel is the test's own copy. */
  const vmConfig = (id: string, sharedDir?: string): VmConfig => {
    const config = parseConfig(
      '[hypervisor]\nenable_template = true\n',
      'test.toml',
      path.resolve(__dirname, '..', '..', 'bin'),
    );
    const vm = toVmConfig(config, {
      id,
      stateDir: path.join(dir, 'vms', id),
      ...(sharedDir ? { sharedDir } : {}),
    });
    return { ...vm, kernel: kernelCopy };
  };

  const clone = async (id: string, hostname: string): Promise<{ vm: SandboxVm; share: VirtioFsShare }> => {
    const share = new VirtioFsShare({ root: path.join(dir, 'share', id), sandboxId: id });
    await share.prepare();
    const cfg = vmConfig(id, share.sharedDir());
    cfg.template = { role: 'clone', memoryFile: made!.memoryFile, stateFile: made!.stateFile };
    const vm = await bootWithShareAndIdentity(new QemuHypervisor({ logger: NOOP_LOGGER }), cfg, id, hostname);
    return { vm, share };
  };

  before(() => {
    dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'hull-template-'));
    fs.mkdirSync(path.join(dir, 'vms'));
    rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
    const defaults = parseConfig('', 't.toml', path.resolve(__dirname, '..', '..', 'bin'));
    kernelCopy = path.join(dir, 'vmlinuz');
    fs.copyFileSync(toVmConfig(defaults, { id: 'probe', stateDir: path.join(dir, 'vms', 'probe') }).kernel, kernelCopy);
    // Whole seconds: what the invalidation test restores with utimes is then exactly what was there.
    fs.utimesSync(kernelCopy, 1_700_000_000, 1_700_000_000);
    templates = new VmTemplates({
      root: path.join(dir, '_templates'),
      hypervisor: () => new QemuHypervisor({ logger: NOOP_LOGGER }),
      bootTimeoutMs: 240_000,
      logger: NOOP_LOGGER,
    });
  });

  after(() => {
    assert.deepEqual(childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']), [], 'no QEMU or virtiofsd left');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('makes a template: guest RAM (sparse) and device state in a root-only folder, with its fingerprint', async () => {
    const t0 = performance.now();
    made = await templates.make(vmConfig('tmpl'));
    assert.ok(made, 'made');
    const ms = performance.now() - t0;
    const mem = fs.statSync(made.memoryFile);
    const state = fs.statSync(made.stateFile);
    console.log(
      `      template made in ${(ms / 1000).toFixed(1)} s: RAM file ${mem.size >> 20} MiB, ` +
        `${(mem.blocks * 512) >> 20} MiB allocated; device state ${(state.size / 1024).toFixed(0)} KiB`,
    );
    assert.equal(mem.size, vmConfig('x').memoryMiB * 1024 * 1024);
    assert.ok(mem.blocks * 512 < mem.size, 'the RAM file is sparse');
    assert.ok(state.size > 0 && state.size < 64 << 20, `device state ${state.size} bytes`);
    assert.equal(fs.statSync(made.dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.dirname(made.dir)).mode & 0o777, 0o700);
    assert.deepEqual(templates.find(vmConfig('other-id')), made, 'found again, whatever the sandbox id');
    assert.deepEqual(fs.readdirSync(path.dirname(made.dir)), [path.basename(made.dir)], 'no lock or leftover');
  });

  it('a clone runs a container on its hot-plugged virtio-fs share, and an exec', async () => {
    assert.ok(made, 'needs the template');
    const { vm, share } = await clone('clone1', 'clone-one');
    try {
      const cid = 'c1';
      await share.shareRootfs(cid, [], rootfs);
      fs.writeFileSync(path.join(rootfs, 'from-host'), 'written on the host\n');
      await vm.agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', 'cat /from-host; exec sleep 100'] }));
      await vm.agent.startContainer(cid);
      await vm.agent.execOciProcess(cid, 'e1', testProcess({ args: ['echo', 'from-exec'] }));
      assert.deepEqual(await collectOutput(vm.agent, cid, 'e1'), { stdout: 'from-exec\n', stderr: '', code: 0 });
      await vm.agent.signalProcess(cid, '', 9);
      const out = await collectOutput(vm.agent, cid);
      assert.equal(out.stdout, 'written on the host\n', out.stderr);
      await vm.agent.removeContainer(cid);
      await share.unshare(cid);
    } finally {
      await shutDownAndCheck(vm, share, path.join(dir, 'share', 'clone1'));
    }
  });

  it('five clones at once: each its own random bytes, host name and clock', async () => {
    assert.ok(made, 'needs the template');
    const ids = ['clone2', 'clone3', 'clone4', 'clone5', 'clone6'];
    const started = await Promise.allSettled(ids.map((id) => clone(id, `host-${id}`)));
    const clones = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    try {
      for (const s of started) if (s.status === 'rejected') throw s.reason;
      const seen = await Promise.all(
        clones.map(async ({ vm, share }, i) => {
          const cid = `c${i}`;
          await share.shareRootfs(cid, [], rootfs);
          const script =
            'cat /proc/sys/kernel/hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s';
          await vm.agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script] }));
          await vm.agent.startContainer(cid);
          const out = await collectOutput(vm.agent, cid);
          await vm.agent.removeContainer(cid);
          await share.unshare(cid);
          assert.equal(out.code, 0, out.stderr);
          const [hostname, random, clock] = out.stdout.trim().split('\n');
          return { hostname, random, clock: Number(clock) };
        }),
      );
      assert.deepEqual(
        seen.map((s) => s.hostname),
        ids.map((id) => `host-${id}`),
      );
      for (const s of seen) assert.match(s.random ?? '', /^[0-9a-f]{64}$/);
      assert.equal(new Set(seen.map((s) => s.random)).size, ids.length, `random bytes differ: ${JSON.stringify(seen)}`);
      for (const s of seen)
        assert.ok(Math.abs(s.clock - Date.now() / 1000) < 60, `guest clock ${s.clock} is the host's (±60 s)`);
    } finally {
      await Promise.all(
        clones.map(({ vm, share }, i) => shutDownAndCheckQuiet(vm, share, path.join(dir, 'share', ids[i] ?? ''))),
      );
    }
  });

  it('a changed guest kernel invalidates the template; another configuration never shares it', () => {
    assert.ok(made, 'needs the template');
    const before = templateIdentity(vmConfig('a'));
    assert.notEqual(templateIdentity({ ...vmConfig('a'), memoryMiB: 1024 }).key, before.key);
    const st = fs.statSync(kernelCopy);
    fs.utimesSync(kernelCopy, st.atime, new Date(st.mtimeMs + 5000));
    try {
      const after = templateIdentity(vmConfig('a'));
      assert.equal(after.key, before.key, 'same configuration');
      assert.notEqual(after.fingerprint, before.fingerprint, 'another fingerprint');
      assert.equal(templates.find(vmConfig('a')), undefined, 'the template is not used');
    } finally {
      fs.utimesSync(kernelCopy, st.atime, st.mtime);
    }
    assert.deepEqual(templates.find(vmConfig('a')), made, 'the same inputs find it again');
  });
});

/** A clone as core's Sandbox boots it: the reseed and the clock (core/sandbox.ts cloneIdentity), then CreateSandbox. */
async function bootWithShareAndIdentity(
  hv: QemuHypervisor,
  cfg: VmConfig,
  id: string,
  hostname: string,
): Promise<SandboxVm> {
  const vm = await bootWithShare(hv, cfg, id, {
    beforeCreate: async (agent) => {
      await agent.reseedRandomDev!(crypto.randomBytes(64));
      await agent.setGuestDateTime(new Date());
    },
    hostname,
  });
  const t = hv.timings();
  console.log(
    `      ${id}: QEMU running ${Math.round(t.qmpReadyMs ?? 0)} ms after spawn (RAM copy ${Math.round(t.memoryCopyMs ?? 0)} ms, ` +
      `${((t.memoryCopyBytes ?? 0) / 2 ** 20).toFixed(0)} MiB; state load ${Math.round(t.templateLoadMs ?? 0)} ms; ` +
      `virtio-fs plug ${Math.round(t.virtiofsPlugMs ?? 0)} ms); agent ready ${Math.round(vm.timings.agentReadyMs)} ms`,
  );
  return vm;
}

async function shutDownAndCheckQuiet(vm: SandboxVm, share: VirtioFsShare, dir: string): Promise<void> {
  await vm.shutdown({ gracefulMs: 30_000 }).catch(() => undefined);
  await share.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
}

describe('VM templates through containerd and the shim (`enable_template = true`)', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let state: string;
  let config: string;

  before(async () => {
    ctd = await startContainerd({ namespace: 'tpl' });
    await importBusybox(ctd);
    // state_dir on tmpfs (templates refuse a disk), short: the VMs' sockets live below it.
    state = fs.mkdtempSync('/dev/shm/htp-');
    config = path.join(ctd.dir, 'template.toml');
    fs.writeFileSync(
      config,
      `[runtime]\nstate_dir = "${state}"\nenable_failpoints = true\n[hypervisor]\nenable_template = true\n`,
    );
  });

  after(async () => {
    await ctd?.stop();
    assert.deepEqual(processesMentioning(state), [], 'no QEMU or virtiofsd left');
    fs.rmSync(state, { recursive: true, force: true });
  });

  const ctr = (args: string[]) =>
    ctd.ctr(['run', '--runtime', 'io.containerd.hull.v2', '--runtime-config-path', config, ...args]);

  it('the first `ctr run` makes the template and runs from it; the next VM is a clone; nothing of a sandbox is left, the template stays', async () => {
    const first = await ctr(['--rm', BUSYBOX_IMAGE, 'tpl1', 'sh', '-c', 'echo first; cat /proc/sys/kernel/hostname']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.split('\n')[0], 'first');
    const templates = fs.readdirSync(path.join(state, '_templates'));
    assert.equal(templates.length, 1, `one template: ${templates.join(', ')}`);
    assert.match(templates[0]!, /^[0-9a-f]{16}-[0-9a-f]{16}$/);

    const second = await ctr(['-d', BUSYBOX_IMAGE, 'tpl2', 'sleep', '600']);
    assert.equal(second.code, 0, second.stderr);
    try {
      const qemu = processesMentioning(path.join(state, 'tpl', 'tpl2')).filter((l) => l.includes('qemu-system'));
      assert.equal(qemu.length, 1, qemu.join('\n'));
      const argv = fs.readFileSync(`/proc/${qemu[0]!.split(' ')[0]!}/cmdline`, 'latin1').split('\0');
      assert.equal(argv[argv.indexOf('-incoming') + 1], 'defer', 'started from the template');
      assert.ok(argv.includes(`socket,id=fs,path=${path.join(state, 'tpl', 'tpl2', 'vm', 'virtiofsd.sock')}`));
      const ex = await ctd.ctr(['task', 'exec', '--exec-id', 'e1', 'tpl2', 'sh', '-c', 'echo in-exec']);
      assert.equal(ex.stdout.trim(), 'in-exec', ex.stderr);
    } finally {
      await ctd.ctr(['task', 'kill', '-s', 'KILL', 'tpl2']);
      for (let i = 0; i < 100; i++) {
        if ((await ctd.ctr(['task', 'delete', 'tpl2'])).code === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await ctd.ctr(['container', 'delete', 'tpl2']);
    }
    for (let i = 0; i < 100 && fs.existsSync(path.join(state, 'tpl', 'tpl2')); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(fs.existsSync(path.join(state, 'tpl', 'tpl2')), false, "the clone's state folder is removed");
    assert.deepEqual(processesMentioning(path.join(state, 'tpl')), [], 'no QEMU or virtiofsd of a sandbox left');
    assert.deepEqual(fs.readdirSync(path.join(state, '_templates')), templates, 'the template stays');
  });

  for (const step of ['qemu-spawned', 'agent-dialled'] as const) {
    it(`a clone's shim SIGKILLed (${step}): containerd's delete leaves nothing of the sandbox, the template stays`, async () => {
      const before = fs.readdirSync(path.join(state, '_templates'));
      assert.equal(before.length, 1, 'the template of the test above');
      const id = `tplcrash-${step}`;
      const r = await ctr(['-d', '--annotation', `${FAILPOINT_ANNOTATION}=${step}`, BUSYBOX_IMAGE, id, 'sleep', '600']);
      assert.notEqual(r.code, 0, `ctr run must fail when the shim dies after ${step}`);
      await ctd.ctr(['task', 'delete', '-f', id]);
      await ctd.ctr(['container', 'delete', id]);
      const dir = path.join(state, 'tpl', id);
      for (let i = 0; i < 100 && (fs.existsSync(dir) || processesMentioning(dir).length > 0); i++)
        await new Promise((res) => setTimeout(res, 100));
      assert.deepEqual(processesMentioning(dir), [], 'no QEMU or virtiofsd of the clone is left');
      assert.equal(fs.existsSync(dir), false, `${dir} (with the clone's RAM copy) is removed`);
      assert.deepEqual(fs.readdirSync(path.join(state, '_templates')), before, 'the template stays');
    });
  }

  /** bin/hull with the test's configuration. */
  const hull = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [path.join(REPO, 'bin', 'hull'), ...args, '--config', config],
        { timeout: 480_000, maxBuffer: 4 * 1024 * 1024 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });

  it('`hull template make` makes the template before any sandbox; the next `ctr run` clones from it; list, remove', async () => {
    const root = path.join(state, '_templates');
    const cleared = await hull(['template', 'remove', '--all']);
    assert.equal(cleared.code, 0, cleared.stdout + cleared.stderr);
    assert.deepEqual(fs.existsSync(root) ? fs.readdirSync(root) : [], [], 'no template to start with');

    const made = await hull(['template', 'make']);
    assert.equal(made.code, 0, made.stdout + made.stderr);
    console.log(`      ${made.stdout.trim().split('\n').join('; ')}`);
    const dir = /^made: (\S+)$/m.exec(made.stdout)?.[1];
    assert.ok(dir, made.stdout);
    const [key, fingerprint] = path.basename(dir).split('-');
    assert.match(made.stdout, new RegExp(`^key: +${key}$`, 'm'));
    assert.match(made.stdout, new RegExp(`^fingerprint: +${fingerprint}$`, 'm'));
    assert.match(made.stdout, /^took: +\d+\.\d s$/m);
    assert.deepEqual(fs.readdirSync(root), [path.basename(dir)], 'one template, no lock or leftover');
    const memory = fs.statSync(path.join(dir, 'memory'));

    const again = await hull(['template', 'make']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`^up to date: ${dir}$`, 'm'));

    const listed = await hull(['template', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const list = JSON.parse(listed.stdout) as {
      templates: { key: string; current: boolean; memory: { sizeBytes: number; allocatedBytes: number } }[];
      problems: string[];
    };
    assert.deepEqual(list.problems, []);
    assert.deepEqual(
      list.templates.map((t) => [t.key, t.current]),
      [[key, true]],
    );
    assert.equal(list.templates[0]!.memory.sizeBytes, memory.size);
    assert.ok(list.templates[0]!.memory.allocatedBytes < memory.size, 'the RAM file is sparse');

    const r = await ctr(['-d', BUSYBOX_IMAGE, 'tplcli', 'sleep', '600']);
    assert.equal(r.code, 0, r.stderr);
    try {
      const qemu = processesMentioning(path.join(state, 'tpl', 'tplcli')).filter((l) => l.includes('qemu-system'));
      assert.equal(qemu.length, 1, qemu.join('\n'));
      const argv = fs.readFileSync(`/proc/${qemu[0]!.split(' ')[0]!}/cmdline`, 'latin1').split('\0');
      assert.equal(argv[argv.indexOf('-incoming') + 1], 'defer', 'started from the template');
      const ex = await ctd.ctr(['task', 'exec', '--exec-id', 'e1', 'tplcli', 'sh', '-c', 'echo in-exec']);
      assert.equal(ex.stdout.trim(), 'in-exec', ex.stderr);
    } finally {
      await ctd.ctr(['task', 'kill', '-s', 'KILL', 'tplcli']);
      for (let i = 0; i < 100; i++) {
        if ((await ctd.ctr(['task', 'delete', 'tplcli'])).code === 0) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      await ctd.ctr(['container', 'delete', 'tplcli']);
    }
    assert.deepEqual(fs.readdirSync(root), [path.basename(dir)], 'the sandbox made no template of its own');
    assert.equal(fs.statSync(path.join(dir, 'memory')).ino, memory.ino, 'the one hull template make made');

    const removed = await hull(['template', 'remove', '--all']);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, new RegExp(`^removed ${path.basename(dir)}$`, 'm'));
    assert.deepEqual(fs.readdirSync(root), []);
  });
});

/**
 * Issue 15: CRI pods (each has a network namespace and a NIC) start from the template too; the clone's NIC is
 * hot-plugged on the template's spare root port with the pod's MAC (its tap opened from QEMU's command line).
 * containerd 1.x only (hull's own behaviour, the same under either generation).
 */
describe('VM templates for CRI pods: the NIC hot-plugged into the clone (`enable_template = true`, containerd 1.x)', function () {
  this.timeout(900_000);
  let ctd: PrivateContainerd;
  let state: string;
  const { ContainerState } = cri;
  const HTTP_PORT = 8080;

  before(async () => {
    // state_dir on tmpfs (templates refuse a disk), short: a CRI id is 64 hex digits and the VM's sockets below it
    // must fit in 107 bytes.
    state = fs.mkdtempSync('/dev/shm/h');
    ctd = await startContainerd({
      cri: true,
      generation: 1,
      hullConfig: [
        '[runtime]',
        `state_dir = "${state}"`,
        'debug = true',
        '[agent]',
        'boot_timeout = 120',
        '[hypervisor]',
        'enable_template = true',
        '',
      ].join('\n'),
    });
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
    assert.deepEqual(processesMentioning(state), [], 'no QEMU or virtiofsd left');
    fs.rmSync(state, { recursive: true, force: true });
  });

  const sandboxDir = (pod: string): string => path.join(state, 'k8s.io', pod);

  const podConfig = (name: string): cri.IPodSandboxConfig => {
    const logDirectory = path.join(ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: crypto.randomUUID(), namespace: 'hulltpl', attempt: 0 },
      hostname: name,
      logDirectory,
      labels: { test: 'template' },
      linux: {},
    };
  };

  const startContainer = async (
    pod: string,
    config: cri.IPodSandboxConfig,
    name: string,
    command: string[],
  ): Promise<string> => {
    const client = ctd.cri!.client;
    const { containerId } = await client.createContainer({
      podSandboxId: pod,
      sandboxConfig: config,
      config: { metadata: { name }, image: { image: BUSYBOX_IMAGE }, command, logPath: `${name}.log` },
    });
    await client.startContainer(containerId);
    return containerId;
  };

  const execSync = async (id: string, cmd: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> => {
    const r = await ctd.cri!.client.execSync({ containerId: id, cmd, timeout: 60 });
    return { stdout: Buffer.from(r.stdout).toString(), stderr: Buffer.from(r.stderr).toString(), exitCode: r.exitCode };
  };

  /** The pod's QEMU argv: started from the template (`-incoming defer`), its NIC's tap a netdev, no NIC device. */
  const assertClone = (pod: string): void => {
    const qemu = processesMentioning(sandboxDir(pod)).filter((l) => l.includes('qemu-system'));
    assert.equal(qemu.length, 1, qemu.join('\n'));
    const argv = fs.readFileSync(`/proc/${qemu[0]!.split(' ')[0]!}/cmdline`, 'latin1').split('\0');
    assert.equal(argv[argv.indexOf('-incoming') + 1], 'defer', 'started from the template');
    assert.equal(argv[argv.indexOf('-netdev') + 1], 'tap,id=net0,ifname=tap0_hull,script=no,downscript=no');
    assert.ok(!argv.some((w) => w.startsWith('virtio-net-pci')), 'the NIC is hot-plugged, not on the command line');
  };

  /** GET with retries (the server may still be starting). */
  const httpGetRetry = async (url: string, deadlineMs = 30_000): Promise<string> => {
    const until = Date.now() + deadlineMs;
    for (;;) {
      try {
        return await new Promise<string>((resolve, reject) => {
          const req = http.get(url, { timeout: 5_000 }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve(Buffer.concat(chunks).toString()));
            res.on('error', reject);
          });
          req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer`)));
          req.on('error', reject);
        });
      } catch (err) {
        if (Date.now() > until) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  };

  /** Stop and remove a pod; then nothing of it is left: processes, state folder, netns (with its tap), IP. */
  const removeAndCheck = async (pod: string): Promise<void> => {
    const client = ctd.cri!.client;
    const info = await client.sandboxInfo(pod);
    const netns = info?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    assert.ok(netns && fs.existsSync(netns), 'the pod has a network namespace');
    const ip = (await client.podSandboxStatus(pod)).status!.network?.ip ?? '';
    await client.stopPodSandbox(pod);
    await client.removePodSandbox(pod);
    const dir = sandboxDir(pod);
    for (let i = 0; i < 100 && (fs.existsSync(dir) || processesMentioning(dir).length > 0); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(processesMentioning(dir), [], 'no QEMU, virtiofsd or shim of the pod is left');
    assert.equal(fs.existsSync(dir), false, `${dir} (with the clone's RAM copy) is removed`);
    assert.equal(fs.existsSync(netns), false, 'the netns and the tap in it are gone');
    const ipam = ctd.cri!.network.ipamDataDir;
    const held = fs.existsSync(ipam) ? fs.readdirSync(ipam).filter((n) => fs.existsSync(path.join(ipam, n, ip))) : [];
    assert.deepEqual(held, [], `host-local released ${ip}`);
  };

  it('a pod starts from the template (made by its RunPodSandbox) with its NIC hot-plugged: the host reaches its IP, ExecSync and ContainerStats work; nothing is left after', async () => {
    const client = ctd.cri!.client;
    const config = podConfig('tpl-web');
    const pod = await ctd.cri!.runPod(config, 'hull');
    try {
      assertClone(pod);
      const templates = fs.readdirSync(path.join(state, '_templates'));
      assert.equal(templates.length, 1, `one template: ${templates.join(', ')}`);
      const ip = (await client.podSandboxStatus(pod)).status!.network?.ip ?? '';
      assert.ok(ip.startsWith(ctd.cri!.network.subnet.replace(/\.0\/24$/, '.')), `pod IP ${ip}`);
      const web = await startContainer(pod, config, 'web', ['httpd', '-f', '-p', String(HTTP_PORT), '-h', '/www']);
      assert.equal((await client.containerStatus(web)).status!.state, ContainerState.CONTAINER_RUNNING);
      assert.equal(await httpGetRetry(`http://${ip}:${HTTP_PORT}/`), BUSYBOX_WWW_INDEX, 'the host reaches the pod IP');
      const ex = await execSync(web, ['sh', '-c', 'hostname; cat /sys/class/net/eth0/address']);
      assert.equal(ex.exitCode, 0, ex.stderr);
      const [hostname, mac] = ex.stdout.trim().split('\n');
      assert.equal(hostname, 'tpl-web');
      const netns = (await client.sandboxInfo(pod))?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network');
      assert.ok(netns?.path);
      // The guest's eth0 carries the MAC of the pod's veth (CNI's eth0 in the netns; /sys would be the host's).
      // spawns: nsenter, ip
      const link = execFileSync('nsenter', [`--net=${netns.path}`, 'ip', '-j', 'link', 'show', 'dev', 'eth0'], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      const veth = (JSON.parse(link) as { address?: string }[])[0]?.address;
      assert.equal(mac, veth);
      const { stats } = await client.containerStats(web);
      assert.ok(Number(stats!.memory?.workingSetBytes?.value ?? 0) > 0, `working set ${JSON.stringify(stats!.memory)}`);
      assert.ok(Number(stats!.cpu?.usageCoreNanoSeconds?.value ?? 0) > 0, `cpu ${JSON.stringify(stats!.cpu)}`);
    } finally {
      await removeAndCheck(pod);
    }
    assert.equal(fs.readdirSync(path.join(state, '_templates')).length, 1, 'the template stays');
  });

  it('5 pods at once, all clones: each reachable at its own IP, with its own random bytes, host name and clock; nothing is left after', async () => {
    const n = 5;
    const pods = await Promise.allSettled(
      Array.from({ length: n }, async (_, i) => {
        const config = podConfig(`tpl-many-${i}`);
        const pod = await ctd.cri!.runPod(config, 'hull');
        return { pod, config };
      }),
    );
    const started = pods.flatMap((p) => (p.status === 'fulfilled' ? [p.value] : []));
    try {
      for (const p of pods) if (p.status === 'rejected') throw p.reason;
      const seen = await Promise.all(
        started.map(async ({ pod, config }) => {
          assertClone(pod);
          const ip = (await ctd.cri!.client.podSandboxStatus(pod)).status!.network?.ip ?? '';
          const c = await startContainer(pod, config, 'web', ['httpd', '-f', '-p', String(HTTP_PORT), '-h', '/www']);
          const body = await httpGetRetry(`http://${ip}:${HTTP_PORT}/`);
          const r = await execSync(c, [
            'sh',
            '-c',
            'hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s',
          ]);
          assert.equal(r.exitCode, 0, r.stderr);
          const [hostname, random, clock] = r.stdout.trim().split('\n');
          return { ip, body, hostname, random, clock: Number(clock) };
        }),
      );
      assert.deepEqual(
        seen.map((s) => s.hostname),
        started.map((p) => p.config.hostname),
      );
      assert.equal(new Set(seen.map((s) => s.ip)).size, n, 'an IP each');
      for (const s of seen) assert.equal(s.body, BUSYBOX_WWW_INDEX, `the host reaches ${s.ip}`);
      for (const s of seen) assert.match(s.random ?? '', /^[0-9a-f]{64}$/);
      assert.equal(new Set(seen.map((s) => s.random)).size, n, `random bytes differ: ${JSON.stringify(seen)}`);
      for (const s of seen)
        assert.ok(Math.abs(s.clock - Date.now() / 1000) < 60, `guest clock ${s.clock} is the host's (±60 s)`);
    } finally {
      for (const { pod } of started) await removeAndCheck(pod);
    }
    assert.deepEqual(processesMentioning(path.join(state, 'k8s.io')), [], 'no VM process of a pod is left');
    assert.equal(fs.readdirSync(path.join(state, '_templates')).length, 1, 'the template stays');
  });
});
