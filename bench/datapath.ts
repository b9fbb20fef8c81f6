/**
 * The data paths against their channels' floors, in the same VM and the same run (issue 15). One hull pod and one
 * runc pod through containerd's CRI plugin (hull with `[runtime] debug_hooks = true`), `BENCH_DATAPATH_MB` (64) MB
 * per transfer, `BENCH_DATAPATH_RUNS` (3) rounds, medians; every figure is timed from its first byte to its last at
 * the receiving end (so start-up latencies are left out and the figures compare as rates):
 * - serial floor: the agent writes raw bytes to the test-only virtio-serial port `hull.debug.0` (the agent's channel
 *   type, no protocol on top; agent/debug-hooks.ts `io.hull.debug.serial-floor`), read from QEMU's chardev socket;
 * - net floor: the agent sends raw bytes over TCP to a listener of ours on the bridge's gateway address (the pod
 *   network's virtio-net, no protocol on top; `io.hull.debug.tcp-floor`);
 * - stdout: `ctr task exec` of `head -c N /dev/zero` in the pod's container, ctr's stdout read by the bench
 *   (agent -> ReadStdout -> shim -> FIFO -> containerd -> ctr), against the serial floor;
 * - port forwarding: CRI PortForward to `nc -l` sending zeros in the pod, through the streaming server's WebSocket,
 *   against the serial floor;
 * - pod TCP: busybox `nc` in the container sending zeros to a listener on the gateway, against the net floor.
 * runc runs the same three paths as the other reference. Written to bench/out/datapath.json.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import type { CriClient } from '../integration/lib/cri';
import { K8sStream } from '../integration/lib/k8s-stream';
import { median, printTable, round } from './lib/report';

const MB = Number(process.env.BENCH_DATAPATH_MB ?? 64);
const RUNS = Number(process.env.BENCH_DATAPATH_RUNS ?? 3);
const BYTES = MB * 1e6;
const PF_PORT = 9000;
const SERIAL_FLOOR_ANNOTATION = 'io.hull.debug.serial-floor';
const TCP_FLOOR_ANNOTATION = 'io.hull.debug.tcp-floor';
const TIMEOUT_MS = 600_000;
type Handler = 'hull' | 'runc';

interface Pod {
  id: string;
  name: string;
  container: string;
}

/** Counts bytes from a readable until `bytes`; MB/s from the first byte to the last. */
function rate(source: NodeJS.ReadableStream & { destroy(): void }, bytes: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let first = 0;
    let got = 0;
    const timer = setTimeout(
      () => fail(new Error(`${what}: ${got} of ${bytes} bytes in ${TIMEOUT_MS} ms`)),
      TIMEOUT_MS,
    );
    const fail = (err: Error): void => {
      clearTimeout(timer);
      source.destroy();
      reject(err);
    };
    source.on('data', (c: Buffer) => {
      if (got === 0) first = performance.now();
      got += c.length;
      if (got >= bytes) {
        clearTimeout(timer);
        const mbps = got / 1e6 / ((performance.now() - first) / 1000);
        source.destroy();
        resolve(mbps);
      }
    });
    source.on('error', fail);
    source.on('close', () => {
      if (got < bytes) fail(new Error(`${what}: the sender closed after ${got} of ${bytes} bytes`));
    });
  });
}

class Bench {
  #seq = 0;
  readonly live = new Set<string>();
  readonly client: CriClient;

  constructor(readonly ctd: PrivateContainerd) {
    this.client = ctd.cri!.client;
  }

