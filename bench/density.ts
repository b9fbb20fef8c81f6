/**
 * Where an idle pod's memory goes, and what the memory options buy, in one run. For each variant (the previous
 * default first) and each level of N VMs booted together (a sandbox VM like a pod's: 1 vCPU, 512 MiB, virtio-fs
 * mounted by the agent's CreateSandbox, nothing else running), after the guests settle:
 * - QEMU's PSS from /proc/<pid>/smaps, split by mapping: guest RAM (the memfd backend: its RSS is the guest RAM
 *   actually touched, its PSS is shared with virtiofsd, which maps it too), TCG's translation cache (the
 *   executable anonymous mapping; KVM hosts have none), QEMU's other anonymous memory, and file pages (binary,
 *   libraries);
 * - virtiofsd's PSS (its process and the sandboxed child serving the guest);
 * - the guest's own view (GetMetrics: /proc/meminfo and the agent's RSS): page cache, anonymous, slab, the agent
 *   (node) and the rest the kernel holds (total - free - cache - buffers - anon - slab);
 * - boot time to the agent answering (median over the level's VMs, booted at once: on a shared 2-core host under
 *   TCG, a level's boots compete for the CPUs).
 * The shim daemon is not part of this bench (it runs the VMs in-process, through core's SandboxVm): its PSS per pod
 * is in pods.json (`perPodShimMiB`).
 * Variants: `BENCH_DENSITY_VARIANTS` (names from VARIANTS, comma-separated; default all), levels
 * `BENCH_DENSITY_LEVELS` (default 1,5), settle time `BENCH_DENSITY_SETTLE_S` (default 15). Written to
 * bench/out/density.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MAX_MEMORY_MIB, DEFAULT_MAX_VCPUS } from '../core/config';
import { SandboxVm } from '../core/vm';
import { hotplugLimits } from '../core/vm-size';
import { QemuHypervisor } from '../hypervisor';
import { MAX_MEMORY_SLOTS } from '../hypervisor/config';
import { MEMORY_HOTPLUG_BLOCK_MIB, type VmConfig } from '../hypervisor/types';
import { NOOP_LOGGER } from '../log';
import { guestArtifacts } from '../integration/lib/guest';
import { splitSmaps, type SmapsSplit } from '../integration/lib/smaps';
import { median, printTable, round } from './lib/report';
import { sharedDirStorage } from '../core/pod';

interface Variant {
  /** What it changes against the previous default. */
  what: string;
  vm: Pick<
    VmConfig,
    'freePageReporting' | 'tcgTbSizeMiB' | 'kernelParams' | 'rootImageDevice' | 'maxVcpus' | 'maxMemoryMiB'
  >;
}

const MEMORY_MIB = 512;

/**
 * The hot-plug room a CRI pod's VM gets with the shipped defaults on this host (core/sandbox.ts: default_maxvcpus
 * and default_maxmemory capped at the host's CPUs and memory, whole DIMMs above the boot size).
 */
function podRoom(): Pick<VmConfig, 'maxVcpus' | 'maxMemoryMiB'> {
  const l = hotplugLimits(
    { maxVcpus: DEFAULT_MAX_VCPUS, maxMemoryMiB: DEFAULT_MAX_MEMORY_MIB },
    { vcpus: 1, memoryMiB: MEMORY_MIB },
    { cpus: os.availableParallelism(), memoryMiB: Math.floor(os.totalmem() / 2 ** 20) },
    MEMORY_HOTPLUG_BLOCK_MIB,
    MAX_MEMORY_SLOTS,
  );
  return l === undefined ? {} : { maxVcpus: l.maxVcpus, maxMemoryMiB: l.maxMemoryMiB };
}

