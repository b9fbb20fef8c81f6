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
 * - shim daemon, real: containerd-shim-hull-v2 under a private containerd with one busybox `sleep` container running,
 *   10 s after `ctr run -d`, the p50/p99 of Task State calls to its socket, after 3 `ctr task exec ... true`, and
 *   after relaying 32 MiB of stdout (`head -c` of /dev/zero, its rate too): RSS, PSS and anonymous memory of the
 *   daemon, for each of SHIM_FLAG_SETS (node flags in a launcher's #! line, which `start` passes on to the daemon
 *   with its own, shim/daemon-launch.ts), and the baseline build's daemon when BENCH_FOOTPRINT_BASELINE is set
 *   (`ctr run --runtime <its launcher>`). Medians of BENCH_FOOTPRINT_SHIM_RUNS (default 2; each boots a VM); 0
 *   leaves this part out.
 * - start: `start` as containerd runs it, without a VM, until the daemon answers a Task call; the daemon's memory.
 * - pods: BENCH_FOOTPRINT_PODS containers at once, each shim's memory (PSS shares node's text among the shims).
 *
 * Medians of BENCH_FOOTPRINT_RUNS (default 5), in MiB and ms.
 */
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import { GUEST_OUT } from '../integration/lib/guest';
import { Client } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';
import { median, percentile, printTable, round } from './lib/report';
import { shimPid } from './lib/shim-process';

const RUNS = Number(process.env.BENCH_FOOTPRINT_RUNS ?? 5);
const BASELINE = process.env.BENCH_FOOTPRINT_BASELINE;
const SHIM_RUNS = Number(process.env.BENCH_FOOTPRINT_SHIM_RUNS ?? 2);
/** `start` to a serving daemon, without a VM: BENCH_FOOTPRINT_START_RUNS runs of each build, alternating. */
const START_RUNS = Number(process.env.BENCH_FOOTPRINT_START_RUNS ?? 10);
/** BENCH_FOOTPRINT_PARTS=modules,agent,start picks those (the VM parts follow SHIM_RUNS and PODS): default all. */
const PARTS = new Set((process.env.BENCH_FOOTPRINT_PARTS ?? 'modules,agent,start').split(','));
/** The stdout burst the shim daemon relays (ctr task exec head -c ... /dev/zero). */
const STDOUT_BYTES = 32 << 20;
/** How long after `ctr run -d` the daemon counts as idle: at 3 s its PSS still varied by 15 MiB run to run. */
const IDLE_MS = 10_000;

/**
 * Node flags tried for the shim daemon on top of what `start` gives it (shim/daemon-launch.ts): [name, flags], each
 * through a launcher of its own (`#!/usr/bin/env -S node <flags>`: `start` passes its own node flags on).
 */
export const SHIM_FLAG_SETS: [string, string[]][] = [
  ['as launched', []],
  ['+ optimize-for-size', ['--optimize-for-size']],
  // Measured and not taken (shim/README.md "Footprint"): ['+ lite-mode', ['--lite-mode', '--no-expose-wasm']] (without
  // --no-expose-wasm V8 warns on stderr that lite mode disables it, and containerd reads start's stderr too).
];
/** Pods at once for the PSS per shim (node's text is shared among shims): BENCH_FOOTPRINT_PODS, 0 leaves it out. */
const PODS = Number(process.env.BENCH_FOOTPRINT_PODS ?? 5);
/** Task State calls timed on a running container's shim. */
const STATE_CALLS = 200;
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

function rollup(pid: number): { rssKiB: number; pssKiB: number; anonKiB: number } {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKiB: kib('Rss'), pssKiB: kib('Pss'), anonKiB: kib('Anonymous') };
}

/** A process's user + system CPU time, in ms (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** A launcher like bin/'s for `dist`, under `dir`, with node `flags` in its #! line; returns its path. */
function writeLauncher(dir: string, dist: string, flags: readonly string[]): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const launcher = path.join(bin, 'containerd-shim-hull-v2');
  const shebang = flags.length ? `#!/usr/bin/env -S node ${flags.join(' ')}` : '#!/usr/bin/env node';
  const main = JSON.stringify(path.join(path.resolve(dist), 'shim', 'main.js'));
  fs.writeFileSync(launcher, `${shebang}\n'use strict';\nrequire(${main}).main(__filename);\n`, { mode: 0o755 });
  // It finds its guest as an installed shim would (<prefix>/share/hull/guest): this checkout's image.
  const guest = path.join(dir, 'share', 'hull', 'guest');
  fs.mkdirSync(path.dirname(guest), { recursive: true });
  if (!fs.existsSync(guest)) fs.symlinkSync(GUEST_OUT, guest);
  return launcher;
}

