import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VmConfig } from '../../hypervisor/types';
import { processStartTime } from '../../hypervisor/process';
import type { Logger } from '../../log';
import { NOOP_LOGGER } from '../../log';
import { VmTemplates, templateIdentity, templatesRoot } from '../template';
import { FakeAgent, FakeHypervisor } from './fakes';

/** A fake that "saves" a template: its RAM file (partly zero) when started, its state file when asked. */
class TemplateFake extends FakeHypervisor {
  saves = 0;
  failSave: Error | undefined;
  override async start(signal: AbortSignal): Promise<void> {
    const t = this.config?.template;
    if (t?.role === 'make') {
      const buf = Buffer.alloc(64 * 1024);
      buf.write('guest RAM', 8192);
      fs.writeFileSync(t.memoryFile, buf);
    }
    return super.start(signal);
  }
  async saveTemplate(stateFile: string): Promise<number> {
    this.calls.push('saveTemplate');
    this.saves++;
    if (this.failSave) throw this.failSave;
    fs.writeFileSync(stateFile, 'devices');
    return 7;
  }
}

const warnings: string[] = [];
const logger: Logger = {
  ...NOOP_LOGGER,
  warn: (_o: unknown, msg?: string) => void warnings.push(String(msg)),
  child: () => logger,
} as Logger;

