/**
 * The shim against the runc shim on the same private containerd, in one run:
 * - `ctr run --rm busybox true` wall time (median), hull's split from its own log: VM boot (QEMU start to agent
 *   ready), container create in the guest, start, and the rest (ctr, containerd, shim start, exit, teardown), plus
 *   the shim daemon's own CPU time;
 * - shim PSS with one running container (hull's daemon vs containerd-shim-runc-v2);
 * - `start` subcommand latency (the binary as containerd runs it, in a bundle of its own), with node's bare start
 *   as the floor;
 * - stdout throughput: 64 MiB from /dev/zero through an exec in a running container, to a file on the host.
 * Written to bench/out/shim.json.
 */
import { execFile, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';
import {
  BUSYBOX_IMAGE,
  REPO,
  importBusybox,
  startContainerd,
  type PrivateContainerd,
} from '../integration/lib/containerd';
import { median, printTable, round } from './lib/report';
import { shimPid } from './lib/shim-process';

const execFileAsync = promisify(execFile);
const RUNS = Number(process.env.BENCH_SHIM_RUNS ?? 5);
const START_RUNS = Number(process.env.BENCH_SHIM_START_RUNS ?? 10);
const THROUGHPUT_BYTES = 64 << 20;
const RUNTIMES = { hull: 'io.containerd.hull.v2', runc: 'io.containerd.runc.v2' } as const;
type Runtime = keyof typeof RUNTIMES;

function pss(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

/** The `container timings` and `shim exiting` lines hull's shim logged for `id` (containerd copies them into its log). */
function hullLog(
  ctd: PrivateContainerd,
  id: string,
): { timings?: Record<string, number>; exit?: Record<string, number> } {
  const out: { timings?: Record<string, number>; exit?: Record<string, number> } = {};
  for (const line of fs.readFileSync(ctd.log, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.id !== id && o.containerId !== id) continue;
      if (o.msg === 'container timings') out.timings = o as Record<string, number>;
      if (o.msg === 'shim exiting') out.exit = o as Record<string, number>;
    } catch {
      /* a partial line */
    }
  }
  return out;
}

async function runTrue(ctd: PrivateContainerd, runtime: Runtime, id: string): Promise<number> {
  const t0 = performance.now();
  const r = await ctd.ctr(['run', '--rm', '--runtime', RUNTIMES[runtime], BUSYBOX_IMAGE, id, 'true']);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`ctr run (${runtime}) exited ${r.code}: ${r.stderr}`);
  return ms;
}

/** `start` as containerd runs it, in a bundle of its own; then the daemon it started is told to shut down. */
async function startLatency(binary: string, env: NodeJS.ProcessEnv): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < START_RUNS; i++) {
    const bundle = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-start-'));
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: {} }));
    const id = `benchstart-${process.pid}-${i}`;
    try {
      const t0 = performance.now();
      // spawns: wrapper; startLatency's callers name the shim
      const started = execFileAsync(
        binary,
        [
          '-namespace',
          'benchstart',
          '-address',
          '/run/containerd/containerd.sock',
          '-publish-binary',
          '/usr/bin/containerd',
          '-id',
          id,
          'start',
        ],
        { cwd: bundle, env, timeout: 30_000 },
      );
      started.child.stdin?.end(); // no runtime options: runc's start reads stdin to its end
      const { stdout } = await started;
      times.push(performance.now() - t0);
      const address = stdout.trim();
      const client = await Client.connect(address);
      await client.call(TaskService.Shutdown, { id }, { timeoutMs: 5_000 }).catch(() => undefined);
      client.close();
      await new Promise((r) => setTimeout(r, 100));
      fs.rmSync(address.replace('unix://', ''), { force: true });
    } finally {
      fs.rmSync(bundle, { recursive: true, force: true });
    }
  }
  return times;
}

async function throughput(ctd: PrivateContainerd, runtime: Runtime): Promise<{ mbPerS: number; sha256ok: boolean }> {
  const id = `bench-tp-${runtime}`;
  const r = await ctd.ctr(['run', '-d', '--runtime', RUNTIMES[runtime], BUSYBOX_IMAGE, id, 'sleep', '600']);
  if (r.code !== 0) throw new Error(`ctr run -d (${runtime}): ${r.stderr}`);
  try {
    const out = path.join(ctd.dir, `${id}.out`);
    const t0 = performance.now();
    const ex = await ctd.ctr(
      ['task', 'exec', '--exec-id', 'tp', id, 'head', '-c', String(THROUGHPUT_BYTES), '/dev/zero'],
      { stdoutFile: out },
    );
    const s = (performance.now() - t0) / 1000;
    const data = fs.readFileSync(out);
    fs.rmSync(out);
    if (ex.code !== 0) throw new Error(`exec (${runtime}): ${ex.stderr}`);
    const ok =
      data.length === THROUGHPUT_BYTES &&
      crypto.createHash('sha256').update(data).digest('hex') ===
        crypto.createHash('sha256').update(Buffer.alloc(THROUGHPUT_BYTES)).digest('hex');
    return { mbPerS: THROUGHPUT_BYTES / 1e6 / s, sha256ok: ok };
  } finally {
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await ctd.ctr(['task', 'delete', '-f', id]);
    await ctd.ctr(['container', 'delete', id]);
  }
}