/** The shim serving container `id`: its pid and a ttrpc client on its socket. */
async function shimOf(ctd: PrivateContainerd, id: string): Promise<{ pid: number; client: Client }> {
  const pid = shimPid(ctd, id);
  const address = fs.readFileSync(path.join(fs.readlinkSync(`/proc/${pid}/cwd`), 'address'), 'utf8').trim();
  return { pid, client: await Client.connect(address) };
}

/** p50 and p99 of `n` Task State calls, in ms. */
async function stateLatency(client: Client, id: string, n: number): Promise<{ p50: number; p99: number }> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await client.call(TaskService.State, { id }, { timeoutMs: 10_000 });
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

/** One container under a private containerd, run by `launcher`: the daemon's memory, idle and after execs. */
async function shimDaemonOnce(run: number, launcher: string): Promise<Record<string, number>> {
  const ctd = await startContainerd({ namespace: 'bench' });
  const id = `bench-footprint-${run}`;
  try {
    await importBusybox(ctd);
    const r = await ctd.ctr(['run', '-d', '--runtime', launcher, BUSYBOX_IMAGE, id, 'sleep', '600']);
    if (r.code !== 0) throw new Error(`ctr run -d: ${r.stderr}`);
    await new Promise((res) => setTimeout(res, IDLE_MS)); // the boot's garbage collected, mostly
    const { pid, client } = await shimOf(ctd, id);
    const idle = rollup(pid);
    let state: { p50: number; p99: number };
    try {
      state = await stateLatency(client, id, STATE_CALLS);
    } finally {
      client.close();
    }
    for (let i = 0; i < 3; i++) {
      const e = await ctd.ctr(['task', 'exec', '--exec-id', `e${i}`, id, 'true']);
      if (e.code !== 0) throw new Error(`ctr task exec: ${e.stderr}`);
    }
    await new Promise((res) => setTimeout(res, 1000));
    const busy = rollup(pid);
    // A burst: STDOUT_BYTES of stdout relayed by the shim to ctr (which writes them to /dev/null).
    const cpu0 = cpuMs(pid);
    const t0 = performance.now();
    const out = await ctd.ctr(
      ['task', 'exec', '--exec-id', 'burst', id, 'head', '-c', String(STDOUT_BYTES), '/dev/zero'],
      {
        stdoutFile: '/dev/null',
      },
    );
    if (out.code !== 0) throw new Error(`ctr task exec head: ${out.stderr}`);
    const burstMs = performance.now() - t0;
    const burstCpuMs = cpuMs(pid) - cpu0;
    await new Promise((res) => setTimeout(res, 1000));
    const burst = rollup(pid);
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    console.log(`shim daemon ${id}: ${argv.filter((a) => a.startsWith('--')).join(' ') || '(no node flags)'}`);
    return {
      idle_rss_mib: MiB(idle.rssKiB),
      idle_pss_mib: MiB(idle.pssKiB),
      idle_anon_mib: MiB(idle.anonKiB),
      state_p50_ms: round(state.p50),
      state_p99_ms: round(state.p99),
      after_exec_rss_mib: MiB(busy.rssKiB),
      after_exec_pss_mib: MiB(busy.pssKiB),
      after_exec_anon_mib: MiB(busy.anonKiB),
      stdout_mb_per_s: round(STDOUT_BYTES / 1e6 / (burstMs / 1000)),
      // The shim's own CPU time per MB relayed: what its settings cost, whatever the guest's speed under TCG.
      stdout_shim_cpu_ms_per_mb: round(burstCpuMs / (STDOUT_BYTES / 1e6)),
      after_stdout_rss_mib: MiB(burst.rssKiB),
      after_stdout_pss_mib: MiB(burst.pssKiB),
      after_stdout_anon_mib: MiB(burst.anonKiB),
    };
  } finally {
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]).catch(() => undefined);
    await ctd.ctr(['task', 'delete', '-f', id]).catch(() => undefined);
    await ctd.ctr(['container', 'delete', id]).catch(() => undefined);
    await ctd.stop();
  }
}