describe('core/template (VM templates, fake hypervisor and agent)', () => {
  let tmp: string;
  let files: Record<string, string>;
  let hvs: TemplateFake[];
  let templates: VmTemplates;
  let vm: (id?: string) => VmConfig;

  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-template-'));
    files = {};
    for (const f of ['vmlinuz', 'initrd.img', 'rootfs.img', 'qemu']) {
      const p = path.join(tmp, f);
      files[f] = p;
      fs.writeFileSync(p, f);
      // Whole seconds: what the test restores with utimes is then exactly what was there.
      fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
    }
    vm = (id = 'sb1') => ({
      id,
      stateDir: path.join(tmp, 'vms', id),
      kernel: files['vmlinuz']!,
      initrd: files['initrd.img']!,
      image: files['rootfs.img']!,
      qemuPath: files['qemu']!,
      vcpus: 1,
      memoryMiB: 256,
      accel: 'tcg',
      agentTransport: 'serial',
      sharedDir: path.join(tmp, 'share', id),
      qemuUser: 'nobody',
    });
    hvs = [];
    warnings.length = 0;
    templates = new VmTemplates({
      root: templatesRoot(path.join(tmp, 'state')),
      hypervisor: () => {
        const hv = new TemplateFake();
        hvs.push(hv);
        return hv;
      },
      bootTimeoutMs: 1000,
      logger,
      dial: async () => new FakeAgent(hvs[hvs.length - 1]),
      onTmpfs: () => true,
    });
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('makes one: a VM with the template role and no per-pod device, saved, stopped; the files in a root-only folder', async () => {
    const made = await templates.make(vm());
    assert.ok(made);
    assert.equal(hvs.length, 1);
    const hv = hvs[0]!;
    assert.deepEqual(hv.calls, ['prepare', 'start', 'saveTemplate', 'stop(force)', 'cleanup']);
    const cfg = hv.config!;
    assert.equal(cfg.template?.role, 'make');
    assert.equal(cfg.sharedDir, undefined, 'no share');
    assert.equal(cfg.network, undefined, 'no NICs');
    assert.equal(cfg.qemuUser, '', 'the template QEMU keeps root (it connects to the save socket)');
    assert.match(cfg.id, /^template-[0-9a-f]{16}$/);
    assert.equal(fs.readFileSync(made.stateFile, 'utf8'), 'devices');
    const ram = fs.readFileSync(made.memoryFile);
    assert.equal(ram.length, 64 * 1024);
    assert.equal(ram.subarray(8192, 8201).toString(), 'guest RAM');
    assert.equal(fs.statSync(path.dirname(made.dir)).mode & 0o777, 0o700);
    assert.equal(fs.statSync(made.dir).mode & 0o777, 0o700);
    const fp = JSON.parse(fs.readFileSync(path.join(made.dir, 'fingerprint.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(fp.fingerprint, templateIdentity(vm()).fingerprint);
    assert.deepEqual(fs.readdirSync(path.dirname(made.dir)), [path.basename(made.dir)], 'lock removed');
    // Any sandbox of the same configuration finds it; acquire gives the clone role without building again.
    assert.deepEqual(templates.find(vm('other')), made);
    assert.deepEqual(await templates.acquire(vm('other')), {
      role: 'clone',
      memoryFile: made.memoryFile,
      stateFile: made.stateFile,
    });
    assert.equal(hvs.length, 1);
  });

  it('a changed kernel, image or QEMU binary invalidates it; the rebuild removes the stale one', async () => {
    const first = await templates.make(vm());
    assert.ok(first);
    for (const f of ['vmlinuz', 'rootfs.img', 'qemu']) {
      const st = fs.statSync(files[f]!);
      fs.utimesSync(files[f]!, st.atime, new Date(st.mtimeMs + 1000));
      assert.equal(templates.find(vm()), undefined, `${f} changed`);
      fs.utimesSync(files[f]!, st.atime, st.mtime);
      assert.deepEqual(templates.find(vm()), first, `${f} as before`);
    }
    fs.writeFileSync(files['rootfs.img']!, 'another image');
    const second = await templates.acquire(vm());
    assert.ok(second);
    assert.notEqual(second.memoryFile, first.memoryFile);
    assert.equal(fs.existsSync(first.dir), false, 'the stale template is removed');
    assert.equal(hvs.length, 2);
  });

  it('refuses a state folder that is not on tmpfs: logged, the sandbox boots normally, nothing made', async () => {
    const onDisk = new VmTemplates({
      root: templatesRoot(path.join(tmp, 'state')),
      hypervisor: () => new TemplateFake(),
      bootTimeoutMs: 1000,
      logger,
      onTmpfs: () => false,
    });
    assert.equal(await onDisk.acquire(vm()), undefined);
    assert.ok(warnings.some((w) => /making the VM template failed/.test(w)));
    assert.deepEqual(fs.readdirSync(templatesRoot(path.join(tmp, 'state'))), []);
  });

  it('is never shared between configurations', () => {
    const a = templateIdentity(vm());
    for (const change of [
      { memoryMiB: 512 },
      { vcpus: 2 },
      { kernelParams: ['x=1'] },
      { maxVcpus: 4 },
      { accel: 'kvm' },
    ])
      assert.notEqual(templateIdentity({ ...vm(), ...change } as VmConfig).key, a.key, JSON.stringify(change));
    // What is per sandbox does not count.
    assert.deepEqual(templateIdentity({ ...vm('x'), sharedDir: '/elsewhere', onSpawn: () => undefined }), a);
  });

  it('a lock held by a live builder: nothing is built, the sandbox boots normally', async () => {
    const key = templateIdentity(vm()).key;
    const root = templatesRoot(path.join(tmp, 'state'));
    fs.mkdirSync(path.join(root, `${key}.lock`), { recursive: true });
    fs.writeFileSync(path.join(root, `${key}.lock`, 'owner'), `${process.pid} ${processStartTime(process.pid)}`);
    assert.equal(await templates.acquire(vm()), undefined);
    assert.equal(hvs.length, 0);
    assert.ok(fs.existsSync(path.join(root, `${key}.lock`)), "the other builder's lock is left alone");
  });

  it('a lock whose builder is gone is taken over and the template built', async () => {
    const key = templateIdentity(vm()).key;
    const root = templatesRoot(path.join(tmp, 'state'));
    fs.mkdirSync(path.join(root, `${key}.lock`), { recursive: true });
    // This process's pid with another start time: a builder that died and whose pid was reused.
    fs.writeFileSync(path.join(root, `${key}.lock`, 'owner'), `${process.pid} 1`);
    fs.writeFileSync(path.join(root, `${key}.lock`, 'memory'), 'half-built');
    const t = await templates.acquire(vm());
    assert.ok(t);
    assert.equal(hvs.length, 1);
    assert.ok(
      warnings.some((w) => /taking over/.test(w)),
      warnings.join('; '),
    );
  });

  it('remove: the templates of a key (all, or all but one fingerprint) under its lock; never while a build holds it', async () => {
    const made = await templates.make(vm());
    assert.ok(made);
    const { key, fingerprint } = templateIdentity(vm());
    const root = templatesRoot(path.join(tmp, 'state'));
    fs.mkdirSync(path.join(root, `${key}-aaaaaaaaaaaaaaaa`));
    fs.mkdirSync(path.join(root, `${key}-bbbbbbbbbbbbbbbb.new`));
    fs.mkdirSync(path.join(root, 'cccccccccccccccc-aaaaaaaaaaaaaaaa'));
    assert.deepEqual(templates.remove(key, fingerprint), [`${key}-aaaaaaaaaaaaaaaa`, `${key}-bbbbbbbbbbbbbbbb.new`]);
    assert.deepEqual(
      fs.readdirSync(root).sort(),
      ['cccccccccccccccc-aaaaaaaaaaaaaaaa', path.basename(made.dir)].sort(),
    );
    fs.mkdirSync(path.join(root, `${key}.lock`));
    fs.writeFileSync(path.join(root, `${key}.lock`, 'owner'), `${process.pid} ${processStartTime(process.pid)}`);
    assert.equal(templates.remove(key), undefined, 'a build holds the lock');
    assert.ok(fs.existsSync(made.dir));
    fs.rmSync(path.join(root, `${key}.lock`), { recursive: true });
    assert.deepEqual(templates.remove(key), [path.basename(made.dir)]);
    assert.deepEqual(fs.readdirSync(root), ['cccccccccccccccc-aaaaaaaaaaaaaaaa'], 'no lock left, other keys kept');
    assert.throws(() => templates.remove('../x'), /not a template key/);
  });

  it('a failed build: logged, the sandbox boots normally, no lock or half-built files left', async () => {
    const orig = templates;
    templates = new VmTemplates({
      root: templatesRoot(path.join(tmp, 'state')),
      hypervisor: () => {
        const hv = new TemplateFake();
        hv.failSave = new Error('migration failed');
        hvs.push(hv);
        return hv;
      },
      bootTimeoutMs: 1000,
      logger,
      dial: async () => new FakeAgent(hvs[hvs.length - 1]),
      onTmpfs: () => true,
    });
    assert.equal(await templates.acquire(vm()), undefined);
    assert.ok(warnings.some((w) => /making the VM template failed/.test(w)));
    assert.deepEqual(hvs[0]!.calls, ['prepare', 'start', 'saveTemplate', 'stop(force)', 'cleanup']);
    assert.deepEqual(fs.readdirSync(templatesRoot(path.join(tmp, 'state'))), []);
    templates = orig;
  });
});
