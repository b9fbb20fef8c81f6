/**
 * `hull list` over a pretend state_dir: records read as untrusted (a symlink is never followed, a record naming a
 * path outside its folder or another sandbox is refused, an oversized one too), pids alive only with their recorded
 * start time, the text table.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SandboxRecord } from '../../core/store';
import { processStartTime } from '../../hypervisor/process';
import { MAX_ENTRIES, formatList, listSandboxes } from '../list';

describe('cli/list (hull list)', () => {
  let tmp: string;
  let stateDir: string;
  const myStart = processStartTime(process.pid)!;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-list-'));
    stateDir = path.join(tmp, 'state');
    fs.mkdirSync(stateDir);
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function write(ns: string, id: string, extra: Partial<SandboxRecord> = {}, text?: string): string {
    const dir = path.join(stateDir, ns, id);
    fs.mkdirSync(dir, { recursive: true });
    const r: SandboxRecord = {
      version: 1,
      namespace: ns,
      sandboxId: id,
      shimPid: process.pid,
      shimStartTime: myStart,
      vmStateDir: path.join(dir, 'vm'),
      shareRoot: dir,
      shareId: 'share',
      containers: { [id]: { bundle: '/b1' }, c2: { bundle: '/b2' } },
      helpers: [{ name: 'qemu', pid: process.pid, startTime: myStart }],
      qemuPid: process.pid,
      vm: { accel: 'tcg', vcpus: 2, memoryMiB: 2048 },
      ...extra,
    };
    fs.writeFileSync(path.join(dir, 'state.json'), text ?? JSON.stringify(r));
    return dir;
  }

  it('lists each sandbox from its record: pids alive by start time, accel, size, containers', () => {
    write('default', 'sb1');
    write('k8s.io', 'sb2', {
      shimStartTime: '1',
      helpers: [{ name: 'qemu', pid: process.pid, startTime: '1' }],
      vm: undefined,
    });
    const list = listSandboxes(stateDir);
    assert.deepEqual(list.problems, []);
    assert.deepEqual(
      list.sandboxes.map((s) => [s.namespace, s.id, s.shim.alive, s.qemu?.alive, s.accel, s.vcpus, s.memoryMiB]),
      [
        ['default', 'sb1', true, true, 'tcg', 2, 2048],
        ['k8s.io', 'sb2', false, false, null, null, null],
      ],
    );
    assert.deepEqual(list.sandboxes[0]!.containers, ['c2', 'sb1']);
    const text = formatList(list);
    assert.match(text, /^SANDBOX\s+NAMESPACE\s+SHIM\s+QEMU\s+ACCEL\s+VCPUS\s+MEMORY\s+CONSOLE\s+CONTAINERS$/m);
    assert.match(
      text,
      new RegExp(`^sb1\\s+default\\s+${process.pid}\\s+${process.pid}\\s+tcg\\s+2\\s+2048 MiB\\s+off\\s+c2,sb1$`, 'm'),
    );
    assert.match(
      text,
      new RegExp(`^sb2\\s+k8s.io\\s+${process.pid} \\(dead\\)\\s+${process.pid} \\(dead\\)\\s+-\\s+-\\s+-`, 'm'),
    );
  });

  it('a pid that is gone is dead; the console is on only with the flag and its socket', () => {
    const dir = write('default', 'sb1', { shimPid: 0x3ffffff0, debugConsole: true });
    assert.equal(listSandboxes(stateDir).sandboxes[0]!.shim.alive, false);
    assert.equal(listSandboxes(stateDir).sandboxes[0]!.debugConsole, false, 'no socket');
    fs.writeFileSync(path.join(dir, 'debug.sock'), ''); // not a socket either
    assert.equal(listSandboxes(stateDir).sandboxes[0]!.debugConsole, false);
    const start = (pid: number): string | undefined => (pid === 0x3ffffff0 ? '7' : undefined);
    write('default', 'sb1', { shimPid: 0x3ffffff0, shimStartTime: '7' });
    assert.equal(listSandboxes(stateDir, { startTime: start }).sandboxes[0]!.shim.alive, true);
  });

  it('never follows a symlink out of state_dir, and names what it refused', () => {
    const outside = path.join(tmp, 'outside');
    fs.mkdirSync(path.join(outside, 'sbx'), { recursive: true });
    fs.symlinkSync(outside, path.join(stateDir, 'evil'));
    write('default', 'sb1');
    fs.mkdirSync(path.join(stateDir, 'default', 'linked'));
    const elsewhere = path.join(tmp, 'elsewhere.json');
    fs.writeFileSync(elsewhere, '{}');
    fs.symlinkSync(elsewhere, path.join(stateDir, 'default', 'linked', 'state.json'));
    fs.mkdirSync(path.join(stateDir, 'bad name'));
    const list = listSandboxes(stateDir);
    assert.deepEqual(
      list.sandboxes.map((s) => s.id),
      ['sb1'],
    );
    assert.ok(
      list.problems.some((p) => p.includes('evil') && /symlink, not followed/.test(p)),
      list.problems.join('\n'),
    );
    assert.ok(
      list.problems.some((p) => p.includes('linked') && /not a regular file/.test(p)),
      list.problems.join('\n'),
    );
    assert.ok(list.problems.some((p) => p.includes('bad name') && /not a namespace or sandbox id/.test(p)));
  });

  it('refuses records that are malformed, too big, name another sandbox or a path outside their folder', () => {
    write('default', 'notjson', {}, '{');
    write('default', 'big', {}, `{"pad":"${'x'.repeat(1 << 20)}"}`);
    write('default', 'other', { sandboxId: 'someone' });
    write('default', 'escape', { vmStateDir: '/etc' });
    write('default', 'negative', { shimPid: -1 });
    write('default', 'fine');
    const list = listSandboxes(stateDir);
    assert.deepEqual(
      list.sandboxes.map((s) => s.id),
      ['fine'],
    );
    assert.equal(list.problems.length, 5, list.problems.join('\n'));
    for (const id of ['notjson', 'big', 'other', 'escape', 'negative'])
      assert.ok(
        list.problems.some((p) => p.includes(`/default/${id}/state.json`)),
        id,
      );
    assert.match(formatList(list), /^warning: .*\/default\/escape\/state.json: .*outside the sandbox folder/m);
  });

  it('a missing state_dir is an empty list; a folder without a record is skipped', () => {
    assert.deepEqual(listSandboxes(path.join(tmp, 'absent')), {
      stateDir: path.join(tmp, 'absent'),
      sandboxes: [],
      problems: [],
    });
    fs.mkdirSync(path.join(stateDir, 'default', 'making'), { recursive: true });
    const list = listSandboxes(stateDir);
    assert.deepEqual(list.sandboxes, []);
    assert.deepEqual(list.problems, []);
    assert.match(formatList(list), /no sandbox in/);
  });

  it(`looks at no more than ${MAX_ENTRIES} folders`, () => {
    const ns = path.join(stateDir, 'default');
    fs.mkdirSync(ns);
    for (let i = 0; i < MAX_ENTRIES + 10; i++) fs.mkdirSync(path.join(ns, `s${i}`));
    const list = listSandboxes(stateDir);
    assert.ok(list.problems.some((p) => /more than 4096 folders/.test(p)));
  });
});
