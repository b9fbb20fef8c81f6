/**
 * GetMetrics: the guest's own figures as `name value` lines (a subset of Prometheus' text format, no labels, no
 * comments), read from /proc when the host asks (nothing is sampled in between). The host parses them as untrusted
 * (agent-client/guest-metrics.ts): only the names it knows, numbers only, capped.
 *
 *   guest_memory_total_bytes 2096275456
 *   guest_cpu_seconds_total_user 12.5
 *   guest_load1 0.25
 */
import fs from 'node:fs';

/** /proc/meminfo keys reported, and their metric names (kB in the file, bytes here). */
const MEMINFO: Record<string, string> = {
  MemTotal: 'guest_memory_total_bytes',
  MemFree: 'guest_memory_free_bytes',
  MemAvailable: 'guest_memory_available_bytes',
  Buffers: 'guest_memory_buffers_bytes',
  Cached: 'guest_memory_cached_bytes',
  Shmem: 'guest_memory_shmem_bytes',
  AnonPages: 'guest_memory_anon_bytes',
  Slab: 'guest_memory_slab_bytes',
};
/** The `cpu` line of /proc/stat, in order (USER_HZ ticks). */
const CPU_MODES = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'];
/** USER_HZ is 100 on every Linux architecture hull boots. */
const USER_HZ = 100;

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function guestMetricsText(procRoot = '/proc'): string {
  const lines: string[] = [];
  for (const line of read(`${procRoot}/meminfo`).split('\n')) {
    const m = /^(\w+):\s+(\d+)\s*kB$/.exec(line.trim());
    const name = m && MEMINFO[m[1]!];
    if (name) lines.push(`${name} ${Number(m[2]) * 1024}`);
  }
  const stat = read(`${procRoot}/stat`);
  const cpu = /^cpu\s+(.*)$/m.exec(stat);
  if (cpu) {
    const ticks = cpu[1]!.trim().split(/\s+/).map(Number);
    CPU_MODES.forEach((mode, i) => {
      const t = ticks[i];
      if (t !== undefined && Number.isFinite(t)) lines.push(`guest_cpu_seconds_total_${mode} ${t / USER_HZ}`);
    });
  }
  const cpus = stat.split('\n').filter((l) => /^cpu\d+\s/.test(l)).length;
  if (cpus > 0) lines.push(`guest_cpus_online ${cpus}`);
  const load = read(`${procRoot}/loadavg`).trim().split(/\s+/);
  ['guest_load1', 'guest_load5', 'guest_load15'].forEach((name, i) => {
    if (/^\d+(\.\d+)?$/.test(load[i] ?? '')) lines.push(`${name} ${Number(load[i])}`);
  });
  const procs = /^(\d+)\/(\d+)$/.exec(load[3] ?? '');
  if (procs) lines.push(`guest_procs_running ${Number(procs[1])}`, `guest_procs_total ${Number(procs[2])}`);
  // The agent's own resident memory (node), so the host can split the guest's anonymous memory.
  const rss = /^VmRSS:\s+(\d+)\s*kB$/m.exec(read(`${procRoot}/self/status`));
  if (rss) lines.push(`guest_agent_rss_bytes ${Number(rss[1]) * 1024}`);
  const uptime = Number(read(`${procRoot}/uptime`).trim().split(/\s+/)[0]);
  if (Number.isFinite(uptime) && uptime > 0) lines.push(`guest_uptime_seconds ${uptime}`);
  return lines.join('\n') + '\n';
}
