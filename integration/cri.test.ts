/**
 * Pods through containerd's CRI plugin (runtime.v1), as the kubelet drives them, on one private containerd for the
 * whole file: first with runc (handler `runc`), which proves the test infrastructure (CNI bridge, pause image, logs,
 * streaming server), then with hull (handler `hull`): the same pod shape in one QEMU VM per pod, plus what only a VM
 * runtime has to get right (one VM for all of a pod's containers, localhost between them, memory limits and OOM
 * inside the guest, the VM sized from the pod's resources, concurrent pods, a shim killed under a running pod,
 * nothing left on the host afterwards).
 *
 * Both runtimes also get streaming Exec and Attach through the CRI stream server (lib/k8s-stream.ts, the
 * v4.channel.k8s.io WebSocket protocol kubectl uses), security contexts (read-only rootfs, capabilities, user,
 * group and supplemental groups), namespaced pod sysctls, the pod's shared /dev/shm, and a hostPort (CNI portmap,
 * a free port per pod) that the host reaches at the bridge's address.
 *
 * All of it runs against containerd 1.x (Debian's 1.6, config version 2); containerd 2.x (config version 3, its CRI
 * split into the cri.v1.runtime and cri.v1.images plugins, its pod sandbox controller) gets the runc baseline, the
 * hull pods and the exits, in a describe of its own. The hot-plug and the pod cgroup describes are hull's own and
 * the same under either generation: containerd 1.x only, to keep CI time down.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MEMORY_MIB, DEFAULT_MEMORY_OVERHEAD_MIB, DEFAULT_VCPUS } from '../core/config';
import { hostCgroupLayout } from '../core/host-cgroup';
import { mountsUnder } from '../fs-share';
import {
  BUSYBOX_IMAGE,
  BUSYBOX_WWW_INDEX,
  CONTAINERD_GENERATIONS,
  importBusybox,
  startContainerd,
  type ContainerdGeneration,
  type PrivateContainerd,
} from './lib/containerd';
import { cri, CriStatus, removePodSandboxAfterShimDeath, type CriError, type CriClient } from './lib/cri';
import { guestArtifacts } from './lib/guest';
import { Channel, K8sStream } from './lib/k8s-stream';
import { processesMentioning } from './lib/processes';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const DNS = {
  servers: ['10.96.0.10', '10.96.0.11'],
  searches: ['hulltest.svc.cluster.local', 'cluster.local'],
  options: ['ndots:5'],
};
const HTTP_PORT = 8080;
/** A second httpd, started by a test in the client container, bound to the pod's loopback only. */
const LOOPBACK_HTTP_PORT = 8081;
/** Namespaced sysctls every test pod sets (a network one and an IPC one); both differ from the kernel's defaults. */
const POD_SYSCTLS = { 'net.ipv4.ip_unprivileged_port_start': '0', 'kernel.shm_rmid_forced': '1' };
/** containerd's size for a pod's /dev/shm. */
const POD_SHM_KIB = 64 * 1024;
/** The `user` container's identity. */
const RUN_AS = { uid: 1000, gid: 2000, groups: [3000, 4000] };
/** CAP_NET_BIND_SERVICE (bit 10) alone, as /proc/<pid>/status prints a capability set. */
const CAP_NET_BIND_SERVICE_ONLY = '0000000000000400';
const { ContainerState, PodSandboxState } = cri;
/** Port forwarding's channels for its one port: data both ways, errors from the server. */
const PF_DATA = 0;
const PF_ERROR = 1;

/** One CRI log line: `<RFC 3339 time> <stream> <F|P> <text>`. */
const CRI_LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$/;

function httpGet(url: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Host ports handed out in this run: every pod gets one of its own. */
const usedHostPorts = new Set<number>();

/** A TCP port no socket on the host is bound to (the kernel's pick for port 0), not handed out before in this run. */
async function freeHostPort(): Promise<number> {
  for (;;) {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '0.0.0.0', resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (usedHostPorts.has(port)) continue;
    usedHostPorts.add(port);
    return port;
  }
}

/** GET with retries until `deadlineMs` (the server may still be starting). */
async function httpGetRetry(url: string, deadlineMs = 20_000): Promise<{ status: number; body: string }> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await httpGet(url);
    } catch (err) {
      if (Date.now() > until) throw err;
      await sleep(300);
    }
  }
}

