/** OnlineCPUMem on a fake sysfs tree: what is onlined, the bounded wait for late CPUs, the request's checks. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import { onlineCpuMem } from '../hotplug';

describe('agent/hotplug (OnlineCPUMem)', () => {
  let root: string;
  const cpuDir = (n: number): string => path.join(root, 'devices/system/cpu', `cpu${n}`);
  const memDir = (n: number): string => path.join(root, 'devices/system/memory', `memory${n}`);
  const addCpu = (n: number, online: '0' | '1' | undefined): void => {
    fs.mkdirSync(cpuDir(n), { recursive: true });
    if (online !== undefined) fs.writeFileSync(path.join(cpuDir(n), 'online'), online);
  };
  const addMem = (n: number, state: string): void => {
    fs.mkdirSync(memDir(n), { recursive: true });
    fs.writeFileSync(path.join(memDir(n), 'state'), state);
  };
  const cpuOnline = (n: number): string => fs.readFileSync(path.join(cpuDir(n), 'online'), 'utf8');
  const memState = (n: number): string => fs.readFileSync(path.join(memDir(n), 'state'), 'utf8');
  const code = (c: Code) => (err: unknown) => err instanceof StatusError && err.code === c;

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-sysfs-'));
    addCpu(0, undefined); // the boot CPU has no `online`
    addCpu(1, '1');
    fs.mkdirSync(path.join(root, 'devices/system/cpu/cpufreq'), { recursive: true }); // not a CPU
    fs.writeFileSync(path.join(root, 'devices/system/cpu/online'), '0-1');
    addMem(0, 'online');
    fs.writeFileSync(path.join(root, 'devices/system/memory/block_size_bytes'), '8000000');
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('onlines every offline CPU and memory block, and nothing else', async () => {
    addCpu(2, '0');
    addCpu(10, '0');
    addMem(8, 'offline');
    addMem(9, 'online');
    const r = await onlineCpuMem({ nbCpus: 2, wait: true, cpuOnly: false }, { sysRoot: root });
    assert.deepEqual(r, { cpus: 2, memoryBlocks: 1 });
    assert.deepEqual([cpuOnline(1), cpuOnline(2), cpuOnline(10)], ['1', '1', '1']);
    assert.deepEqual([memState(0), memState(8), memState(9)], ['online', 'online', 'online']);
    assert.equal(fs.existsSync(path.join(cpuDir(0), 'online')), false);
  });

  it('cpuOnly leaves memory alone', async () => {
    addCpu(2, '0');
    addMem(8, 'offline');
    assert.deepEqual(await onlineCpuMem({ nbCpus: 1, cpuOnly: true }, { sysRoot: root }), { cpus: 1, memoryBlocks: 0 });
    assert.equal(memState(8), 'offline');
  });

  it('with wait, polls until a late CPU appears; without, answers at once', async () => {
    const late = setTimeout(() => addCpu(3, '0'), 150);
    try {
      assert.deepEqual(await onlineCpuMem({ nbCpus: 1, cpuOnly: true }, { sysRoot: root }), {
        cpus: 0,
        memoryBlocks: 0,
      });
      const r = await onlineCpuMem({ nbCpus: 1, cpuOnly: true, wait: true }, { sysRoot: root, pollMs: 10 });
      assert.deepEqual(r, { cpus: 1, memoryBlocks: 0 });
      assert.equal(cpuOnline(3), '1');
    } finally {
      clearTimeout(late);
    }
  });

  it('the wait is bounded: DEADLINE_EXCEEDED naming the count (the memory is still onlined)', async () => {
    addCpu(2, '0');
    addMem(8, 'offline');
    const t0 = Date.now();
    await assert.rejects(
      onlineCpuMem({ nbCpus: 3, wait: true }, { sysRoot: root, waitMs: 200, pollMs: 20 }),
      (err: unknown) => code(Code.DEADLINE_EXCEEDED)(err) && /onlined 1 of 3/.test((err as Error).message),
    );
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(memState(8), 'online');
  });

  it('a CPU that refuses to come online is an INTERNAL error naming it (no waiting on it)', async () => {
    addCpu(4, '0');
    addMem(8, 'offline');
    const writeFile = (file: string, data: string): void => {
      if (file.includes('cpu4')) throw new Error('EBUSY: device or resource busy');
      fs.writeFileSync(file, data);
    };
    const t0 = Date.now();
    await assert.rejects(
      onlineCpuMem({ nbCpus: 1, wait: true }, { sysRoot: root, waitMs: 5000, writeFile }),
      (err: unknown) => code(Code.INTERNAL)(err) && /cpu4: EBUSY/.test((err as Error).message),
    );
    assert.ok(Date.now() - t0 < 2000, 'no waiting on a CPU that failed');
    assert.equal(memState(8), 'online', 'the memory is onlined still');
  });

  it('a memory block the guest kernel onlines while the agent writes (EINVAL) counts as onlined, not a failure', async () => {
    addCpu(4, '0');
    addMem(8, 'offline');
    const writeFile = (file: string, data: string): void => {
      if (file.includes('memory8')) {
        fs.writeFileSync(file, 'online'); // the kernel (memhp_default_state=online) got there first
        throw new Error('EINVAL: invalid argument, write');
      }
      fs.writeFileSync(file, data);
    };
    const r = await onlineCpuMem({ nbCpus: 1, wait: true }, { sysRoot: root, waitMs: 5000, writeFile });
    assert.equal(memState(8), 'online');
    assert.equal(r.memoryBlocks, 1);
  });

  it('checks the host request: nb_cpus an integer in [0, 1024]', async () => {
    for (const nbCpus of [-1, 1.5, 1025, Number.NaN])
      await assert.rejects(onlineCpuMem({ nbCpus }, { sysRoot: root }), code(Code.INVALID_ARGUMENT));
    assert.deepEqual(await onlineCpuMem({}, { sysRoot: root }), { cpus: 0, memoryBlocks: 0 });
  });

  it('a kernel without memory hot-plug (no memory folder) onlines CPUs only', async () => {
    fs.rmSync(path.join(root, 'devices/system/memory'), { recursive: true });
    addCpu(2, '0');
    assert.deepEqual(await onlineCpuMem({ nbCpus: 1 }, { sysRoot: root }), { cpus: 1, memoryBlocks: 0 });
  });
});
