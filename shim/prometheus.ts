/**
 * The shim's Prometheus metrics (prom-client), computed when scraped and never in between: its own process,
 * QEMU's and virtiofsd's (from /proc), the Task and agent RPC latency histograms (observed as calls happen), the
 * guest's figures (agent GetMetrics, parsed as untrusted) and each container's cgroup stats (StatsContainer), the
 * boot phases, the VM's size and the pod's overhead. Labels come from hull only: a container id is one containerd
 * gave and core validated; guest text never becomes a name or a label.
 */
import { Counter, Gauge, Histogram, Registry } from './prom-client';
import type { AgentClient, ContainerStats, GuestMetrics } from '../agent-client';
import type { SandboxMetricsView } from '../core';
import { readProc, readProcTree, type ProcFigures } from './proc-stats';

export const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** How long a scrape waits for the guest's answers. */
export const GUEST_TIMEOUT_MS = 2_000;
/** At most this many containers' stats per scrape. */
const MAX_CONTAINERS = 256;
const MIB = 1024 * 1024;

const GUEST_MEMORY: [keyof GuestMetrics, string][] = [
  ['guest_memory_total_bytes', 'total'],
  ['guest_memory_free_bytes', 'free'],
  ['guest_memory_available_bytes', 'available'],
  ['guest_memory_buffers_bytes', 'buffers'],
  ['guest_memory_cached_bytes', 'cached'],
  ['guest_memory_shmem_bytes', 'shmem'],
  ['guest_memory_anon_bytes', 'anon'],
  ['guest_memory_slab_bytes', 'slab'],
];
const GUEST_CPU_MODES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'] as const;

const withTimeout = <T>(p: Promise<T>, ms: number): Promise<T | undefined> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.catch(() => undefined),
    new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
  ]).finally(() => clearTimeout(timer));
};

export class ShimMetrics {
  readonly registry = new Registry();
  private view: (() => SandboxMetricsView | undefined) | undefined;

  private readonly taskRpc: Histogram<'method' | 'outcome'>;
  private readonly agentRpc: Histogram<'method' | 'outcome'>;
  private readonly scrapes: Counter;
  private readonly procRss: Gauge<'process'>;
  private readonly procPss: Gauge<'process'>;
  private readonly procCpu: Counter<'process' | 'mode'>;
  private readonly procThreads: Gauge<'process'>;
  private readonly procFds: Gauge<'process'>;
  private readonly procIoRead: Counter<'process'>;
  private readonly procIoWrite: Counter<'process'>;
  private readonly guestUp: Gauge;
  private readonly guestMemory: Gauge<'kind'>;
  private readonly guestCpu: Counter<'mode'>;
  private readonly guestCpus: Gauge;
  private readonly guestLoad: Gauge<'window'>;
  private readonly guestProcs: Gauge<'state'>;
  private readonly guestUptime: Gauge;
  private readonly ctrMemory: Gauge<'container_id'>;
  private readonly ctrMemoryLimit: Gauge<'container_id'>;
  private readonly ctrCpu: Counter<'container_id' | 'mode'>;
  private readonly ctrPids: Gauge<'container_id'>;
  private readonly boot: Gauge<'phase'>;
  private readonly vmVcpus: Gauge;
  private readonly vmMemory: Gauge;
  private readonly overhead: Gauge;
  private readonly overheadConfigured: Gauge;
  private readonly hostMemory: Gauge;

