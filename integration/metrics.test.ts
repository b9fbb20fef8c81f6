/**
 * Metrics end to end: two hull pods through containerd's CRI plugin, hull-monitor (bin/hull-monitor) finding their
 * shims' sockets and naming the pods through CRI, and a real Prometheus (Debian's) scraping hull-monitor on
 * loopback: its query API must return one series per pod for the guest's memory and the agent's RPC latency,
 * with the pods' labels, and promtool must accept hull-monitor's answer.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import type { cri, CriClient } from './lib/cri';
import { guestArtifacts } from './lib/guest';
import {
  httpGetText,
  startHullMonitor,
  startPrometheus,
  type RunningMonitor,
  type RunningPrometheus,
} from './lib/metrics';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('metrics: hull-monitor and Prometheus (CRI, real VMs)', function () {
  let ctd: PrivateContainerd | undefined;
  let client: CriClient;
  let monitor: RunningMonitor | undefined;
  let prom: RunningPrometheus | undefined;
  let promDir: string | undefined;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd({ cri: true });
    client = ctd.cri!.client;
    await importBusybox(ctd);
    monitor = await startHullMonitor({ stateDir: ctd.stateDir, criSocket: ctd.address });
    promDir = fs.mkdtempSync(path.join(ctd.dir, 'prom-'));
    prom = await startPrometheus({ dir: promDir, target: `127.0.0.1:${monitor.port}` });
  });

  after(async () => {
    await prom?.stop();
    await monitor?.stop();
    await ctd?.stop(); // removes promDir with the run's folder
  });

  function podConfig(name: string): cri.IPodSandboxConfig {
    const logDirectory = path.join(ctd!.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: crypto.randomUUID(), namespace: 'hullmetrics', attempt: 0 },
      hostname: name,
      logDirectory,
      portMappings: [],
      labels: { test: 'metrics' },
      linux: {},
    };
  }

  async function runPod(name: string): Promise<{ id: string; config: cri.IPodSandboxConfig; containerId: string }> {
    const config = podConfig(name);
    const id = await ctd!.cri!.runPod(config, 'hull');
    const { containerId } = await client.createContainer({
      podSandboxId: id,
      sandboxConfig: config,
      config: {
        metadata: { name: 'sleeper' },
        image: { image: BUSYBOX_IMAGE },
        command: ['sleep', '3600'],
        logPath: 'sleeper.log',
      },
    });
    await client.startContainer(containerId);
    return { id, config, containerId };
  }

  /** Polls an instant query until `ok` holds for its result (Prometheus scrapes every 2 s). */
  async function until(
    promql: string,
    ok: (r: { metric: Record<string, string>; value: [number, string] }[]) => boolean,
    ms = 90_000,
  ): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const r = await prom!.query(promql);
      if (ok(r)) return r;
      if (Date.now() > deadline)
        assert.fail(`${promql}: after ${ms} ms Prometheus has ${JSON.stringify(r.map((x) => x.metric))}`);
      await sleep(1000);
    }
  }

  it('gives Prometheus a series per pod for guest memory and RPC latency, with the pod labels', async () => {
    const pods = await Promise.all([runPod('metrics-a'), runPod('metrics-b')]);
    const byId = new Map(pods.map((p) => [p.id, p]));
    // A pod's first scrapes may come before CRI lists it (the shim serves from inside RunPodSandbox): those
    // samples carry sandbox_id only, and Prometheus marks them stale at the next scrape. Wait for the named ones.
    const samePods = (r: { metric: Record<string, string> }[]): boolean =>
      pods.every((p) => r.some((x) => x.metric.sandbox_id === p.id && x.metric.pod_name === p.config.metadata!.name));

    const memory = await until(
      'hull_guest_memory_bytes{kind="total",job="hull"}',
      (r) => r.length === 2 && samePods(r),
    );
    for (const s of memory) {
      const p = byId.get(s.metric.sandbox_id!)!;
      assert.equal(s.metric.pod_name, p.config.metadata!.name);
      assert.equal(s.metric.pod_namespace, 'hullmetrics');
      assert.equal(s.metric.pod_uid, p.config.metadata!.uid);
      assert.equal(s.metric.containerd_namespace, 'k8s.io');
      const bytes = Number(s.value[1]);
      assert.ok(bytes > 64 * 2 ** 20 && bytes < 64 * 2 ** 30, `guest MemTotal ${bytes}`);
    }
    // Prometheus' latest sample may predate the sleeper's CreateContainer: wait for both containers' calls.
    const agentRpc = await until(
      'hull_agent_rpc_duration_seconds_count{method="CreateContainer",outcome="ok"}',
      (r) => r.length === 2 && samePods(r) && r.every((x) => Number(x.value[1]) >= 2),
    );
    for (const s of agentRpc) {
      assert.equal(s.metric.pod_name, byId.get(s.metric.sandbox_id!)!.config.metadata!.name);
      assert.ok(Number(s.value[1]) >= 2, 'the pause container and the sleeper');
    }
    const taskRpc = await until('hull_task_rpc_duration_seconds_count{method="Create",outcome="ok"}', (r) =>
      samePods(r),
    );
    assert.equal(taskRpc.length, 2);
    const containers = await until('hull_container_memory_usage_bytes', (r) =>
      pods.every((p) => r.some((x) => x.metric.container_id === p.containerId)),
    );
    for (const s of containers) assert.ok(Number(s.value[1]) > 0);
    await until('hull_process_resident_memory_bytes{process="qemu"}', (r) => r.length === 2 && samePods(r));
    await until('hull_boot_phase_seconds{phase="agent_ready"}', (r) => r.length === 2);

    // hull-monitor's own answer passes promtool.
    const { status, body } = await httpGetText(monitor!.url);
    assert.equal(status, 200);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    assert.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);
    assert.match(body, /^hull_monitor_shims 2$/m);
    assert.match(body, /^hull_monitor_scrape_errors_total\{reason="refused"\} 0$/m);

    // The pods gone, their sockets are gone with their state folders.
    for (const p of pods) {
      await client.stopPodSandbox(p.id);
      await client.removePodSandbox(p.id);
    }
    const after = await httpGetText(monitor!.url);
    assert.match(after.body, /^hull_monitor_shims 0$/m);
    assert.doesNotMatch(after.body, /^hull_guest_memory_bytes/m);
  });
});
