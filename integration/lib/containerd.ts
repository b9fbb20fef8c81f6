/**
 * A private containerd for one test run: its own root, state, sockets and configuration under a temporary folder,
 * hull's checkout `bin/` first on its PATH (so `io.containerd.hull.v2` resolves to bin/containerd-shim-hull-v2),
 * and hull's configuration (HULL_CONFIG) pointing its state below the same folder. `ctr` runs with argv arrays.
 * Also: a busybox OCI image made from Debian's busybox-static, imported with `ctr image import`.
 *
 * With `cri: true` the CRI plugin is on (it is off otherwise): runtime handlers `runc` (the default) and `hull`
 * (with ConfigPath = the run's hull.toml), CNI from Debian's plugins with a bridge of the run's own and a random
 * /24 and portmap for the pods' hostPorts, the pause image built here (integration/pause/pause.c) as the sandbox
 * image, and `ctr` in the `k8s.io` namespace. `ctd.cri` then holds the client and the network; stop() stops and
 * removes any pod still there, then the run's network namespaces and bridge and, if this run made them, portmap's
 * top-level nat chains (lib/portmap-nat.ts).
 *
 * Two containerd generations: `generation: 1` (the default) is Debian's containerd 1.6 on PATH, configured with
 * `version = 2`; `generation: 2` is containerd 2.x from `binDir` (default CONTAINERD2_BIN_DIR, which `make deps`
 * fills from Debian sid's build: scripts/containerd2.mjs), configured with `version = 3` and 2.x's plugin names (CRI
 * split into io.containerd.cri.v1.runtime, io.containerd.cri.v1.images and io.containerd.grpc.v1.cri). `binDir` goes
 * on PATH after hull's bin/ and before the system's, so that containerd 2 runs its own containerd-shim-runc-v2, and
 * `ctr` is that folder's ctr.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { mountsUnder } from '../../fs-share';
import { busyboxRootfs } from './containers';
import { CriClient, netnsPathOf, type cri } from './cri';
import { natBaseline, removePortmapNat } from './portmap-nat';

export const REPO = path.resolve(__dirname, '..', '..', '..');
/**
 * containerd 2.x's containerd, ctr and containerd-shim-runc-v2: `make deps` puts them there (scripts/containerd2.mjs,
 * below HULL_CACHE_DIR when set, as for the script); HULL_CONTAINERD2_BIN_DIR names another folder.
 */
export const CONTAINERD2_BIN_DIR =
  process.env.HULL_CONTAINERD2_BIN_DIR ||
  path.join(process.env.HULL_CACHE_DIR || '/var/cache/hull', 'containerd-2', 'bin');

/** 1: containerd 1.x (Debian bookworm's 1.6, config version 2); 2: containerd 2.x (config version 3). */
export type ContainerdGeneration = 1 | 2;

/** The generations the suites that test containerd's contract run against, each in a describe of its own. */
export const CONTAINERD_GENERATIONS: readonly { generation: ContainerdGeneration; title: string }[] = [
  { generation: 1, title: 'containerd 1.x' },
  { generation: 2, title: 'containerd 2.x' },
];
export const BUSYBOX_IMAGE = 'docker.io/hull/busybox:test';
export const PAUSE_IMAGE = 'docker.io/hull/pause:test';
/** What the busybox image serves at / with `httpd -f -p PORT -h /www`. */
export const BUSYBOX_WWW_INDEX = 'hull busybox www\n';
const APPLETS = [
  'sh',
  'cat',
  'echo',
  'sleep',
  'uname',
  'head',
  'tail',
  'dd',
  'stty',
  'true',
  'false',
  'ls',
  'ps',
  'sha256sum',
  'wc',
  'read',
  'hostname',
  'id',
  'env',
  'kill',
  'tr',
  'yes',
  'httpd',
  'nc',
  'wget',
  'ip',
  'ifconfig',
  'route',
  'grep',
  'mkdir',
  'rm',
  'touch',
  'free',
  'df',
  'mount',
  'nslookup',
  'seq',
  'test',
  'date',
  'printf',
  'timeout',
  'tty',
  'nproc',
  'brctl',
  'umount',
  'cp',
];

