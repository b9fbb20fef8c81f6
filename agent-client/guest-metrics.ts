/**
 * The guest's figures from GetMetrics (agent/metrics.ts), parsed as untrusted text: at most MAX_TEXT_BYTES, only
 * `name value` lines whose name is one hull knows, values finite, non-negative and capped; anything else is
 * skipped. Guest text never becomes a metric name or label.
 */
export const GUEST_METRIC_NAMES = [
  'guest_memory_total_bytes',
  'guest_memory_free_bytes',
  'guest_memory_available_bytes',
  'guest_memory_buffers_bytes',
  'guest_memory_cached_bytes',
  'guest_memory_shmem_bytes',
  'guest_memory_anon_bytes',
  'guest_memory_slab_bytes',
  'guest_cpu_seconds_total_user',
  'guest_cpu_seconds_total_nice',
  'guest_cpu_seconds_total_system',
  'guest_cpu_seconds_total_idle',
  'guest_cpu_seconds_total_iowait',
  'guest_cpu_seconds_total_irq',
  'guest_cpu_seconds_total_softirq',
  'guest_cpu_seconds_total_steal',
  'guest_cpus_online',
  'guest_load1',
  'guest_load5',
  'guest_load15',
  'guest_procs_running',
  'guest_procs_total',
  'guest_uptime_seconds',
  'guest_agent_rss_bytes',
] as const;
export type GuestMetricName = (typeof GUEST_METRIC_NAMES)[number];
export type GuestMetrics = Partial<Record<GuestMetricName, number>>;

/** The most text read from the guest's answer. */
export const MAX_TEXT_BYTES = 16 * 1024;
/** No figure is larger (2^53: 8 PiB of memory, 285 million years of CPU). */
export const MAX_VALUE = Number.MAX_SAFE_INTEGER;
const KNOWN = new Set<string>(GUEST_METRIC_NAMES);

export function parseGuestMetrics(text: string): GuestMetrics {
  const out: GuestMetrics = {};
  for (const line of text.slice(0, MAX_TEXT_BYTES).split('\n')) {
    const m = /^([a-z0-9_]{1,64}) ([0-9]{1,20}(?:\.[0-9]{1,9})?)$/.exec(line);
    if (!m || !KNOWN.has(m[1]!)) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v) && v >= 0) out[m[1] as GuestMetricName] = Math.min(v, MAX_VALUE);
  }
  return out;
}
