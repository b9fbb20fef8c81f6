import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient, ContainerStats, GuestMetrics } from '../../agent-client';
import type { SandboxMetricsView } from '../../core';
import { MetricsServer } from '../metrics-server';
import { readProc, readProcTree } from '../proc-stats';
import { ShimMetrics } from '../prometheus';
import { timeTaskRpcs } from '../rpc-timing';

const stats = (mem: number): ContainerStats => ({
  cpuUsageNs: 3e9,
  cpuUserNs: 2e9,
  cpuKernelNs: 1e9,
  memoryUsageBytes: mem,
  memoryMaxUsageBytes: mem,
  memoryLimitBytes: 256 * 1024 * 1024,
  memoryStat: {},
  pids: 2,
  pidsLimit: undefined,
});

function fakeAgent(guest: GuestMetrics | 'hang', statsOf: (id: string) => Promise<ContainerStats>): AgentClient {
  return {
    guestMetrics: () => (guest === 'hang' ? new Promise<GuestMetrics>(() => undefined) : Promise.resolve(guest)),
    statsContainer: statsOf,
  } as unknown as AgentClient;
}

function view(agent: AgentClient | undefined, containerIds = ['sb', 'c1']): SandboxMetricsView {
  return {
    helpers: [{ name: 'qemu', pid: process.pid }],
    vm: { vcpus: 2, memoryMiB: 512 },
    memoryOverheadMiB: 288,
    boot: { qemuStartedMs: 1500, agentReadyMs: 9000, sandboxCreatedMs: 12000 },
    containerIds,
    agent,
  };
}

function promtool(text: string): void {
  const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
}

describe('shim metrics', () => {
  it('renders process, guest, container, boot and RPC figures that promtool accepts', async () => {
    const m = new ShimMetrics();
    m.observeTaskCall('Create', 12.5, false);
    m.observeTaskCall('Kill', 0.002, true);
    m.observeAgentCall('CreateContainer', 3, false);
    const guest: GuestMetrics = {
      guest_memory_total_bytes: 500 * 1024 * 1024,
      guest_memory_free_bytes: 400 * 1024 * 1024,
      guest_cpu_seconds_total_user: 12,
      guest_load1: 0.5,
      guest_cpus_online: 2,
    };
    m.setSandbox(() => view(fakeAgent(guest, (id) => Promise.resolve(stats(id === 'c1' ? 1000 : 2000)))));
    const text = await m.render();
    promtool(text);
    assert.match(text, /^hull_task_rpc_duration_seconds_count\{method="Create",outcome="ok"\} 1$/m);
    assert.match(text, /^hull_task_rpc_duration_seconds_count\{method="Kill",outcome="error"\} 1$/m);
    assert.match(text, /^hull_agent_rpc_duration_seconds_sum\{method="CreateContainer",outcome="ok"\} 3$/m);
    assert.match(text, /^hull_guest_memory_bytes\{kind="total"\} 524288000$/m);
    assert.match(text, /^hull_guest_cpu_seconds_total\{mode="user"\} 12$/m);
    assert.match(text, /^hull_guest_load_average\{window="1m"\} 0.5$/m);
    assert.match(text, /^hull_guest_metrics_up 1$/m);
    assert.match(text, /^hull_container_memory_usage_bytes\{container_id="c1"\} 1000$/m);
    assert.match(text, /^hull_container_cpu_seconds_total\{container_id="c1",mode="user"\} 2$/m);
    assert.match(text, /^hull_container_memory_limit_bytes\{container_id="sb"\} 268435456$/m);
    assert.match(text, /^hull_boot_phase_seconds\{phase="agent_ready"\} 9$/m);
    assert.match(text, /^hull_vm_memory_bytes 536870912$/m);
    assert.match(text, /^hull_pod_overhead_configured_bytes 301989888$/m);
    assert.match(text, /^hull_process_resident_memory_bytes\{process="shim"\} \d+$/m);
    assert.match(text, /^hull_process_resident_memory_bytes\{process="qemu"\} \d+$/m);
    assert.match(text, /^hull_process_cpu_seconds_total\{process="qemu",mode="user"\} [\d.e+-]+$/m);
    assert.match(text, /^hull_pod_host_memory_bytes \d+$/m);
  });

  it('keeps counters absolute across scrapes and forgets containers that went', async () => {
    const m = new ShimMetrics();
    let ids = ['sb', 'c1'];
    m.setSandbox(() =>
      view(
        fakeAgent({ guest_cpu_seconds_total_user: 5 }, () => Promise.resolve(stats(1))),
        ids,
      ),
    );
    await m.render();
    ids = ['sb'];
    const text = await m.render();
    assert.match(text, /^hull_guest_cpu_seconds_total\{mode="user"\} 5$/m);
    assert.doesNotMatch(text, /container_id="c1"/);
    assert.match(text, /^hull_shim_scrapes_total 2$/m);
  });

  it('answers within the guest deadline when the agent hangs, saying the guest did not answer', async () => {
    const m = new ShimMetrics();
    m.setSandbox(() => view(fakeAgent('hang', () => new Promise(() => undefined))));
    const t0 = Date.now();
    const text = await m.render(200);
    assert.ok(Date.now() - t0 < 2000);
    assert.match(text, /^hull_guest_metrics_up 0$/m);
    assert.doesNotMatch(text, /container_id=/);
    promtool(text);
  });

  it('serves GET /metrics on a 0600 unix socket, and removes it on close', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-shim-metrics-'));
    const sock = path.join(dir, 'metrics.sock');
    const server = await MetricsServer.listen(sock, new ShimMetrics());
    try {
      assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
      const body = await new Promise<string>((resolve, reject) =>
        http
          .get({ socketPath: sock, path: '/metrics' }, (res) => {
            let b = '';
            res.on('data', (c: Buffer) => (b += c.toString()));
            res.on('end', () => resolve(b));
          })
          .on('error', reject),
      );
      assert.match(body, /^hull_process_threads\{process="shim"\} \d+$/m);
    } finally {
      server.close();
      assert.equal(fs.existsSync(sock), false);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads /proc figures of a live process, and nothing of a dead one', () => {
    const f = readProcTree(process.pid)!;
    assert.ok(f.rssBytes! > 0 && f.threads! >= 1 && f.openFds! > 0 && f.cpuUserSeconds! >= 0);
    assert.equal(readProc(0), undefined);
    const startTime = fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[22 - 3]!;
    assert.ok(readProc(process.pid, '/proc', startTime), 'the same process');
    assert.equal(readProc(process.pid, '/proc', `${startTime}1`), undefined, 'a reused pid is not read');
    assert.equal(readProc(2 ** 22 + 1), undefined);
  });
});

describe('Task RPC timing', () => {
  it('times each handler, success and failure, and passes results and errors through', async () => {
    const seen: [string, boolean][] = [];
    const h = timeTaskRpcs(
      { A: (x: number) => Promise.resolve(x + 1), B: () => Promise.reject(new Error('no')) },
      (method, seconds, failed) => {
        assert.ok(seconds >= 0);
        seen.push([method, failed]);
      },
    );
    assert.equal(await h.A(1), 2);
    await assert.rejects(h.B(), /no/);
    assert.deepEqual(seen, [
      ['A', false],
      ['B', true],
    ]);
  });
});
