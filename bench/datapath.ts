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
 * runc runs the same three paths as the other reference. On a shared host QEMU may get only part of a core: each hull
 * figure also comes as MB per second of QEMU's CPU time (all its threads, from /proc, over the same interval), which
 * does not depend on that share, and the ratios to the floors are given both ways. BENCH_DATAPATH_PARTS picks parts,
 * BENCH_DATAPATH_PROFILE_MS profiles the guest during the hull paths (where its CPU goes; see `profiled`).
 * Written to bench/out/datapath.json.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import type { CriClient } from '../integration/lib/cri';
import { K8sStream } from '../integration/lib/k8s-stream';
import { median, printTable, round } from './lib/report';
import { shimPid } from './lib/shim-process';

const MB = Number(process.env.BENCH_DATAPATH_MB ?? 64);
const RUNS = Number(process.env.BENCH_DATAPATH_RUNS ?? 3);
const BYTES = MB * 1e6;
const PF_PORT = 9000;
/** The stdout writer: busybox `head -c` (4 KiB writes), or `dd bs=1M` (BENCH_DATAPATH_WRITER=dd). */
const WRITER = process.env.BENCH_DATAPATH_WRITER ?? 'head';
const SERIAL_FLOOR_ANNOTATION = 'io.hull.debug.serial-floor';
const TCP_FLOOR_ANNOTATION = 'io.hull.debug.tcp-floor';
const PROFILE_ANNOTATION = 'io.hull.debug.profile';
/**
 * BENCH_DATAPATH_PROFILE_MS=N: profile the guest for N ms of each hull path, from BENCH_DATAPATH_PROFILE_DELAY_MS
 * (default 0) after the path's set-up began (once, in the first round; make the transfer outlast it).
 */
const PROFILE_MS = Number(process.env.BENCH_DATAPATH_PROFILE_MS ?? 0);
const PROFILE_DELAY_MS = Number(process.env.BENCH_DATAPATH_PROFILE_DELAY_MS ?? 0);
/**
 * BENCH_DATAPATH_COMPARE=<folder with vmlinuz, initrd.img, rootfs.img>: a second hull pod boots that (previous)
 * guest, and its serial floor, stdout and port forwarding run right after the current one's, round by round
 * (`base…` keys): an agent change judged against the previous agent in the same run.
 */
const COMPARE = process.env.BENCH_DATAPATH_COMPARE;
const TIMEOUT_MS = 600_000;
type Handler = 'hull' | 'runc';

interface Pod {
  id: string;
  name: string;
  container: string;
}

/**
 * Where the time goes: CPU seconds of QEMU (the guest under TCG, all its threads) and of the hull shim, per wall
 * second from the first byte to the last of the transfer in progress (set for hull's transfers only).
 */
let cpuProcs: { qemu: number; shim: number } | undefined;
let hullProcs: { qemu: number; shim: number } | undefined;
let baseProcs: { qemu: number; shim: number } | undefined;
let lastCpu: { qemu: number; shim: number } | undefined;
const cpuSeconds = (pid: number): number => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (USER_HZ 100)
};