async function shimPss(ctd: PrivateContainerd, runtime: Runtime): Promise<number> {
  const id = `bench-pss-${runtime}`;
  const r = await ctd.ctr(['run', '-d', '--runtime', RUNTIMES[runtime], BUSYBOX_IMAGE, id, 'sleep', '600']);
  if (r.code !== 0) throw new Error(`ctr run -d (${runtime}): ${r.stderr}`);
  try {
    await new Promise((res) => setTimeout(res, 1_000));
    return pss(shimPid(ctd, id));
  } finally {
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await ctd.ctr(['task', 'delete', '-f', id]);
    await ctd.ctr(['container', 'delete', id]);
  }
}

export async function benchShim(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ namespace: 'bench' });
  try {
    await importBusybox(ctd);
    const wall: Record<Runtime, number[]> = { hull: [], runc: [] };
    const phases: Record<string, number[]> = {
      vmBootMs: [],
      guestCreateMs: [],
      startMs: [],
      restMs: [],
      shimCpuMs: [],
    };
    for (let i = 0; i < RUNS; i++) {
      for (const rt of ['runc', 'hull'] as const) {
        const id = `bench-${rt}-${i}`;
        const ms = await runTrue(ctd, rt, id);
        wall[rt].push(ms);
        if (rt === 'hull') {
          await new Promise((r) => setTimeout(r, 300)); // the shim's last log lines
          const { timings, exit } = hullLog(ctd, id);
          if (timings) {
            phases.vmBootMs!.push(timings.bootMs ?? NaN);
            phases.guestCreateMs!.push((timings.createMs ?? NaN) - (timings.bootMs ?? 0));
            phases.startMs!.push(timings.startMs ?? NaN);
            phases.restMs!.push(ms - (timings.createMs ?? NaN) - (timings.startMs ?? 0));
          }
          if (exit) phases.shimCpuMs!.push(exit.cpuMs ?? NaN);
        }
      }
    }
    const env = { ...process.env };
    // spawns: node; hull's own shim, a node script of this checkout
    const hullStart = await startLatency(path.join(REPO, 'bin', 'containerd-shim-hull-v2'), env);
    const runcStart = await startLatency('/usr/bin/containerd-shim-runc-v2', env);
    const nodeFloor: number[] = [];
    for (let i = 0; i < START_RUNS; i++) {
      const t0 = performance.now();
      spawnSync(process.execPath, ['-e', '0']);
      nodeFloor.push(performance.now() - t0);
    }
    const pssHull = await shimPss(ctd, 'hull');
    const pssRunc = await shimPss(ctd, 'runc');
    const tpRunc = await throughput(ctd, 'runc');
    const tpHull = await throughput(ctd, 'hull');

    const m = (xs: number[]): number => round(median(xs));
    const result = {
      ctrRunTrue: {
        runs: RUNS,
        hullMedianMs: m(wall.hull),
        runcMedianMs: m(wall.runc),
        ratio: round(median(wall.hull) / median(wall.runc), 2),
        hullPhasesMedianMs: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, m(v)])),
      },
      shimPss: {
        hullMiB: round(pssHull / 2 ** 20),
        runcMiB: round(pssRunc / 2 ** 20),
        ratio: round(pssHull / pssRunc, 2),
      },
      startSubcommand: {
        runs: START_RUNS,
        hullMedianMs: m(hullStart),
        runcMedianMs: m(runcStart),
        nodeBareStartMedianMs: m(nodeFloor),
        hullOverNodeFloor: round(median(hullStart) / median(nodeFloor), 2),
      },
      stdoutThroughput: {
        bytes: THROUGHPUT_BYTES,
        hullMBps: round(tpHull.mbPerS),
        runcMBps: round(tpRunc.mbPerS),
        ratio: round(tpHull.mbPerS / tpRunc.mbPerS, 2),
        sha256ok: tpHull.sha256ok && tpRunc.sha256ok,
      },
    };
    printTable('ctr run --rm busybox true (ms, median)', [
      { runtime: 'hull', ms: result.ctrRunTrue.hullMedianMs, ...result.ctrRunTrue.hullPhasesMedianMs },
      { runtime: 'runc', ms: result.ctrRunTrue.runcMedianMs },
    ]);
    printTable('shim', [
      { what: 'PSS MiB', hull: result.shimPss.hullMiB, runc: result.shimPss.runcMiB, ratio: result.shimPss.ratio },
      {
        what: 'start ms',
        hull: result.startSubcommand.hullMedianMs,
        runc: result.startSubcommand.runcMedianMs,
        ratio: round(median(hullStart) / median(runcStart), 2),
      },
      { what: 'node -e 0 ms (floor)', hull: result.startSubcommand.nodeBareStartMedianMs, runc: '', ratio: '' },
      {
        what: 'stdout MB/s',
        hull: result.stdoutThroughput.hullMBps,
        runc: result.stdoutThroughput.runcMBps,
        ratio: result.stdoutThroughput.ratio,
      },
    ]);
    return result;
  } finally {
    await ctd.stop();
  }
}
