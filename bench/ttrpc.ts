/**
 * ttrpc round trip: p50/p99 latency and calls per second of a small unary call (Task/State on an unknown id, which
 * answers NOT_FOUND), with one caller and with 16 concurrent callers on one connection, against
 *   (1) our server (ttrpc-peer.ts, its own process),
 *   (2) the runc shim's Go ttrpc server (containerd-shim-runc-v2 from Debian's containerd),
 *   (3) the floor: a raw unix-socket echo of the same request bytes.
 * Targets: our server's p50 no worse than the Go server's, and within 2x of the floor.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Code, FrameDecoder, FrameType, StatusError, encodeFrame, encodeRequest } from 'ttrpc-ts';
import { TaskService, containerd } from '../protos/containerd';
import { NAMESPACE_METADATA, startRuncShim } from '../integration/lib/runc-shim';
import { percentile, printTable, round } from './lib/report';

const DURATION_MS = Number(process.env.BENCH_TTRPC_MS ?? 2000);
const WARMUP_MS = 300;
const CONCURRENCY = 16;

interface Result {
  target: string;
  callers: number;
  calls: number;
  p50_us: number;
  p99_us: number;
  calls_per_s: number;
}

type RoundTrip = () => Promise<void>;

async function measure(target: string, callers: number, roundTrip: RoundTrip): Promise<Result> {
  const run = async (ms: number, samples: number[] | undefined): Promise<number> => {
    const until = performance.now() + ms;
    let calls = 0;
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (performance.now() < until) {
          const t0 = performance.now();
          await roundTrip();
          samples?.push((performance.now() - t0) * 1000);
          calls++;
        }
      }),
    );
    return calls;
  };
  await run(WARMUP_MS, undefined);
  const samples: number[] = [];
  const t0 = performance.now();
  const calls = await run(DURATION_MS, samples);
  const elapsed = (performance.now() - t0) / 1000;
  samples.sort((a, b) => a - b);
  return {
    target,
    callers,
    calls,
    p50_us: round(percentile(samples, 50)),
    p99_us: round(percentile(samples, 99)),
    calls_per_s: Math.round(calls / elapsed),
  };
}

const stateRequest = TaskService.State.request.encode(
  containerd.task.v2.StateRequest.create({ id: 'no-such-container' }),
);

/** A State call that must fail with NOT_FOUND, as the real peers answer. */
function stateCall(client: Client): RoundTrip {
  return async () => {
    try {
      await client.callRaw(TaskService.State.service, TaskService.State.method, stateRequest, { timeoutMs: 2000 });
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.NOT_FOUND) return;
      throw err;
    }
    throw new Error('State of an unknown id succeeded');
  };
}

/** Writes a request frame and waits for the same bytes to come back: no decoding beyond the frame header. */
function echoRoundTrips(socket: net.Socket): RoundTrip {
  const frameFor = (id: number): Buffer =>
    encodeFrame(
      id,
      FrameType.Request,
      0,
      encodeRequest({
        service: TaskService.State.service,
        method: TaskService.State.method,
        payload: stateRequest,
        timeoutNano: 2e9,
        metadata: [{ key: 'containerd-namespace-ttrpc', value: 'hull-test' }],
      }),
    );
  const waiting = new Map<number, () => void>();
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => {
    for (const f of decoder.write(chunk)) waiting.get(f.streamId)?.();
  });
  let next = 1;
  return () =>
    new Promise<void>((resolve) => {
      const id = next;
      next += 2;
      waiting.set(id, () => {
        waiting.delete(id);
        resolve();
      });
      socket.write(frameFor(id));
    });
}

async function startPeer(mode: 'ttrpc' | 'echo', socket: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(__dirname, 'ttrpc-peer.js'), mode, socket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${mode} peer exited with ${code}`)));
    child.stdout.once('data', () => resolve());
  });
  return child;
}

export async function benchTtrpc(): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-ttrpc-'));
  const results: Result[] = [];
  const children: ChildProcess[] = [];
  const runc = await startRuncShim();
  try {
    const ours = await startPeer('ttrpc', path.join(dir, 'ours.sock'));
    children.push(ours);
    const echo = await startPeer('echo', path.join(dir, 'echo.sock'));
    children.push(echo);

    const oursClient = await Client.connect(path.join(dir, 'ours.sock'), { metadata: NAMESPACE_METADATA });
    const goClient = await Client.connect(runc.address, { metadata: NAMESPACE_METADATA });
    const echoSocket = net.connect(path.join(dir, 'echo.sock'));
    await new Promise((r) => echoSocket.once('connect', r));

    for (const callers of [1, CONCURRENCY]) {
      results.push(await measure('hull ttrpc server', callers, stateCall(oursClient)));
      results.push(await measure('runc shim (Go ttrpc)', callers, stateCall(goClient)));
      results.push(await measure('floor: unix echo', callers, echoRoundTrips(echoSocket)));
    }
    oursClient.close();
    goClient.close();
    echoSocket.destroy();
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await runc.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  printTable(
    `ttrpc unary round trip (${DURATION_MS} ms per row, our client in every row)`,
    results.map((r) => ({ ...r })),
  );
  const find = (target: string, callers: number): Result =>
    results.find((r) => r.target === target && r.callers === callers)!;
  const targets = [1, CONCURRENCY].map((callers) => {
    const ours = find('hull ttrpc server', callers);
    const go = find('runc shim (Go ttrpc)', callers);
    const floor = find('floor: unix echo', callers);
    return {
      callers,
      p50_vs_go: round(ours.p50_us / go.p50_us, 2),
      p50_vs_floor: round(ours.p50_us / floor.p50_us, 2),
      met: ours.p50_us <= go.p50_us && ours.p50_us <= 2 * floor.p50_us,
    };
  });
  printTable('targets: p50 no worse than Go (ratio <= 1) and within 2x of the floor', targets);
  return { durationMs: DURATION_MS, results, targets };
}