type CpuMark = { qemu: number; shim: number } | undefined;
const cpuMark = (): CpuMark => {
  const procs = cpuProcs;
  return procs && { qemu: cpuSeconds(procs.qemu), shim: cpuSeconds(procs.shim) };
};
const cpuSince = (mark: CpuMark, wall: number): void => {
  const now = cpuMark();
  if (mark && now) lastCpu = { qemu: (now.qemu - mark.qemu) / wall, shim: (now.shim - mark.shim) / wall };
};

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
    let mark = cpuMark();
    source.on('data', (c: Buffer) => {
      if (got === 0) {
        first = performance.now();
        mark = cpuMark();
      }
      got += c.length;
      if (got >= bytes) {
        clearTimeout(timer);
        const wall = (performance.now() - first) / 1000;
        cpuSince(mark, wall);
        const mbps = got / 1e6 / wall;
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
    for (let i = 0; ; i++) {
      await this.client.stopContainer(id, 0).catch(() => undefined);
      try {
        return void (await this.client.removeContainer(id));
      } catch (err) {
        if (i >= 5) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
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
      server.once('connection', (sock) => void rate(sock, BYTES, what).then(resolve, reject));
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

  /**
   * Runs `fn` with the guest profiled for its first `ms` (agent/debug-hooks.ts `io.hull.debug.profile`): the guest's
   * CPU by kind, by process, and the agent's JavaScript by function, read from the test-only port.
   */
  async profiled<T>(pod: Pod, ms: number, fn: () => Promise<T>): Promise<{ result: T; profile: unknown }> {
    const sock = net.connect(findDebugSocket(this.ctd, pod.id));
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const chunks: Buffer[] = [];
    const profile = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no profile from the guest')), PROFILE_DELAY_MS + ms + 120_000);
      sock.on('data', (c: Buffer) => {
        chunks.push(c);
        const all = Buffer.concat(chunks);
        const nl = all.indexOf(10);
        if (nl < 0) return;
        const len = Number(all.subarray(0, nl).toString());
        if (all.length - nl - 1 < len) return;
        clearTimeout(timer);
        sock.destroy();
        resolve(JSON.parse(all.subarray(nl + 1, nl + 1 + len).toString()));
      });
      sock.on('error', reject);
    });
    const cid = await this.container(pod, `profile-${this.#seq++}`, ['true'], {
      [PROFILE_ANNOTATION]: `${PROFILE_DELAY_MS}+${ms}`,
    });
    try {
      const result = await fn();
      return { result, profile: await profile };
    } finally {
      sock.destroy();
      await this.removeContainer(cid);
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
      ...(WRITER === 'dd'
        ? ['dd', 'if=/dev/zero', 'bs=1M', `count=${Math.ceil(BYTES / 2 ** 20)}`]
        : ['head', '-c', String(BYTES), '/dev/zero']),
    ]);
    child.stdin?.end();
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    try {
      return await rate(child.stdout!, BYTES, 'stdout');
    } catch (err) {
      throw new Error(`${(err as Error).message}; ctr: ${stderr.trim().slice(0, 200)}`, { cause: err });
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
      const mark = cpuMark();
      const n0 = s.receivedBytes(0);
      await s.waitForBytes(0, 2 + BYTES, TIMEOUT_MS);
      const wall = (performance.now() - t0) / 1000;
      cpuSince(mark, wall);
      return (s.receivedBytes(0) - n0) / 1e6 / wall;
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

/** The pod's QEMU: its argv names the pod's debug.sock. */
function qemuPid(podId: string): number {
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      if (cmd.startsWith('/usr/bin/qemu') && cmd.includes(podId)) return Number(pid);
    } catch {
      // gone
    }
  }
  throw new Error(`no QEMU for pod ${podId}`);
}

/** QEMU's socket for the pod's test-only port: <state_dir>/k8s.io/<pod id>/vm/debug.sock. */
function findDebugSocket(ctd: PrivateContainerd, podId: string): string {
  for (const entry of fs.readdirSync(ctd.stateDir, { recursive: true }) as string[]) {
    if (entry.endsWith('debug.sock') && entry.includes(podId)) return path.join(ctd.stateDir, entry);
  }
  throw new Error(`no debug.sock for pod ${podId} below ${ctd.stateDir} (debug hooks off?)`);
}

type Series = Record<string, number[]>;

/** BENCH_DATAPATH_PARTS=serialFloor,hullStdout,... runs only those (the keys of the JSON's medians). */
const PARTS = process.env.BENCH_DATAPATH_PARTS?.split(',');

async function attempt(series: Series, key: string, fn: () => Promise<number>): Promise<void> {
  if (PARTS && !PARTS.includes(key)) return;
  try {
    lastCpu = undefined;
    cpuProcs = key.startsWith('runc') ? undefined : key.startsWith('base') ? baseProcs : hullProcs;
    (series[key] ??= []).push(await fn());
    const cpu = lastCpu as { qemu: number; shim: number } | undefined;
    if (cpu) {
      (series[`${key}QemuCpu`] ??= []).push(cpu.qemu);
      (series[`${key}ShimCpu`] ??= []).push(cpu.shim);
      // MB per second of QEMU's CPU: what the guest's work costs, whatever share of the host QEMU got meanwhile.
      (series[`${key}PerQemuCpuS`] ??= []).push((series[key].at(-1) ?? NaN) / cpu.qemu);
    }
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
    hullProcs = { qemu: qemuPid(hull.id), shim: shimPid(ctd, hull.id) };
    const runc = PARTS && !PARTS.some((p) => p.startsWith('runc')) ? hull : await b.pod('runc');
    // The previous guest image in a second hull pod (the shim reads hull.toml at each pod's start).
    let base: Pod | undefined;
    if (COMPARE) {
      const withImage = fs.readFileSync(ctd.hullConfig, 'utf8');
      fs.writeFileSync(
        ctd.hullConfig,
        `${withImage}[hypervisor]\nkernel = "${COMPARE}/vmlinuz"\ninitrd = "${COMPARE}/initrd.img"\nimage = "${COMPARE}/rootfs.img"\n`,
      );
      base = await b.pod('hull');
      fs.writeFileSync(ctd.hullConfig, withImage);
      baseProcs = { qemu: qemuPid(base.id), shim: shimPid(ctd, base.id) };
    }
    const s: Series = {};
    const profiles: Record<string, unknown> = {};
    for (let i = 0; i < RUNS; i++) {
      const prof = <T>(key: string, fn: () => Promise<T>): Promise<T> =>
        i > 0 || !PROFILE_MS || (PARTS && !PARTS.includes(key))
          ? fn()
          : b.profiled(hull, PROFILE_MS, fn).then(({ result, profile }) => {
              profiles[key] = profile;
              return result;
            });
      await attempt(s, 'serialFloor', () => b.serialFloor(hull));
      await attempt(s, 'hullStdout', () => prof('hullStdout', () => b.stdout(hull)));
      await attempt(s, 'hullPortForward', () => prof('hullPortForward', () => b.portForward(hull)));
      if (base) {
        await attempt(s, 'baseSerialFloor', () => b.serialFloor(base));
        await attempt(s, 'baseStdout', () => b.stdout(base));
        await attempt(s, 'basePortForward', () => b.portForward(base));
      }
      await attempt(s, 'netFloor', () => b.netFloor(hull));
      await attempt(s, 'hullPodTcp', () => b.podTcp(hull));
      await attempt(s, 'runcStdout', () => b.stdout(runc));
      await attempt(s, 'runcPortForward', () => b.portForward(runc));
      await attempt(s, 'runcPodTcp', () => b.podTcp(runc));
    }
    for (const k of [
      'serialFloor',
      'netFloor',
      'hullStdout',
      'hullPortForward',
      'hullPodTcp',
      'runcStdout',
      'runcPortForward',
      'runcPodTcp',
    ])
      s[k] ??= [];
    const m = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, median(v.filter((x) => !Number.isNaN(x)))]));
    const eff = (key: string): number => m[`${key}PerQemuCpuS`] ?? NaN;
    const row = (what: string, key: string, floor: string | undefined, runcKey: string) => ({
      path: what,
      'hull MB/s': round(m[key]!),
      floor: floor ?? '',
      'floor MB/s': floor ? round(m[floor]!) : '',
      'of floor': floor ? round(m[key]! / m[floor]!, 2) : '',
      'MB/QEMU-CPU-s': round(eff(key)),
      'of floor per CPU': floor ? round(eff(key) / eff(floor), 2) : '',
      'runc MB/s': round(m[runcKey]!),
      'of runc': round(m[key]! / m[runcKey]!, 2),
    });
    const table = [
      row('stdout (ctr exec)', 'hullStdout', 'serialFloor', 'runcStdout'),
      row('port forwarding (CRI)', 'hullPortForward', 'serialFloor', 'runcPortForward'),
      row('pod TCP (busybox nc)', 'hullPodTcp', 'netFloor', 'runcPodTcp'),
      ...(COMPARE
        ? [
            row('stdout, previous guest', 'baseStdout', 'baseSerialFloor', 'runcStdout'),
            row('port forwarding, previous guest', 'basePortForward', 'baseSerialFloor', 'runcPortForward'),
          ]
        : []),
    ];
    const blank = Object.fromEntries(Object.keys(table[0]!).map((k) => [k, '']));
    printTable(`data paths against their channel floors (${MB} MB, medians of ${RUNS}, MB/s)`, [
      {
        ...blank,
        path: 'serial floor (raw virtio-serial)',
        'hull MB/s': round(m.serialFloor!),
        'MB/QEMU-CPU-s': round(eff('serialFloor')),
      },
      {
        ...blank,
        path: 'net floor (raw TCP over virtio-net)',
        'hull MB/s': round(m.netFloor!),
        'MB/QEMU-CPU-s': round(eff('netFloor')),
      },
      ...table,
    ]);
    return {
      megabytes: MB,
      runs: RUNS,
      mediansMBps: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, round(v)])),
      samples: Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v.map((x) => round(x, 3))])),
      table,
      ...(PROFILE_MS ? { guestProfiles: profiles } : {}),
    };
  } finally {
    await b.removeAll();
    await ctd.stop();
  }
}
