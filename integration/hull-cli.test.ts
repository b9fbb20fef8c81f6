/**
 * `hull check` and `hull env` on this machine, run as an operator runs them (bin/hull, the real host, the real
 * QEMU and guest kernel for the KVM test boot). The KVM item must name what this host really has: here /dev/kvm is
 * PVM (kvm_pvm), so a warning naming TCG with that reason. A configuration with a missing kernel or a wrong QEMU path
 * makes it exit 1 with the fix; `hull env --json` must parse and agree with the configuration loader.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CONFIG_KEYS, fileValues, loadConfig } from '../core/config';
import { REPO } from './lib/containerd';
import { guestArtifacts } from './lib/guest';

const HULL = path.join(REPO, 'bin', 'hull');
const SHIPPED = path.join(REPO, 'config', 'configuration.toml');

/** What the JSON of `hull check --json` and `hull env --json` holds (cli/checks.ts, cli/env.ts), as read here. */
interface CheckItem {
  name: string;
  status: 'ok' | 'warning' | 'fail';
  detail: string;
  fix?: string;
}
interface EnvReport {
  configuration: { file: string | null; keys: Record<string, Record<string, { value: unknown; from: string }>> };
  artefacts: Record<string, string>;
  versions: Record<string, string>;
  host: Record<string, string | number>;
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function hull(args: string[], configFile: string): Promise<Ran> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [HULL, ...args],
      { env: { ...process.env, HULL_CONFIG: configFile }, timeout: 120_000, maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr, ms: Date.now() - started });
      },
    );
  });
}

/** Processes still running the test boot's QEMU (its kernel command line is hull check's own). */
function testBootLeftovers(kernel: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(kernel) && argv.includes('console=ttyS0 earlyprintk=serial panic=-1')) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

describe('hull check / hull env (bin/hull on this machine)', function () {
  let dir: string;
  const byName = (items: CheckItem[]): Map<string, CheckItem> => new Map(items.map((i) => [i.name, i]));

  before(() => {
    guestArtifacts();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cli-it-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The shipped file (the defaults) with `edits` applied: [key line start, replacement line]. */
  function configWith(name: string, edits: [RegExp, string][] = []): string {
    let text = fs.readFileSync(SHIPPED, 'utf8');
    for (const [re, line] of edits) text = text.replace(re, line);
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  }

  it('check --json: this host passes; the KVM item is a warning naming TCG and the PVM reason found here', async () => {
    const file = configWith('good.toml');
    const r = await hull(['check', '--json'], file);
    const report = JSON.parse(r.stdout) as { items: CheckItem[]; ok: boolean };
    const items = byName(report.items);
    assert.equal(r.code, 0, r.stdout);
    assert.equal(report.ok, true);
    for (const i of report.items) {
      assert.notEqual(i.status, 'fail', `${i.name}: ${i.detail}`);
      if (i.status !== 'ok') assert.ok(i.fix, `${i.name} has a fix`);
    }
    for (const name of ['configuration', 'QEMU', 'virtiofsd', 'guest kernel', 'guest initrd', 'guest image'])
      assert.equal(items.get(name)?.status, 'ok', name);
    assert.match(items.get('QEMU')!.detail, /QEMU emulator version \d/);
    const kvm = items.get('KVM')!;
    if (fs.existsSync('/sys/module/kvm_pvm')) {
      assert.equal(kvm.status, 'warning');
      assert.match(kvm.detail, /kvm_pvm is loaded/);
      assert.match(kvm.detail, /printed no kernel line in \d+ ms \(QEMU killed\)/);
      assert.match(kvm.detail, /chooses TCG: a pod VM boots in about 5 s/);
    } else if (!fs.existsSync('/dev/kvm')) {
      assert.equal(kvm.status, 'warning');
      assert.match(kvm.detail, /\/dev\/kvm does not exist: VMs run under TCG/);
    } else assert.equal(kvm.status, 'ok');
    // The test boot is bounded: its QEMU is gone once hull has answered, and the whole check stays short.
    assert.deepEqual(testBootLeftovers(guestArtifacts().kernel), []);
    assert.ok(r.ms < 60_000, `hull check took ${r.ms} ms`);
    console.log(`      hull check: ${r.ms} ms; ${report.items.map((i) => `${i.name}=${i.status}`).join(', ')}`);
  });

  it('check: a missing kernel fails (exit 1) with the fix', async () => {
    const file = configWith('no-kernel.toml', [[/^# kernel = .*$/m, `kernel = "${dir}/missing/vmlinuz"`]]);
    const r = await hull(['check'], file);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, new RegExp(`^FAIL +guest kernel: ${dir}/missing/vmlinuz does not exist$`, 'm'));
    assert.match(r.stdout, new RegExp(`^ +fix: run \`make guest\`.*set \\[hypervisor\\] kernel in ${file}$`, 'm'));
  });

  it('check --json: a wrong QEMU path fails (exit 1) with the fix', async () => {
    const file = configWith('bad-qemu.toml', [[/^path = .*$/m, 'path = "/usr/bin/qemu-system-nowhere"']]);
    const r = await hull(['check', '--json'], file);
    assert.equal(r.code, 1, r.stdout);
    const qemu = byName((JSON.parse(r.stdout) as { items: CheckItem[] }).items).get('QEMU')!;
    assert.equal(qemu.status, 'fail');
    assert.equal(qemu.detail, '/usr/bin/qemu-system-nowhere: not found');
    assert.match(qemu.fix!, new RegExp(`apt-get install qemu-system-x86, or set \\[hypervisor\\] path in ${file}`));
  });

  it('env --json parses and matches the configuration the loader reads', async () => {
    const file = configWith('env.toml', [[/^default_memory = .*$/m, 'default_memory = 768']]);
    const r = await hull(['env', '--json'], file);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as EnvReport;
    const loaded = loadConfig({ env: { HULL_CONFIG: file }, binDir: path.join(REPO, 'bin') });
    const values = fileValues(loaded.config) as Record<string, Record<string, unknown>>;
    assert.equal(report.configuration.file, file);
    for (const [section, keys] of Object.entries(CONFIG_KEYS)) {
      assert.deepEqual(Object.keys(report.configuration.keys[section]!), keys, section);
      for (const key of keys) {
        const k = report.configuration.keys[section]![key]!;
        assert.deepEqual(k.value, values[section]![key], `${section}.${key}`);
        // The shipped file writes every key but the three guest paths.
        const expected = ['kernel', 'initrd', 'image'].includes(key) ? 'default' : file;
        assert.equal(k.from, expected, `${section}.${key}`);
      }
    }
    assert.equal(report.configuration.keys.hypervisor!.default_memory!.value, 768);
    assert.equal(report.artefacts.kernel, guestArtifacts().kernel);
    assert.equal(report.versions.guestKernel, guestArtifacts().manifest.kernelRelease);
    assert.match(report.versions.qemu!, /^QEMU emulator version /);
    assert.match(report.versions.containerd!, /^containerd /);
    assert.equal(report.host.kernel, os.release());
  });
});