  config(name: string) {
    const logDirectory = path.join(this.ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: `bench-${process.pid}-${name}`, namespace: 'bench' },
      hostname: name,
      logDirectory,
      linux: {},
    };
  }

  /** A pod whose container serves zeros to each connection on PF_PORT (port forwarding) and takes execs. */
  async pod(handler: Handler): Promise<Pod> {
    const name = `dp-${handler}-${this.#seq++}`;
    const id = await this.ctd.cri!.runPod(this.config(name), handler);
    this.live.add(id);
    const container = await this.container({ id, name, container: '' }, 'main', [
      'sh',
      '-c',
      `while true; do nc -l -p ${PF_PORT} < /dev/zero; done`,
    ]);
    return { id, name, container };
  }

  async container(
    pod: Pod,
    name: string,
    command: string[],
    annotations: Record<string, string> = {},
  ): Promise<string> {
    const { containerId } = await this.client.createContainer({
      podSandboxId: pod.id,
      sandboxConfig: this.config(pod.name),
      config: {
        metadata: { name },
        image: { image: BUSYBOX_IMAGE },
        command,
        annotations,
        logPath: `${name}.log`,
      },
    });
    await this.client.startContainer(containerId);
    return containerId;
  }

  async removeContainer(id: string): Promise<void> {
    await this.client.stopContainer(id, 0).catch(() => undefined);
    await this.client.removeContainer(id);
  }

  async removeAll(): Promise<void> {
    for (const id of this.live) {
      await this.client.stopPodSandbox(id).catch(() => undefined);
      await this.client.removePodSandbox(id).catch(() => undefined);
    }
    this.live.clear();
  }

  /** A listener on the bridge's gateway: resolves with the MB/s of the first connection. */
  async listen(what: string): Promise<{ host: string; port: number; received: Promise<number>; close(): void }> {
    const host = this.ctd.cri!.network.gateway;
    const server = net.createServer();
    const received = new Promise<number>((resolve, reject) => {
      server.once('connection', (sock) => rate(sock, BYTES, what).then(resolve, reject));
    });
    await new Promise<void>((resolve, reject) => server.listen(0, host, resolve).once('error', reject));
    return { host, port: (server.address() as net.AddressInfo).port, received, close: () => server.close() };
  }

  /** The agent's raw bytes through the test-only virtio-serial port, read from QEMU's chardev socket. */
  async serialFloor(pod: Pod): Promise<number> {
    const socket = findDebugSocket(this.ctd, pod.id);
    const sock = net.connect(socket);
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const got = rate(sock, BYTES, 'serial floor');
    const cid = await this.container(pod, `floor-serial-${this.#seq++}`, ['true'], {
      [SERIAL_FLOOR_ANNOTATION]: String(BYTES),
    });
    try {
      return await got;
    } finally {
      await this.removeContainer(cid);
    }
  }

  /** The agent's raw bytes over TCP through the pod network to the gateway. */
  async netFloor(pod: Pod): Promise<number> {
    const l = await this.listen('net floor');
    try {
      const cid = await this.container(pod, `floor-tcp-${this.#seq++}`, ['true'], {
        [TCP_FLOOR_ANNOTATION]: `${l.host}:${l.port}:${BYTES}`,
      });
      try {
        return await l.received;
      } finally {
        await this.removeContainer(cid);
      }
    } finally {
      l.close();
    }
  }

  /** `ctr task exec` of `head -c N /dev/zero`, ctr's stdout read here. */
  async stdout(pod: Pod): Promise<number> {
    const child = this.ctd.spawnCtr([
      'task',
      'exec',
      '--exec-id',
      `tp${this.#seq++}`,
      pod.container,
      'head',
      '-c',
      String(BYTES),
      '/dev/zero',
    ]);
    child.stdin?.end();
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    try {
      return await rate(child.stdout!, BYTES, 'stdout');
    } catch (err) {
      throw new Error(`${(err as Error).message}; ctr: ${stderr.trim().slice(0, 200)}`);
    } finally {
      await exited;
    }
  }

  /** CRI PortForward to the container's `nc -l`, read through the WebSocket (data channel 0). */
  async portForward(pod: Pod): Promise<number> {
    const { url } = await this.client.portForward({ podSandboxId: pod.id, port: [PF_PORT] });
    const s = await K8sStream.open(`${url}?port=${PF_PORT}`, { outputChannels: [0, 1] });
    try {
      // The server starts the channel with the port (2 bytes); the rate counts from the first data byte.
      const until = performance.now() + TIMEOUT_MS;
      while (s.receivedBytes(0) <= 2 && performance.now() < until) await new Promise((r) => setTimeout(r, 2));
      const t0 = performance.now();
      const n0 = s.receivedBytes(0);
      await s.waitForBytes(0, 2 + BYTES, TIMEOUT_MS);
      return (s.receivedBytes(0) - n0) / 1e6 / ((performance.now() - t0) / 1000);
    } finally {
      s.destroy();
    }
  }

  /** busybox `nc` in the container sending zeros to a listener on the gateway. */
  async podTcp(pod: Pod): Promise<number> {
    const l = await this.listen('pod TCP');
    try {
      const send = this.client
        .execSync({
          containerId: pod.container,
          cmd: ['sh', '-c', `nc -w 10 ${l.host} ${l.port} < /dev/zero`],
          timeout: 600,
        })
        .then((r) => {
          throw new Error(`nc exited ${r.exitCode} before the listener had all bytes`);
        });
      const mbps = await Promise.race([l.received, send]);
      await send.catch(() => undefined);
      return mbps;
    } finally {
      l.close();
    }
  }
}

