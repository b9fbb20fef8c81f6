import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { guestMetricsText } from '../metrics';

describe('agent GetMetrics text', () => {
  it('reads meminfo, stat, loadavg and uptime into `name value` lines', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-proc-'));
    try {
      fs.writeFileSync(
        path.join(proc, 'meminfo'),
        'MemTotal:        2000 kB\nMemFree:         500 kB\nMemAvailable:    1500 kB\nHugePages_Total:       0\n',
      );
      fs.writeFileSync(
        path.join(proc, 'stat'),
        'cpu  100 0 50 1000 2 0 1 0 0 0\ncpu0 100 0 50 1000 2 0 1 0 0 0\nintr 5\n',
      );
      fs.writeFileSync(path.join(proc, 'loadavg'), '0.50 0.25 0.10 2/80 123\n');
      fs.writeFileSync(path.join(proc, 'uptime'), '42.50 40.00\n');
      fs.mkdirSync(path.join(proc, 'self'));
      fs.writeFileSync(path.join(proc, 'self', 'status'), 'Name:\tnode\nVmHWM:\t  50000 kB\nVmRSS:\t   40000 kB\n');
      const lines = guestMetricsText(proc).trim().split('\n');
      assert.deepEqual(lines, [
        'guest_memory_total_bytes 2048000',
        'guest_memory_free_bytes 512000',
        'guest_memory_available_bytes 1536000',
        'guest_cpu_seconds_total_user 1',
        'guest_cpu_seconds_total_nice 0',
        'guest_cpu_seconds_total_system 0.5',
        'guest_cpu_seconds_total_idle 10',
        'guest_cpu_seconds_total_iowait 0.02',
        'guest_cpu_seconds_total_irq 0',
        'guest_cpu_seconds_total_softirq 0.01',
        'guest_cpu_seconds_total_steal 0',
        'guest_cpus_online 1',
        'guest_load1 0.5',
        'guest_load5 0.25',
        'guest_load15 0.1',
        'guest_procs_running 2',
        'guest_procs_total 80',
        'guest_agent_rss_bytes 40960000',
        'guest_uptime_seconds 42.5',
      ]);
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });

  it('says nothing of what it cannot read', () => {
    assert.equal(guestMetricsText('/nonexistent-proc'), '\n');
  });
});
