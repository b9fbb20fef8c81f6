import assert from 'node:assert/strict';
import type { ContainerStats } from '../../agent-client';
import { cgroups1, cgroups2, TypeUrl, unpackAny } from '../../protos/containerd';
import { hostCgroupV2, metricsAny } from '../metrics';

const STATS: ContainerStats = {
  cpuUsageNs: 5_000_123_456,
  cpuUserNs: 3_000_000_999,
  cpuKernelNs: 2_000_000_001,
  memoryUsageBytes: 50 << 20,
  memoryMaxUsageBytes: 60 << 20,
  memoryLimitBytes: 256 << 20,
  memoryStat: {
    anon: 10 << 20,
    file: 30 << 20,
    inactive_file: 20 << 20,
    slab_reclaimable: 4096,
    pgfault: 1234,
    pgmajfault: 5,
    not_a_field: 7,
  },
  pids: 3,
  pidsLimit: 100,
};

describe('shim metricsAny (agent stats as containerd Metrics)', () => {
  it('cgroup v2: io.containerd.cgroups.v2.Metrics with usec CPU times and memory.stat fields', () => {
    const any = metricsAny(STATS, true);
    assert.equal(any.type_url, 'io.containerd.cgroups.v2.Metrics', 'bare name, no type.googleapis.com/ prefix');
    const m = unpackAny(any, TypeUrl.CgroupsV2Metrics, cgroups2.Metrics);
    assert.equal(m.pids?.current, 3);
    assert.equal(m.pids?.limit, 100);
    assert.equal(m.cpu?.usageUsec, 5_000_123);
    assert.equal(m.cpu?.userUsec, 3_000_000);
    assert.equal(m.cpu?.systemUsec, 2_000_000);
    assert.equal(m.memory?.usage, 50 << 20);
    assert.equal(m.memory?.usageLimit, 256 << 20);
    assert.equal(m.memory?.anon, 10 << 20);
    assert.equal(m.memory?.file, 30 << 20);
    assert.equal(m.memory?.inactiveFile, 20 << 20, 'CRI working set = usage - inactive_file');
    assert.equal(m.memory?.slabReclaimable, 4096);
    assert.equal(m.memory?.pgfault, 1234);
    assert.equal(m.memory?.pgmajfault, 5);
  });

  it('cgroup v1: io.containerd.cgroups.v1.Metrics with ns CPU times and the memory usage entry', () => {
    const any = metricsAny(STATS, false);
    assert.equal(any.type_url, 'io.containerd.cgroups.v1.Metrics');
    const m = unpackAny(any, TypeUrl.CgroupsV1Metrics, cgroups1.Metrics);
    assert.equal(m.pids?.current, 3);
    assert.equal(m.pids?.limit, 100);
    assert.equal(m.cpu?.usage?.total, 5_000_123_456);
    assert.equal(m.cpu?.usage?.user, 3_000_000_999);
    assert.equal(m.cpu?.usage?.kernel, 2_000_000_001);
    assert.equal(m.memory?.usage?.usage, 50 << 20);
    assert.equal(m.memory?.usage?.max, 60 << 20);
    assert.equal(m.memory?.usage?.limit, 256 << 20);
    assert.equal(m.memory?.cache, 30 << 20);
    assert.equal(m.memory?.rss, 10 << 20);
  });

  it('no memory or pids limit: memory reads as unlimited (a huge value), pids limit 0', () => {
    const open = { ...STATS, memoryLimitBytes: undefined, pidsLimit: undefined, memoryStat: {} };
    const v2 = unpackAny(metricsAny(open, true), TypeUrl.CgroupsV2Metrics, cgroups2.Metrics);
    assert.ok((v2.memory?.usageLimit ?? 0) >= Number.MAX_SAFE_INTEGER);
    assert.equal(v2.pids?.limit ?? 0, 0);
    assert.equal(v2.memory?.anon ?? 0, 0);
    const v1 = unpackAny(metricsAny(open, false), TypeUrl.CgroupsV1Metrics, cgroups1.Metrics);
    assert.ok((v1.memory?.usage?.limit ?? 0) >= Number.MAX_SAFE_INTEGER);
    assert.equal(v1.memory?.cache ?? 0, 0);
  });

  it('defaults to the host cgroup version', () => {
    assert.equal(metricsAny(STATS).type_url, hostCgroupV2() ? TypeUrl.CgroupsV2Metrics : TypeUrl.CgroupsV1Metrics);
  });
});