/**
 * `start` run as containerd runs it (a bundle, no VM): from spawning `start` until the daemon it launched answers a
 * Task call (State of an unknown id: NotFound), then the daemon's memory a second later. The daemon is stopped by
 * its pid (SIGTERM: no sandbox to tear down).
 */
async function daemonStartOnce(launcher: string, run: number): Promise<Record<string, number>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-start-'));
  const bundle = path.join(dir, 'bundle');
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: {} }));
  const id = `bench-start-${process.pid}-${run}`;
  let daemon: number | undefined;
  let address = '';
  try {
    const t0 = performance.now();
    // spawns: node; the launcher writeLauncher wrote (a node script)
    const started = execFileAsync(
      launcher,
      ['-namespace', 'bench', '-id', id, '-address', path.join(dir, 'containerd.sock'), 'start'],
      { cwd: bundle, timeout: 60_000 },
    );
    started.child.stdin?.end(); // as containerd does: no runtime options
    address = (await started).stdout.trim();
    const client = await Client.connect(address);
    try {
      await client.call(TaskService.State, { id }, { timeoutMs: 60_000 }).catch(() => undefined);
    } finally {
      client.close();
    }
    const servingMs = performance.now() - t0;
    daemon = pidWithCwd(bundle);
    await new Promise((res) => setTimeout(res, 1000));
    const mem = rollup(daemon);
    return {
      serving_ms: round(servingMs),
      rss_mib: MiB(mem.rssKiB),
      pss_mib: MiB(mem.pssKiB),
      anon_mib: MiB(mem.anonKiB),
    };
  } finally {
    if (daemon) {
      process.kill(daemon, 'SIGTERM');
      const until = Date.now() + 10_000;
      while (Date.now() < until && fs.existsSync(`/proc/${daemon}`)) await new Promise((res) => setTimeout(res, 50));
    }
    if (address.startsWith('unix://')) fs.rmSync(address.slice('unix://'.length), { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The process whose working folder is `dir` (the daemon `start` launched there). */
function pidWithCwd(dir: string): number {
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)))
    try {
      if (fs.readlinkSync(`/proc/${pid}/cwd`) === dir) return Number(pid);
    } catch {
      // gone
    }
  throw new Error(`no process in ${dir}`);
}

/** `n` containers at once under one containerd, run by `launcher`: each shim's memory 10 s after the last started. */
async function podsOnce(launcher: string, n: number, run: number): Promise<Record<string, number>> {
  const ctd = await startContainerd({ namespace: 'bench' });
  const ids = Array.from({ length: n }, (_, i) => `bench-pods-${run}-${i}`);
  const started: string[] = [];
  try {
    await importBusybox(ctd);
    for (const id of ids) {
      const r = await ctd.ctr(['run', '-d', '--runtime', launcher, BUSYBOX_IMAGE, id, 'sleep', '600']);
      if (r.code !== 0) throw new Error(`ctr run -d: ${r.stderr}`);
      started.push(id);
    }
    await new Promise((res) => setTimeout(res, IDLE_MS));
    const mems = ids.map((id) => rollup(shimPid(ctd, id)));
    const m = (k: 'rssKiB' | 'pssKiB' | 'anonKiB'): number => MiB(median(mems.map((x) => x[k])));
    return { rss_mib: m('rssKiB'), pss_mib: m('pssKiB'), anon_mib: m('anonKiB') };
  } finally {
    for (const id of started) {
      await ctd.ctr(['task', 'kill', '-s', 'KILL', id]).catch(() => undefined);
      await ctd.ctr(['task', 'delete', '-f', id]).catch(() => undefined);
      await ctd.ctr(['container', 'delete', id]).catch(() => undefined);
    }
    await ctd.stop();
  }
}

