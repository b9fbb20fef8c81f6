/**
 * Metrics scrape cost: hull pods through CRI (busybox `sleep` each), hull-monitor (bin/hull-monitor) over their
 * shims; for each pod count in BENCH_METRICS_LEVELS (default 1,10), SCRAPES scrapes of hull-monitor's /metrics
 * and of one shim's socket directly, their latency (median, max) and bytes. Pods are added between levels, not
 * restarted. Written to bench/out/metrics.json.
 */
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd } from '../integration/lib/containerd';
import { httpGetText, startHullMonitor } from '../integration/lib/metrics';
import { median, printTable, round } from './lib/report';

const LEVELS = (process.env.BENCH_METRICS_LEVELS ?? '1,10').split(',').map(Number);
const SCRAPES = Number(process.env.BENCH_METRICS_SCRAPES ?? 10);

function getSocket(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) =>
    http
      .get({ socketPath, path: '/metrics' }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      })
      .on('error', reject),
  );
}

async function timed(
  n: number,
  fn: () => Promise<string>,
): Promise<{ medianMs: number; maxMs: number; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const text = await fn();
    ms.push(performance.now() - t0);
    bytes = Buffer.byteLength(text);
  }
  return { medianMs: round(median(ms)), maxMs: round(Math.max(...ms)), bytes };
}

export async function benchMetrics(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ cri: true });
  const client = ctd.cri!.client;
  const monitor = await startHullMonitor({ stateDir: ctd.stateDir, criSocket: ctd.address }).catch(async (err) => {
    await ctd.stop();
    throw err;
  });
  const pods: string[] = [];
  const rows: Record<string, number>[] = [];
  try {
    await importBusybox(ctd);
    for (const level of LEVELS) {
      while (pods.length < level) {
        const name = `metrics-${pods.length}`;
        const logDirectory = path.join(ctd.cri!.logRoot, name);
        fs.mkdirSync(logDirectory, { recursive: true });
        const config = {
          metadata: { name, uid: `bench-${process.pid}-${name}`, namespace: 'bench' },
          hostname: name,
          logDirectory,
          linux: {},
        };
        const id = await ctd.cri!.runPod(config, 'hull');
        pods.push(id);
        const { containerId } = await client.createContainer({
          podSandboxId: id,
          sandboxConfig: config,
          config: {
            metadata: { name: 'main' },
            image: { image: BUSYBOX_IMAGE },
            command: ['sleep', '3600'],
            logPath: 'main.log',
          },
        });
        await client.startContainer(containerId);
      }
      await httpGetText(monitor.url); // a first scrape (JIT warm-up of both sides)
      const viaMonitor = await timed(SCRAPES, async () => (await httpGetText(monitor.url)).body);
      const oneShim = await timed(SCRAPES, () =>
        getSocket(path.join(ctd.stateDir, ctd.namespace, pods[0]!, 'metrics.sock')),
      );
      const text = (await httpGetText(monitor.url)).body;
      const up = (text.match(/^hull_monitor_shim_up\{.*\} 1$/gm) ?? []).length;
      rows.push({
        pods: level,
        shimsAnswering: up,
        monitorMedianMs: viaMonitor.medianMs,
        monitorMaxMs: viaMonitor.maxMs,
        monitorBytes: viaMonitor.bytes,
        shimMedianMs: oneShim.medianMs,
        shimMaxMs: oneShim.maxMs,
        shimBytes: oneShim.bytes,
      });
    }
  } finally {
    for (const id of pods) {
      await client.stopPodSandbox(id).catch(() => undefined);
      await client.removePodSandbox(id).catch(() => undefined);
    }
    await monitor.stop();
    await ctd.stop();
  }
  printTable(`metrics scrape (${SCRAPES} scrapes per level)`, rows);
  return { scrapes: SCRAPES, levels: rows };
}

if (require.main === module)
  benchMetrics().then(
    (r) => console.log(JSON.stringify(r, null, 2)),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
