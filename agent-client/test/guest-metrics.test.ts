import assert from 'node:assert/strict';
import { MAX_TEXT_BYTES, MAX_VALUE, parseGuestMetrics } from '../guest-metrics';

describe('agent-client guest metrics (untrusted text)', () => {
  it('keeps known names with plain non-negative numbers', () => {
    assert.deepEqual(parseGuestMetrics('guest_memory_total_bytes 2048\nguest_load1 0.25\n'), {
      guest_memory_total_bytes: 2048,
      guest_load1: 0.25,
    });
  });

  it('drops unknown names, labels, comments, negative, exotic and malformed values', () => {
    const text = [
      'evil_metric 1',
      'guest_memory_free_bytes{kind="x"} 5',
      '# HELP guest_load5 nope',
      'guest_load5 -1',
      'guest_load15 NaN',
      'guest_uptime_seconds 1e9',
      'guest_cpus_online 0x10',
      'guest_procs_total  7',
      'guest_procs_running 3 123',
      'guest_memory_cached_bytes 12',
    ].join('\n');
    assert.deepEqual(parseGuestMetrics(text), { guest_memory_cached_bytes: 12 });
  });

  it('caps values and the text read', () => {
    assert.deepEqual(parseGuestMetrics('guest_memory_total_bytes 99999999999999999999'), {
      guest_memory_total_bytes: MAX_VALUE,
    });
    const late = `${' '.repeat(MAX_TEXT_BYTES)}\nguest_load1 1\n`;
    assert.deepEqual(parseGuestMetrics(late), {});
  });
});
