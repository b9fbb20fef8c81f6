/**
 * Kubernetes pods through containerd's CRI plugin, hull against runc on one private containerd, in one run:
 * - pod start: RunPodSandbox + CreateContainer + StartContainer of a busybox `sleep`, until ExecSync `true`
 *   answers 0 (the container's process runs), split into the three calls and the wait; medians;
 * - host memory per hull pod: PSS (/proc/<pid>/smaps_rollup) of the shim daemon, QEMU and virtiofsd with 1, 5 and
 *   10 hull pods running, total and per pod;
 * - pod to host TCP throughput: busybox `nc` in a container sends N MB of zeros to a listener of ours on the
 *   bridge's gateway address, timed by the listener from accept to the last byte;
 * - port forwarding throughput: CRI PortForward to busybox `nc -l` sending zeros in the pod, read through the
 *   streaming server's WebSocket (as kubectl port-forward does), timed from the upgrade to the last byte.
 * Each part reports its own error instead of its figures, so hull parts that need pod networking can fail alone.
 * Written to bench/out/pods.json.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import type { cri, CriClient } from '../integration/lib/cri';
import { K8sStream } from '../integration/lib/k8s-stream';
import { median, printTable, round } from './lib/report';

const RUNS = Number(process.env.BENCH_PODS_RUNS ?? 3);
const MEMORY_LEVELS = (process.env.BENCH_PODS_LEVELS ?? '1,5,10').split(',').map(Number);
const THROUGHPUT_MB = Number(process.env.BENCH_PODS_MB ?? 64);
const HANDLERS = ['runc', 'hull'] as const;
type Handler = (typeof HANDLERS)[number];

type Part<T> = T | { error: string };

async function part<T>(name: string, fn: () => Promise<T>): Promise<Part<T>> {
  try {
    return await fn();
  } catch (err) {
    console.error(`pods bench: ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

interface Pod {
  id: string;
  container: string;
}

class Pods {
  #seq = 0;
  readonly live = new Set<string>();

  constructor(
    readonly ctd: PrivateContainerd,
    readonly client: CriClient,
  ) {}

  config(name: string): cri.IPodSandboxConfig {
    const logDirectory = path.join(this.ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: `bench-${process.pid}-${name}`, namespace: 'bench' },
      hostname: name,
      logDirectory,
      linux: {},
    };
  }

  /** Starts a pod with one `sleep` container; returns the phase times in ms. */
  async start(handler: Handler, command = ['sleep', '3600']): Promise<Pod & { ms: Record<string, number> }> {
    const name = `${handler}-${this.#seq++}`;
    const config = this.config(name);
    const t0 = performance.now();
    const id = await this.ctd.cri!.runPod(config, handler);
    this.live.add(id);
    const t1 = performance.now();
    const { containerId } = await this.client.createContainer({
      podSandboxId: id,
      sandboxConfig: config,
      config: { metadata: { name: 'main' }, image: { image: BUSYBOX_IMAGE }, command, logPath: 'main.log' },
    });
    const t2 = performance.now();
    await this.client.startContainer(containerId);
    const t3 = performance.now();
    for (;;) {
      const r = await this.client.execSync({ containerId, cmd: ['true'], timeout: 10 }).catch(() => undefined);
      if (r?.exitCode === 0) break;
      if (performance.now() - t0 > 300_000) throw new Error(`pod ${name}: exec never ran`);
      await new Promise((res) => setTimeout(res, 20));
    }
    const t4 = performance.now();
    return {
      id,
      container: containerId,
      ms: {
        totalMs: t4 - t0,
        runPodSandboxMs: t1 - t0,
        createContainerMs: t2 - t1,
        startContainerMs: t3 - t2,
        firstExecMs: t4 - t3,
      },
    };
  }

  async remove(id: string): Promise<void> {
    await this.client.stopPodSandbox(id);
    await this.client.removePodSandbox(id);
    this.live.delete(id);
  }

  async removeAll(): Promise<void> {
    await Promise.allSettled([...this.live].map((id) => this.remove(id)));
  }
}

