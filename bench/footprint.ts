/**
 * Memory of hull's node processes against node's own floor, on the host (same node binary as the guest's).
 *
 * - shim: the shim daemon's modules (dist/shim/daemon.js and all it imports, as `containerd-shim-hull-v2` loads them
 *   before serving) against an empty node with the same flags; garbage collected before measuring. With
 *   BENCH_FOOTPRINT_BASELINE=<an older dist folder> that build's daemon is measured too, alternating run by run.
 * - agent: the agent (dist/agent/main.js serving on a unix socket, HULL_AGENT_SOCKET, so it touches nothing of the
 *   host) and an empty node, under each of AGENT_FLAG_SETS: RSS and anonymous (private) memory a second after it
 *   serves, and its time until it serves. On the host PSS is shared with every other node process, so RSS and
 *   anonymous memory are the figures; the guest's own (one node, PSS) is bench/boot.ts's agent_pss_*.
 *
 * Medians of BENCH_FOOTPRINT_RUNS (default 5), in MiB and ms.
 */
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { median, printTable, round } from './lib/report';

const RUNS = Number(process.env.BENCH_FOOTPRINT_RUNS ?? 5);
const BASELINE = process.env.BENCH_FOOTPRINT_BASELINE;
const DIST = path.resolve(__dirname, '..');
const CHILD = path.join(__dirname, 'footprint-child.js');
const execFileAsync = promisify(execFile);

/** V8 and libuv settings tried for the agent: [name, node flags, environment]. */
export const AGENT_FLAG_SETS: [string, string[], Record<string, string>][] = [
  ['default', [], {}],
  ['semi-space 1', ['--max-semi-space-size=1'], {}],
  ['old-space 64', ['--max-old-space-size=64'], {}],
  ['single-threaded-gc', ['--single-threaded-gc'], {}],
  ['v8-pool 1, uv pool 1', ['--v8-pool-size=1'], { UV_THREADPOOL_SIZE: '1' }],
  ['lite-mode', ['--lite-mode'], {}],
  ['jitless', ['--jitless'], {}],
];

interface Mem {
  loadMs: number;
  rssKiB: number;
  pssKiB: number;
  anonKiB: number;
  heapKiB: number;
}

async function loadOnce(flags: string[], target: string): Promise<Mem> {
  // spawns: node; this checkout's node (process.execPath)
  const { stdout } = await execFileAsync(process.execPath, [...flags, CHILD, target], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Mem;
}

function smaps(pid: number): { rssKiB: number; anonKiB: number } {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
  return { rssKiB: kib('Rss'), anonKiB: kib('Anonymous') };
}

/** The agent serving on a unix socket: time until the socket exists, then its memory a second later. */
async function agentOnce(flags: string[], env: Record<string, string>, dir: string): Promise<Mem> {
  const socket = path.join(dir, `agent-${process.hrtime.bigint()}.sock`);
  const t0 = performance.now();
  // spawns: node; this checkout's node (process.execPath)
  const child = spawn(process.execPath, [...flags, path.join(DIST, 'agent', 'main.js')], {
    env: { ...process.env, ...env, HULL_AGENT_SOCKET: socket },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    let readyMs = NaN;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (fs.existsSync(socket)) {
        readyMs = performance.now() - t0;
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    if (Number.isNaN(readyMs)) throw new Error(`the agent (${flags.join(' ')}) did not serve`);
    await new Promise((r) => setTimeout(r, 1000));
    return { loadMs: readyMs, ...smaps(child.pid!), pssKiB: NaN, heapKiB: NaN };
  } finally {
    child.kill('SIGKILL');
    await exited;
    fs.rmSync(socket, { force: true });
  }
}

/** An empty node with these flags, measured from outside like the agent. */
async function floorOnce(flags: string[], env: Record<string, string>): Promise<Mem> {
  // spawns: node; this checkout's node (process.execPath)
  const child = spawn(process.execPath, [...flags, '-e', 'setInterval(() => {}, 1000)'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await new Promise((r) => setTimeout(r, 1000));
    return { loadMs: NaN, ...smaps(child.pid!), pssKiB: NaN, heapKiB: NaN };
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

const MiB = (kib: number): number => round(kib / 1024);

function medians(xs: Mem[]): Record<string, number> {
  const m = (k: keyof Mem): number => median(xs.map((x) => x[k]));
  return {
    load_ms: round(m('loadMs')),
    rss_mib: MiB(m('rssKiB')),
    pss_mib: MiB(m('pssKiB')),
    anon_mib: MiB(m('anonKiB')),
    heap_mib: MiB(m('heapKiB')),
  };
}

export async function benchFootprint(): Promise<Record<string, unknown>> {
  // The shim daemon's modules against node's floor (and an older build's, when given).
  const shimTargets: [string, string][] = [
    ['node floor', '-'],
    ['shim daemon', path.join(DIST, 'shim', 'daemon.js')],
    ...(BASELINE ? [['shim daemon, baseline', path.resolve(BASELINE, 'shim', 'daemon.js')] as [string, string]] : []),
  ];
  const shimRuns = new Map<string, Mem[]>(shimTargets.map(([n]) => [n, []]));
  for (let r = 0; r < RUNS; r++)
    for (const [name, target] of r % 2 ? [...shimTargets].reverse() : shimTargets)
      shimRuns.get(name)!.push(await loadOnce(['--expose-gc'], target));
  const shim = shimTargets.map(([name]) => ({ process: name, ...medians(shimRuns.get(name)!) }));
  printTable(`shim daemon's modules against node's floor (host, after a GC), medians of ${RUNS}`, shim);

  // The agent under each flag set, with node's floor under the same flags.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-footprint-'));
  const agent: Record<string, string | number>[] = [];
  try {
    const runs = new Map<string, { agent: Mem[]; floor: Mem[] }>(
      AGENT_FLAG_SETS.map(([n]) => [n, { agent: [], floor: [] }]),
    );
    for (let r = 0; r < RUNS; r++)
      for (const [name, flags, env] of AGENT_FLAG_SETS) {
        runs.get(name)!.agent.push(await agentOnce(flags, env, dir));
        runs.get(name)!.floor.push(await floorOnce(flags, env));
      }
    for (const [name] of AGENT_FLAG_SETS) {
      const a = medians(runs.get(name)!.agent);
      const f = medians(runs.get(name)!.floor);
      agent.push({
        flags: name,
        serving_ms: a.load_ms!,
        agent_rss_mib: a.rss_mib!,
        agent_anon_mib: a.anon_mib!,
        floor_rss_mib: f.rss_mib!,
        floor_anon_mib: f.anon_mib!,
        over_floor_rss_mib: round(a.rss_mib! - f.rss_mib!),
      });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(`the agent (host, serving on a unix socket) against node's floor, by flags, medians of ${RUNS}`, agent);
  return { runs: RUNS, baseline: BASELINE ?? null, shim, agent };
}