/** The previous default first: every other variant is judged against it in the same run. */
export const VARIANTS: Record<string, Variant> = {
  previous: { what: 'previous default: no balloon, QEMU default tb-size (1 GiB)', vm: {} },
  fpr: { what: 'free page reporting', vm: { freePageReporting: true } },
  'fpr-tb32': { what: 'free page reporting, tb-size 32 MiB', vm: { freePageReporting: true, tcgTbSizeMiB: 32 } },
  'fpr-tb64': { what: 'free page reporting, tb-size 64 MiB', vm: { freePageReporting: true, tcgTbSizeMiB: 64 } },
  'fpr-tb128': { what: 'free page reporting, tb-size 128 MiB', vm: { freePageReporting: true, tcgTbSizeMiB: 128 } },
  'fpr-tb64-order5': {
    what: 'free page reporting in 128 KiB chunks (page_reporting_order=5, not 2 MiB), tb-size 64 MiB',
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, kernelParams: ['page_reporting.page_reporting_order=5'] },
  },
  'dax-nvdimm': {
    what: 'free page reporting, tb-size 64 MiB, root image through DAX on an nvdimm',
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, rootImageDevice: 'nvdimm' },
  },
  'dax-virtio-pmem': {
    what: 'free page reporting, tb-size 64 MiB, root image through DAX on virtio-pmem',
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, rootImageDevice: 'virtio-pmem' },
  },
  'blk-room': {
    what: "root_image_dax = false as a CRI pod's VM has it: free page reporting, tb-size 64 MiB, virtio-blk root, hot-plug room",
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, rootImageDevice: 'virtio-blk', ...podRoom() },
  },
  'dax-room': {
    what: "the defaults as a CRI pod's VM has them: free page reporting, tb-size 64 MiB, nvdimm root (DAX), hot-plug room",
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, rootImageDevice: 'nvdimm', ...podRoom() },
  },
  'dax-room-tb32': {
    what: 'dax-room with tb-size 32 MiB: the next MiBs under TCG',
    vm: { freePageReporting: true, tcgTbSizeMiB: 32, rootImageDevice: 'nvdimm', ...podRoom() },
  },
  'fpr-tb64-ioa0': {
    what: 'free page reporting, tb-size 64 MiB, init_on_alloc=0',
    vm: { freePageReporting: true, tcgTbSizeMiB: 64, kernelParams: ['init_on_alloc=0'] },
  },
};

const LEVELS = (process.env.BENCH_DENSITY_LEVELS ?? '1,5').split(',').map(Number);
const SETTLE_MS = Number(process.env.BENCH_DENSITY_SETTLE_S ?? 15) * 1000;
const MiB = 1024;

function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** virtiofsd and its children (the sandboxed server). */
function treePssKiB(pid: number | undefined): number {
  if (!pid) return NaN;
  let kib = pssKiB(pid);
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const children = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    for (const c of children ? children.split(/\s+/) : []) kib += treePssKiB(Number(c));
  }
  return kib;
}

interface PodFigures {
  bootMs: number;
  qemu: SmapsSplit;
  virtiofsdPss: number;
  guest: Record<string, number>;
}

async function bootOne(id: string, variant: Variant, dir: string): Promise<{ vm: SandboxVm; hv: QemuHypervisor }> {
  const guest = guestArtifacts();
  fs.mkdirSync(path.join(dir, 'shared'), { recursive: true });
  const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
  try {
    const vm = await SandboxVm.boot(
      hv,
      {
        id,
        stateDir: path.join(dir, 'vm'),
        kernel: guest.kernel,
        initrd: guest.initrd,
        image: guest.image,
        vcpus: 1,
        memoryMiB: MEMORY_MIB,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: path.join(dir, 'shared'),
        ...variant.vm,
        kernelParams: [...(variant.vm.kernelParams ?? [])],
      },
      { bootTimeoutMs: 600_000, logger: NOOP_LOGGER },
    );
    await vm.agent.createSandbox({
      sandboxId: id,
      storages: [sharedDirStorage()],
    });
    return { vm, hv };
  } catch (err) {
    await hv.stop({ force: true }).catch(() => undefined);
    await hv.cleanup().catch(() => undefined);
    throw err;
  }
}

async function measure(vm: SandboxVm, hv: QemuHypervisor): Promise<PodFigures> {
  const g = await vm.agent.guestMetrics!();
  const mib = (v: number | undefined): number => round((v ?? NaN) / 2 ** 20);
  const used = (g.guest_memory_total_bytes ?? NaN) - (g.guest_memory_free_bytes ?? NaN);
  const cache = (g.guest_memory_cached_bytes ?? 0) + (g.guest_memory_buffers_bytes ?? 0);
  const anon = g.guest_memory_anon_bytes ?? 0;
  const slab = g.guest_memory_slab_bytes ?? 0;
  return {
    bootMs: vm.timings.agentReadyMs,
    qemu: splitSmaps(fs.readFileSync(`/proc/${hv.pid()}/smaps`, 'utf8'), guestArtifacts().image),
    virtiofsdPss: treePssKiB(hv.virtiofsdPid()),
    guest: {
      totalMiB: mib(g.guest_memory_total_bytes),
      usedMiB: mib(used),
      pageCacheMiB: mib(cache),
      anonMiB: mib(anon),
      agentRssMiB: mib(g.guest_agent_rss_bytes),
      slabMiB: mib(slab),
      kernelOtherMiB: mib(used - cache - anon - slab),
    },
  };
}

