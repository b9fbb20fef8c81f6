/**
 * A container's Linux resources (CreateContainer's spec, UpdateContainer) checked and put in the OCI runtime-spec
 * shape crun reads, in config.json and in `crun update --resources`. One conversion for both, so a limit set at
 * creation and the same limit set by an update end up as the same cgroup v2 values (crun maps CPU shares to
 * cpu.weight and memory+swap to memory.swap.max).
 *
 * Applied: memory (limit, reservation, swap), CPU (shares, quota, period, cpus, mems) and pids. Ignored, as Kata's
 * runtime clears them or cgroup v2 has no such knob: block I/O, huge pages, network classes, kernel memory,
 * swappiness, the OOM-killer switch and real-time CPU time. Device rules are kept at creation by oci.ts
 * (`deviceRules`) and not changed by an update (crun's update would need the whole list again).
 * In the protocol 0 means "not set"; -1 means "no limit" where the OCI spec allows it.
 */
import fs from 'node:fs';
import type { grpc } from '../protos/agent';
import { invalid } from './validate';

/** Smaller limits kill the container's first process before it runs. */
export const MIN_MEMORY_BYTES = 1 << 20;
/** The range of cgroup v1 cpu.shares, which the OCI spec uses. */
const CPU_SHARES = { min: 2, max: 262_144 };
/** CFS bandwidth limits of the kernel, in microseconds. */
const CPU_PERIOD_US = { min: 1_000, max: 1_000_000 };
const CPU_QUOTA_MIN_US = 1_000;
const MAX_CPU_INDEX = 8191;

export interface OciResources {
  memory?: { limit?: number; reservation?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit: number };
}

/** CPUs and memory nodes a cpuset may name; undefined: only the syntax is checked. */
export interface OnlineSets {
  cpus?: ReadonlySet<number>;
  mems?: ReadonlySet<number>;
}

function integer(value: unknown, what: string): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n)) throw invalid(`${what} ${String(value)} is not an integer`);
  return n;
}

/** A byte count or -1 (no limit). */
function memoryValue(value: unknown, what: string, min: number): number {
  const n = integer(value, what);
  if (n !== -1 && n < min) throw invalid(`${what} ${n} is below ${min} bytes (-1 means no limit)`);
  return n;
}

/** "0-3,5" as the set of its numbers; refuses anything else (empty parts, descending ranges, huge indexes). */
export function parseCpuList(value: string, what: string): Set<number> {
  if (!/^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$/.test(value) || value.length > 256)
    throw invalid(`${what} ${JSON.stringify(value.slice(0, 64))} is not a list like 0-3,5`);
  const out = new Set<number>();
  for (const part of value.split(',')) {
    const [a, b = a] = part.split('-').map(Number) as [number, number?];
    if (b < a || b > MAX_CPU_INDEX) throw invalid(`${what} ${JSON.stringify(value)}: range ${part} is not valid`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return out;
}

function cpuSet(value: string, what: string, online: ReadonlySet<number> | undefined): string {
  const wanted = parseCpuList(value, what);
  if (online) {
    const missing = [...wanted].filter((i) => !online.has(i));
    if (missing.length)
      throw invalid(
        `${what} ${JSON.stringify(value)} names ${missing.slice(0, 8).join(', ')}, which the guest does not have`,
      );
  }
  return value;
}

/** The checked resources, or undefined when nothing applicable is set. */
export function toOciResources(
  r: grpc.ILinuxResources | null | undefined,
  online: OnlineSets = {},
): OciResources | undefined {
  if (!r) return undefined;
  const out: OciResources = {};
  const mem = r.Memory;
  if (mem && (mem.Limit || mem.Reservation || mem.Swap)) {
    const m: NonNullable<OciResources['memory']> = {};
    if (mem.Limit) m.limit = memoryValue(mem.Limit, 'memory limit', MIN_MEMORY_BYTES);
    if (mem.Reservation) m.reservation = memoryValue(mem.Reservation, 'memory reservation', 0);
    if (mem.Swap) {
      m.swap = memoryValue(mem.Swap, 'memory+swap limit', MIN_MEMORY_BYTES);
      if (m.swap !== -1 && m.limit !== undefined && (m.limit === -1 || m.swap < m.limit)) {
        throw invalid(`memory+swap limit ${m.swap} is below the memory limit ${m.limit}`);
      }
    }
    out.memory = m;
  }
  const cpu = r.CPU;
  if (cpu && (cpu.Shares || cpu.Quota || cpu.Period || cpu.Cpus || cpu.Mems)) {
    const c: NonNullable<OciResources['cpu']> = {};
    if (cpu.Shares) {
      c.shares = integer(cpu.Shares, 'cpu shares');
      if (c.shares < CPU_SHARES.min || c.shares > CPU_SHARES.max)
        throw invalid(`cpu shares ${c.shares} are outside ${CPU_SHARES.min}-${CPU_SHARES.max}`);
    }
    if (cpu.Quota) {
      c.quota = integer(cpu.Quota, 'cpu quota');
      if (c.quota !== -1 && c.quota < CPU_QUOTA_MIN_US)
        throw invalid(`cpu quota ${c.quota} µs is below ${CPU_QUOTA_MIN_US} (-1 means no limit)`);
    }
    if (cpu.Period) {
      c.period = integer(cpu.Period, 'cpu period');
      if (c.period < CPU_PERIOD_US.min || c.period > CPU_PERIOD_US.max)
        throw invalid(`cpu period ${c.period} µs is outside ${CPU_PERIOD_US.min}-${CPU_PERIOD_US.max}`);
    }
    if (cpu.Cpus) c.cpus = cpuSet(cpu.Cpus, 'cpuset cpus', online.cpus);
    if (cpu.Mems) c.mems = cpuSet(cpu.Mems, 'cpuset mems', online.mems);
    out.cpu = c;
  }
  if (r.Pids?.Limit) {
    const limit = integer(r.Pids.Limit, 'pids limit');
    if (limit !== -1 && limit < 1) throw invalid(`pids limit ${limit} is not positive (-1 means no limit)`);
    out.pids = { limit };
  }
  return Object.keys(out).length ? out : undefined;
}

/** The guest's online CPUs and memory nodes (a file that cannot be read: no check). */
export function onlineSets(): OnlineSets {
  const read = (file: string): ReadonlySet<number> | undefined => {
    try {
      return parseCpuList(fs.readFileSync(file, 'utf8').trim(), file);
    } catch {
      return undefined;
    }
  };
  return {
    cpus: read('/sys/devices/system/cpu/online'),
    mems: read('/sys/devices/system/node/online') ?? new Set([0]),
  };
}
