/**
 * What tracing costs, hull with `[runtime] enable_tracing` off and on (spans to a real OTLP/gRPC receiver in this
 * process, integration/lib/otlp-receiver.ts), on one private containerd:
 * - `ctr run --rm busybox true` wall time (median of BENCH_TRACING_RUNS, default 3);
 * - per Task call, on a running container, straight to its shim's socket: `State` (answered by the shim alone:
 *   the span, its export) and `Stats` (an agent call too: the client span, the traceparent, the guest's span and
 *   the drain that brings it back), median and p99 of BENCH_TRACING_CALLS (default 300) calls one at a time;
 * - the shim daemon's RSS with that container running, before and after those calls.
 * Written to bench/out/tracing.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import { OtlpReceiver } from '../integration/lib/otlp-receiver';
import { median, percentile, printTable, round } from './lib/report';
import { shimPid, rssBytes as rss } from './lib/shim-process';

const RUNS = Number(process.env.BENCH_TRACING_RUNS ?? 3);
const CALLS = Number(process.env.BENCH_TRACING_CALLS ?? 300);
const RUNTIME = 'io.containerd.hull.v2';
type Mode = 'off' | 'on';

async function callTimes(call: () => Promise<unknown>, n: number): Promise<{ p50Ms: number; p99Ms: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50Ms: round(median(times), 3), p99Ms: round(percentile(times, 99), 3) };
}

async function runningContainer(ctd: PrivateContainerd, config: string, mode: Mode): Promise<Record<string, unknown>> {
  const id = `bench-tracing-${mode}`;
  const r = await ctd.ctr([
    'run',
    '-d',
    '--runtime',
    RUNTIME,
    '--runtime-config-path',
    config,
    BUSYBOX_IMAGE,
    id,
    'sleep',
    '600',
  ]);
  if (r.code !== 0) throw new Error(`ctr run -d (${mode}): ${r.stderr}`);
  try {
    await new Promise((res) => setTimeout(res, 1_000));
    const pid = shimPid(ctd, id);
    const rssBefore = rss(pid);
    const address = fs.readFileSync(path.join(fs.readlinkSync(`/proc/${pid}/cwd`), 'address'), 'utf8').trim();
    const client = await Client.connect(address);
    try {
      const state = await callTimes(() => client.call(TaskService.State, { id }, { timeoutMs: 10_000 }), CALLS);
      const stats = await callTimes(() => client.call(TaskService.Stats, { id }, { timeoutMs: 10_000 }), CALLS);
      return { rssBytes: rssBefore, rssAfterCallsBytes: rss(pid), state, stats };
    } finally {
      client.close();
    }
  } finally {
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await ctd.ctr(['task', 'delete', '-f', id]);
    await ctd.ctr(['container', 'delete', id]);
  }
}

export async function benchTracing(): Promise<Record<string, unknown>> {
  const receiver = await OtlpReceiver.start();
  const ctd = await startContainerd({ namespace: 'bench' });
  try {
    await importBusybox(ctd);
    const configs = {} as Record<Mode, string>;
    for (const mode of ['off', 'on'] as const) {
      configs[mode] = path.join(ctd.dir, `tracing-${mode}.toml`);
      fs.writeFileSync(
        configs[mode],
        [
          '[runtime]',
          `state_dir = "${ctd.stateDir}"`,
          `enable_tracing = ${mode === 'on'}`,
          `tracing_endpoint = "${receiver.endpoint}"`,
          '',
        ].join('\n'),
      );
    }
    const wall: Record<Mode, number[]> = { off: [], on: [] };
    for (let i = 0; i < RUNS; i++) {
      for (const mode of ['off', 'on'] as const) {
        const t0 = performance.now();
        const r = await ctd.ctr([
          'run',
          '--rm',
          '--runtime',
          RUNTIME,
          '--runtime-config-path',
          configs[mode],
          BUSYBOX_IMAGE,
          `bench-tr-${mode}-${i}`,
          'true',
        ]);
        if (r.code !== 0) throw new Error(`ctr run (${mode}) exited ${r.code}: ${r.stderr}`);
        wall[mode].push(performance.now() - t0);
      }
    }
    const running: Record<Mode, Record<string, unknown>> = {
      off: await runningContainer(ctd, configs.off, 'off'),
      on: await runningContainer(ctd, configs.on, 'on'),
    };
    const spansReceived = receiver.spans.length;
    const figures = {
      runs: RUNS,
      calls: CALLS,
      ctrRunMs: { off: round(median(wall.off)), on: round(median(wall.on)), all: wall },
      running,
      spansReceived,
    };
    printTable('tracing off vs on', [
      { what: 'ctr run --rm busybox true (ms, median)', off: figures.ctrRunMs.off, on: figures.ctrRunMs.on },
      ...(['state', 'stats'] as const).flatMap((k) => [
        {
          what: `Task ${k === 'state' ? 'State' : 'Stats'} p50 (ms)`,
          off: (running.off[k] as { p50Ms: number }).p50Ms,
          on: (running.on[k] as { p50Ms: number }).p50Ms,
        },
        {
          what: `Task ${k === 'state' ? 'State' : 'Stats'} p99 (ms)`,
          off: (running.off[k] as { p99Ms: number }).p99Ms,
          on: (running.on[k] as { p99Ms: number }).p99Ms,
        },
      ]),
      {
        what: 'shim RSS, container running (MiB)',
        off: round((running.off.rssBytes as number) / 2 ** 20),
        on: round((running.on.rssBytes as number) / 2 ** 20),
      },
      {
        what: `shim RSS after ${2 * CALLS} calls (MiB)`,
        off: round((running.off.rssAfterCallsBytes as number) / 2 ** 20),
        on: round((running.on.rssAfterCallsBytes as number) / 2 ** 20),
      },
    ]);
    return figures;
  } finally {
    await ctd.stop();
    await receiver.stop();
  }
}
