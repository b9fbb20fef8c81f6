import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MAX_UINT64_NUMBER } from '../../protos/agent';
import { parseKeyValues, parseLimit, readCgroupStats } from '../stats';

describe('agent cgroup v2 stats', () => {
  it('parses key-value files and limits', () => {
    assert.deepEqual(parseKeyValues('usage_usec 12\nuser_usec 7\nbad line x\n'), { usage_usec: 12, user_usec: 7 });
    assert.equal(parseLimit('max\n'), MAX_UINT64_NUMBER);
    assert.equal(parseLimit('1048576\n'), 1048576);
    assert.equal(parseLimit(undefined), 0);
  });

  it("reads a cgroup folder into Kata's CgroupStats (CPU in ns, missing files as 0)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cgroup-'));
    try {
      fs.writeFileSync(path.join(dir, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\n');
      fs.writeFileSync(path.join(dir, 'memory.current'), '4096\n');
      fs.writeFileSync(path.join(dir, 'memory.max'), 'max\n');
      fs.writeFileSync(path.join(dir, 'memory.stat'), 'anon 1024\nfile 2048\n');
      fs.writeFileSync(path.join(dir, 'memory.events'), 'low 0\nmax 2\noom 1\noom_kill 1\n');
      fs.writeFileSync(path.join(dir, 'pids.current'), '3\n');
      const s = readCgroupStats(dir);
      assert.equal(s.cpuStats?.cpuUsage?.totalUsage, 1_500_000);
      assert.equal(s.cpuStats?.cpuUsage?.usageInUsermode, 1_000_000);
      assert.equal(s.cpuStats?.cpuUsage?.usageInKernelmode, 500_000);
      assert.equal(s.memoryStats?.usage?.usage, 4096);
      assert.equal(s.memoryStats?.usage?.maxUsage, 0, 'no memory.peak: 0');
      assert.equal(s.memoryStats?.usage?.limit, MAX_UINT64_NUMBER);
      assert.equal(s.memoryStats?.usage?.failcnt, 2);
      assert.equal(s.memoryStats?.cache, 2048);
      assert.deepEqual(s.memoryStats?.stats, { anon: 1024, file: 2048 });
      assert.equal(s.pidsStats?.current, 3);
      assert.equal(s.pidsStats?.limit, 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
