/**
 * Whether tracing leaks in the shim daemon: a running container per mode (tracing off; on, spans to a live OTLP/gRPC
 * receiver in this process; on, the receiver absent: a closed port), then rounds of Task `State` and `Stats` calls
 * straight to the shim's socket (BENCH_TRACING_MEMORY_ROUNDS, default 5, of BENCH_TRACING_MEMORY_CALLS, default
 * 1000, of each). After the warm-up and after each round the daemon's RSS and its Node.js report's heap figures
 * (V8's committed and used heap, external memory: `--report-on-signal`, no collection); then a heap snapshot, more rounds
 * (BENCH_TRACING_MEMORY_HEAP_ROUNDS, default 2) and another (the daemon runs with `--heapsnapshot-signal=SIGUSR2`;
 * a snapshot collects the garbage first, so it holds only live objects), read here as the live heap and the live
 * objects by constructor. Growth from the first to the last snapshot, per constructor, names what piles up. Run: `node dist/bench/tracing-memory.js` (after `make build guest`); figures in
 * bench/out/tracing-memory.json.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Client } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import { OtlpReceiver } from '../integration/lib/otlp-receiver';
import { printTable, round, writeJson } from './lib/report';
import { shimPid, rssBytes as rss } from './lib/shim-process';

const ROUNDS = Number(process.env.BENCH_TRACING_MEMORY_ROUNDS ?? 5);
const CALLS = Number(process.env.BENCH_TRACING_MEMORY_CALLS ?? 1000);
const WARMUP = 200;
/** Rounds between the first and the last heap snapshot. */
const HEAP_ROUNDS = Number(process.env.BENCH_TRACING_MEMORY_HEAP_ROUNDS ?? 2);
const RUNTIME = 'io.containerd.hull.v2';
const MiB = 2 ** 20;
type Mode = 'off' | 'on-live' | 'on-absent';

interface HeapFigures {
  totalBytes: number;
  objects: number;
  /** `type:name` (name = constructor for objects) -> [count, self bytes] */
  byKind: Map<string, [number, number]>;
}

/** A V8 heap snapshot's live nodes summed by type and constructor name. */
function readSnapshot(file: string): HeapFigures {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [number, number, number];
  const byKind = new Map<string, [number, number]>();
  let totalBytes = 0;
  let objects = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]!] ?? '?';
    const size = snap.nodes[i + iSize]!;
    const named = type === 'object' || type === 'closure' || type === 'native';
    const key = named ? `${type}:${snap.strings[snap.nodes[i + iName]!]}` : type;
    const k = byKind.get(key) ?? [0, 0];
    k[0]++;
    k[1] += size;
    byKind.set(key, k);
    totalBytes += size;
    objects++;
  }
  return { totalBytes, objects, byKind };
}

/** SIGUSR2 makes the daemon write Heap.*.heapsnapshot into its cwd (the bundle); the next answer means it is done. */
async function snapshot(pid: number, call: () => Promise<unknown>): Promise<HeapFigures> {
  const dir = fs.readlinkSync(`/proc/${pid}/cwd`);
  const before = new Set(fs.readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    await call(); // the daemon writes the snapshot on its main thread: an answer comes after it
    const full = path.join(dir, file);
    try {
      return readSnapshot(full);
    } finally {
      fs.rmSync(full, { force: true });
    }
  }
  throw new Error('no heap snapshot');
}

