/**
 * A container's resource use from its cgroup v2 files in the guest, in the shape of Kata's CgroupStats: CPU times in
 * nanoseconds (cpu.stat gives microseconds), memory from memory.current/peak/max/stat/events, pids from
 * pids.current/max. A file the kernel does not offer (a controller not enabled) reads as 0. "max" (no limit) is
 * reported as the largest uint64 a number can carry.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MAX_UINT64_NUMBER, type grpc } from '../protos/agent';

export const CGROUP_ROOT = '/sys/fs/cgroup';

function read(dir: string, file: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, file), 'utf8');
  } catch {
    return undefined;
  }
}

/** "key value" lines as numbers. */
export function parseKeyValues(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (text ?? '').split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out[key] = Number(value);
  }
  return out;
}

/** A single number, "max" as no limit, anything missing or unreadable as 0. */
export function parseLimit(text: string | undefined): number {
  const t = (text ?? '').trim();
  if (t === 'max') return MAX_UINT64_NUMBER;
  return /^\d+$/.test(t) ? Number(t) : 0;
}

export function readCgroupStats(dir: string): grpc.ICgroupStats {
  const cpu = parseKeyValues(read(dir, 'cpu.stat'));
  const memStat = parseKeyValues(read(dir, 'memory.stat'));
  const memEvents = parseKeyValues(read(dir, 'memory.events'));
  return {
    cpuStats: {
      cpuUsage: {
        totalUsage: (cpu.usage_usec ?? 0) * 1000,
        usageInUsermode: (cpu.user_usec ?? 0) * 1000,
        usageInKernelmode: (cpu.system_usec ?? 0) * 1000,
        percpuUsage: [],
      },
      throttlingData: {
        periods: cpu.nr_periods ?? 0,
        throttledPeriods: cpu.nr_throttled ?? 0,
        throttledTime: (cpu.throttled_usec ?? 0) * 1000,
      },
    },
    memoryStats: {
      cache: memStat.file ?? 0,
      usage: {
        usage: parseLimit(read(dir, 'memory.current')),
        maxUsage: parseLimit(read(dir, 'memory.peak')),
        failcnt: memEvents.max ?? 0,
        limit: parseLimit(read(dir, 'memory.max')),
      },
      useHierarchy: true,
      stats: memStat,
    },
    pidsStats: { current: parseLimit(read(dir, 'pids.current')), limit: parseLimit(read(dir, 'pids.max')) },
  };
}