export interface CtrResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The pod network of a CRI-enabled containerd: one bridge and one /24 for this run. */
export interface CriNetwork {
  /** The bridge's name (`hullbr` and 4 hex digits). */
  bridge: string;
  /** e.g. 10.213.7.0/24 */
  subnet: string;
  /** The bridge's address, the pods' default gateway (e.g. 10.213.7.1). */
  gateway: string;
  /** host-local's data directory: a file per allocated IP. */
  ipamDataDir: string;
}

export interface CriSetup {
  client: CriClient;
  network: CriNetwork;
  /** A folder for the pods' log directories (below the run's folder). */
  logRoot: string;
  /** RunPodSandbox; records the pod's network namespace so that stop() removes it should CRI not. */
  runPod(config: cri.IPodSandboxConfig, runtimeHandler: string): Promise<string>;
  /** Records a sandbox's network namespace (runPod does this itself). */
  trackSandbox(podSandboxId: string): Promise<void>;
  /** The network namespaces recorded so far. */
  netnsPaths: ReadonlySet<string>;
}

export interface PrivateContainerd {
  generation: ContainerdGeneration;
  /** The ctr binary that goes with this containerd (a name on PATH, or a path below binDir). */
  ctrPath: string;
  dir: string;
  address: string;
  namespace: string;
  stateDir: string;
  process: ChildProcess;
  log: string;
  /** hull's configuration file of this run (HULL_CONFIG, and ConfigPath of the CRI `hull` handler). */
  hullConfig: string;
  /** Present when started with `cri: true`. */
  cri?: CriSetup;
  /** Runs ctr and collects its output (`input` goes to its stdin). */
  ctr(
    args: readonly string[],
    opts?: { input?: string | Buffer; timeoutMs?: number; stdoutFile?: string },
  ): Promise<CtrResult>;
  /** ctr's arguments for this containerd (address and namespace first), and the environment tests run it with. */
  ctrArgs(args: readonly string[]): string[];
  env: NodeJS.ProcessEnv;
  /** Spawns ctr and returns the child (for tests that talk to it while it runs). */
  spawnCtr(args: readonly string[]): ChildProcess;
  stop(): Promise<void>;
}

function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > until) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

export interface ContainerdOptions {
  /** hull.toml's text (default: state below the run's folder, debug, a 120 s boot timeout). */
  hullConfig?: string;
  /** ctr's namespace (default `hulltest`, or `k8s.io` with `cri`). */
  namespace?: string;
  /** Turn the CRI plugin on, with CNI and the pause image (see the top of this file). */
  cri?: boolean;
  /** The default hull.toml with `enable_failpoints = true` (crash tests). */
  failpoints?: boolean;
  /** Which containerd: 1 (default, Debian's on PATH) or 2 (2.x from binDir). */
  generation?: ContainerdGeneration;
  /** The folder of containerd, ctr and containerd-shim-runc-v2 (default: PATH for 1, CONTAINERD2_BIN_DIR for 2). */
  binDir?: string;
}

