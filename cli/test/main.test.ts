import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CONFIG_KEYS } from '../../core/config';
import type { CheckItem } from '../checks';
import type { EnvReport } from '../env';
import { run } from '../main';
import { healthyHost, removeHost, type FakeHost } from './fake-host';

describe('cli/main (hull check, hull env)', () => {
  let h: FakeHost;
  let file: string;
  beforeEach(() => {
    h = healthyHost();
    file = path.join(h.root, 'configuration.toml');
    fs.writeFileSync(
      file,
      `[hypervisor]\nkernel = "${h.guestDir}/vmlinuz"\ninitrd = "${h.guestDir}/initrd.img"\n` +
        `image = "${h.guestDir}/rootfs.img"\ndefault_memory = 1024\n[agent]\nboot_timeout = 90\n`,
    );
  });
  afterEach(() => removeHost(h));

  async function hull(argv: string[], env: NodeJS.ProcessEnv = { HULL_CONFIG: file }): Promise<[number, string]> {
    let text = '';
    const code = await run(argv, {
      self: '/usr/local/bin/hull',
      host: h,
      env,
      defaultPath: path.join(h.root, 'absent.toml'),
      out: (t) => (text += t),
    });
    return [code, text];
  }

  it('env --json: every key of CONFIG_KEYS with its value and where it came from', async () => {
    const [code, text] = await hull(['env', '--json']);
    assert.equal(code, 0);
    const r = JSON.parse(text) as EnvReport;
    assert.equal(r.configuration.file, file);
    assert.equal(r.configuration.chosenBy, 'HULL_CONFIG');
    for (const [section, keys] of Object.entries(CONFIG_KEYS))
      assert.deepEqual(Object.keys(r.configuration.keys[section]!), keys, section);
    assert.deepEqual(r.configuration.keys.hypervisor!.default_memory, { value: 1024, from: file });
    assert.deepEqual(r.configuration.keys.agent!.boot_timeout, { value: 90, from: file });
    assert.deepEqual(r.configuration.keys.agent!.health_check_timeout, { value: 60, from: 'default' });
    assert.deepEqual(r.configuration.keys.hypervisor!.path, { value: '/usr/bin/qemu-system-x86_64', from: 'default' });
    assert.equal(r.artefacts.kernel, `${h.guestDir}/vmlinuz`);
    assert.equal(r.artefacts.shim, '/usr/local/bin/containerd-shim-hull-v2');
    assert.equal(r.versions.guestKernel, '6.1.0-57-cloud-amd64');
    assert.match(r.versions.qemu!, /^QEMU emulator version 7\.2/);
    assert.match(String(r.host.accel), /^kvm: /);
  });

  it('env with no file: every key from the default, guest artefacts relative to the binary', async () => {
    const [code, text] = await hull(['env', '--json'], {});
    assert.equal(code, 0);
    const r = JSON.parse(text) as EnvReport;
    assert.equal(r.configuration.file, null);
    assert.ok(Object.values(r.configuration.keys).every((s) => Object.values(s).every((k) => k.from === 'default')));
    assert.equal(r.artefacts.kernel, '/usr/local/share/hull/guest/vmlinuz');
  });

  it('check: exit 0 when nothing fails; --config names the file', async () => {
    const [code, text] = await hull(['check', '--json', '--config', file], {});
    const r = JSON.parse(text) as { items: CheckItem[]; ok: boolean };
    assert.equal(code, 0, text);
    assert.equal(r.ok, true);
    assert.deepEqual(r.items[0], { name: 'configuration', status: 'ok', detail: `${file} (--config)` });
  });

  it('check: exit 1 with the fix when the kernel is missing; the text output names it', async () => {
    fs.rmSync(path.join(h.guestDir, 'vmlinuz'));
    const [code, text] = await hull(['check']);
    assert.equal(code, 1);
    assert.match(text, /^FAIL {5}guest kernel: .*vmlinuz does not exist$/m);
    assert.match(text, /^ {9}fix: run `make guest`/m);
    assert.match(text, /1 fail\(s\)$/);
  });

  it('check: a broken configuration file is a fail naming the key (the rest checked with the defaults)', async () => {
    fs.writeFileSync(file, '[hypervisor]\ndefault_vcpus = 0\n');
    const [code, text] = await hull(['check', '--json']);
    assert.equal(code, 1);
    const first = (JSON.parse(text) as { items: CheckItem[] }).items[0]!;
    assert.equal(first.status, 'fail');
    assert.match(first.detail, /hypervisor\.default_vcpus/);
    const [envCode, envText] = await hull(['env']);
    assert.equal(envCode, 1);
    assert.match(envText, /default_vcpus/);
  });

  it('usage errors exit 2', async () => {
    assert.equal((await hull(['frobnicate']))[0], 2);
    assert.equal((await hull(['check', '--verbose']))[0], 2);
    assert.equal((await hull([]))[0], 2);
  });
});