/** Pids of hull's shim daemons serving `podId`: `node … containerd-shim-hull-v2 … -id <podId>` without a subcommand. */
function hullShimDaemons(podId: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      const at = argv.indexOf('-id');
      if (at < 0 || argv[at + 1] !== podId) continue;
      if (!argv.some((a) => path.basename(a) === 'containerd-shim-hull-v2')) continue;
      if (argv.includes('start') || argv.includes('delete')) continue;
      out.push(Number(pid));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Where a shim of this containerd for sandbox `id` listens (containerd's rule: /run/containerd/s/<sha256 of address/namespace/id>). */
function shimSocket(ctd: PrivateContainerd, id: string): string {
  return path.join(
    '/run/containerd/s',
    crypto
      .createHash('sha256')
      .update(path.posix.join(ctd.address, ctd.namespace, id))
      .digest('hex'),
  );
}

/** The shim's and containerd's warnings and errors for `id` in containerd's log from byte `from` on: what a failing hull test shows. */
function logProblems(ctd: PrivateContainerd, id: string, max = 25, from = 0): string[] {
  const lines = fs.readFileSync(ctd.log).subarray(from).toString('utf8').split('\n');
  return lines
    .filter((l) => l.includes(id.slice(0, 12)) && /"level":(40|50|60)|level=(error|warning)/.test(l))
    .slice(-max);
}

/** A test pod: its sandbox, containers, IP, the host port mapped to the web server, and configuration. */
interface PodState {
  pod: string;
  web: string;
  client: string;
  locked: string;
  user: string;
  ip: string;
  hostPort: number;
  config: cri.IPodSandboxConfig;
}

for (const { generation, title } of CONTAINERD_GENERATIONS) {
  describe(`cri: pods through containerd CRI (runtime.v1, ${title})`, function () {
    criSuite.call(this, generation);
  });
}

function criSuite(this: Mocha.Suite, generation: ContainerdGeneration): void {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let client: CriClient;
  /** hull's own, the same under either containerd: run with containerd 1.x only (CI time). */
  const describeGeneration1 = (t: string, fn: (this: Mocha.Suite) => void): void =>
    void (generation === 1 && describe(t, fn));
  const itGeneration1 = (t: string, fn: (this: Mocha.Context) => Promise<void>): void =>
    void (generation === 1 && it(t, fn));

  before(async function () {
    guestArtifacts(); // names `make guest` if the image is missing
    ctd = await startContainerd({ cri: true, generation });
    client = ctd.cri!.client;
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
  });

  /** A pod's configuration: hostname, DNS, its own log directory, no port mappings, `linux` as given. */
  function podConfig(name: string, hostname: string, linux: cri.ILinuxPodSandboxConfig = {}): cri.IPodSandboxConfig {
    const logDirectory = path.join(ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: crypto.randomUUID(), namespace: 'hulltest', attempt: 0 },
      hostname,
      logDirectory,
      dnsConfig: DNS,
      portMappings: [],
      labels: { test: 'cri' },
      linux,
    };
  }

  async function startContainer(
    pod: string,
    sandboxConfig: cri.IPodSandboxConfig,
    name: string,
    command: string[],
    linux?: cri.ILinuxContainerConfig,
    extra: Partial<cri.IContainerConfig> = {},
  ): Promise<string> {
    const { containerId } = await client.createContainer({
      podSandboxId: pod,
      sandboxConfig,
      config: { metadata: { name }, image: { image: BUSYBOX_IMAGE }, command, logPath: `${name}.log`, linux, ...extra },
    });
    await client.startContainer(containerId);
    return containerId;
  }

  async function waitState(id: string, state: cri.ContainerState, ms = 60_000): Promise<cri.IContainerStatus> {
    const until = Date.now() + ms;
    for (;;) {
      const s = (await client.containerStatus(id)).status!;
      if (s.state === state) return s;
      if (Date.now() > until)
        assert.fail(
          `container ${id} is ${ContainerState[s.state!]}, not ${ContainerState[state]} after ${ms} ms (reason ${s.reason}, exit ${s.exitCode})`,
        );
      await sleep(200);
    }
  }

  async function exec(
    id: string,
    cmd: string[],
    timeout = 30,
  ): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const r = await client.execSync({ containerId: id, cmd, timeout });
    return { stdout: Buffer.from(r.stdout).toString(), stderr: Buffer.from(r.stderr).toString(), exitCode: r.exitCode };
  }

  /** Exec through the streaming server: the URL CRI hands out, upgraded to a v4.channel.k8s.io WebSocket. */
  async function streamExec(req: cri.IExecRequest): Promise<K8sStream> {
    const { url } = await client.exec(req);
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\//);
    return K8sStream.open(url);
  }

  /** Port forwarding through the streaming server: the URL CRI's PortForward hands out, `?port=` one port. */
  async function portForward(pod: string, port: number): Promise<K8sStream> {
    const { url } = await client.portForward({ podSandboxId: pod, port: [port] });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/portforward\//);
    return K8sStream.open(`${url}?port=${port}`, { outputChannels: [PF_DATA, PF_ERROR] });
  }

  /** The file host-local keeps for an allocated IP (`<dataDir>/<network>/<ip>`), if any. */
  function ipamFiles(ip: string): string[] {
    const dataDir = ctd.cri!.network.ipamDataDir;
    if (!fs.existsSync(dataDir)) return [];
    return fs
      .readdirSync(dataDir)
      .flatMap((net) => (fs.existsSync(path.join(dataDir, net, ip)) ? [path.join(net, ip)] : []));
  }

  /** The CRI log file of a container, parsed: each line as {stream, tag, text}; fails on a line not in CRI format. */
  function criLog(sandboxConfig: cri.IPodSandboxConfig, name: string): { stream: string; tag: string; text: string }[] {
    const file = path.join(sandboxConfig.logDirectory!, `${name}.log`);
    const text = fs.readFileSync(file, 'utf8');
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => {
        const m = CRI_LOG_LINE.exec(l);
        assert.ok(m, `CRI log line: ${JSON.stringify(l)}`);
        return { stream: m[3]!, tag: m[4]!, text: m[5]! };
      });
  }

  async function waitLog(sandboxConfig: cri.IPodSandboxConfig, name: string, want: string, ms = 20_000): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      const file = path.join(sandboxConfig.logDirectory!, `${name}.log`);
      if (fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(want)) return;
      if (Date.now() > until) assert.fail(`${file} never held ${JSON.stringify(want)}`);
      await sleep(200);
    }
  }

  /** Checks shared by both runtimes: the pod is READY with an IP in the run's subnet and the runtime handler asked for. */
  async function assertPodReady(pod: string, handler: string): Promise<string> {
    const { status } = await client.podSandboxStatus(pod);
    assert.equal(status!.state, PodSandboxState.SANDBOX_READY);
    assert.equal(status!.runtimeHandler, handler);
    const ip = status!.network?.ip ?? '';
    const prefix = ctd.cri!.network.subnet.replace(/\.0\/24$/, '.');
    assert.ok(ip.startsWith(prefix), `pod IP ${ip} is in ${ctd.cri!.network.subnet}`);
    return ip;
  }

  /**
   * Stop and remove a pod; afterwards CRI knows nothing of it, its netns and its IP allocation are gone. `shimDied`:
   * RemovePodSandbox is retried as the kubelet does (containerd 2.x: removePodSandboxAfterShimDeath), once on 1.x.
   */
  async function stopAndRemove(pod: string, ip: string, shimDied = false): Promise<void> {
    const info = await client.sandboxInfo(pod);
    const netns = info?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    assert.ok(netns, 'the sandbox has a network namespace');
    assert.ok(fs.existsSync(netns), `${netns} exists while the pod runs`);
    await client.stopPodSandbox(pod);
    assert.equal((await client.podSandboxStatus(pod)).status!.state, PodSandboxState.SANDBOX_NOTREADY);
    if (!shimDied) await client.removePodSandbox(pod);
    else {
      const calls = await removePodSandboxAfterShimDeath(client, pod);
      if (generation === 1) assert.equal(calls, 1, 'containerd 1.x removes the pod at the first RemovePodSandbox');
    }
    await assert.rejects(client.podSandboxStatus(pod), (e: CriError) => e.code === CriStatus.NOT_FOUND);
    assert.equal(
      (await client.listPodSandbox()).items.filter((p) => p.id === pod).length,
      0,
      'ListPodSandbox no longer lists it',
    );
    assert.equal(
      (await client.listContainers({ filter: { podSandboxId: pod } })).containers.length,
      0,
      'no container of the pod is left',
    );
    assert.equal(fs.existsSync(netns), false, `${netns} is removed`);
    assert.deepEqual(ipamFiles(ip), [], `host-local released ${ip}`);
  }

  /** The checks both runtimes share, on a pod with a `web` container (httpd) and a `client` container (sleep). */
  function commonPodTests(handler: string, hostname: string, state: PodState): void {
    it('the pod is READY with an IP from the bridge, and both containers RUNNING', async function () {
      assert.equal(await assertPodReady(state.pod, handler), state.ip);
      for (const id of [state.web, state.client])
        assert.equal((await client.containerStatus(id)).status!.state, ContainerState.CONTAINER_RUNNING);
      const listed = (await client.listContainers({ filter: { podSandboxId: state.pod } })).containers
        .map((c) => c.metadata!.name)
        .sort();
      assert.deepEqual(listed, ['client', 'locked', 'user', 'web']);
    });

    it('the hostname and /etc/resolv.conf are the configured ones', async function () {
      const h = await exec(state.client, ['hostname']);
      assert.equal(h.stdout.trim(), hostname);
      const resolv = await exec(state.client, ['cat', '/etc/resolv.conf']);
      assert.equal(resolv.exitCode, 0, resolv.stderr);
      const lines = resolv.stdout.split('\n').map((l) => l.trim());
      for (const s of DNS.servers)
        assert.ok(lines.includes(`nameserver ${s}`), `nameserver ${s} in:\n${resolv.stdout}`);
      assert.ok(lines.includes(`search ${DNS.searches.join(' ')}`), `search line in:\n${resolv.stdout}`);
      assert.ok(lines.includes(`options ${DNS.options.join(' ')}`), `options line in:\n${resolv.stdout}`);
    });

    it('ExecSync returns stdout, stderr and the exit code', async function () {
      const r = await exec(state.client, ['sh', '-c', 'echo out-line; echo err-line >&2; exit 3']);
      assert.deepEqual(r, { stdout: 'out-line\n', stderr: 'err-line\n', exitCode: 3 });
      assert.equal((await exec(state.client, ['true'])).exitCode, 0);
    });

    it('ExecSync honours its timeout', async function () {
      const t0 = Date.now();
      await assert.rejects(exec(state.client, ['sleep', '60'], 2), (e: CriError) => /timeout/i.test(e.details));
      const s = (Date.now() - t0) / 1000;
      assert.ok(s < 20, `ExecSync gave up after ${s.toFixed(1)} s for a 2 s timeout`);
      assert.equal((await exec(state.client, ['true'])).exitCode, 0, 'the container still runs execs');
    });

    it('the container log file holds its output in CRI format', async function () {
      await waitLog(state.config, 'web', 'web-ready');
      const lines = criLog(state.config, 'web');
      assert.ok(
        lines.some((l) => l.stream === 'stdout' && l.tag === 'F' && l.text === 'web-ready'),
        JSON.stringify(lines),
      );
      assert.ok(
        lines.some((l) => l.stream === 'stderr' && l.tag === 'F' && l.text === 'web-stderr'),
        JSON.stringify(lines),
      );
    });

    it('the host reaches the pod IP over HTTP', async function () {
      const r = await httpGetRetry(`http://${state.ip}:${HTTP_PORT}/index.html`);
      assert.equal(r.status, 200);
      assert.equal(r.body, BUSYBOX_WWW_INDEX);
    });

    it("the host reaches the web server through its hostPort at the bridge's address (portmap) and gets the same page", async function () {
      // portmap DNATs traffic to a local address in the nat OUTPUT chain: the gateway is the host's own address.
      const viaHostPort = await httpGetRetry(`http://${ctd.cri!.network.gateway}:${state.hostPort}/index.html`);
      const direct = await httpGetRetry(`http://${state.ip}:${HTTP_PORT}/index.html`);
      assert.equal(viaHostPort.status, 200);
      assert.deepEqual(viaHostPort, direct);
      assert.equal(viaHostPort.body, BUSYBOX_WWW_INDEX);
    });

    it('containers of one pod reach each other on localhost', async function () {
      // busybox 1.35's wget crashes with -T: bound it with timeout instead.
      const r = await exec(state.client, [
        'timeout',
        '15',
        'wget',
        '-q',
        '-O',
        '-',
        `http://127.0.0.1:${HTTP_PORT}/index.html`,
      ]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, BUSYBOX_WWW_INDEX);
    });

    it('PortForward: HTTP through the streaming server reaches the web server in the pod', async function () {
      const s = await portForward(state.pod, HTTP_PORT);
      try {
        s.send(`GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n`, PF_DATA);
        await s.waitFor(PF_DATA, BUSYBOX_WWW_INDEX);
        const data = s.outputBytes(PF_DATA);
        assert.equal(data.readUInt16LE(0), HTTP_PORT, 'the data channel starts with the port');
        assert.match(data.subarray(2).toString(), /^HTTP\/1\.[01] 200 /);
        assert.equal(s.outputBytes(PF_ERROR).subarray(2).toString(), '', 'nothing on the error channel');
      } finally {
        s.close();
      }
    });

    it("PortForward reaches a server bound to the pod's 127.0.0.1 only, as kubectl port-forward does", async function () {
      // busybox httpd without -f goes to the background: exec returns once it listens.
      const started = await exec(state.client, ['httpd', '-p', `127.0.0.1:${LOOPBACK_HTTP_PORT}`, '-h', '/www']);
      assert.equal(started.exitCode, 0, started.stderr);
      const s = await portForward(state.pod, LOOPBACK_HTTP_PORT);
      try {
        s.send(`GET /index.html HTTP/1.0\r\n\r\n`, PF_DATA);
        await s.waitFor(PF_DATA, BUSYBOX_WWW_INDEX);
      } finally {
        s.close();
      }
    });

    it('PortForward to a port nothing listens on reports the failure on the error channel', async function () {
      const s = await portForward(state.pod, 9);
      try {
        // The dial may fail, and the server close the stream, before this byte leaves: both orders are right.
        s.sendIfOpen('x', PF_DATA);
        await s.waitFor(PF_ERROR, /error forwarding port 9/);
        assert.equal(s.outputBytes(PF_DATA).length, 2, 'no data beyond the port');
      } finally {
        s.close();
      }
    });

    it('UpdateContainerResources changes a running container', async function () {
      await client.updateContainerResources({
        containerId: state.client,
        linux: { memoryLimitInBytes: 96 << 20, cpuPeriod: 100_000, cpuQuota: 50_000, cpuShares: 512 },
      });
      const st = (await client.containerStatus(state.client)).status!;
      assert.equal(st.state, ContainerState.CONTAINER_RUNNING);
      if (st.resources?.linux) assert.equal(Number(st.resources.linux.memoryLimitInBytes), 96 << 20);
    });

    it('ContainerStats reports memory and CPU', async function () {
      const { stats } = await client.containerStats(state.web);
      assert.equal(stats!.attributes!.id, state.web);
      assert.ok(Number(stats!.memory?.workingSetBytes?.value ?? 0) > 0, `working set ${JSON.stringify(stats!.memory)}`);
      assert.ok(Number(stats!.cpu?.usageCoreNanoSeconds?.value ?? 0) > 0, `cpu ${JSON.stringify(stats!.cpu)}`);
    });

    it('streaming Exec: stdout and stderr apart, exit code 3 in the v4 status', async function () {
      const s = await streamExec({
        containerId: state.client,
        cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'],
        stdout: true,
        stderr: true,
      });
      const r = await s.done();
      assert.equal(r.stdout, 'out\n');
      assert.equal(r.stderr, 'err\n');
      assert.equal(r.status?.reason, 'NonZeroExitCode', JSON.stringify(r.status));
      assert.equal(r.exitCode, 3, JSON.stringify(r.status));
    });

    it('streaming Exec with stdin: head -n1 gets the line sent and exits 0', async function () {
      // v4 cannot half-close stdin (only closing the connection ends it): a command that stops by itself.
      const s = await streamExec({
        containerId: state.client,
        cmd: ['head', '-n1'],
        stdin: true,
        stdout: true,
        stderr: true,
      });
      s.stdin('hello over the stream\n');
      const r = await s.done();
      assert.deepEqual(
        { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode },
        { stdout: 'hello over the stream\n', stderr: '', exitCode: 0 },
        JSON.stringify(r.status),
      );
    });

    it("streaming Exec with a terminal: the container's own pty (tty names it), a resize reaches stty size, exit 0", async function () {
      // The pty is the container's (the runtime opens it in the container's devpts), so `tty` (ttyname) names it.
      const script =
        'tty; [ -t 0 ] && [ -t 1 ] && echo terminal-ready; while read l; do [ "$l" = q ] && exit 0; stty size; done';
      const s = await streamExec({
        containerId: state.client,
        cmd: ['sh', '-c', script],
        tty: true,
        stdin: true,
        stdout: true,
      });
      await s.waitFor(Channel.stdout, 'terminal-ready');
      // The resize (CRI -> shim ResizePty) and stdin travel apart: ask again until the size shows.
      const until = Date.now() + 30_000;
      for (;;) {
        s.resize(91, 37);
        s.stdin('\n');
        try {
          await s.waitFor(Channel.stdout, /^37 91\r?$/m, 1_000);
          break;
        } catch (err) {
          if (Date.now() > until) throw err;
        }
      }
      s.stdin('q\n');
      const r = await s.done();
      assert.equal(r.exitCode, 0, JSON.stringify(r.status));
      assert.equal(r.stderr, '', 'a terminal has no separate stderr');
      assert.match(
        r.stdout.split('\n')[0]!,
        /^\/dev\/pts\/\d+\r$/,
        `tty names the container's pty: ${JSON.stringify(r.stdout.slice(0, 200))}`,
      );
    });

    it("streaming Attach to a container started with stdin and a terminal sees its output; tty names the container's pty", async function () {
      const id = await startContainer(
        state.pod,
        state.config,
        'attached',
        ['sh', '-c', 'echo attached-ready; while read l; do echo "got:$l $(tty)"; done'],
        undefined,
        { stdin: true, tty: true },
      );
      try {
        await waitLog(state.config, 'attached', 'attached-ready');
        const { url } = await client.attach({ containerId: id, stdin: true, tty: true, stdout: true });
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/attach\//);
        const s = await K8sStream.open(url);
        // What was written before the attach is in the log only: send lines until one comes back.
        const until = Date.now() + 30_000;
        for (let i = 0; ; i++) {
          s.stdin(`line-${i}\n`);
          try {
            await s.waitFor(Channel.stdout, /got:line-\d+ \/dev\/pts\/\d+\r?$/m, 1_000);
            break;
          } catch (err) {
            if (Date.now() > until) throw err;
          }
        }
        s.close();
        await s.done();
        assert.equal(
          (await client.containerStatus(id)).status!.state,
          ContainerState.CONTAINER_RUNNING,
          'detaching leaves the container running',
        );
      } finally {
        await client.stopContainer(id, 0);
        await client.removeContainer(id);
      }
    });

    it('a read-only rootfs refuses writes to / while /dev/shm (tmpfs) takes them', async function () {
      const w = await exec(state.locked, ['touch', '/written']);
      assert.notEqual(w.exitCode, 0, 'touch / succeeded');
      assert.match(w.stderr, /Read-only file system/);
      const shm = await exec(state.locked, [
        'sh',
        '-c',
        'echo ok > /dev/shm/locked && cat /dev/shm/locked && rm /dev/shm/locked',
      ]);
      assert.deepEqual(shm, { stdout: 'ok\n', stderr: '', exitCode: 0 });
    });

    it('capabilities: drop ALL, add NET_BIND_SERVICE leaves only that one', async function () {
      const r = await exec(state.locked, ['grep', '^Cap', '/proc/self/status']);
      const caps = Object.fromEntries(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => l.split(/:\s+/) as [string, string]),
      );
      assert.equal(caps.CapEff, CAP_NET_BIND_SERVICE_ONLY, r.stdout);
      assert.equal(caps.CapPrm, CAP_NET_BIND_SERVICE_ONLY, r.stdout);
      assert.equal(caps.CapBnd, CAP_NET_BIND_SERVICE_ONLY, r.stdout);
    });

    it('run_as_user, run_as_group and supplemental groups: id shows them', async function () {
      const r = await exec(state.user, ['sh', '-c', 'id -u; id -g; id -G']);
      assert.equal(r.exitCode, 0, r.stderr);
      const [uid, gid, groups] = r.stdout.trim().split('\n');
      assert.equal(Number(uid), RUN_AS.uid);
      assert.equal(Number(gid), RUN_AS.gid);
      const set = new Set((groups ?? '').split(/\s+/).map(Number));
      for (const g of RUN_AS.groups) assert.ok(set.has(g), `group ${g} in id -G: ${groups}`);
      assert.ok(!set.has(0), `no root group: ${groups}`);
    });

    it('namespaced pod sysctls are visible in the containers', async function () {
      for (const [key, value] of Object.entries(POD_SYSCTLS)) {
        const r = await exec(state.client, ['cat', `/proc/sys/${key.replace(/\./g, '/')}`]);
        assert.equal(r.stdout.trim(), value, `${key}: ${r.stdout}${r.stderr}`);
      }
      // ip_unprivileged_port_start=0: a user without capabilities may listen on port 80.
      const nc = await exec(state.user, ['timeout', '1', 'nc', '-l', '-p', '80']);
      assert.doesNotMatch(nc.stderr, /denied|not permitted/i, `nc as uid ${RUN_AS.uid} on port 80`);
    });

    it(`/dev/shm is a ${POD_SHM_KIB / 1024} MiB tmpfs shared by the pod's containers`, async function () {
      const mounts = await exec(state.client, ['grep', ' /dev/shm ', '/proc/mounts']);
      assert.match(mounts.stdout, /^\S+ \/dev\/shm tmpfs /m, mounts.stdout);
      const df = await exec(state.client, ['df', '-k', '/dev/shm']);
      const total = Number(df.stdout.trim().split('\n')[1]?.trim().split(/\s+/)[1]);
      assert.equal(total, POD_SHM_KIB, df.stdout);
      const token = crypto.randomUUID();
      assert.equal((await exec(state.web, ['sh', '-c', `echo ${token} > /dev/shm/shared`])).exitCode, 0);
      const read = await exec(state.client, ['cat', '/dev/shm/shared']);
      assert.equal(read.stdout.trim(), token, 'the client container reads what web wrote');
      await exec(state.client, ['rm', '-f', '/dev/shm/shared']);
    });
  }

  /**
   * Runs the pod `name` (with POD_SYSCTLS, and a free host port mapped to HTTP_PORT) with a web and a client
   * container into `state`, and two containers with security contexts: `locked` (read-only rootfs, capabilities:
   * drop ALL, add NET_BIND_SERVICE) and `user` (RUN_AS).
   */
  async function startWebPod(handler: string, name: string, hostname: string, state: PodState): Promise<void> {
    state.hostPort = await freeHostPort();
    state.config = {
      ...podConfig(name, hostname, { sysctls: POD_SYSCTLS }),
      portMappings: [{ protocol: cri.Protocol.TCP, containerPort: HTTP_PORT, hostPort: state.hostPort }],
    };
    state.pod = await ctd.cri!.runPod(state.config, handler);
    state.ip = (await client.podSandboxStatus(state.pod)).status!.network?.ip ?? '';
    state.web = await startContainer(state.pod, state.config, 'web', [
      'sh',
      '-c',
      `echo web-ready; echo web-stderr >&2; exec httpd -f -p ${HTTP_PORT} -h /www`,
    ]);
    state.client = await startContainer(state.pod, state.config, 'client', ['sleep', '3600']);
    state.locked = await startContainer(state.pod, state.config, 'locked', ['sleep', '3600'], {
      securityContext: {
        readonlyRootfs: true,
        capabilities: { dropCapabilities: ['ALL'], addCapabilities: ['NET_BIND_SERVICE'] },
      },
    });
    state.user = await startContainer(state.pod, state.config, 'user', ['sleep', '3600'], {
      securityContext: {
        runAsUser: { value: RUN_AS.uid },
        runAsGroup: { value: RUN_AS.gid },
        supplementalGroups: RUN_AS.groups,
      },
    });
  }

  describe('runc (handler runc): the baseline', function () {
    const state: PodState = { pod: '', web: '', client: '', locked: '', user: '', ip: '', hostPort: 0, config: {} };

    before(async function () {
      const v = await client.version();
      assert.equal(v.runtimeApiVersion, 'v1');
      await startWebPod('runc', 'runc-web', 'runc-pod', state);
    });

    commonPodTests('runc', 'runc-pod', state);

    it('StopPodSandbox and RemovePodSandbox leave nothing: no netns, no IP allocation, no pod', async function () {
      await stopAndRemove(state.pod, state.ip);
    });
  });

  describe('hull (handler hull): pods in VMs', function () {
    const state: PodState = { pod: '', web: '', client: '', locked: '', user: '', ip: '', hostPort: 0, config: {} };
    const sandboxDir = (pod: string): string => path.join(ctd.stateDir, ctd.namespace, pod);
    const qemusOf = (pod: string): string[] => processesMentioning(sandboxDir(pod), /^qemu-system/);
    /** The pod sized through PodSandboxConfig.linux.resources; the shim crash test kills it. */
    const sized = { pod: '', container: '', ip: '', netns: '' };
    const SIZED_MEMORY_MIB = 256;

    before(async function () {
      await startWebPod('hull', 'hull-web', 'hull-pod', state);
    });

    let logFrom = 0;
    beforeEach(() => void (logFrom = fs.statSync(ctd.log).size));

    afterEach(function () {
      if (this.currentTest?.state !== 'failed') return;
      for (const id of [
        state.pod,
        state.web,
        state.client,
        state.locked,
        state.user,
        sized.pod,
        sized.container,
      ].filter((p) => p !== '')) {
        const lines = logProblems(ctd, id, 10, logFrom);
        if (lines.length)
          console.log(
            `      containerd.log, warnings and errors naming ${id.slice(0, 12)}:\n${lines.map((l) => `        ${l.slice(0, 500)}`).join('\n')}`,
          );
      }
    });

    it('one QEMU runs the whole pod (sandbox and both containers)', async function () {
      const qemus = qemusOf(state.pod);
      assert.equal(qemus.length, 1, `QEMU processes of the pod:\n${qemus.join('\n')}`);
      assert.equal(processesMentioning(ctd.stateDir, /^qemu-system/).length, 1, 'no other VM runs');
    });

    commonPodTests('hull', 'hull-pod', state);

    it('a container over its memory limit is OOM-killed inside the VM', async function () {
      const hog = await startContainer(state.pod, state.config, 'hog', ['tail', '/dev/zero'], {
        resources: { memoryLimitInBytes: 32 << 20 },
      });
      const st = await waitState(hog, ContainerState.CONTAINER_EXITED, 120_000);
      assert.ok(st.reason === 'OOMKilled' || st.exitCode === 137, `reason ${st.reason}, exit code ${st.exitCode}`);
      assert.equal(
        (await client.containerStatus(state.web)).status!.state,
        ContainerState.CONTAINER_RUNNING,
        'the other containers keep running',
      );
      await client.removeContainer(hog);
      assert.equal(qemusOf(state.pod).length, 1, 'still one VM');
    });

    it(`a pod's resources size its VM: one more vCPU and ${SIZED_MEMORY_MIB} MiB more than the base (${DEFAULT_VCPUS} vCPU, ${DEFAULT_MEMORY_MIB} MiB)`, async function () {
      // containerd turns the sandbox's resources into the io.kubernetes.cri.sandbox-cpu-*/-memory annotations.
      const config = podConfig('sized', 'sized', {
        resources: { memoryLimitInBytes: SIZED_MEMORY_MIB << 20, cpuPeriod: 100_000, cpuQuota: 100_000 },
      });
      sized.pod = await ctd.cri!.runPod(config, 'hull');
      sized.ip = await assertPodReady(sized.pod, 'hull');
      sized.netns =
        (await client.sandboxInfo(sized.pod))?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')
          ?.path ?? '';
      sized.container = await startContainer(sized.pod, config, 'sleeper', ['sleep', '3600']);
      const size = async (id: string): Promise<{ cpus: number; memKiB: number }> => {
        const r = await exec(id, ['sh', '-c', 'nproc; grep ^MemTotal: /proc/meminfo']);
        const m = /^(\d+)\nMemTotal:\s+(\d+) kB$/.exec(r.stdout.trim());
        assert.ok(m, `nproc and MemTotal: ${r.stdout}${r.stderr}`);
        return { cpus: Number(m[1]), memKiB: Number(m[2]) };
      };
      // The base pod booted with the configured size (its QEMU's argv; with hot-plug on by default its containers'
      // limits and the Update test may have grown it since, so its guest's nproc is not the base any more).
      const baseQemu = qemusOf(state.pod);
      assert.equal(baseQemu.length, 1, baseQemu.join('\n'));
      const baseArgv = fs.readFileSync(`/proc/${baseQemu[0]!.split(' ')[0]}/cmdline`, 'latin1').split('\0');
      assert.equal(
        baseArgv[baseArgv.indexOf('-smp') + 1]?.split(',')[0],
        String(DEFAULT_VCPUS),
        'the base pod booted with the configured vCPUs',
      );
      assert.equal(
        baseArgv[baseArgv.indexOf('-m') + 1]?.split(',')[0],
        `${DEFAULT_MEMORY_MIB}M`,
        'and the configured memory',
      );
      const grown = await size(sized.container);
      assert.equal(
        grown.cpus,
        Math.min(DEFAULT_VCPUS + 1, Math.max(os.availableParallelism(), DEFAULT_VCPUS)),
        'quota/period 1 adds a vCPU (capped at the host)',
      );
      // The kernel keeps a few % of the memory for itself: MemTotal is a little below what the VM has.
      const wantKiB = (DEFAULT_MEMORY_MIB + SIZED_MEMORY_MIB) * 1024;
      assert.ok(
        grown.memKiB <= wantKiB && grown.memKiB > wantKiB * 0.8,
        `MemTotal ${grown.memKiB} kB for ${DEFAULT_MEMORY_MIB} + ${SIZED_MEMORY_MIB} MiB`,
      );
      const qemu = qemusOf(sized.pod);
      assert.equal(qemu.length, 1, qemu.join('\n'));
      const argv = fs.readFileSync(`/proc/${qemu[0]!.split(' ')[0]}/cmdline`, 'latin1').split('\0');
      assert.equal(
        argv[argv.indexOf('-m') + 1]?.split(',')[0], // with hot-plug room: <size>M,slots=N,maxmem=M
        `${DEFAULT_MEMORY_MIB + SIZED_MEMORY_MIB}M`,
        'QEMU got the grown memory',
      );
      assert.equal(argv[argv.indexOf('-smp') + 1]?.split(',')[0], String(grown.cpus), 'QEMU got the grown vCPUs');
    });

    it('the shim daemon SIGKILLed: the pod goes NOTREADY, and Stop+RemovePodSandbox leave nothing of it', async function () {
      if (!sized.pod) this.skip();
      const dir = sandboxDir(sized.pod);
      const shims = hullShimDaemons(sized.pod);
      assert.equal(shims.length, 1, `one hull shim daemon for the pod: ${JSON.stringify(shims)}`);
      assert.equal(qemusOf(sized.pod).length, 1);
      process.kill(shims[0]!, 'SIGKILL');
      // containerd sees the connection drop, runs the shim's `delete` for the pod's tasks and marks the pod NOTREADY.
      const until = Date.now() + 60_000;
      while ((await client.podSandboxStatus(sized.pod)).status!.state !== PodSandboxState.SANDBOX_NOTREADY) {
        if (Date.now() > until) assert.fail('the pod is still READY 60 s after its shim died');
        await sleep(250);
      }
      // The kubelet then stops and removes it.
      await stopAndRemove(sized.pod, sized.ip, true);
      // containerd runs the dead shim's `delete` on its own, beside Stop/Remove: it may still be finishing (its last
      // umount, its exit) when RemovePodSandbox returns (seen under load). What counts is that it ends, bounded.
      const busy = (): boolean =>
        fs.existsSync(dir) || processesMentioning(dir).length > 0 || processesMentioning(sized.pod).length > 0;
      for (let i = 0; i < 300 && busy(); i++) await sleep(100);
      assert.deepEqual(processesMentioning(dir), [], 'no QEMU or virtiofsd of the pod is left');
      assert.deepEqual(processesMentioning(sized.pod), [], 'no process names the pod');
      assert.deepEqual(
        (await mountsUnder(dir)).map((m) => m.mountPoint),
        [],
        "no mount under the pod's state folder",
      );
      assert.equal(fs.existsSync(dir), false, `${dir} is removed`);
      assert.equal(sized.netns !== '' && fs.existsSync(sized.netns), false, 'the netns and every tap in it are gone');
      assert.deepEqual(
        fs.readdirSync('/sys/class/net').filter((n) => n.includes(sized.pod.slice(0, 8))),
        [],
        'no host interface named after the pod',
      );
      assert.equal(qemusOf(state.pod).length, 1, "the other pod's VM still runs");
    });

    /** What pods leave on the host and in containerd, for a before/after comparison. */
    async function traces(): Promise<Record<string, string[]>> {
      const ls = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);
      const ipam = ctd.cri!.network.ipamDataDir;
      return {
        'hull shim daemons': processesMentioning(ctd.address).filter(
          (p) => / \S*containerd-shim-hull-v2 /.test(` ${p} `) && !/ (start|delete)( |$)/.test(p),
        ),
        'QEMU and virtiofsd processes': processesMentioning(ctd.stateDir, /^(qemu-system|virtiofsd)/),
        'hull state folders': ls(path.join(ctd.stateDir, ctd.namespace)),
        'containerd task bundles': ls(path.join(ctd.dir, 'state', 'io.containerd.runtime.v2.task', ctd.namespace)),
        'mounts below the run folder': (await mountsUnder(ctd.dir)).map((m) => m.mountPoint).sort(),
        'IP allocations': ls(ipam).flatMap((n) => ls(path.join(ipam, n)).map((f) => `${n}/${f}`)),
        pods: (await client.listPodSandbox()).items.map((p) => `${p.id} ${p.metadata?.name}`).sort(),
        containers: (await client.listContainers({})).containers.map((c) => c.id!).sort(),
      };
    }

    for (const [kind, option, name] of [
      ['network', 'network', 'network'],
      ['IPC', 'ipc', 'IPC'],
      ['PID', 'pid', 'PID'],
    ] as const) {
      it(`a pod asking for the host's ${kind} namespace (namespace_options.${option} = NODE) is refused by RunPodSandbox, naming the namespace and the reason, and leaves nothing`, async function () {
        const before = await traces();
        const config = podConfig(`host-${option}`, option === 'network' ? '' : `host-${option}`, {
          securityContext: { namespaceOptions: { [option]: cri.NamespaceMode.NODE } },
        });
        await assert.rejects(client.runPodSandbox({ config, runtimeHandler: 'hull' }), (e: CriError) => {
          assert.equal(e.code, CriStatus.INVALID_ARGUMENT, e.message);
          assert.match(
            e.details,
            new RegExp(
              `asks for the host's ${name} namespace \\(host${name === 'network' ? 'Network' : name}: namespace_options\\.${option} = NODE\\), which a VM cannot share`,
            ),
          );
          return true;
        });
        // containerd cleans up after the failed task create (shim shutdown and `delete`): wait for it, then compare.
        let after = await traces();
        for (let i = 0; i < 100 && JSON.stringify(after) !== JSON.stringify(before); i++) {
          await sleep(100);
          after = await traces();
        }
        assert.deepEqual(after, before, 'nothing of the refused pod is left');
        assert.ok(fs.existsSync(shimSocket(ctd, state.pod)), "shimSocket() finds the live pod's socket");
        // The refused sandbox's id: in containerd's log (the shim's lines), and not one of the pods it still has.
        const known = new Set([...(before.pods ?? []), ...(before.containers ?? [])].map((p) => p.split(' ')[0]));
        const ids = [
          ...new Set(
            fs
              .readFileSync(ctd.log)
              .subarray(logFrom)
              .toString('utf8')
              .match(/\b[0-9a-f]{64}\b/g) ?? [],
          ),
        ].filter((id) => !known.has(id));
        assert.ok(ids.length >= 1, "containerd's log names the refused sandbox");
        for (const id of ids) {
          assert.deepEqual(hullShimDaemons(id), [], `no shim daemon for ${id}`);
          assert.equal(fs.existsSync(shimSocket(ctd, id)), false, `no shim socket for ${id}`);
        }
      });
    }

    it('StopPodSandbox and RemovePodSandbox leave nothing: no QEMU, virtiofsd, tap, mount, state folder or netns', async function () {
      const dir = sandboxDir(state.pod);
      const info = await client.sandboxInfo(state.pod);
      const netns = info?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
      await stopAndRemove(state.pod, state.ip);
      for (let i = 0; i < 100 && (fs.existsSync(dir) || processesMentioning(dir).length > 0); i++) await sleep(100);
      assert.deepEqual(processesMentioning(dir), [], 'no QEMU, virtiofsd or shim of the pod is left');
      assert.deepEqual(
        processesMentioning(ctd.stateDir, /^(qemu-system|virtiofsd)/),
        [],
        'no VM process of this run is left',
      );
      assert.deepEqual(
        (await mountsUnder(ctd.stateDir)).map((m) => m.mountPoint),
        [],
        'no mount under the hull state folder',
      );
      assert.equal(fs.existsSync(dir), false, `${dir} is removed`);
      assert.equal(netns && fs.existsSync(netns), false, 'the netns and every tap in it are gone');
      const taps = fs.readdirSync('/sys/class/net').filter((n) => n.includes(state.pod.slice(0, 8)));
      assert.deepEqual(taps, [], 'no host interface named after the pod');
    });

    // Five TCG VMs at once: hull's concurrency, the heaviest test here; containerd 1.x only (CI time).
    itGeneration1(
      '5 pods created at once all reach READY with a RUNNING container, then go away completely',
      async function () {
        const n = 5;
        const pods = await Promise.all(
          Array.from({ length: n }, async (_, i) => {
            const config = podConfig(`many-${i}`, `many-${i}`);
            const pod = await ctd.cri!.runPod(config, 'hull');
            const c = await startContainer(pod, config, 'sleeper', ['sleep', '3600']);
            return { pod, c, config };
          }),
        );
        const ips = new Set<string>();
        for (const p of pods) {
          ips.add(await assertPodReady(p.pod, 'hull'));
          assert.equal((await client.containerStatus(p.c)).status!.state, ContainerState.CONTAINER_RUNNING);
          assert.equal(qemusOf(p.pod).length, 1, `one QEMU for pod ${p.pod}`);
          assert.equal((await exec(p.c, ['hostname'])).stdout.trim(), p.config.hostname);
        }
        assert.equal(ips.size, n, 'every pod has an IP of its own');
        await Promise.all(
          pods.map(async (p) => {
            await client.stopPodSandbox(p.pod);
            await client.removePodSandbox(p.pod);
          }),
        );
        for (let i = 0; i < 100 && processesMentioning(ctd.stateDir).length > 0; i++) await sleep(100);
        assert.deepEqual(processesMentioning(ctd.stateDir), [], 'no VM process of this run is left');
        assert.deepEqual(
          pods.filter((p) => fs.existsSync(sandboxDir(p.pod))).map((p) => p.pod),
          [],
          'no state folder is left',
        );
      },
    );
  });

  // Issue 13: the VM grows with the pod (hot-plug). This pod's shim reads a configuration with hot-plug room (the
  // file is restored once the pod runs: the shim daemon loads it at its first Create). Base 1 vCPU and
  // DEFAULT_MEMORY_MIB, room up to 2 vCPUs (this host has 2 CPUs) and 4 DIMMs of 128 MiB more.
  describeGeneration1('hull: the VM grows with the pod (CPU and memory hot-plug)', function () {
    const MAX_VCPUS = 2;
    const MAX_MEMORY_MIB = DEFAULT_MEMORY_MIB + 4 * 128;
    const hp = { pod: '', ip: '', config: {} as cri.IPodSandboxConfig, plain: '', limited: '' };
    const size = async (id: string): Promise<{ cpus: number; memKiB: number }> => {
      const r = await exec(id, ['sh', '-c', 'nproc; grep ^MemTotal: /proc/meminfo']);
      const m = /^(\d+)\nMemTotal:\s+(\d+) kB$/.exec(r.stdout.trim());
      assert.ok(m, `nproc and MemTotal: ${r.stdout}${r.stderr}`);
      return { cpus: Number(m[1]), memKiB: Number(m[2]) };
    };
    let base = { cpus: 0, memKiB: 0 };
    /** The guest's size once it shows at least `memKiB` (a DIMM's blocks appear ~0.3 s after device_add), up to 10 s. */
    const sizeAtLeast = async (id: string, memKiB: number): Promise<{ cpus: number; memKiB: number }> => {
      for (let i = 0; ; i++) {
        const s = await size(id);
        if (s.memKiB >= memKiB || i >= 50) return s;
        await sleep(200);
      }
    };

    before(async function () {
      if (DEFAULT_VCPUS !== 1 || os.availableParallelism() < MAX_VCPUS) this.skip();
      const original = fs.readFileSync(ctd.hullConfig, 'utf8');
      fs.writeFileSync(
        ctd.hullConfig,
        `${original}\n[hypervisor]\ndefault_maxvcpus = ${MAX_VCPUS}\ndefault_maxmemory = ${MAX_MEMORY_MIB}\n`,
      );
      try {
        hp.config = podConfig('hotplug', 'hotplug');
        hp.pod = await ctd.cri!.runPod(hp.config, 'hull');
      } finally {
        fs.writeFileSync(ctd.hullConfig, original);
      }
      hp.ip = await assertPodReady(hp.pod, 'hull');
      hp.plain = await startContainer(hp.pod, hp.config, 'plain', ['sleep', '3600']);
      base = await size(hp.plain);
    });

    after(async () => {
      if (hp.pod) await stopAndRemove(hp.pod, hp.ip);
    });

    it('a second container with its own limits brings more vCPUs and memory to the guest (nproc, MemTotal)', async function () {
      assert.equal(base.cpus, 1, 'the pod boots with the base vCPU');
      // root_image_dax is on by default, hot-plug room or not: the pod's root image is an nvdimm.
      const qemu = processesMentioning(path.join(ctd.stateDir, ctd.namespace, hp.pod), /^qemu-system/);
      assert.equal(qemu.length, 1, qemu.join('\n'));
      const argv = fs.readFileSync(`/proc/${qemu[0]!.split(' ')[0]}/cmdline`, 'latin1').split('\0');
      assert.ok(argv.includes('nvdimm,id=rootnv,memdev=rootimg,unarmed=on'), argv.join(' '));
      hp.limited = await startContainer(hp.pod, hp.config, 'limited', ['sleep', '3600'], {
        resources: { cpuPeriod: 100_000, cpuQuota: 100_000, memoryLimitInBytes: 256 << 20 },
      });
      const grown = await sizeAtLeast(hp.limited, base.memKiB + 256 * 1024 * 0.95);
      assert.equal(grown.cpus, 2, 'quota/period 1 added a vCPU');
      const addedMiB = (grown.memKiB - base.memKiB) / 1024;
      assert.ok(addedMiB > 256 * 0.95 && addedMiB <= 256, `MemTotal grew by ${addedMiB.toFixed(1)} MiB for 256 MiB`);
      assert.deepEqual(await size(hp.plain), grown, 'one guest: every container sees it');
    });

    it('UpdateContainerResources beyond the boot size grows the VM, and the guest sees it', async function () {
      if (!hp.limited) this.skip();
      const before = await size(hp.plain);
      await client.updateContainerResources({
        containerId: hp.plain,
        linux: { memoryLimitInBytes: 128 << 20 }, // no CPU quota: the 2 vCPUs are the maximum already
      });
      const after = await sizeAtLeast(hp.plain, before.memKiB + 128 * 1024 * 0.95);
      const addedMiB = (after.memKiB - before.memKiB) / 1024;
      assert.ok(addedMiB > 128 * 0.95 && addedMiB <= 128, `MemTotal grew by ${addedMiB.toFixed(1)} MiB for 128 MiB`);
      // The guest's cgroup v2 root is /sys/fs/cgroup in the container (no cgroup namespace): its own is below it.
      const limit = await exec(hp.plain, [
        'sh',
        '-c',
        'cat "/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)/memory.max"',
      ]);
      assert.equal(
        limit.stdout.trim(),
        String(128 << 20),
        `the limit applied in the guest: ${limit.stdout}${limit.stderr}`,
      );
    });

    it('UpdateContainerResources beyond the maxima is refused with the figures; nothing changes', async function () {
      if (!hp.limited) this.skip();
      const before = await size(hp.plain);
      await assert.rejects(
        client.updateContainerResources({
          containerId: hp.plain,
          linux: { cpuPeriod: 100_000, cpuQuota: 200_000, memoryLimitInBytes: 128 << 20 },
        }),
        (e: CriError) => {
          assert.match(e.message, /would need 4 vCPUs/);
          assert.match(e.message, new RegExp(`more than its maximum of ${MAX_VCPUS} vCPUs and ${MAX_MEMORY_MIB} MiB`));
          return true;
        },
      );
      assert.deepEqual(await size(hp.plain), before);
    });
  });

  // Issue 13: the pod's cgroup holds the VM. The pods get a cgroup_parent of the test's own, made here in every
  // hierarchy with a memory limit (kubelet's pod cgroup), so containerd's CRI plugin (SystemdCgroup = false)
  // writes cgroupsPath = <cgroup_parent>/<sandbox id>. This host is cgroup v1 (plus the hybrid unified hierarchy).
  describeGeneration1("hull: the pod's cgroup holds the VM (cgroupfs driver, this host's cgroups)", function () {
    const tag = crypto.randomBytes(4).toString('hex');
    const PARENT = `/hull-test-${tag}`;
    const SMALL = `/hull-test-${tag}-small`;
    /** Room for the boot VM (base memory + memory_overhead, the defaults) and one DIMM of hot-plug. */
    const GROW = `/hull-test-${tag}-grow`;
    const GROW_LIMIT_MIB = DEFAULT_MEMORY_MIB + DEFAULT_MEMORY_OVERHEAD_MIB + 128;
    const PARENT_LIMIT_MIB = 2048;
    const layout = hostCgroupLayout();
    const memoryHier = layout.hierarchies.find((h) => h.version === 2 || h.controllers.includes('memory'))!;
    const v2 = layout.version === 2;
    const sandboxDir = (pod: string): string => path.join(ctd.stateDir, ctd.namespace, pod);
    const leaf = (mountPoint: string, pod: string, parent = PARENT): string => path.join(mountPoint, parent, pod);
    const readLines = (file: string): string[] =>
      fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '');
    const pids = (pod: string): string[] => readLines(path.join(leaf(memoryHier.mountPoint, pod), 'cgroup.procs'));
    const usage = (pod: string): number =>
      Number(
        fs.readFileSync(
          path.join(leaf(memoryHier.mountPoint, pod), v2 ? 'memory.current' : 'memory.usage_in_bytes'),
          'utf8',
        ),
      );
    const leftover = (parent: string): string[] =>
      layout.hierarchies.flatMap((h) =>
        fs.existsSync(path.join(h.mountPoint, parent))
          ? fs
              .readdirSync(path.join(h.mountPoint, parent), { withFileTypes: true })
              .filter((e) => e.isDirectory())
              .map((e) => path.join(h.mountPoint, parent, e.name))
          : [],
      );
    const main = { pod: '', ip: '', config: {} as cri.IPodSandboxConfig };
    const grow = { pod: '' };

    before(function () {
      for (const [parent, mib] of [
        [PARENT, PARENT_LIMIT_MIB],
        [SMALL, 300],
        [GROW, GROW_LIMIT_MIB],
      ] as const) {
        for (const h of layout.hierarchies) fs.mkdirSync(path.join(h.mountPoint, parent));
        fs.writeFileSync(
          path.join(memoryHier.mountPoint, parent, v2 ? 'memory.max' : 'memory.limit_in_bytes'),
          String(mib * 1024 * 1024),
        );
      }
    });

    after(async function () {
      // Whatever a failed test left: its pods, then the test's folders (the sandboxes' first).
      if (main.pod)
        await client
          .stopPodSandbox(main.pod)
          .then(() => client.removePodSandbox(main.pod))
          .catch(() => undefined);
      if (grow.pod)
        await client
          .stopPodSandbox(grow.pod)
          .then(() => client.removePodSandbox(grow.pod))
          .catch(() => undefined);
      for (const parent of [PARENT, SMALL, GROW]) {
        for (const d of leftover(parent)) fs.rmdirSync(d);
        for (const h of layout.hierarchies) {
          try {
            fs.rmdirSync(path.join(h.mountPoint, parent));
          } catch {
            // not made
          }
        }
      }
    });

    it('a pod whose cgroup memory limit cannot hold the VM is refused by RunPodSandbox, naming both numbers and the RuntimeClass overhead; nothing is left', async function () {
      const config = podConfig('cg-small', 'cg-small', { cgroupParent: SMALL });
      await assert.rejects(client.runPodSandbox({ config, runtimeHandler: 'hull' }), (e: CriError) => {
        assert.equal(e.code, CriStatus.INVALID_ARGUMENT, e.message);
        assert.match(
          e.details,
          /memory limit of 300 MiB, less than the VM needs: 512 MiB of guest memory \+ \d+ MiB of host overhead/,
        );
        assert.match(e.details, /overhead\.podFixed\.memory to at least \d+Mi/);
        return true;
      });
      for (let i = 0; i < 100 && leftover(SMALL).length > 0; i++) await sleep(100);
      assert.deepEqual(leftover(SMALL), [], 'no sandbox cgroup is left');
    });

    it("hot-plug never grows the VM past the pod's cgroup: a container whose limit would is refused, naming the limit and the need", async function () {
      if (DEFAULT_VCPUS !== 1) this.skip();
      const original = fs.readFileSync(ctd.hullConfig, 'utf8');
      fs.writeFileSync(ctd.hullConfig, `${original}\n[hypervisor]\ndefault_maxvcpus = 2\ndefault_maxmemory = 4096\n`);
      const config = podConfig('cg-grow', 'cg-grow', { cgroupParent: GROW });
      try {
        grow.pod = await ctd.cri!.runPod(config, 'hull');
      } finally {
        fs.writeFileSync(ctd.hullConfig, original);
      }
      const memTotal = async (id: string): Promise<number> => {
        const r = await exec(id, ['sh', '-c', 'grep ^MemTotal: /proc/meminfo']);
        return Number(/MemTotal:\s+(\d+) kB/.exec(r.stdout)?.[1]);
      };
      const probe = await startContainer(grow.pod, config, 'probe', ['sleep', '3600']);
      const baseKiB = await memTotal(probe);
      await assert.rejects(
        startContainer(grow.pod, config, 'big', ['sleep', '3600'], { resources: { memoryLimitInBytes: 200 << 20 } }),
        (e: CriError) => {
          assert.equal(e.code, CriStatus.FAILED_PRECONDITION, e.message);
          const need = DEFAULT_MEMORY_MIB + 256 + DEFAULT_MEMORY_OVERHEAD_MIB;
          assert.match(e.details, new RegExp(`would grow to ${DEFAULT_MEMORY_MIB + 256} MiB of guest memory`));
          assert.match(
            e.details,
            new RegExp(`= ${need} MiB, more than the memory limit of its cgroup .*, ${GROW_LIMIT_MIB} MiB`),
          );
          return true;
        },
      );
      // One DIMM fits: the container is made and the guest has it.
      const small = await startContainer(grow.pod, config, 'small', ['sleep', '3600'], {
        resources: { memoryLimitInBytes: 100 << 20 },
      });
      // The DIMM's memory blocks appear in the guest a moment after QMP's device_add (about 0.3 s, hypervisor/README.md).
      let kib = 0;
      for (let i = 0; i < 50 && kib < baseKiB + 120 * 1024; i++) {
        if (i > 0) await sleep(200);
        kib = await memTotal(small);
      }
      assert.ok(kib >= baseKiB + 120 * 1024, `MemTotal ${kib} kB, ${baseKiB} kB before one 128 MiB DIMM`);
      await client.stopPodSandbox(grow.pod);
      await client.removePodSandbox(grow.pod);
      grow.pod = '';
    });

    it("QEMU (every thread), virtiofsd and the shim daemon are in the pod's cgroup in every hierarchy", async function () {
      main.config = podConfig('cg-main', 'cg-main', { cgroupParent: PARENT });
      main.pod = await ctd.cri!.runPod(main.config, 'hull');
      main.ip = await assertPodReady(main.pod, 'hull');
      const vm = processesMentioning(sandboxDir(main.pod), /^(qemu-system|virtiofsd)/).map((p) => p.split(' ')[0]!);
      assert.ok(vm.length >= 2, `QEMU and virtiofsd: ${vm.join(' ')}`);
      const shims = hullShimDaemons(main.pod).map(String);
      assert.equal(shims.length, 1);
      for (const h of layout.hierarchies) {
        const procs = readLines(path.join(leaf(h.mountPoint, main.pod), 'cgroup.procs'));
        for (const p of [...vm, ...shims])
          assert.ok(procs.includes(p), `${h.mountPoint}: pid ${p} in ${procs.join(' ')}`);
      }
      const qemu = processesMentioning(sandboxDir(main.pod), /^qemu-system/)[0]!.split(' ')[0]!;
      const tasks = readLines(path.join(leaf(memoryHier.mountPoint, main.pod), v2 ? 'cgroup.threads' : 'tasks'));
      for (const t of fs.readdirSync(`/proc/${qemu}/task`))
        assert.ok(tasks.includes(t), `QEMU thread ${t} is in the cgroup`);
    });

    it("the pod's cgroup memory usage grows when a container touches memory in the guest", async function () {
      if (!main.pod) this.skip();
      const sleeper = await startContainer(main.pod, main.config, 'sleeper', ['sleep', '3600']);
      const before = usage(main.pod);
      // dd's 200 MiB buffer is written by read(2) from /dev/zero: guest pages QEMU must now back on the host.
      const r = await exec(sleeper, ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=2'], 120);
      assert.equal(r.exitCode, 0, r.stderr);
      const after = usage(main.pod);
      const grewMiB = (after - before) / (1024 * 1024);
      console.log(
        `      pod cgroup memory: ${(before / 1048576).toFixed(0)} MiB before, ${(after / 1048576).toFixed(0)} MiB after (+${grewMiB.toFixed(0)} MiB); QEMU, virtiofsd, shim pids: ${pids(main.pod).join(' ')}`,
      );
      // QEMU's own memory (beyond the guest RAM mapping), for [hypervisor] memory_overhead's default.
      const qemu = processesMentioning(sandboxDir(main.pod), /^qemu-system/)[0]!.split(' ')[0]!;
      let ramKiB = 0;
      let totalKiB = 0;
      let size = 0;
      for (const line of fs.readFileSync(`/proc/${qemu}/smaps`, 'utf8').split('\n')) {
        const m = /^(Size|Rss):\s+(\d+) kB/.exec(line);
        if (m?.[1] === 'Size') size = Number(m[2]);
        if (m?.[1] === 'Rss') {
          totalKiB += Number(m[2]);
          if (size === DEFAULT_MEMORY_MIB * 1024) ramKiB += Number(m[2]);
        }
      }
      console.log(
        `      QEMU RSS ${(totalKiB / 1024).toFixed(0)} MiB, of which guest RAM ${(ramKiB / 1024).toFixed(0)} MiB: ${((totalKiB - ramKiB) / 1024).toFixed(0)} MiB of its own`,
      );
      assert.ok(grewMiB >= 32, `usage grew by ${grewMiB.toFixed(1)} MiB`);
      assert.ok(after <= PARENT_LIMIT_MIB * 1024 * 1024);
    });

    it('a container over its memory limit is still OOM-killed inside the guest; the VM lives on', async function () {
      if (!main.pod) this.skip();
      const hog = await startContainer(main.pod, main.config, 'hog', ['tail', '/dev/zero'], {
        resources: { memoryLimitInBytes: 32 << 20 },
      });
      const st = await waitState(hog, ContainerState.CONTAINER_EXITED, 120_000);
      assert.ok(st.reason === 'OOMKilled' || st.exitCode === 137, `reason ${st.reason}, exit code ${st.exitCode}`);
      assert.equal(processesMentioning(sandboxDir(main.pod), /^qemu-system/).length, 1, 'QEMU still runs');
      await client.removeContainer(hog);
    });

    it("RemovePodSandbox removes the sandbox's cgroup in every hierarchy (the parent stays)", async function () {
      if (!main.pod) this.skip();
      await stopAndRemove(main.pod, main.ip);
      for (const h of layout.hierarchies)
        assert.equal(fs.existsSync(leaf(h.mountPoint, main.pod)), false, `${leaf(h.mountPoint, main.pod)} is removed`);
      assert.ok(fs.existsSync(path.join(memoryHier.mountPoint, PARENT)), "the parent (kubelet's) stays");
      main.pod = '';
    });

    it("the shim daemon SIGKILLed: Stop+RemovePodSandbox (the shim's `delete` from the record) remove the cgroup", async function () {
      const config = podConfig('cg-crash', 'cg-crash', { cgroupParent: PARENT });
      const pod = await ctd.cri!.runPod(config, 'hull');
      main.pod = pod; // for after() if this fails
      const ip = await assertPodReady(pod, 'hull');
      assert.ok(pids(pod).length >= 3, 'QEMU, virtiofsd and the shim are in it');
      const shims = hullShimDaemons(pod);
      assert.equal(shims.length, 1);
      process.kill(shims[0]!, 'SIGKILL');
      const until = Date.now() + 60_000;
      while ((await client.podSandboxStatus(pod)).status!.state !== PodSandboxState.SANDBOX_NOTREADY) {
        if (Date.now() > until) assert.fail('the pod is still READY 60 s after its shim died');
        await sleep(250);
      }
      await stopAndRemove(pod, ip);
      main.pod = '';
      for (let i = 0; i < 100 && leftover(PARENT).length > 0; i++) await sleep(100);
      assert.deepEqual(leftover(PARENT), [], 'no sandbox cgroup is left');
      // containerd runs the dead shim's `delete` on its own, beside Stop/Remove: its last umount may still be
      // finishing when RemovePodSandbox returns (seen once under load). What counts is that it ends.
      for (let i = 0; i < 300 && processesMentioning(sandboxDir(pod)).length > 0; i++) await sleep(100);
      assert.deepEqual(processesMentioning(sandboxDir(pod)), [], 'no QEMU or virtiofsd of the pod is left');
    });
  });

  // Issue 12 §3: in a pod sharing its pid namespace (shareProcessNamespace), a container's init is not its pid
  // namespace's init, so its exit does not take its children with it; runc's shim kills what is left of the
  // container when its init exits (ShouldKillAllOnExit), and the exit is observed. hull must do the same.
  describe('exits: a shared-pid-namespace pod whose container backgrounds a child (runc, then hull)', function () {
    for (const handler of ['runc', 'hull']) {
      it(`${handler}: the container exits 0 with its output, and its background child is gone`, async function () {
        const sharedPid = { namespaceOptions: { pid: cri.NamespaceMode.POD } };
        const config = podConfig(`${handler}-sharedpid`, `${handler}-sharedpid`, { securityContext: sharedPid });
        const pod = await ctd.cri!.runPod(config, handler);
        try {
          const watcher = await startContainer(pod, config, 'watcher', ['sleep', '3600'], {
            securityContext: sharedPid,
          });
          const bg = await startContainer(pod, config, 'bg', ['sh', '-c', 'sleep 297 & echo up'], {
            securityContext: sharedPid,
          });
          // Generous (a hang shows as a failure), never a timing assertion.
          const status = await waitState(bg, ContainerState.CONTAINER_EXITED, 180_000);
          assert.equal(status.exitCode, 0);
          await waitLog(config, 'bg', 'up');
          assert.deepEqual(
            criLog(config, 'bg').map((l) => l.text),
            ['up'],
          );
          // The pod's containers see each other's processes: the background child was killed with its container.
          const ps = await exec(watcher, ['ps', '-o', 'pid,args']);
          assert.equal(ps.exitCode, 0, ps.stderr);
          assert.match(ps.stdout, /sleep 3600/, 'the pid namespace is shared');
          assert.doesNotMatch(ps.stdout, /sleep 297/, `the background child is gone:\n${ps.stdout}`);
        } finally {
          await client.stopPodSandbox(pod);
          await client.removePodSandbox(pod);
        }
      });
    }
  });
}