  constructor() {
    const r = [this.registry];
    const rpc = { labelNames: ['method', 'outcome'] as const, buckets: RPC_BUCKETS, registers: r };
    this.taskRpc = new Histogram({
      name: 'hull_task_rpc_duration_seconds',
      help: "Time the shim took to answer containerd's Task RPCs, by method and outcome (ok or error).",
      ...rpc,
    });
    this.agentRpc = new Histogram({
      name: 'hull_agent_rpc_duration_seconds',
      help: 'Time the guest agent took to answer the shim, by method and outcome (ok or error).',
      ...rpc,
    });
    this.scrapes = new Counter({
      name: 'hull_shim_scrapes_total',
      help: "Scrapes of this shim's metrics.",
      registers: r,
    });
    const proc = { labelNames: ['process'] as const, registers: r };
    this.procRss = new Gauge({
      name: 'hull_process_resident_memory_bytes',
      help: "Resident set size (VmRSS) of the pod's host processes: shim, qemu, virtiofsd (with its children).",
      ...proc,
    });
    this.procPss = new Gauge({
      name: 'hull_process_proportional_memory_bytes',
      help: "Proportional set size (smaps_rollup Pss) of the pod's host processes.",
      ...proc,
    });
    this.procCpu = new Counter({
      name: 'hull_process_cpu_seconds_total',
      help: "CPU time of the pod's host processes, by mode (user, system).",
      labelNames: ['process', 'mode'] as const,
      registers: r,
    });
    this.procThreads = new Gauge({
      name: 'hull_process_threads',
      help: "Threads of the pod's host processes.",
      ...proc,
    });
    this.procFds = new Gauge({
      name: 'hull_process_open_fds',
      help: "Open file descriptors of the pod's host processes.",
      ...proc,
    });
    this.procIoRead = new Counter({
      name: 'hull_process_io_read_bytes_total',
      help: "Bytes the pod's host processes caused to be read from storage (/proc/<pid>/io read_bytes).",
      ...proc,
    });
    this.procIoWrite = new Counter({
      name: 'hull_process_io_write_bytes_total',
      help: "Bytes the pod's host processes caused to be written to storage (/proc/<pid>/io write_bytes).",
      ...proc,
    });
    this.guestUp = new Gauge({
      name: 'hull_guest_metrics_up',
      help: 'Whether the guest agent answered GetMetrics in this scrape (1) or not (0).',
      registers: r,
    });
    this.guestMemory = new Gauge({
      name: 'hull_guest_memory_bytes',
      help: "The guest kernel's /proc/meminfo, by kind (total, free, available, buffers, cached, shmem, anon, slab).",
      labelNames: ['kind'] as const,
      registers: r,
    });
    this.guestCpu = new Counter({
      name: 'hull_guest_cpu_seconds_total',
      help: 'CPU time of the guest (all its CPUs), by mode, from its /proc/stat.',
      labelNames: ['mode'] as const,
      registers: r,
    });
    this.guestCpus = new Gauge({ name: 'hull_guest_cpus_online', help: 'CPUs online in the guest.', registers: r });
    this.guestLoad = new Gauge({
      name: 'hull_guest_load_average',
      help: "The guest's load average, by window (1m, 5m, 15m).",
      labelNames: ['window'] as const,
      registers: r,
    });
    this.guestProcs = new Gauge({
      name: 'hull_guest_processes',
      help: 'Processes (threads) in the guest: running, total.',
      labelNames: ['state'] as const,
      registers: r,
    });
    this.guestUptime = new Gauge({
      name: 'hull_guest_uptime_seconds',
      help: 'Time since the guest kernel booted.',
      registers: r,
    });
    const ctr = { labelNames: ['container_id'] as const, registers: r };
    this.ctrMemory = new Gauge({
      name: 'hull_container_memory_usage_bytes',
      help: "Memory use of a container's cgroup in the guest (memory.current).",
      ...ctr,
    });
    this.ctrMemoryLimit = new Gauge({
      name: 'hull_container_memory_limit_bytes',
      help: "Memory limit of a container's cgroup in the guest (absent when unlimited).",
      ...ctr,
    });
    this.ctrCpu = new Counter({
      name: 'hull_container_cpu_seconds_total',
      help: "CPU time of a container's cgroup in the guest, by mode (user, system).",
      labelNames: ['container_id', 'mode'] as const,
      registers: r,
    });
    this.ctrPids = new Gauge({
      name: 'hull_container_pids',
      help: "Processes in a container's cgroup in the guest.",
      ...ctr,
    });
    this.boot = new Gauge({
      name: 'hull_boot_phase_seconds',
      help: 'Time from the start of boot to each phase: qemu_running, agent_ready, sandbox_created.',
      labelNames: ['phase'] as const,
      registers: r,
    });
    this.vmVcpus = new Gauge({
      name: 'hull_vm_vcpus',
      help: "vCPUs the pod's VM has now (boot size grown by hot-plug).",
      registers: r,
    });
    this.vmMemory = new Gauge({
      name: 'hull_vm_memory_bytes',
      help: "Guest memory the pod's VM has now (boot size grown by hot-plug).",
      registers: r,
    });
    this.hostMemory = new Gauge({
      name: 'hull_pod_host_memory_bytes',
      help: "PSS of the pod's host processes together (shim, qemu, virtiofsd): what the pod costs the host.",
      registers: r,
    });
    this.overhead = new Gauge({
      name: 'hull_pod_overhead_bytes',
      help: "The pod's overhead as Kata's shim computes it: hull_pod_host_memory_bytes minus the guest's MemTotal - MemFree (at least 0; pages the guest freed stay resident in QEMU and count here).",
      registers: r,
    });
    this.overheadConfigured = new Gauge({
      name: 'hull_pod_overhead_configured_bytes',
      help: 'The host overhead hull assumes for a pod ([hypervisor] memory_overhead).',
      registers: r,
    });
  }