function medianOf(rs: readonly Record<string, number>[]): Record<string, number> {
  return Object.fromEntries(Object.keys(rs[0]!).map((k) => [k, round(median(rs.map((x) => x[k]!)))]));
}

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
  for (let r = 0; r < (PARTS.has('modules') ? RUNS : 0); r++)
    for (const [name, target] of r % 2 ? [...shimTargets].reverse() : shimTargets)
      shimRuns.get(name)!.push(await loadOnce(['--expose-gc'], target));
  const shim = PARTS.has('modules')
    ? shimTargets.map(([name]) => ({ process: name, ...medians(shimRuns.get(name)!) }))
    : [];
  if (shim.length)
    printTable(`shim daemon's modules against node's floor (host, after a GC), medians of ${RUNS}`, shim);

  // The agent under each flag set, with node's floor under the same flags.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-footprint-'));
  const agent: Record<string, string | number>[] = [];
  try {
    const runs = new Map<string, { agent: Mem[]; floor: Mem[] }>(
      AGENT_FLAG_SETS.map(([n]) => [n, { agent: [], floor: [] }]),
    );
    for (let r = 0; r < (PARTS.has('agent') ? RUNS : 0); r++)
      for (const [name, flags, env] of AGENT_FLAG_SETS) {
        runs.get(name)!.agent.push(await agentOnce(flags, env, dir));
        runs.get(name)!.floor.push(await floorOnce(flags, env));
      }
    for (const [name] of PARTS.has('agent') ? AGENT_FLAG_SETS : []) {
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
  if (agent.length)
    printTable(`the agent (host, serving on a unix socket) against node's floor, by flags, medians of ${RUNS}`, agent);

  const daemon: Record<string, string | number>[] = [];
  const starts: Record<string, string | number>[] = [];
  const pods: Record<string, string | number>[] = [];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-launchers-'));
  try {
    // This build under each flag set, and the baseline build as it launches itself.
    const sets: [string, string][] = SHIM_FLAG_SETS.map(([name, flags], i) => [
      name,
      writeLauncher(path.join(work, `set${i}`), DIST, flags),
    ]);
    if (BASELINE) sets.push(['baseline build', writeLauncher(path.join(work, 'baseline'), BASELINE, [])]);
    const [shipped, baseline] = [sets[0]!, BASELINE ? sets[sets.length - 1]! : undefined];
    const pair = baseline ? [shipped, baseline] : [shipped];

    // start to serving (no VM), alternating.
    const startRuns = new Map<string, Record<string, number>[]>(pair.map(([n]) => [n, []]));
    let n = 0;
    for (let r = 0; r < (PARTS.has('start') ? START_RUNS : 0); r++)
      for (const [name, launcher] of r % 2 ? [...pair].reverse() : pair)
        startRuns.get(name)!.push(await daemonStartOnce(launcher, n++));
    if (PARTS.has('start')) {
      for (const [name] of pair) starts.push({ build: name, ...medianOf(startRuns.get(name)!) });
      printTable(`start to serving (no VM) and the daemon's memory then, medians of ${START_RUNS}`, starts);
    }

    if (SHIM_RUNS > 0) {
      const runs = new Map<string, Record<string, number>[]>(sets.map(([name]) => [name, []]));
      for (let r = 0; r < SHIM_RUNS; r++)
        for (const [name, launcher] of r % 2 ? [...sets].reverse() : sets)
          runs.get(name)!.push(await shimDaemonOnce(n++, launcher));
      for (const [name] of sets) daemon.push({ flags: name, ...medianOf(runs.get(name)!) });
      printTable(`the shim daemon with one container running (host), by flags, medians of ${SHIM_RUNS}`, daemon);
      for (const [name] of sets)
        console.log(
          `${name}: idle PSS ${runs
            .get(name)!
            .map((x) => x.idle_pss_mib)
            .join(', ')} MiB`,
        );
    }

    if (PODS > 0) {
      for (const [name, launcher] of pair)
        pods.push({ build: name, pods: PODS, ...(await podsOnce(launcher, PODS, n++)) });
      printTable(`each shim daemon with ${PODS} pods running (host), median over the shims`, pods);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return { runs: RUNS, baseline: BASELINE ?? null, shim, agent, shimStart: starts, shimDaemon: daemon, shimPods: pods };
}