async function runLevel(name: string, variant: Variant, level: number): Promise<Record<string, unknown>> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-density-'));
  const booted: { vm: SandboxVm; hv: QemuHypervisor }[] = [];
  try {
    const results = await Promise.allSettled(
      Array.from({ length: level }, (_, i) => bootOne(`density${i}`, variant, path.join(root, String(i)))),
    );
    for (const r of results) if (r.status === 'fulfilled') booted.push(r.value);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const pods = await Promise.all(booted.map((b) => measure(b.vm, b.hv)));
    const avg = (f: (p: PodFigures) => number): number => round(pods.reduce((a, p) => a + f(p), 0) / pods.length);
    const avgMiB = (f: (p: PodFigures) => number): number => round(avg(f) / MiB);
    const guestKeys = Object.keys(pods[0]!.guest);
    return {
      variant: name,
      pods: level,
      accel: booted[0]!.hv.accel(),
      bootMedianMs: round(median(pods.map((p) => p.bootMs))),
      qemuPssMiB: avgMiB((p) => p.qemu.totalPss),
      guestRamTouchedMiB: avgMiB((p) => p.qemu.guestRamRss),
      guestRamPssMiB: avgMiB((p) => p.qemu.guestRamPss),
      tcgCacheMiB: avgMiB((p) => p.qemu.tcgCachePss),
      qemuAnonMiB: avgMiB((p) => p.qemu.anonPss),
      qemuFileMiB: avgMiB((p) => p.qemu.filePss),
      rootImagePssMiB: avgMiB((p) => p.qemu.imagePss),
      rootImageRssMiB: avgMiB((p) => p.qemu.imageRss),
      virtiofsdPssMiB: avgMiB((p) => p.virtiofsdPss),
      hostPerPodMiB: avgMiB((p) => p.qemu.totalPss + p.virtiofsdPss),
      ...Object.fromEntries(guestKeys.map((k) => [`guest_${k}`, avg((p) => p.guest[k]!)])),
    };
  } finally {
    await Promise.allSettled(
      booted.map(async ({ vm, hv }) => {
        await vm.shutdown({ gracefulMs: 30_000 }).catch(() => undefined);
        await hv.stop({ force: true }).catch(() => undefined);
        await hv.cleanup().catch(() => undefined);
      }),
    );
    fs.rmSync(root, { recursive: true, force: true });
  }
}

export async function benchDensity(): Promise<Record<string, unknown>> {
  const names = (process.env.BENCH_DENSITY_VARIANTS ?? Object.keys(VARIANTS).join(',')).split(',');
  for (const n of names) if (!VARIANTS[n]) throw new Error(`unknown density variant ${n}`);
  const rows: Record<string, unknown>[] = [];
  let accel = '';
  for (const level of LEVELS) {
    for (const name of names) {
      try {
        const row = await runLevel(name, VARIANTS[name]!, level);
        accel = String(row.accel);
        rows.push(row);
        printTable(`density: ${name}, ${level} VM(s)`, [row as Record<string, number>]);
      } catch (err) {
        console.error(`density bench: ${name} x${level} failed: ${err instanceof Error ? err.message : String(err)}`);
        rows.push({ variant: name, pods: level, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
  const cols = ['variant', 'pods', 'bootMedianMs', 'qemuPssMiB', 'guestRamTouchedMiB', 'tcgCacheMiB', 'qemuAnonMiB'];
  printTable(
    `idle VM memory per pod (${MEMORY_MIB} MiB guest, 1 vCPU${accel ? `, ${accel}` : ''}), MiB`,
    rows.map((r) =>
      Object.fromEntries(
        [
          ...cols,
          'qemuFileMiB',
          'rootImagePssMiB',
          'virtiofsdPssMiB',
          'hostPerPodMiB',
          'guest_usedMiB',
          'guest_pageCacheMiB',
        ].map((c) => [c, (r[c] as string | number | undefined) ?? (c === 'bootMedianMs' ? String(r.error) : '')]),
      ),
    ),
  );
  return {
    accel,
    memoryMiB: MEMORY_MIB,
    settleMs: SETTLE_MS,
    variants: Object.fromEntries(names.map((n) => [n, VARIANTS[n]])),
    rows,
  };
}