  /** The sandbox to report on (set once the sandbox exists). */
  setSandbox(view: () => SandboxMetricsView | undefined): void {
    this.view = view;
  }

  observeTaskCall = (method: string, seconds: number, failed: boolean): void => {
    this.taskRpc.observe({ method, outcome: failed ? 'error' : 'ok' }, seconds);
  };

  observeAgentCall = (method: string, seconds: number, failed: boolean): void => {
    this.agentRpc.observe({ method, outcome: failed ? 'error' : 'ok' }, seconds);
  };

  /** Computes every figure now and renders them in Prometheus' text format. */
  async render(guestTimeoutMs = GUEST_TIMEOUT_MS): Promise<string> {
    this.scrapes.inc();
    for (const m of [
      this.procRss,
      this.procPss,
      this.procCpu,
      this.procThreads,
      this.procFds,
      this.procIoRead,
      this.procIoWrite,
      this.guestMemory,
      this.guestCpu,
      this.guestCpus,
      this.guestLoad,
      this.guestProcs,
      this.guestUptime,
      this.ctrMemory,
      this.ctrMemoryLimit,
      this.ctrCpu,
      this.ctrPids,
      this.boot,
      this.vmVcpus,
      this.vmMemory,
      this.overhead,
      this.overheadConfigured,
      this.hostMemory,
    ])
      m.reset();
    const view = this.view?.();
    const procs: [string, ProcFigures | undefined][] = [['shim', readProc(process.pid)]];
    for (const h of view?.helpers ?? [])
      if (h.name === 'qemu' || h.name === 'virtiofsd') procs.push([h.name, readProcTree(h.pid, '/proc', h.startTime)]);
    let hostPss = 0;
    for (const [name, f] of procs) {
      if (!f) continue;
      const l = { process: name };
      if (f.rssBytes !== undefined) this.procRss.set(l, f.rssBytes);
      if (f.pssBytes !== undefined) this.procPss.set(l, f.pssBytes);
      hostPss += f.pssBytes ?? f.rssBytes ?? 0;
      if (f.cpuUserSeconds !== undefined) this.procCpu.inc({ ...l, mode: 'user' }, f.cpuUserSeconds);
      if (f.cpuSystemSeconds !== undefined) this.procCpu.inc({ ...l, mode: 'system' }, f.cpuSystemSeconds);
      if (f.threads !== undefined) this.procThreads.set(l, f.threads);
      if (f.openFds !== undefined) this.procFds.set(l, f.openFds);
      if (f.ioReadBytes !== undefined) this.procIoRead.inc(l, f.ioReadBytes);
      if (f.ioWriteBytes !== undefined) this.procIoWrite.inc(l, f.ioWriteBytes);
    }
    if (!view) return this.registry.metrics();
    this.hostMemory.set(hostPss);
    this.overheadConfigured.set(view.memoryOverheadMiB * MIB);
    if (view.vm) {
      this.vmVcpus.set(view.vm.vcpus);
      this.vmMemory.set(view.vm.memoryMiB * MIB);
    }
    if (view.boot) {
      this.boot.set({ phase: 'qemu_running' }, view.boot.qemuStartedMs / 1000);
      this.boot.set({ phase: 'agent_ready' }, view.boot.agentReadyMs / 1000);
      if (view.boot.sandboxCreatedMs !== undefined)
        this.boot.set({ phase: 'sandbox_created' }, view.boot.sandboxCreatedMs / 1000);
    }
    const agent = view.agent;
    if (!agent) return this.registry.metrics();
    const ids = view.containerIds.slice(0, MAX_CONTAINERS);
    const [guest, stats] = await Promise.all([
      agent.guestMetrics ? withTimeout(agent.guestMetrics({ timeoutMs: guestTimeoutMs }), guestTimeoutMs) : undefined,
      Promise.all(ids.map((id) => withTimeout(statsOf(agent, id), guestTimeoutMs))),
    ]);
    this.guestUp.set(guest ? 1 : 0);
    if (guest) this.setGuest(guest, hostPss);
    ids.forEach((id, i) => {
      const s = stats[i];
      if (!s) return;
      const l = { container_id: id };
      this.ctrMemory.set(l, s.memoryUsageBytes);
      if (s.memoryLimitBytes !== undefined && s.memoryLimitBytes < Number.MAX_SAFE_INTEGER)
        this.ctrMemoryLimit.set(l, s.memoryLimitBytes);
      this.ctrCpu.inc({ ...l, mode: 'user' }, s.cpuUserNs / 1e9);
      this.ctrCpu.inc({ ...l, mode: 'system' }, s.cpuKernelNs / 1e9);
      this.ctrPids.set(l, s.pids);
    });
    return this.registry.metrics();
  }