/** The daemon's Node.js report (`--report-on-signal`, SIGTTIN): V8's committed and used heap, external memory. */
async function nodeReport(pid: number, call: () => Promise<unknown>): Promise<Record<string, number>> {
  const dir = fs.readlinkSync(`/proc/${pid}/cwd`);
  const before = new Set(fs.readdirSync(dir));
  process.kill(pid, 'SIGTTIN');
  for (let i = 0; i < 300; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const file = fs.readdirSync(dir).find((f) => /^report\..*\.json$/.test(f) && !before.has(f));
    if (!file) continue;
    await call(); // written on the daemon's main thread: an answer comes after it
    const full = path.join(dir, file);
    try {
      const heap = (
        JSON.parse(fs.readFileSync(full, 'utf8')) as {
          javascriptHeap: Record<string, number> & { heapSpaces: Record<string, { memorySize: number }> };
        }
      ).javascriptHeap;
      return {
        heapCommittedMiB: round(heap.totalCommittedMemory! / MiB, 1),
        newSpaceMiB: round((heap.heapSpaces.new_space?.memorySize ?? 0) / MiB, 1),
        heapUsedMiB: round(heap.usedMemory! / MiB, 1),
        externalMiB: round(heap.externalMemory! / MiB, 1),
        mallocedMiB: round(heap.mallocedMemory! / MiB, 1),
      };
    } finally {
      fs.rmSync(full, { force: true });
    }
  }
  throw new Error('no Node.js report');
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function measure(ctd: PrivateContainerd, config: string, mode: Mode): Promise<Record<string, unknown>> {
  const id = `mem-${mode}`;
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
    '3600',
  ]);
  if (r.code !== 0) throw new Error(`ctr run -d (${mode}): ${r.stderr}`);
  try {
    await new Promise((res) => setTimeout(res, 1_000));
    const pid = shimPid(ctd, id);
    const address = fs.readFileSync(path.join(fs.readlinkSync(`/proc/${pid}/cwd`), 'address'), 'utf8').trim();
    const client = await Client.connect(address);
    const state = (): Promise<unknown> => client.call(TaskService.State, { id }, { timeoutMs: 30_000 });
    const stats = (): Promise<unknown> => client.call(TaskService.Stats, { id }, { timeoutMs: 30_000 });
    try {
      for (let i = 0; i < WARMUP; i++) await Promise.all([state(), stats()]);
      // RSS first, with no snapshot yet (writing one grows the RSS by the snapshot's own buffers).
      const rssPoints: Record<string, number>[] = [];
      let calls = 0;
      const t0 = Date.now();
      const rssPoint = async (): Promise<void> => {
        const rssMiB = round(rss(pid) / MiB, 1);
        rssPoints.push({ calls, rssMiB, ...(await nodeReport(pid, state)), ms: Date.now() - t0 });
        console.log(`${mode}: ${JSON.stringify(rssPoints.at(-1))}`);
      };
      const round_ = async (): Promise<void> => {
        for (let i = 0; i < CALLS; i++) {
          await state();
          await stats();
        }
        calls += 2 * CALLS;
      };
      await rssPoint();
      for (let n = 0; n < ROUNDS; n++) {
        await round_();
        await rssPoint();
      }
      // Then the live heap: a snapshot, HEAP_ROUNDS more rounds, another; what grew in between, by constructor.
      const heapPoints: { calls: number; heapMiB: number; objects: number }[] = [];
      const snaps: HeapFigures[] = [];
      const heapPoint = async (): Promise<void> => {
        const h = await snapshot(pid, state);
        snaps.push(h);
        heapPoints.push({ calls, heapMiB: round(h.totalBytes / MiB, 2), objects: h.objects });
        console.log(`${mode}: ${JSON.stringify(heapPoints.at(-1))}`);
      };
      await heapPoint();
      for (let n = 0; n < HEAP_ROUNDS; n++) {
        await round_();
        await heapPoint();
      }
      const first = snaps[0]!.byKind;
      const last = snaps.at(-1)!.byKind;
      const growth = [...last.entries()]
        .map(([k, [n, b]]) => ({ kind: k, count: n - (first.get(k)?.[0] ?? 0), bytes: b - (first.get(k)?.[1] ?? 0) }))
        .sort((a, b) => b.bytes - a.bytes)
        .slice(0, 10);
      const points = { rss: rssPoints, heap: heapPoints };
      return { points, growth };
    } finally {
      client.close();
    }
  } finally {
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await ctd.ctr(['task', 'delete', '-f', id]);
    await ctd.ctr(['container', 'delete', id]);
  }
}

export async function benchTracingMemory(): Promise<Record<string, unknown>> {
  // Every shim of this containerd (its environment is containerd's) writes a heap snapshot on SIGUSR2.
  // And a Node.js report (no collection: the heap as it stands) on SIGTTIN.
  process.env.NODE_OPTIONS =
    `${process.env.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2 --report-on-signal --report-signal=SIGTTIN`.trim();
  const receiver = await OtlpReceiver.start();
  const ctd = await startContainerd({ namespace: 'bench' });
  try {
    await importBusybox(ctd);
    const endpoints: Record<Mode, string> = {
      off: receiver.endpoint,
      'on-live': receiver.endpoint,
      'on-absent': `http://127.0.0.1:${await closedPort()}`,
    };
    const only = (process.env.BENCH_TRACING_MEMORY_MODES ?? 'off,on-live,on-absent').split(',') as Mode[];
    const results: Partial<Record<Mode, Record<string, unknown>>> = {};
    for (const mode of only) {
      const config = path.join(ctd.dir, `tracing-${mode}.toml`);
      fs.writeFileSync(
        config,
        [
          '[runtime]',
          `state_dir = "${ctd.stateDir}"`,
          `enable_tracing = ${mode !== 'off'}`,
          `tracing_endpoint = "${endpoints[mode]}"`,
          '',
        ].join('\n'),
      );
      results[mode] = await measure(ctd, config, mode);
    }
    const points = (mode: string, r: Record<string, unknown>, k: 'rss' | 'heap'): Record<string, string | number>[] =>
      (r.points as Record<typeof k, Record<string, number>[]>)[k].map((p) => ({ mode, ...p }));
    printTable(
      'shim RSS under traced Task calls (State + Stats, one at a time)',
      Object.entries(results).flatMap(([mode, r]) => points(mode, r, 'rss')),
    );
    printTable(
      'shim live heap (heap snapshots)',
      Object.entries(results).flatMap(([mode, r]) => points(mode, r, 'heap')),
    );
    return { rounds: ROUNDS, calls: CALLS, spansReceived: receiver.spans.length, results };
  } finally {
    await ctd.stop();
    await receiver.stop();
  }
}

if (require.main === module) {
  benchTracingMemory()
    .then((figures) =>
      console.log(`wrote ${writeJson('tracing-memory.json', { at: new Date().toISOString(), ...figures })}`),
    )
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
