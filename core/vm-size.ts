/**
 * How big a pod's VM should be while it runs (Kata's sizing, src/runtime/virtcontainers/sandbox.go
 * updateResources): the configured base, plus what the pod's containers ask for. The containers' part is the
 * larger of the pod's sizing annotations (kubelet's sum of the containers' limits, read at boot: core/pod.ts) and
 * the sum over the containers that exist of ceil(cpu quota / period) vCPUs and their memory limits. Taking the
 * larger, not the sum of both, is deliberate: the annotations are those same containers' limits added up, so
 * counting both would double the pod and could never fit kubelet's pod cgroup (the containers' limits + the
 * RuntimeClass overhead). Pure functions; core/sandbox.ts applies them.
 */
import { InvalidArgumentError } from '../errors';
import type { OciLinuxResources } from '../agent-client';
import type { PodSizing } from './pod';

const MIB = 1024 * 1024;

/** vCPUs and MiB of guest memory. */
export interface VmResources {
  vcpus: number;
  memoryMiB: number;
}

/** The room a VM may grow into; absent = no hot-plug (the VM keeps its boot size, today's behaviour). */
export interface HotplugLimits {
  maxVcpus: number;
  maxMemoryMiB: number;
  /** What each maximum came from, for the refusals: the configured value and the host's. */
  configuredVcpus: number;
  configuredMemoryMiB: number;
  hostCpus: number;
  hostMemoryMiB: number;
}

/** A value of containerd's resources JSON that must be an integer (or absent/null). */
function int(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v))
    throw new InvalidArgumentError(`resources: ${what} ${JSON.stringify(v)} is not an integer`);
  return v;
}

/**
 * What one container adds to its VM: ceil(quota/period) vCPUs (no quota, or -1: none; a period of 0 is the kernel's
 * default, 100000 µs) and its memory limit in MiB rounded up (none, 0 or -1: none). For an update, a part the
 * request leaves out keeps `prev`'s value (containerd's Update carries the whole resources; a hand-written one may not).
 */
export function containerNeed(r: OciLinuxResources | undefined, prev: VmResources = { vcpus: 0, memoryMiB: 0 }) {
  const out: VmResources = { ...prev };
  const quota = int(r?.cpu?.quota, 'cpu.quota');
  if (quota !== undefined) {
    const period = int(r?.cpu?.period, 'cpu.period') || 100_000;
    out.vcpus = quota > 0 && period > 0 ? Math.ceil(quota / period) : 0;
  }
  const limit = int(r?.memory?.limit, 'memory.limit');
  if (limit !== undefined) out.memoryMiB = limit > 0 ? Math.ceil(limit / MIB) : 0;
  return out;
}

/** The containers' part: each resource the larger of the pod's annotations and the containers' sum. */
export function containersPart(pod: PodSizing, needs: Iterable<VmResources>): VmResources {
  let vcpus = 0;
  let memoryMiB = 0;
  for (const n of needs) {
    vcpus += n.vcpus;
    memoryMiB += n.memoryMiB;
  }
  return { vcpus: Math.max(vcpus, pod.extraVcpus), memoryMiB: Math.max(memoryMiB, pod.extraMemoryMiB) };
}

/** The VM the pod should have: the configured base plus the containers' part. */
export function vmTarget(base: VmResources, pod: PodSizing, needs: Iterable<VmResources>): VmResources {
  const part = containersPart(pod, needs);
  return { vcpus: base.vcpus + part.vcpus, memoryMiB: base.memoryMiB + part.memoryMiB };
}

/**
 * The hot-plug room from `[hypervisor] default_maxvcpus` / `default_maxmemory` (0 = none), capped at the host's
 * CPUs and memory, never below the boot size, and memory a whole number of `blockMiB` DIMMs above the boot size (so
 * that a growth rounded up to whole DIMMs stays within it) and at most `maxBlocks` of them (QEMU's DIMM slots).
 * Undefined when neither key asks for hot-plug.
 */
export function hotplugLimits(
  configured: { maxVcpus?: number; maxMemoryMiB?: number },
  boot: VmResources,
  host: { cpus: number; memoryMiB: number },
  blockMiB: number,
  maxBlocks: number,
): HotplugLimits | undefined {
  const cv = configured.maxVcpus ?? 0;
  const cm = configured.maxMemoryMiB ?? 0;
  if (cv <= 0 && cm <= 0) return undefined;
  const room = cm > 0 ? Math.max(0, Math.min(cm, host.memoryMiB) - boot.memoryMiB) : 0;
  return {
    maxVcpus: cv > 0 ? Math.max(boot.vcpus, Math.min(cv, host.cpus)) : boot.vcpus,
    maxMemoryMiB: boot.memoryMiB + Math.min(Math.floor(room / blockMiB), maxBlocks) * blockMiB,
    configuredVcpus: cv,
    configuredMemoryMiB: cm,
    hostCpus: host.cpus,
    hostMemoryMiB: host.memoryMiB,
  };
}

/** The memory the VM will have after growing from `now` to `target` in whole DIMMs of `blockMiB`. */
export function memoryAfterGrowth(nowMiB: number, targetMiB: number, blockMiB: number): number {
  if (targetMiB <= nowMiB) return nowMiB;
  return nowMiB + Math.ceil((targetMiB - nowMiB) / blockMiB) * blockMiB;
}

/** "2 vCPUs and 1024 MiB" */
export const fmtResources = (r: VmResources): string =>
  `${r.vcpus} vCPU${r.vcpus === 1 ? '' : 's'} and ${r.memoryMiB} MiB`;