  private setGuest(g: GuestMetrics, hostPss: number): void {
    for (const [key, kind] of GUEST_MEMORY) if (g[key] !== undefined) this.guestMemory.set({ kind }, g[key]);
    for (const mode of GUEST_CPU_MODES) {
      const v = g[`guest_cpu_seconds_total_${mode}`];
      if (v !== undefined) this.guestCpu.inc({ mode }, v);
    }
    if (g.guest_cpus_online !== undefined) this.guestCpus.set(g.guest_cpus_online);
    if (g.guest_load1 !== undefined) this.guestLoad.set({ window: '1m' }, g.guest_load1);
    if (g.guest_load5 !== undefined) this.guestLoad.set({ window: '5m' }, g.guest_load5);
    if (g.guest_load15 !== undefined) this.guestLoad.set({ window: '15m' }, g.guest_load15);
    if (g.guest_procs_running !== undefined) this.guestProcs.set({ state: 'running' }, g.guest_procs_running);
    if (g.guest_procs_total !== undefined) this.guestProcs.set({ state: 'total' }, g.guest_procs_total);
    if (g.guest_uptime_seconds !== undefined) this.guestUptime.set(g.guest_uptime_seconds);
    const total = g.guest_memory_total_bytes;
    const free = g.guest_memory_free_bytes;
    if (total !== undefined && free !== undefined && hostPss > 0)
      this.overhead.set(Math.max(0, hostPss - Math.max(0, total - free)));
  }
}

function statsOf(agent: AgentClient, id: string): Promise<ContainerStats> {
  return agent.statsContainer(id);
}
