/**
 * Issue 13, "the VM as a Kubernetes citizen": what hull's host-side integration with kubelet costs, each part against
 * its own baseline in the same run, through containerd's CRI plugin on one private containerd (hull only):
 * - pod start (RunPodSandbox + CreateContainer + StartContainer of a busybox `sleep`, until ExecSync `true` answers)
 *   with the pod's host cgroup (a `cgroup_parent`, so the VM is placed in `<parent>/<sandbox id>`) against without,
 *   and with hot-plug room (the default `default_maxvcpus`/`default_maxmemory`) against without (maxima equal to the
 *   boot size, written to the run's hull.toml before RunPodSandbox: the argv without hot-plug); medians;
 * - hot-adding one vCPU and 256 MiB as the guest sees it: from UpdateContainerResources to `nproc` and MemTotal in the
 *   guest showing it (ExecSync polled back to back), against an Update that needs no growth (cpu shares only);
 * - the pod's cgroup memory usage against the PSS of its processes (shim daemon, QEMU, virtiofsd), idle and after a
 *   container touched 64 MiB, with the cgroup's memory.stat and the guest memory backed on the host (the allocated
 *   size of QEMU's guest RAM memfds);
 * - the memory overhead: the pod's largest host footprint (the kernel's peak of its cgroup, and the largest sample of
 *   usage minus guest memory backed) minus the guest memory it touched, against `[hypervisor] memory_overhead` and
 *   the README's RuntimeClass overhead.
 * Each part records `{error}` instead of its figures when it fails, so the others still report. Written to
 * bench/out/citizen.json.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_MEMORY_MIB, DEFAULT_MEMORY_OVERHEAD_MIB, DEFAULT_VCPUS } from '../core/config';
import { HostCgroup, hostCgroupLayout, type CgroupHierarchy } from '../core/host-cgroup';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import type { cri, CriClient } from '../integration/lib/cri';
import { median, printTable, round } from './lib/report';

const RUNS = Number(process.env.BENCH_CITIZEN_RUNS ?? 3);
/** Which parts run (default all): start, hotadd, memory. */
const PARTS = new Set((process.env.BENCH_CITIZEN_PARTS ?? 'start,hotadd,memory').split(','));
/** The README's RuntimeClass `overhead.podFixed.memory` (768Mi): default_memory + memory_overhead. */
const DOCUMENTED_POD_OVERHEAD_MIB = 800;
const MIB = 1024 * 1024;
const TOUCH_MIB = 64;
const HOTPLUG_MIB = 256;
/** How often the footprint sampler reads the pod's cgroup and QEMU's memfds. */
const SAMPLE_MS = 200;

type Part<T> = T | { error: string };