/** Where this generation's binaries are; throws, naming `make deps`, when containerd 2's are not there. */
function binariesOf(generation: ContainerdGeneration, binDir: string | undefined): string | undefined {
  const dir = binDir ?? (generation === 2 ? CONTAINERD2_BIN_DIR : undefined);
  if (dir === undefined) return undefined;
  for (const b of ['containerd', 'ctr', 'containerd-shim-runc-v2']) {
    if (!fs.existsSync(path.join(dir, b))) {
      throw new Error(`containerd ${generation}: ${path.join(dir, b)} is missing (\`make deps\` installs it)`);
    }
  }
  return dir;
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<PrivateContainerd> {
  // Short: containerd's sockets and hull's VM sockets live below it.
  const dir = fs.mkdtempSync('/tmp/hct-');
  const address = path.join(dir, 'c.sock');
  // CRI's ids are 64 hex digits, and hull's VM sockets (<state>/k8s.io/<id>/vm/virtiofsd.sock) must fit in 107 bytes.
  const stateDir = path.join(dir, opts.cri ? 'h' : 'hull');
  const log = path.join(dir, 'containerd.log');
  const namespace = opts.namespace ?? (opts.cri ? 'k8s.io' : 'hulltest');
  const hullConfig = path.join(dir, 'hull.toml');
  const generation = opts.generation ?? 1;
  let binDir: string | undefined;
  try {
    binDir = binariesOf(generation, opts.binDir);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const containerdPath = binDir ? path.join(binDir, 'containerd') : 'containerd';
  const ctrPath = binDir ? path.join(binDir, 'ctr') : 'ctr';
  const network = opts.cri ? pickNetwork(dir) : undefined;
  // What portmap's nat chains were like before this run's pods, so that stop() removes only what the run made.
  const natBefore = network ? await natBaseline() : undefined;
  fs.writeFileSync(
    path.join(dir, 'config.toml'),
    [
      `version = ${generation === 2 ? 3 : 2}`,
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      ...(network ? [] : [`disabled_plugins = [${CRI_PLUGINS[generation].map((p) => `"${p}"`).join(', ')}]`]),
      '[grpc]',
      `  address = "${address}"`,
      '[debug]',
      '  level = "debug"',
      ...(network ? criConfig(generation, dir, hullConfig, network) : []),
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    hullConfig,
    opts.hullConfig ??
      [
        '[runtime]',
        `state_dir = "${stateDir}"`,
        'debug = true',
        ...(opts.failpoints ? ['enable_failpoints = true'] : []),
        '[agent]',
        'boot_timeout = 120',
        '',
      ].join('\n'),
  );
  const env = {
    ...process.env,
    PATH: [
      path.join(REPO, 'bin'),
      ...(binDir ? [binDir] : []),
      process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    ].join(':'),
    HULL_CONFIG: hullConfig,
  };
  const logFd = fs.openSync(log, 'a');
  // spawns: containerd; Debian's, or containerd 2's below binDir
  const child = spawn(containerdPath, ['--config', path.join(dir, 'config.toml')], {
    env,
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  let exited = false;
  child.once('exit', () => (exited = true));
  await waitFor(() => exited || fs.existsSync(address), 20_000, 'containerd to listen');
  if (exited) throw new Error(`containerd exited at start:\n${fs.readFileSync(log, 'utf8').slice(-3000)}`);

  const ctrArgs = (args: readonly string[]): string[] => ['--address', address, '--namespace', namespace, ...args];
  const ctr: PrivateContainerd['ctr'] = (args, o = {}) =>
    new Promise((resolve, reject) => {
      // spawns: ctr; the generation's own
      const p = spawn(ctrPath, ctrArgs(args), {
        env,
        stdio: ['pipe', o.stdoutFile ? fs.openSync(o.stdoutFile, 'w') : 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      p.stdout?.on('data', (c: Buffer) => out.push(c));
      p.stderr?.on('data', (c: Buffer) => err.push(c));
      const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 240_000);
      p.once('error', reject);
      p.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      });
      if (o.input !== undefined) p.stdin?.end(o.input);
      else p.stdin?.end();
    });
  const spawnCtr = (args: readonly string[]): ChildProcess =>
    spawn(ctrPath, ctrArgs(args), { env, stdio: ['pipe', 'pipe', 'pipe'] }); // spawns: ctr; the generation's own

  const criSetup = network ? makeCriSetup(address, dir, network) : undefined;

  const stop = async (): Promise<void> => {
    const problems: string[] = [];
    if (criSetup && !exited) await removeAllPods(criSetup, problems);
    criSetup?.client.close();
    if (!exited) {
      child.kill('SIGTERM');
      await waitFor(() => exited, 15_000, 'containerd to exit').catch(() => child.kill('SIGKILL'));
    }
    if (criSetup) {
      // Shims, QEMU and virtiofsd of a pod CRI could not remove: each names this run's folder in its argv.
      killProcessesMentioning(dir, problems);
      for (const ns of criSetup.netnsPaths) removeNetns(ns, problems);
      deleteLink(criSetup.network.bridge, problems);
    }
    if (natBefore) await removePortmapNat(natBefore, problems);
    // HULL_TEST_LOG_DIR: keep containerd's log (shims log into it) for a look after the run.
    if (process.env.HULL_TEST_LOG_DIR) {
      fs.mkdirSync(process.env.HULL_TEST_LOG_DIR, { recursive: true });
      fs.copyFileSync(log, path.join(process.env.HULL_TEST_LOG_DIR, `containerd-${path.basename(dir)}.log`));
    }
    // Snapshot mounts containerd may have left (it unmounts on task delete; a failed test may not get there).
    for (const m of (await mountsUnder(dir)).reverse()) spawnSync('umount', ['-l', m.mountPoint]);
    fs.rmSync(dir, { recursive: true, force: true });
    if (problems.length) console.warn(`containerd stop (${dir}): ${problems.join('; ')}`);
  };
  const ctd: PrivateContainerd = {
    generation,
    ctrPath,
    dir,
    address,
    namespace,
    stateDir,
    process: child,
    log,
    hullConfig,
    cri: criSetup,
    ctr,
    ctrArgs,
    env,
    spawnCtr,
    stop,
  };
  if (criSetup) {
    try {
      await criSetup.client.waitReady();
      await importPause(ctd);
    } catch (err) {
      await stop();
      throw err;
    }
  }
  return ctd;
}

// ---- CRI

/** A bridge name and a /24 in 10.200-250.x.0 that this host does not use yet. */
function pickNetwork(dir: string): CriNetwork {
  const inUse = `${spawnSync('ip', ['-4', '-o', 'addr']).stdout?.toString() ?? ''}\n${spawnSync('ip', ['-4', 'route']).stdout?.toString() ?? ''}`;
  for (let i = 0; i < 100; i++) {
    const bridge = `hullbr${crypto.randomBytes(2).toString('hex')}`;
    const prefix = `10.${200 + crypto.randomInt(51)}.${crypto.randomInt(256)}`;
    if (fs.existsSync(`/sys/class/net/${bridge}`) || inUse.includes(`${prefix}.`)) continue;
    return { bridge, subnet: `${prefix}.0/24`, gateway: `${prefix}.1`, ipamDataDir: path.join(dir, 'cni', 'ipam') };
  }
  throw new Error('no free bridge name and subnet for the pod network');
}

/** The CRI plugins of each generation: what a run without `cri` disables. */
const CRI_PLUGINS: Record<ContainerdGeneration, readonly string[]> = {
  1: ['io.containerd.grpc.v1.cri'],
  // The pod sandbox controller needs the CRI runtime plugin (and fails without it).
  2: [
    'io.containerd.grpc.v1.cri',
    'io.containerd.cri.v1.runtime',
    'io.containerd.cri.v1.images',
    'io.containerd.podsandbox.controller.v1.podsandbox',
    'io.containerd.grpc.v1.sandbox-controllers',
  ],
};

/** The CRI plugins' sections of config.toml, and the CNI configuration they read (written here). */
function criConfig(generation: ContainerdGeneration, dir: string, hullConfig: string, net: CriNetwork): string[] {
  const confDir = path.join(dir, 'cni', 'net.d');
  fs.mkdirSync(confDir, { recursive: true });
  fs.mkdirSync(net.ipamDataDir, { recursive: true });
  const conflist = {
    cniVersion: '1.0.0',
    name: `hull-${net.bridge}`,
    plugins: [
      {
        type: 'bridge',
        bridge: net.bridge,
        isGateway: true,
        ipMasq: false,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: net.subnet, gateway: net.gateway }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: net.ipamDataDir,
        },
      },
      // hostPort: CRI passes the pod's port mappings to the plugins that declare the capability.
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'loopback' },
    ],
  };
  fs.writeFileSync(path.join(confDir, '10-hull.conflist'), `${JSON.stringify(conflist, null, 2)}\n`);
  const runtimes = (prefix: string): string[] => [
    `    [${prefix}.runc]`,
    '      runtime_type = "io.containerd.runc.v2"',
    `    [${prefix}.hull]`,
    '      runtime_type = "io.containerd.hull.v2"',
    // hull's own annotations (the crash tests' io.hull.failpoint, the per-pod io.hull.config.*) and Kata's per-pod
    // settings reach the sandbox's and the containers' specs: CRI passes a pod's annotations to the runtime only
    // when pod_annotations matches them.
    '      pod_annotations = ["io.hull.*", "io.katacontainers.config.*"]',
    '      container_annotations = ["io.hull.*", "io.katacontainers.config.*"]',
    `      [${prefix}.hull.options]`,
    `        ConfigPath = "${hullConfig}"`,
  ];
  const opt = ['[plugins."io.containerd.internal.v1.opt"]', `  path = "${dir}/opt"`];
  if (generation === 2) {
    // containerd 2.x (config version 3): images (snapshotter, the sandbox image) and runtime (handlers, CNI) are
    // plugins of their own; the gRPC plugin keeps the stream server.
    const runtime = '[plugins."io.containerd.cri.v1.runtime"]';
    const images = '[plugins."io.containerd.cri.v1.images"]';
    return [
      ...opt,
      images,
      '  snapshotter = "overlayfs"',
      `  [plugins."io.containerd.cri.v1.images".pinned_images]`,
      `    sandbox = "${PAUSE_IMAGE}"`,
      runtime,
      // Even root may not lower oom_score_adj here: keep CRI's values at or above containerd's own.
      '  restrict_oom_score_adj = true',
      '  enable_selinux = false',
      `  [plugins."io.containerd.cri.v1.runtime".containerd]`,
      '    default_runtime_name = "runc"',
      ...runtimes('plugins."io.containerd.cri.v1.runtime".containerd.runtimes'),
      `  [plugins."io.containerd.cri.v1.runtime".cni]`,
      '    bin_dirs = ["/usr/lib/cni"]',
      `    conf_dir = "${confDir}"`,
      '    max_conf_num = 1',
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
    ];
  }
  const cri = '[plugins."io.containerd.grpc.v1.cri"]';
  return [
    ...opt,
    cri,
    `  sandbox_image = "${PAUSE_IMAGE}"`,
    // Even root may not lower oom_score_adj here: keep CRI's values at or above containerd's own.
    '  restrict_oom_score_adj = true',
    '  enable_selinux = false',
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    `  [plugins."io.containerd.grpc.v1.cri".containerd]`,
    '    snapshotter = "overlayfs"',
    '    default_runtime_name = "runc"',
    ...runtimes('plugins."io.containerd.grpc.v1.cri".containerd.runtimes'),
    `  [plugins."io.containerd.grpc.v1.cri".cni]`,
    '    bin_dir = "/usr/lib/cni"',
    `    conf_dir = "${confDir}"`,
    '    max_conf_num = 1',
  ];
}

function makeCriSetup(address: string, dir: string, network: CriNetwork): CriSetup {
  const client = new CriClient(address);
  const netnsPaths = new Set<string>();
  const logRoot = path.join(dir, 'pods');
  fs.mkdirSync(logRoot, { recursive: true });
  const trackSandbox = async (id: string): Promise<void> => {
    const ns = netnsPathOf(await client.sandboxInfo(id));
    if (ns) netnsPaths.add(ns);
  };
  const runPod = async (config: cri.IPodSandboxConfig, runtimeHandler: string): Promise<string> => {
    const { podSandboxId } = await client.runPodSandbox({ config, runtimeHandler });
    await trackSandbox(podSandboxId);
    return podSandboxId;
  };
  return { client, network, logRoot, runPod, trackSandbox, netnsPaths };
}

/** Stops and removes every pod sandbox still there (their containers go with them), recording their netns first. */
async function removeAllPods(setup: CriSetup, problems: string[]): Promise<void> {
  let items: cri.IPodSandbox[] = [];
  try {
    items = (await setup.client.listPodSandbox({}, { timeoutMs: 10_000 })).items;
  } catch (err) {
    problems.push(`ListPodSandbox: ${String(err)}`);
  }
  await Promise.all(
    items.map(async ({ id }) => {
      try {
        await setup.trackSandbox(id!).catch(() => undefined);
        await setup.client.stopPodSandbox(id!, { timeoutMs: 120_000 });
        await setup.client.removePodSandbox(id!, { timeoutMs: 60_000 });
      } catch (err) {
        problems.push(`pod ${id}: ${String(err)}`);
      }
    }),
  );
}

/** SIGKILL to every process (by pid) whose command line names `marker`. */
function killProcessesMentioning(marker: string, problems: string[]): void {
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (Number(pid) === process.pid) continue;
      if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(marker)) continue;
      process.kill(Number(pid), 'SIGKILL');
      problems.push(`killed leftover process ${pid}`);
    } catch {
      /* gone */
    }
  }
}

