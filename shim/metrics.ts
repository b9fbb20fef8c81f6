/**
 * A container's stats from the guest as containerd's `Metrics` (StatsResponse.stats): the cgroup v2 message on a
 * cgroup v2 host, v1 on a v1 host, because `ctr task metrics` and the CRI plugin decode the one matching the host.
 */
import fs from 'node:fs';
import type { ContainerStats } from '../agent-client';
import { cgroups1, cgroups2, MAX_UINT64_NUMBER, packAny, TypeUrl, type PackedAny } from '../protos/containerd';

let hostIsV2: boolean | undefined;
export function hostCgroupV2(): boolean {
  return (hostIsV2 ??= fs.existsSync('/sys/fs/cgroup/cgroup.controllers'));
}

const camel = (k: string): string => k.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
/** memory.stat keys that cgroups v2 MemoryStat carries. */
const V2_MEMORY_STAT = [
  'anon',
  'file',
  'kernel_stack',
  'slab',
  'sock',
  'shmem',
  'file_mapped',
  'file_dirty',
  'file_writeback',
  'anon_thp',
  'inactive_anon',
  'active_anon',
  'inactive_file',
  'active_file',
  'unevictable',
  'slab_reclaimable',
  'slab_unreclaimable',
  'pgfault',
  'pgmajfault',
  'workingset_refault',
  'workingset_activate',
  'workingset_nodereclaim',
  'pgrefill',
  'pgscan',
  'pgsteal',
  'pgactivate',
  'pgdeactivate',
  'pglazyfree',
  'pglazyfreed',
  'thp_fault_alloc',
  'thp_collapse_alloc',
] as const;

export function metricsAny(s: ContainerStats, v2 = hostCgroupV2()): PackedAny {
  if (v2) {
    const memory: Record<string, number> = {};
    for (const k of V2_MEMORY_STAT) {
      const v = s.memoryStat[k];
      if (v !== undefined) memory[camel(k)] = v;
    }
    return packAny(TypeUrl.CgroupsV2Metrics, cgroups2.Metrics, {
      pids: { current: s.pids, limit: s.pidsLimit ?? 0 },
      cpu: {
        usageUsec: Math.floor(s.cpuUsageNs / 1000),
        userUsec: Math.floor(s.cpuUserNs / 1000),
        systemUsec: Math.floor(s.cpuKernelNs / 1000),
      },
      memory: { ...memory, usage: s.memoryUsageBytes, usageLimit: s.memoryLimitBytes ?? MAX_UINT64_NUMBER },
    });
  }
  return packAny(TypeUrl.CgroupsV1Metrics, cgroups1.Metrics, {
    pids: { current: s.pids, limit: s.pidsLimit ?? 0 },
    cpu: { usage: { total: s.cpuUsageNs, user: s.cpuUserNs, kernel: s.cpuKernelNs } },
    memory: {
      cache: s.memoryStat.file ?? 0,
      rss: s.memoryStat.anon ?? 0,
      usage: { usage: s.memoryUsageBytes, max: s.memoryMaxUsageBytes, limit: s.memoryLimitBytes ?? MAX_UINT64_NUMBER },
    },
  });
}