/** QEMU's socket for the pod's test-only port: <state_dir>/k8s.io/<pod id>/vm/debug.sock. */
function findDebugSocket(ctd: PrivateContainerd, podId: string): string {
  for (const entry of fs.readdirSync(ctd.stateDir, { recursive: true }) as string[]) {
    if (entry.endsWith('debug.sock') && entry.includes(podId)) return path.join(ctd.stateDir, entry);
  }
  throw new Error(`no debug.sock for pod ${podId} below ${ctd.stateDir} (debug hooks off?)`);
}

type Series = Record<string, number[]>;

async function attempt(series: Series, key: string, fn: () => Promise<number>): Promise<void> {
  try {
    (series[key] ??= []).push(await fn());
  } catch (err) {
    console.error(`datapath bench: ${key} failed: ${(err as Error).message}`);
    (series[key] ??= []).push(NaN);
  }
}

export async function benchDatapath(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ cri: true });
  const hullToml = fs.readFileSync(ctd.hullConfig, 'utf8');
  fs.writeFileSync(ctd.hullConfig, hullToml.replace('[runtime]\n', '[runtime]\ndebug_hooks = true\n'));
  const b = new Bench(ctd);
  try {
    await importBusybox(ctd);
    const hull = await b.pod('hull');
    const runc = await b.pod('runc');
    const s: Series = {};
    for (let i = 0; i < RUNS; i++) {
      await attempt(s, 'serialFloor', () => b.serialFloor(hull));
      await attempt(s, 'hullStdout', () => b.stdout(hull));
      await attempt(s, 'hullPortForward', () => b.portForward(hull));
      await attempt(s, 'netFloor', () => b.netFloor(hull));
      await attempt(s, 'hullPodTcp', () => b.podTcp(hull));
      await attempt(s, 'runcStdout', () => b.stdout(runc));
      await attempt(s, 'runcPortForward', () => b.portForward(runc));
      await attempt(s, 'runcPodTcp', () => b.podTcp(runc));
    }
    const m = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, median(v.filter((x) => !Number.isNaN(x)))]));
    const row = (what: string, key: string, floor: string | undefined, runcKey: string) => ({
      path: what,
      'hull MB/s': round(m[key]!),
      floor: floor ?? '',
      'floor MB/s': floor ? round(m[floor]!) : '',
      'of floor': floor ? round(m[key]! / m[floor]!, 2) : '',
      'runc MB/s': round(m[runcKey]!),
      'of runc': round(m[key]! / m[runcKey]!, 2),
    });
    const table = [
      row('stdout (ctr exec)', 'hullStdout', 'serialFloor', 'runcStdout'),
      row('port forwarding (CRI)', 'hullPortForward', 'serialFloor', 'runcPortForward'),
      row('pod TCP (busybox nc)', 'hullPodTcp', 'netFloor', 'runcPodTcp'),
    ];
    const blank = Object.fromEntries(Object.keys(table[0]!).map((k) => [k, '']));
    printTable(`data paths against their channel floors (${MB} MB, medians of ${RUNS}, MB/s)`, [
      { ...blank, path: 'serial floor (raw virtio-serial)', 'hull MB/s': round(m.serialFloor!) },
      { ...blank, path: 'net floor (raw TCP over virtio-net)', 'hull MB/s': round(m.netFloor!) },
      ...table,
    ]);
    return {
      megabytes: MB,
      runs: RUNS,
      mediansMBps: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, round(v)])),
      samplesMBps: Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v.map((x) => round(x))])),
      table,
    };
  } finally {
    await b.removeAll();
    await ctd.stop();
  }
}