function removeNetns(nsPath: string, problems: string[]): void {
  if (!fs.existsSync(nsPath)) return;
  spawnSync('umount', ['-l', nsPath]);
  try {
    fs.rmSync(nsPath, { force: true });
    problems.push(`removed leftover netns ${nsPath}`);
  } catch (err) {
    problems.push(`netns ${nsPath}: ${String(err)}`);
  }
}

function deleteLink(name: string, problems: string[]): void {
  if (!fs.existsSync(`/sys/class/net/${name}`)) return;
  const r = spawnSync('ip', ['link', 'del', name]);
  if (r.status !== 0) problems.push(`ip link del ${name}: ${r.stderr?.toString().trim()}`);
}

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Builds an OCI image archive of a busybox rootfs (Debian's busybox-static) and imports it as BUSYBOX_IMAGE. */
export async function importBusybox(ctd: PrivateContainerd): Promise<void> {
  await importImage(
    ctd,
    BUSYBOX_IMAGE,
    { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
    (rootfs) => {
      busyboxRootfs(rootfs, APPLETS);
      fs.writeFileSync(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
      fs.writeFileSync(path.join(rootfs, 'etc', 'group'), 'root:x:0:\n');
      fs.mkdirSync(path.join(rootfs, 'www'));
      fs.writeFileSync(path.join(rootfs, 'www', 'index.html'), BUSYBOX_WWW_INDEX);
    },
  );
}

/** Compiles integration/pause/pause.c (static) and imports it as PAUSE_IMAGE, the CRI sandbox image. */
export async function importPause(ctd: PrivateContainerd): Promise<void> {
  await importImage(ctd, PAUSE_IMAGE, { Entrypoint: ['/pause'] }, (rootfs) => {
    fs.mkdirSync(rootfs, { recursive: true });
    const cc = spawnSync('gcc', [
      '-static',
      '-Os',
      '-s',
      '-Wall',
      '-o',
      path.join(rootfs, 'pause'),
      path.join(REPO, 'integration', 'pause', 'pause.c'),
    ]);
    if (cc.status !== 0) throw new Error(`gcc pause.c: ${cc.stderr?.toString() ?? cc.error?.message}`);
  });
}

/** Builds a one-layer OCI image from what `fill` puts into an empty rootfs folder, and imports it as `name`. */
async function importImage(
  ctd: PrivateContainerd,
  name: string,
  imageConfig: Record<string, unknown>,
  fill: (rootfs: string) => void,
): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-img-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    fill(rootfs);
    const layerTar = path.join(work, 'layer.tar');
    const tar = spawnSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
    if (tar.status !== 0) throw new Error(`tar: ${tar.stderr.toString()}`);
    const layer = fs.readFileSync(layerTar);
    const layerDigest = sha256(layer);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: imageConfig,
        rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: `sha256:${sha256(config)}`,
          size: config.length,
        },
        layers: [
          { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length },
        ],
      }),
    );
    const layout = path.join(work, 'layout');
    const blobs = path.join(layout, 'blobs', 'sha256');
    fs.mkdirSync(blobs, { recursive: true });
    fs.writeFileSync(path.join(blobs, layerDigest), layer);
    fs.writeFileSync(path.join(blobs, sha256(config)), config);
    fs.writeFileSync(path.join(blobs, sha256(manifest)), manifest);
    fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: `sha256:${sha256(manifest)}`,
            size: manifest.length,
            annotations: {
              'io.containerd.image.name': name,
              'org.opencontainers.image.ref.name': name.slice(name.lastIndexOf(':') + 1),
            },
          },
        ],
      }),
    );
    const archive = path.join(work, 'image.tar');
    const t2 = spawnSync('tar', ['-C', layout, '-cf', archive, '.']);
    if (t2.status !== 0) throw new Error(`tar: ${t2.stderr.toString()}`);
    const r = await ctd.ctr(['image', 'import', archive]);
    if (r.code !== 0) throw new Error(`ctr image import: ${r.stderr}`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