async function podStart(pods: Pods): Promise<Record<string, unknown>> {
  const times: Record<Handler, Record<string, number>[]> = { runc: [], hull: [] };
  for (let i = 0; i < RUNS; i++) {
    for (const h of HANDLERS) {
      const p = await pods.start(h);
      times[h].push(p.ms);
      await pods.remove(p.id);
    }
  }
  const medians = (xs: Record<string, number>[]): Record<string, number> =>
    Object.fromEntries(Object.keys(xs[0] ?? {}).map((k) => [k, round(median(xs.map((x) => x[k]!)))]));
  const out = {
    runs: RUNS,
    hullMedianMs: medians(times.hull),
    runcMedianMs: medians(times.runc),
    ratio: round(median(times.hull.map((t) => t.totalMs!)) / median(times.runc.map((t) => t.totalMs!)), 2),
  };
  printTable(
    'pod start to first exec (ms, median)',
    HANDLERS.map((h) => ({ handler: h, ...(h === 'hull' ? out.hullMedianMs : out.runcMedianMs) })),
  );
  return out;
}

function pss(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

/** The PSS of one hull pod's host processes: the shim daemon (its cwd is the sandbox's bundle), QEMU and virtiofsd. */
function hullPodPss(ctd: PrivateContainerd, pod: string): { shim: number; qemu: number; virtiofsd: number } {
  const sandboxDir = path.join(ctd.stateDir, ctd.namespace, pod);
  const out = { shim: 0, qemu: 0, virtiofsd: 0 };
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      const exe = path.basename(cmd.split('\0')[0] ?? '');
      if (cmd.includes(sandboxDir) && exe.startsWith('qemu-system')) out.qemu += pss(Number(pid));
      else if (cmd.includes(sandboxDir) && exe.startsWith('virtiofsd')) out.virtiofsd += pss(Number(pid));
      else if (
        /containerd-shim-hull/.test(cmd) &&
        fs.readlinkSync(`/proc/${pid}/cwd`).endsWith(`/${ctd.namespace}/${pod}`)
      )
        out.shim += pss(Number(pid));
    } catch {
      /* gone */
    }
  }
  if (!out.qemu) throw new Error(`no QEMU process for pod ${pod}`);
  return out;
}

async function memory(pods: Pods): Promise<Record<string, unknown>> {
  const running: string[] = [];
  const levels: Record<string, unknown>[] = [];
  for (const level of MEMORY_LEVELS) {
    const started = await Promise.all(Array.from({ length: level - running.length }, () => pods.start('hull')));
    running.push(...started.map((p) => p.id));
    await new Promise((r) => setTimeout(r, 2_000)); // let the guests settle
    const each = running.map((id) => hullPodPss(pods.ctd, id));
    const sum = (k: 'shim' | 'qemu' | 'virtiofsd'): number => each.reduce((a, e) => a + e[k], 0);
    const total = sum('shim') + sum('qemu') + sum('virtiofsd');
    levels.push({
      pods: level,
      totalMiB: round(total / 2 ** 20),
      perPodMiB: round(total / level / 2 ** 20),
      perPodShimMiB: round(sum('shim') / level / 2 ** 20),
      perPodQemuMiB: round(sum('qemu') / level / 2 ** 20),
      perPodVirtiofsdMiB: round(sum('virtiofsd') / level / 2 ** 20, 2),
    });
  }
  for (const id of running) await pods.remove(id);
  printTable('hull host memory (PSS)', levels as Record<string, number>[]);
  return { levels };
}