async function part<T>(name: string, fn: () => Promise<T>, key: string): Promise<Part<T>> {
  if (!PARTS.has(key)) return { error: `not run (BENCH_CITIZEN_PARTS=${[...PARTS].join(',')})` };
  try {
    return await fn();
  } catch (err) {
    console.error(`citizen bench: ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mib = (bytes: number, digits = 1): number => round(bytes / MIB, digits);

// ---- the pod's cgroup parent (kubelet's pod cgroup), made in every hierarchy

class CgroupParent {
  readonly path = `/hull-bench-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  readonly layout = hostCgroupLayout();
  readonly memory: CgroupHierarchy;

  constructor() {
    const memory = this.layout.hierarchies.find((h) => h.version === 2 || h.controllers.includes('memory'));
    if (!memory) throw new Error('no cgroup hierarchy with the memory controller');
    this.memory = memory;
    for (const h of this.layout.hierarchies) fs.mkdirSync(path.join(h.mountPoint, this.path));
  }

  get v2(): boolean {
    return this.memory.version === 2;
  }

  private file(name: string): string {
    return fs.readFileSync(path.join(this.memory.mountPoint, this.path, name), 'utf8');
  }

  /** memory.usage_in_bytes (v1) / memory.current (v2): hierarchical, so the pod's sandbox cgroup below it too. */
  usage(): number {
    return Number(this.file(this.v2 ? 'memory.current' : 'memory.usage_in_bytes'));
  }

  /** The kernel's high-water mark: memory.max_usage_in_bytes (v1) / memory.peak (v2, kernel 5.19+), or NaN. */
  peak(): number {
    try {
      return Number(this.file(this.v2 ? 'memory.peak' : 'memory.max_usage_in_bytes'));
    } catch {
      return NaN;
    }
  }

  /** The parts of memory.stat that explain usage (v1: the hierarchical `total_` values), in bytes. */
  stat(): Record<string, number> {
    const all = new Map<string, number>();
    for (const line of this.file('memory.stat').split('\n')) {
      const [k, v] = line.split(' ');
      if (k && v && /^\d+$/.test(v)) all.set(k, Number(v));
    }
    const pick = (keys: Record<string, string>): Record<string, number> =>
      Object.fromEntries(Object.entries(keys).map(([out, k]) => [out, all.get(k) ?? NaN]));
    if (this.v2)
      return pick({
        anon: 'anon',
        file: 'file',
        shmem: 'shmem',
        activeFile: 'active_file',
        inactiveFile: 'inactive_file',
        kernel: 'kernel',
        sock: 'sock',
      });
    const out = pick({
      rss: 'total_rss',
      cache: 'total_cache',
      shmem: 'total_shmem',
      mappedFile: 'total_mapped_file',
      activeFile: 'total_active_file',
      inactiveFile: 'total_inactive_file',
    });
    try {
      out.kernel = Number(this.file('memory.kmem.usage_in_bytes'));
    } catch {
      out.kernel = NaN;
    }
    return out;
  }

  /** The pids of the sandbox cgroups below the parent (the memory hierarchy's). */
  pids(): number[] {
    const dir = path.join(this.memory.mountPoint, this.path);
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .flatMap((e) => fs.readFileSync(path.join(dir, e.name, 'cgroup.procs'), 'utf8').split('\n'))
      .filter((p) => /^\d+$/.test(p))
      .map(Number);
  }

  /** Removes the sandbox folders a failed run left, then the parent, in every hierarchy. */
  remove(): void {
    for (const h of this.layout.hierarchies) {
      const dir = path.join(h.mountPoint, this.path);
      try {
        for (const e of fs.readdirSync(dir, { withFileTypes: true }))
          if (e.isDirectory()) fs.rmdirSync(path.join(dir, e.name));
        fs.rmdirSync(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          console.warn(`citizen bench: cannot remove ${dir}: ${String(err)}`);
      }
    }
  }
}

// ---- host processes

function pssBytes(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

function argv0(pid: number): string {
  return path.basename(fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')[0] ?? '');
}

function kindOf(pid: number): 'qemu' | 'virtiofsd' | 'shim' | 'other' {
  const exe = argv0(pid);
  if (exe.startsWith('qemu-system')) return 'qemu';
  if (exe.startsWith('virtiofsd')) return 'virtiofsd';
  if (fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('containerd-shim-hull')) return 'shim';
  return 'other';
}

/** PSS of each kind of process among `pids`, in bytes. */
function pssByKind(pids: number[]): Record<'qemu' | 'virtiofsd' | 'shim' | 'other', number> {
  const out = { qemu: 0, virtiofsd: 0, shim: 0, other: 0 };
  for (const pid of pids) {
    try {
      out[kindOf(pid)] += pssBytes(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * Guest memory backed on the host: the allocated size (st_blocks) of QEMU's guest RAM memfds (the boot RAM and each
 * hot-plugged DIMM are a `memory-backend-memfd`), i.e. the guest pages touched at least once since boot.
 */
function guestBackedBytes(qemuPid: number): { backed: number; size: number } {
  const seen = new Set<number>();
  let backed = 0;
  let size = 0;
  const fdDir = `/proc/${qemuPid}/fd`;
  for (const fd of fs.readdirSync(fdDir)) {
    let link: string;
    try {
      link = fs.readlinkSync(path.join(fdDir, fd));
    } catch {
      continue;
    }
    if (!link.startsWith('/memfd:memory-backend-memfd')) continue;
    const st = fs.statSync(path.join(fdDir, fd));
    if (seen.has(st.ino)) continue;
    seen.add(st.ino);
    backed += st.blocks * 512;
    size += st.size;
  }
  if (seen.size === 0) throw new Error(`QEMU ${qemuPid} has no memory-backend-memfd open`);
  return { backed, size };
}

/**
 * Under TCG, QEMU's translated code: its anonymous rwx mappings (the code buffer, `-accel tcg,tb-size`, cut into one
 * mapping per region by guard pages), whose pages are touched as the guest runs code QEMU has not translated yet.
 * Undefined when QEMU has none (KVM).
 */
function tcgCodeBuffer(qemuPid: number): { sizeMiB: number; rssMiB: number } | undefined {
  let size = 0;
  let rss = 0;
  let inBuffer = false;
  for (const line of fs.readFileSync(`/proc/${qemuPid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ (\d+)\s*(\S*)/.exec(line);
    if (head) {
      inBuffer = head[1] === 'rwxp' && head[2] === '0' && head[3] === '';
      continue;
    }
    const m = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    if (!inBuffer || !m) continue;
    if (m[1] === 'Size') size += Number(m[2]) * 1024;
    else rss += Number(m[2]) * 1024;
  }
  return size > 0 ? { sizeMiB: mib(size), rssMiB: mib(rss) } : undefined;
}

// ---- pods

interface Pod {
  id: string;
  container: string;
  config: cri.IPodSandboxConfig;
}

interface StartOptions {
  cgroupParent?: string;
  /** hull.toml's text for this pod's shim (written before RunPodSandbox, restored after it). */
  hullConfig?: string;
  command?: string[];
}

class Pods {
  #seq = 0;
  readonly live = new Set<string>();

  constructor(
    readonly ctd: PrivateContainerd,
    readonly client: CriClient,
  ) {}

  /** Starts a pod with one busybox container; returns the phase times in ms. */
  async start(tag: string, o: StartOptions = {}): Promise<Pod & { ms: Record<string, number> }> {
    const name = `${tag}-${this.#seq++}`;
    const logDirectory = path.join(this.ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    const config: cri.IPodSandboxConfig = {
      metadata: { name, uid: `bench-${process.pid}-${name}`, namespace: 'bench' },
      hostname: name,
      logDirectory,
      linux: o.cgroupParent ? { cgroupParent: o.cgroupParent } : {},
    };
    const original = fs.readFileSync(this.ctd.hullConfig, 'utf8');
    const t0 = performance.now();
    let id: string;
    // The shim daemon reads the configuration when it starts the sandbox: RunPodSandbox has returned by then.
    if (o.hullConfig !== undefined) fs.writeFileSync(this.ctd.hullConfig, o.hullConfig);
    try {
      id = await this.ctd.cri!.runPod(config, 'hull');
    } finally {
      if (o.hullConfig !== undefined) fs.writeFileSync(this.ctd.hullConfig, original);
    }
    this.live.add(id);
    const t1 = performance.now();
    const { containerId } = await this.client.createContainer({
      podSandboxId: id,
      sandboxConfig: config,
      config: {
        metadata: { name: 'main' },
        image: { image: BUSYBOX_IMAGE },
        command: o.command ?? ['sleep', '3600'],
        logPath: 'main.log',
      },
    });
    const t2 = performance.now();
    await this.client.startContainer(containerId);
    const t3 = performance.now();
    for (;;) {
      const r = await this.client.execSync({ containerId, cmd: ['true'], timeout: 10 }).catch(() => undefined);
      if (r?.exitCode === 0) break;
      if (performance.now() - t0 > 300_000) throw new Error(`pod ${name}: exec never ran`);
      await sleep(20);
    }
    const t4 = performance.now();
    return {
      id,
      container: containerId,
      config,
      ms: {
        totalMs: t4 - t0,
        runPodSandboxMs: t1 - t0,
        createContainerMs: t2 - t1,
        startContainerMs: t3 - t2,
        firstExecMs: t4 - t3,
      },
    };
  }

  /** The pod's QEMU: the process whose argv names the sandbox's state folder. */
  qemu(pod: string): { pid: number; argv: string[] } {
    const sandboxDir = path.join(this.ctd.stateDir, this.ctd.namespace, pod);
    for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
        if (path.basename(argv[0] ?? '').startsWith('qemu-system') && argv.some((a) => a.includes(sandboxDir)))
          return { pid: Number(pid), argv };
      } catch {
        /* gone */
      }
    }
    throw new Error(`no QEMU process for pod ${pod}`);
  }

  async exec(containerId: string, cmd: string[], timeout = 60): Promise<string> {
    const r = await this.client.execSync({ containerId, cmd, timeout });
    if (r.exitCode !== 0)
      throw new Error(`${cmd.join(' ')} exited ${r.exitCode}: ${Buffer.from(r.stderr).toString().trim()}`);
    return Buffer.from(r.stdout).toString();
  }

  async remove(id: string): Promise<void> {
    await this.client.stopPodSandbox(id);
    await this.client.removePodSandbox(id);
    this.live.delete(id);
  }

  async removeAll(): Promise<void> {
    await Promise.allSettled([...this.live].map((id) => this.remove(id)));
  }
}

const medians = (xs: Record<string, number>[]): Record<string, number> =>
  Object.fromEntries(Object.keys(xs[0] ?? {}).map((k) => [k, round(median(xs.map((x) => x[k]!)))]));

/** `-smp` and `-m` of a QEMU argv: shows whether the VM has hot-plug room. */
function sizeArgs(argv: string[]): { smp: string; m: string } {
  return { smp: argv[argv.indexOf('-smp') + 1] ?? '', m: argv[argv.indexOf('-m') + 1] ?? '' };
}

// ---- 1. pod start: host cgroup placement and hot-plug room

/**
 * The placement's own work, what hull's shim daemon does at RunPodSandbox and at teardown, on this bench's process:
 * HostCgroup's create + place (the leaf in every hierarchy, then cgroup.procs), and moving back + remove. Medians of
 * 20.
 */
async function directPlacement(parent: CgroupParent): Promise<Record<string, number>> {
  const runs: Record<string, number>[] = [];
  for (let i = 0; i < 20; i++) {
    const cg = HostCgroup.forPath(`${parent.path}/direct-${i}`);
    const from = cg.origin(process.pid);
    const t0 = performance.now();
    let t1: number;
    try {
      cg.create();
      cg.place(process.pid);
      t1 = performance.now();
    } finally {
      cg.restore(process.pid, from);
    }
    await cg.remove();
    runs.push({ createAndPlaceMs: t1 - t0, restoreAndRemoveMs: performance.now() - t1 });
  }
  return Object.fromEntries(Object.keys(runs[0]!).map((k) => [k, round(median(runs.map((r) => r[k]!)), 2)]));
}

async function podStart(pods: Pods): Promise<Record<string, unknown>> {
  const original = fs.readFileSync(pods.ctd.hullConfig, 'utf8');
  const noRoom = `${original}\n[hypervisor]\ndefault_maxvcpus = ${DEFAULT_VCPUS}\ndefault_maxmemory = ${DEFAULT_MEMORY_MIB}\n`;
  const parent = new CgroupParent();
  try {
    const variants: Record<string, StartOptions> = {
      default: {},
      cgroupParent: { cgroupParent: parent.path },
      noHotplugRoom: { hullConfig: noRoom },
    };
    const direct = await directPlacement(parent);
    // One pod first, not counted: the first pod of a containerd pays for the snapshot, the image's first read, ...
    await pods.remove((await pods.start('warmup')).id);
    const times: Record<string, Record<string, number>[]> = {};
    const qemuSize: Record<string, { smp: string; m: string }> = {};
    for (let i = 0; i < RUNS; i++) {
      for (const [name, o] of Object.entries(variants)) {
        const p = await pods.start(name, o);
        (times[name] ??= []).push(p.ms);
        qemuSize[name] ??= sizeArgs(pods.qemu(p.id).argv);
        if (name === 'cgroupParent' && parent.pids().length < 3)
          throw new Error(`the pod's cgroup below ${parent.path} holds ${parent.pids().length} processes, not 3+`);
        await pods.remove(p.id);
      }
    }
    if (qemuSize.default?.m.includes('maxmem') !== true || qemuSize.noHotplugRoom?.m.includes('maxmem') !== false)
      throw new Error(`the variants' QEMU -m is not as meant: ${JSON.stringify(qemuSize)}`);
    const med = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, medians(v)]));
    const total = (k: string): number => median(times[k]!.map((t) => t.totalMs!));
    const cost = (withIt: string, without: string): Record<string, number> => ({
      ratio: round(total(withIt) / total(without), 3),
      diffMs: round(total(withIt) - total(without)),
      runPodSandboxDiffMs: round(med[withIt]!.runPodSandboxMs! - med[without]!.runPodSandboxMs!),
      // The variants run back to back in each round: a round's difference cancels the host's slower drift.
      medianPairedDiffMs: round(median(times[withIt]!.map((t, i) => t.totalMs! - times[without]![i]!.totalMs!))),
    });
    const out = {
      runs: RUNS,
      medianMs: med,
      totalsMs: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.map((t) => round(t.totalMs!))])),
      qemuSizeArgs: qemuSize,
      cgroupPlacement: { ...cost('cgroupParent', 'default'), directMs: direct },
      hotplugRoom: cost('default', 'noHotplugRoom'),
    };
    printTable(
      'pod start to first exec (ms, median)',
      Object.entries(med).map(([variant, m]) => ({ variant, ...m })),
    );
    printTable('cost (median total, with / without)', [
      { what: 'host cgroup placement', ...cost('cgroupParent', 'default') },
      { what: 'hot-plug room', ...out.hotplugRoom },
    ]);
    console.log(
      `host cgroup placement's own work (medians of 20): create + place ${direct.createAndPlaceMs} ms, move back + remove ${direct.restoreAndRemoveMs} ms`,
    );
    return out;
  } finally {
    parent.remove();
  }
}

// ---- 2. hot-add one vCPU and 256 MiB, as the guest sees it

interface GuestSize {
  cpus: number;
  memKiB: number;
}

async function guestSize(pods: Pods, container: string): Promise<GuestSize> {
  const out = await pods.exec(container, ['sh', '-c', 'nproc; grep ^MemTotal: /proc/meminfo'], 30);
  const m = /^(\d+)\nMemTotal:\s+(\d+) kB$/.exec(out.trim());
  if (!m) throw new Error(`nproc and MemTotal: ${JSON.stringify(out.slice(0, 200))}`);
  return { cpus: Number(m[1]), memKiB: Number(m[2]) };
}

/**
 * Issues `update` and polls the guest's size back to back (one ExecSync at a time) from the same instant, until
 * `done(size)` and the call has returned. Returns when the call returned, when the guest first showed the CPU and
 * the memory, and the polls' spacing.
 */
async function updateAndWatch(
  pods: Pods,
  container: string,
  linux: cri.ILinuxContainerResources,
  seen: { cpu: (s: GuestSize) => boolean; mem: (s: GuestSize) => boolean },
): Promise<{
  updateMs: number;
  cpuSeenMs: number;
  memSeenMs: number;
  cpuNotYetMs: number;
  memNotYetMs: number;
  pollMs: number[];
  last: GuestSize;
}> {
  const t0 = performance.now();
  let updateMs = NaN;
  let failed: Error | undefined;
  const call = pods.client
    .updateContainerResources({ containerId: container, linux })
    .then(() => (updateMs = performance.now() - t0))
    .catch((err: Error) => (failed = err));
  // A poll reads the guest at some instant between its start and its end: the change happened after the start of
  // the last poll that did not show it (`NotYet`, 0 when the first poll shows it) and before the end of the first
  // one that did (`Seen`).
  let cpuSeenMs = NaN;
  let memSeenMs = NaN;
  let cpuNotYetMs = 0;
  let memNotYetMs = 0;
  const pollMs: number[] = [];
  let last: GuestSize = { cpus: 0, memKiB: 0 };
  let prev = t0;
  while (Number.isNaN(cpuSeenMs) || Number.isNaN(memSeenMs) || Number.isNaN(updateMs)) {
    if (failed) throw failed;
    if (performance.now() - t0 > 120_000)
      throw new Error(`the guest does not show the update after 120 s: ${JSON.stringify(last)}`);
    const start = performance.now() - t0;
    last = await guestSize(pods, container);
    const now = performance.now();
    pollMs.push(now - prev);
    prev = now;
    if (Number.isNaN(cpuSeenMs)) {
      if (seen.cpu(last)) cpuSeenMs = now - t0;
      else cpuNotYetMs = start;
    }
    if (Number.isNaN(memSeenMs)) {
      if (seen.mem(last)) memSeenMs = now - t0;
      else memNotYetMs = start;
    }
  }
  await call;
  return { updateMs, cpuSeenMs, memSeenMs, cpuNotYetMs, memNotYetMs, pollMs, last };
}

/**
 * In the guest, a container's shell polls `nproc` and MemTotal (the shell's own `read` of /proc/meminfo) every 20 ms
 * until both reach the targets ($1 vCPUs, $2 kB). Each check is bracketed by reads of the guest's uptime (`read`, no
 * process): it prints `cpu|mem <lo> <hi>`, the change having happened after `lo` (the start of the last check that
 * did not see it) and before `hi` (the end of the first that did); `start`, and `end` with the rounds it made.
 */
const GUEST_WATCHER = [
  'read t _ < /proc/uptime; echo start $t',
  'c=0; m=0; n=0; cn=$t; mn=$t',
  'while [ $c = 0 ] || [ $m = 0 ]; do',
  '  if [ $c = 0 ]; then',
  '    read a _ < /proc/uptime; p=$(nproc); read b _ < /proc/uptime',
  '    if [ "$p" -ge "$1" ]; then echo cpu $cn $b; c=1; else cn=$a; fi',
  '  fi',
  '  if [ $m = 0 ]; then',
  '    read a _ < /proc/uptime',
  '    while read k v u; do [ "$k" = MemTotal: ] && break; done < /proc/meminfo',
  '    read b _ < /proc/uptime',
  '    if [ "$v" -ge "$2" ]; then echo mem $mn $b; m=1; else mn=$a; fi',
  '  fi',
  '  n=$((n + 1)); sleep 0.02',
  'done',
  'read t _ < /proc/uptime; echo end $t $n',
].join('\n');

/** The guest's uptime (ms) minus the host's performance.now() at the same instant, from the quickest of 3 reads. */
async function guestClockOffset(pods: Pods, container: string): Promise<{ offsetMs: number; errorMs: number }> {
  let best = { offsetMs: NaN, errorMs: Infinity };
  for (let i = 0; i < 3; i++) {
    const s = performance.now();
    const out = await pods.exec(container, ['cat', '/proc/uptime'], 30);
    const e = performance.now();
    const uptimeMs = Number(out.split(' ')[0]) * 1000;
    if (!Number.isFinite(uptimeMs)) throw new Error(`/proc/uptime: ${JSON.stringify(out.slice(0, 80))}`);
    // /proc/uptime has 10 ms steps: the read lies anywhere in the exec's round trip.
    const errorMs = (e - s) / 2 + 10;
    if (errorMs < best.errorMs) best = { offsetMs: uptimeMs - (s + e) / 2, errorMs };
  }
  return best;
}

/** The watcher's output, guest uptimes in ms: its start and end, and the bounds of each change. */
function parseWatcher(out: string): {
  startMs: number;
  endMs: number;
  rounds: number;
  cpu: { lo: number; hi: number };
  mem: { lo: number; hi: number };
} {
  const fields = new Map(
    out
      .trim()
      .split('\n')
      .map((l) => [l.split(' ')[0], l.split(' ').slice(1).map(Number)]),
  );
  const ms = (key: string, i: number): number => (fields.get(key)?.[i] ?? NaN) * 1000;
  const res = {
    startMs: ms('start', 0),
    endMs: ms('end', 0),
    rounds: fields.get('end')?.[1] ?? NaN,
    cpu: { lo: ms('cpu', 0), hi: ms('cpu', 1) },
    mem: { lo: ms('mem', 0), hi: ms('mem', 1) },
  };
  const all = [res.startMs, res.endMs, res.rounds, res.cpu.lo, res.cpu.hi, res.mem.lo, res.mem.hi];
  if (all.some((v) => !Number.isFinite(v))) throw new Error(`watcher: ${JSON.stringify(out.slice(0, 300))}`);
  return res;
}

async function hotAdd(pods: Pods): Promise<Record<string, unknown>> {
  const runs: Record<string, number>[] = [];
  const polls: number[] = [];
  const guestPolls: number[] = [];
  let sizes: Record<string, GuestSize> = {};
  for (let i = 0; i < RUNS; i++) {
    const p = await pods.start('hotadd');
    try {
      // The floor: one poll with nothing changing.
      const e0 = performance.now();
      const base = await guestSize(pods, p.container);
      const execMs = performance.now() - e0;
      // Baseline: an Update that needs no growth (cpu shares only), until the first poll after it has answered.
      const noGrowth = await updateAndWatch(
        pods,
        p.container,
        { cpuShares: 512 },
        { cpu: () => true, mem: () => true },
      );
      // One vCPU (quota = period) and 256 MiB (two DIMMs of 128 MiB): the VM grows from the boot size.
      const wantKiB = Math.floor(base.memKiB + HOTPLUG_MIB * 1024 * 0.95); // the kernel keeps a little of each DIMM
      const clock = await guestClockOffset(pods, p.container);
      const watcher = pods.client.execSync({
        containerId: p.container,
        cmd: ['sh', '-c', GUEST_WATCHER, 'watch', String(base.cpus + 1), String(wantKiB)],
        timeout: 150,
      });
      await sleep(2_000); // the watcher runs by then (an exec starts within ~0.5 s here); checked below
      const t0 = performance.now();
      const grow = await updateAndWatch(
        pods,
        p.container,
        { cpuShares: 512, cpuPeriod: 100_000, cpuQuota: 100_000, memoryLimitInBytes: HOTPLUG_MIB * MIB },
        { cpu: (s) => s.cpus >= base.cpus + 1, mem: (s) => s.memKiB >= wantKiB },
      );
      const w = await watcher;
      if (w.exitCode !== 0) throw new Error(`the watcher exited ${w.exitCode}: ${Buffer.from(w.stderr).toString()}`);
      const seen = parseWatcher(Buffer.from(w.stdout).toString());
      // Guest uptime to ms after t0 (the Update call), on the host's clock.
      const sinceUpdate = (guestMs: number): number => guestMs - clock.offsetMs - t0;
      if (sinceUpdate(seen.startMs) > 0) throw new Error('the in-guest watcher started after the Update call');
      polls.push(...grow.pollMs);
      guestPolls.push((seen.endMs - seen.startMs) / seen.rounds);
      sizes = { before: base, after: grow.last };
      runs.push({
        execMs,
        noGrowthUpdateMs: noGrowth.updateMs,
        noGrowthSeenMs: Math.max(noGrowth.updateMs, noGrowth.cpuSeenMs),
        updateMs: grow.updateMs,
        cpuSeenMs: grow.cpuSeenMs,
        cpuNotYetMs: grow.cpuNotYetMs,
        memSeenMs: grow.memSeenMs,
        memNotYetMs: grow.memNotYetMs,
        bothSeenMs: Math.max(grow.cpuSeenMs, grow.memSeenMs),
        // The change lies between these (each ± guestClockErrorMs); before the call is the call's instant.
        guestCpuAfterMs: Math.max(0, sinceUpdate(seen.cpu.lo)),
        guestCpuByMs: sinceUpdate(seen.cpu.hi),
        guestMemAfterMs: Math.max(0, sinceUpdate(seen.mem.lo)),
        guestMemByMs: sinceUpdate(seen.mem.hi),
        guestClockErrorMs: clock.errorMs,
      });
    } finally {
      await pods.remove(p.id);
    }
  }
  const med = medians(runs);
  const out = {
    runs: RUNS,
    added: { vcpus: 1, memoryMiB: HOTPLUG_MIB },
    guestSize: sizes,
    medianMs: med,
    /** Host-side: the spacing of the ExecSync polls (`nproc; grep MemTotal`, one after the other) while watching. */
    pollGranularityMs: {
      median: round(median(polls)),
      max: round(Math.max(...polls)),
      count: polls.length,
    },
    /** In the guest: one round of the watcher (nproc, MemTotal, sleep 0.02). */
    guestPollGranularityMs: round(median(guestPolls)),
    updateCallRatioToNoGrowth: round(med.updateMs! / med.noGrowthUpdateMs!, 2),
    updateCallDiffToNoGrowthMs: round(med.updateMs! - med.noGrowthUpdateMs!),
    seenRatioToNoGrowth: round(med.bothSeenMs! / med.noGrowthSeenMs!, 2),
    seenDiffToNoGrowthMs: round(med.bothSeenMs! - med.noGrowthSeenMs!),
  };
  printTable('hot-add 1 vCPU + 256 MiB via UpdateContainerResources (ms after the call, median)', [
    { what: 'update, no growth (baseline)', call: med.noGrowthUpdateMs!, execPoll: med.noGrowthSeenMs!, inGuest: '-' },
    {
      what: 'update, +1 vCPU +256 MiB',
      call: med.updateMs!,
      execPoll: `cpu ${med.cpuSeenMs}, mem ${med.memSeenMs}`,
      inGuest: `cpu ${med.guestCpuAfterMs}-${med.guestCpuByMs}, mem ${med.guestMemAfterMs}-${med.guestMemByMs} (±${med.guestClockErrorMs})`,
    },
  ]);
  console.log(
    `poll granularity: ExecSync ${out.pollGranularityMs.median} ms (median spacing while watching), in-guest loop ${out.guestPollGranularityMs} ms`,
  );
  return out;
}

// ---- 3 and 4. the pod's cgroup against PSS, and the memory overhead

interface Snapshot {
  cgroupUsageMiB: number;
  pssMiB: Record<string, number>;
  pssSumMiB: number;
  usageMinusPssMiB: number;
  usageOverPss: number;
  guestBackedMiB: number;
  guestMemoryMiB: number;
  memoryStatMiB: Record<string, number>;
  tcgCodeBuffer?: { sizeMiB: number; rssMiB: number };
}

function snapshot(parent: CgroupParent, qemuPid: number): Snapshot {
  const usage = parent.usage();
  const pss = pssByKind(parent.pids());
  const sum = pss.qemu + pss.virtiofsd + pss.shim + pss.other;
  const guest = guestBackedBytes(qemuPid);
  return {
    cgroupUsageMiB: mib(usage),
    pssMiB: Object.fromEntries(Object.entries(pss).map(([k, v]) => [k, mib(v)])),
    pssSumMiB: mib(sum),
    usageMinusPssMiB: mib(usage - sum),
    usageOverPss: round(usage / sum, 2),
    guestBackedMiB: mib(guest.backed),
    guestMemoryMiB: mib(guest.size),
    memoryStatMiB: Object.fromEntries(Object.entries(parent.stat()).map(([k, v]) => [k, mib(v)])),
    tcgCodeBuffer: tcgCodeBuffer(qemuPid),
  };
}

/** Samples the pod's footprint every SAMPLE_MS while it lives: usage, usage minus file cache, guest memory backed. */
class FootprintSampler {
  readonly samples: { usage: number; unreclaimable: number; guestBacked: number }[] = [];
  qemuPid = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(private readonly parent: CgroupParent) {}

  start(): void {
    this.#timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  sample(): void {
    try {
      const usage = this.parent.usage();
      const st = this.parent.stat();
      const file = (st.activeFile ?? 0) + (st.inactiveFile ?? 0);
      if (!this.qemuPid) this.qemuPid = this.parent.pids().find((p) => argv0(p).startsWith('qemu-system')) ?? 0;
      // Before QEMU has opened its RAM, no guest memory is backed.
      const guestBacked = this.qemuPid ? guestBackedBytes(this.qemuPid).backed : 0;
      this.samples.push({ usage, unreclaimable: usage - file, guestBacked });
    } catch {
      // QEMU not there yet or gone: the next sample
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

async function cgroupMemory(pods: Pods): Promise<{ usageVsPss: unknown; overhead: unknown }> {
  const parent = new CgroupParent();
  const sampler = new FootprintSampler(parent);
  let pod: string | undefined;
  try {
    sampler.start();
    const p = await pods.start('mem', { cgroupParent: parent.path });
    pod = p.id;
    const qemu = pods.qemu(p.id).pid;
    sampler.qemuPid = qemu;
    await sleep(3_000); // let the guest settle
    const idle = snapshot(parent, qemu);
    // dd's 64 MiB buffer is written by read(2) from /dev/zero: guest pages QEMU must back on the host (those the
    // guest had not touched before).
    await pods.exec(p.container, ['dd', 'if=/dev/zero', 'of=/dev/null', `bs=${TOUCH_MIB}M`, 'count=1'], 120);
    await sleep(1_000);
    const touched = snapshot(parent, qemu);
    sampler.sample();
    sampler.stop();
    const peak = parent.peak();
    const guestBacked = guestBackedBytes(qemu).backed;
    const usageVsPss = { idle, [`after${TOUCH_MIB}MiBTouched`]: touched };
    printTable('pod cgroup usage vs PSS of shim + QEMU + virtiofsd (MiB)', [
      { state: 'idle', ...flat(idle) },
      { state: `after ${TOUCH_MIB} MiB touched`, ...flat(touched) },
    ]);

    // 4. The overhead: the host footprint beyond the guest memory the pod touched. Guest memory backed only grows
    // (no balloon, no free page reporting), so peak - backed at the end is the smaller estimate; the sampled one
    // takes both at the same instant.
    const s = sampler.samples;
    const maxOf = (f: (x: (typeof s)[number]) => number): number => Math.max(...s.map(f));
    const kernelOverhead = peak - guestBacked;
    const sampledOverhead = s.length ? maxOf((x) => x.usage - x.guestBacked) : NaN;
    const sampledUnreclaimable = s.length ? maxOf((x) => x.unreclaimable - x.guestBacked) : NaN;
    const measured = Math.max(Number.isNaN(kernelOverhead) ? 0 : kernelOverhead, sampledOverhead || 0);
    const measuredMiB = measured / MIB;
    // A guest eventually touches all its memory (page cache), so the pod needs default_memory + the overhead.
    const suggestedOverheadMiB = Math.ceil((measuredMiB * 1.1) / 16) * 16; // 10 % headroom, whole 16 MiB
    const tcg = touched.tcgCodeBuffer;
    const overhead = {
      samples: s.length,
      sampleMs: SAMPLE_MS,
      peakUsageMiB: mib(peak),
      sampledPeakUsageMiB: s.length ? mib(maxOf((x) => x.usage)) : NaN,
      guestBackedAtEndMiB: mib(guestBacked),
      /** The kernel's peak minus the guest memory backed at the end (all of it touched by then). */
      peakMinusGuestBackedMiB: mib(kernelOverhead),
      /** The largest (usage - guest backed) of one sample. */
      sampledMaxUsageMinusGuestBackedMiB: mib(sampledOverhead),
      /** The same without the file cache (active + inactive file), which the kernel reclaims before it OOM-kills. */
      sampledMaxUnreclaimableMinusGuestBackedMiB: mib(sampledUnreclaimable),
      documented: {
        memoryOverheadMiB: DEFAULT_MEMORY_OVERHEAD_MIB,
        runtimeClassOverheadMiB: DOCUMENTED_POD_OVERHEAD_MIB,
        defaultMemoryMiB: DEFAULT_MEMORY_MIB,
      },
      memoryOverheadHolds: measuredMiB <= DEFAULT_MEMORY_OVERHEAD_MIB,
      runtimeClassOverheadHolds: DEFAULT_MEMORY_MIB + measuredMiB <= DOCUMENTED_POD_OVERHEAD_MIB,
      suggested: {
        memoryOverheadMiB: Math.max(suggestedOverheadMiB, 16),
        runtimeClassOverhead: `${DEFAULT_MEMORY_MIB + Math.max(suggestedOverheadMiB, 16)}Mi`,
      },
      /**
       * Under TCG, QEMU's translated code grows with the code the guest runs, up to the code buffer's size (then
       * QEMU flushes it and reuses its pages): the overhead of a pod whose guest filled it.
       */
      tcgCodeBufferMiB: tcg,
      overheadWithTcgCodeBufferFullMiB: tcg ? round(measuredMiB - tcg.rssMiB + tcg.sizeMiB, 1) : undefined,
    };
    printTable('memory overhead: host footprint beyond guest memory touched (MiB)', [
      {
        peak: overhead.peakUsageMiB,
        guestBacked: overhead.guestBackedAtEndMiB,
        'peak-backed': overhead.peakMinusGuestBackedMiB,
        'sampled max': overhead.sampledMaxUsageMinusGuestBackedMiB,
        'sampled max w/o file cache': overhead.sampledMaxUnreclaimableMinusGuestBackedMiB,
        documented: DEFAULT_MEMORY_OVERHEAD_MIB,
        holds: overhead.memoryOverheadHolds,
      },
    ]);
    return { usageVsPss, overhead };
  } finally {
    sampler.stop();
    if (pod) await pods.remove(pod).catch(() => undefined);
    parent.remove();
  }
}

function flat(s: Snapshot): Record<string, number> {
  return {
    usage: s.cgroupUsageMiB,
    pssSum: s.pssSumMiB,
    qemu: s.pssMiB.qemu!,
    virtiofsd: s.pssMiB.virtiofsd!,
    shim: s.pssMiB.shim!,
    'usage-pss': s.usageMinusPssMiB,
    guestBacked: s.guestBackedMiB,
    tcgCode: s.tcgCodeBuffer?.rssMiB ?? 0,
  };
}

export async function benchCitizen(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ cri: true });
  const pods = new Pods(ctd, ctd.cri!.client);
  try {
    await importBusybox(ctd);
    const start = await part('pod start', () => podStart(pods), 'start');
    await pods.removeAll();
    const hot = await part('hot-add', () => hotAdd(pods), 'hotadd');
    await pods.removeAll();
    const mem = await part('cgroup memory', () => cgroupMemory(pods), 'memory');
    await pods.removeAll();
    return {
      cgroupVersion: hostCgroupLayout().version,
      podStart: start,
      hotAdd: hot,
      cgroupUsageVsPss: 'error' in mem ? mem : mem.usageVsPss,
      memoryOverhead: 'error' in mem ? mem : mem.overhead,
    };
  } finally {
    await pods.removeAll();
    await ctd.stop();
  }
}