/** Bytes per second from a container's `nc` to a listener on the bridge gateway, timed at the listener. */
async function throughput(pods: Pods, handler: Handler): Promise<{ mbPerS: number; bytes: number }> {
  const bytes = THROUGHPUT_MB * 1e6;
  const gateway = pods.ctd.cri!.network.gateway;
  const server = net.createServer();
  const received = new Promise<{ seconds: number; got: number }>((resolve, reject) => {
    server.once('connection', (sock) => {
      const t0 = performance.now();
      let got = 0;
      sock.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= bytes) {
          resolve({ seconds: (performance.now() - t0) / 1000, got });
          sock.destroy();
        }
      });
      sock.on('close', () => reject(new Error(`the sender closed after ${got} of ${bytes} bytes`)));
      sock.on('error', reject);
    });
  });
  await new Promise<void>((resolve, reject) => server.listen(0, gateway, resolve).once('error', reject));
  const port = (server.address() as net.AddressInfo).port;
  const p = await pods.start(handler);
  try {
    // nc gives up connecting after 10 s; once connected it sends until the listener closes at the last byte (and
    // then fails writing, which no longer matters: the race below is settled by then).
    const send = pods.client
      .execSync({
        containerId: p.container,
        cmd: ['sh', '-c', `nc -w 10 ${gateway} ${port} < /dev/zero`],
        timeout: 600,
      })
      .then((r) => {
        throw new Error(
          `nc exited ${r.exitCode} before the listener had all bytes: ${Buffer.from(r.stderr).toString().trim()}`,
        );
      });
    const r = await Promise.race([received, send]);
    await send.catch(() => undefined);
    return { mbPerS: round(r.got / 1e6 / r.seconds), bytes: r.got };
  } finally {
    server.close();
    await pods.remove(p.id);
  }
}

const PORT_FORWARD_PORT = 9000;

/** Bytes per second read through CRI PortForward (WebSocket, data channel 0) from `nc -l` sending zeros in a pod. */
async function portForwardThroughput(pods: Pods, handler: Handler): Promise<{ mbPerS: number; bytes: number }> {
  const bytes = THROUGHPUT_MB * 1e6;
  const p = await pods.start(handler, ['sh', '-c', `exec nc -l -p ${PORT_FORWARD_PORT} < /dev/zero`]);
  try {
    const { url } = await pods.client.portForward({ podSandboxId: p.id, port: [PORT_FORWARD_PORT] });
    const t0 = performance.now();
    const s = await K8sStream.open(`${url}?port=${PORT_FORWARD_PORT}`, { outputChannels: [0, 1] });
    try {
      await s.waitForBytes(0, 2 + bytes, 600_000); // the server starts the channel with the port (2 bytes)
      return { mbPerS: round(bytes / 1e6 / ((performance.now() - t0) / 1000)), bytes };
    } finally {
      s.destroy();
    }
  } finally {
    await pods.remove(p.id);
  }
}

export async function benchPods(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ cri: true });
  const pods = new Pods(ctd, ctd.cri!.client);
  try {
    await importBusybox(ctd);
    const start = await part('pod start', () => podStart(pods));
    await pods.removeAll();
    const mem = await part('hull memory', () => memory(pods));
    await pods.removeAll();
    const tp: Record<Handler, Part<{ mbPerS: number; bytes: number }>> = {
      runc: { error: 'not run' },
      hull: { error: 'not run' },
    };
    for (const h of HANDLERS) {
      tp[h] = await part(`${h} throughput`, () => throughput(pods, h));
      await pods.removeAll();
    }
    printTable(
      `pod to host TCP (${THROUGHPUT_MB} MB, busybox nc)`,
      HANDLERS.map((h) => ({
        handler: h,
        'MB/s': 'error' in tp[h] ? `error: ${tp[h].error.slice(0, 60)}` : tp[h].mbPerS,
      })),
    );
    const pf: Record<Handler, Part<{ mbPerS: number; bytes: number }>> = {
      runc: { error: 'not run' },
      hull: { error: 'not run' },
    };
    for (const h of HANDLERS) {
      pf[h] = await part(`${h} port forwarding`, () => portForwardThroughput(pods, h));
      await pods.removeAll();
    }
    printTable(
      `port forwarding, pod to client (${THROUGHPUT_MB} MB, CRI PortForward over WebSocket)`,
      HANDLERS.map((h) => ({
        handler: h,
        'MB/s': 'error' in pf[h] ? `error: ${pf[h].error.slice(0, 60)}` : pf[h].mbPerS,
      })),
    );
    return {
      podStart: start,
      hullMemory: mem,
      podToHostTcp: { megabytes: THROUGHPUT_MB, ...tp },
      portForward: { megabytes: THROUGHPUT_MB, ...pf },
    };
  } finally {
    await pods.removeAll();
    await ctd.stop();
  }
}
