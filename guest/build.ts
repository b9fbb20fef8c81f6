/**
 * `make guest`: builds the guest image into guest/out/ (vmlinuz, initrd.img, rootfs.img, manifest.json), or says
 * it is up to date. See guest/README.md.
 *
 *   node dist/guest/build.js [--agent <entry.js>] [--force]
 *
 * The build happens in guest/.build-<pid>/ and the finished output folder replaces guest/out/ by rename, so an
 * interrupted build never leaves a half image behind.
 */
import { createHash } from 'node:crypto';
import { createReadStream, rmSync as fs_rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  AGENT_NODE_FLAGS,
  GUEST_MODULES,
  GUEST_PATHS,
  IPROUTE2_IP_SUFFIX,
  NATIVE_MODULES,
  PACKAGES,
  ROOT_WAIT_SECONDS,
} from './config';
import type { AgentBundle } from './agent-bundle';
import { BUNDLE_FILE, CODE_CACHE_FILE } from './agent-loader';
import { run } from './exec';
import {
  busyboxApplets,
  kernelFiles,
  KernelFiles,
  KERNEL_METAPACKAGE,
  packageFile,
  packageVersion,
  queryPackages,
  readModule,
} from './host';
import { buildInitramfs } from './initramfs';
import { PFN_INFO_OFFSET, pfnInfoBlock, ROOT_DATA_OFFSET, ROOT_IMAGE_ALIGN } from './pmem';
import { parseLdd, sharedLibraries } from './ldd';
import { LoadPlan, modulesUnder, resolveLoadOrder } from './modules';
import {
  compileHullCtty,
  compileHullInit,
  compileHullReseed,
  HULL_CTTY_SOURCE,
  HULL_INIT_SOURCE,
  HULL_RESEED_SOURCE,
} from './hull-init';
import {
  copyToGuest,
  Ext4Result,
  guestSymlink,
  makeExt4,
  stageBase,
  stageBusybox,
  staged,
  writeGuestFile,
} from './rootfs';
import { builderHash, fileIdentity, inputIdentities, outputsIntact, readStamp, Stamp, stampKey } from './stamp';

const REPO = path.resolve(__dirname, '..', '..');
const GUEST_DIR = path.join(REPO, 'guest');
const OUT_DIR = path.join(GUEST_DIR, 'out');
const LOCK = path.join(GUEST_DIR, '.build.lock');
const DEFAULT_AGENT = path.join(REPO, 'dist', 'agent', 'main.js');
/** The agent's loader as tsc compiled it (node builtins only), copied into the image as GUEST_PATHS.agentMain. */
const AGENT_LOADER = path.join(__dirname, 'agent-loader.js');
const OUTPUTS = ['vmlinuz', 'initrd.img', 'rootfs.img', 'manifest.json'] as const;

interface Args {
  agent: string;
  force: boolean;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { agent: DEFAULT_AGENT, force: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--force') args.force = true;
    else if (a === '--agent' && argv[i + 1]) args.agent = path.resolve(argv[++i] ?? '');
    else throw new Error(`usage: node dist/guest/build.js [--agent <entry.js>] [--force] (unknown argument '${a}')`);
  }
  return args;
}

/** Everything besides input files that decides the image's content. */
interface Settings {
  builder: string;
  packages: Map<string, string>;
  kernelRelease: string;
  agent: string;
  node: string;
  esbuild: string;
}

async function esbuildVersion(): Promise<string> {
  const pkg = JSON.parse(await fs.readFile(require.resolve('esbuild/package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

const shown = (file: string): string => (file.startsWith(REPO + path.sep) ? path.relative(REPO, file) : file);
const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One build at a time: a lock file holding the builder's pid; a lock left by a dead builder is taken over. */
async function takeLock(): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const created = await fs.writeFile(LOCK, String(process.pid), { flag: 'wx' }).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') return false;
        throw err;
      },
    );
    if (created) return () => fs.rm(LOCK, { force: true });
    const holder = Number(await fs.readFile(LOCK, 'utf8').catch(() => '0'));
    if (holder > 0 && pidAlive(holder)) throw new Error(`another guest build is running (pid ${holder}, lock ${LOCK})`);
    await fs.rm(LOCK, { force: true });
  }
  throw new Error(`cannot take ${LOCK}`);
}

/** Removes work folders left by builders that were killed (their pid is in the name). */
async function removeStaleWorkDirs(): Promise<void> {
  for (const name of await fs.readdir(GUEST_DIR)) {
    const m = /^\.(build|out-old)-(\d+)$/.exec(name);
    if (m && (Number(m[2]) === process.pid || !pidAlive(Number(m[2]))))
      await fs.rm(path.join(GUEST_DIR, name), { recursive: true, force: true });
  }
}

interface Manifest {
  kernelRelease: string;
  packages: Record<string, string>;
  node: { version: string; host: string; flags: readonly string[] };
  esbuild: string;
  agent: { entry: string; bundleBytes: number; codeCacheBytes: number; natives: string[] };
  /** Programs copied from the host (guest path -> host path), each with its shared libraries. */
  programs: Record<string, string>;
  modules: { initrd: string[]; rootfs: string[]; builtin: string[]; missing: string[] };
  rootfs: { sizeBytes: number; contentBytes: number; inodes: number };
  /**
   * The root image through DAX (guest/pmem.ts): whether the image has the PFN info block (the kernel has FS_DAX and
   * the pmem modules), the modules the initramfs loads for a pmem root, and where the filesystem starts.
   */
  rootDax: { pfnInfo: boolean; modules: string[]; dataOffset: number; why?: string };
  files: Record<string, { size: number; sha256: string }>;
  builtAt: string;
  buildSeconds: number;
}

class ImageBuild {
  /** Host files the image is made from, with their identity taken when they were read. */
  private readonly inputs = new Map<string, string>();
  private readonly staging: string;
  private readonly out: string;
  private readonly libs = new Set<string>();
  private readonly programs = new Map<string, string>();

  constructor(
    private readonly workDir: string,
    private readonly args: Args,
    private readonly settings: Settings,
    private readonly kernel: KernelFiles,
  ) {
    this.staging = path.join(workDir, 'rootfs');
    this.out = path.join(workDir, 'out');
  }

  async run(started: number): Promise<Manifest> {
    await fs.mkdir(this.staging, { recursive: true });
    await fs.mkdir(this.out, { recursive: true });
    const initrdPlan = this.plan(GUEST_MODULES.initrd);
    const dax = await this.daxSupport(initrdPlan);
    const onDemand = [
      ...modulesUnder(this.kernel.index, GUEST_MODULES.onDemand.trees),
      ...GUEST_MODULES.onDemand.names,
    ];
    const rootfsPlan = this.plan(
      [...GUEST_MODULES.initrd, ...GUEST_MODULES.rootfs, ...onDemand],
      GUEST_MODULES.onDemand.names,
    );
    const busybox = await packageFile('busybox-static', '/busybox');
    await this.addInputs([busybox]);

    await this.copyKernel();
    await this.writeInitramfs(initrdPlan, dax.modules, busybox);
    await stageBase(this.staging);
    await stageBusybox(this.staging, busybox, await busyboxApplets(busybox));
    const bundle = await this.stageAgent();
    await this.stagePrograms(bundle.nativeObjects, await packageFile('iproute2', IPROUTE2_IP_SUFFIX));
    await this.stageModules(rootfsPlan);
    await this.stageInit();
    await this.selfTest(bundle.natives);
    const codeCacheBytes = await this.writeCodeCache();

    const identities = Object.fromEntries([...this.inputs.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
    const key = stampKey(this.settings, identities);
    const uuid = key.slice(0, 32).replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
    const image = path.join(this.out, 'rootfs.img');
    const ext4 = await makeExt4(this.staging, image, uuid, {
      offsetBytes: ROOT_DATA_OFFSET,
      alignBytes: ROOT_IMAGE_ALIGN,
    });
    if (dax.why === undefined) {
      const handle = await fs.open(image, 'r+');
      try {
        await handle.write(
          pfnInfoBlock(ext4.sizeBytes, Buffer.from(uuid.replace(/-/g, ''), 'hex')),
          0,
          undefined,
          PFN_INFO_OFFSET,
        );
      } finally {
        await handle.close();
      }
    } else console.warn(`guest: the root image cannot go through DAX: ${dax.why}`);
    const manifest = await this.writeManifest(started, initrdPlan, rootfsPlan, bundle, codeCacheBytes, ext4, {
      pfnInfo: dax.why === undefined,
      modules: dax.modules.map((m) => m.name),
      dataOffset: ROOT_DATA_OFFSET,
      ...(dax.why === undefined ? {} : { why: dax.why }),
    });

    const outputs: Record<string, number> = {};
    for (const name of OUTPUTS) outputs[name] = (await fs.stat(path.join(this.out, name))).size;
    const stamp: Stamp = { key, inputs: Object.keys(identities), outputs };
    await fs.writeFile(path.join(this.out, 'stamp.json'), `${JSON.stringify(stamp, null, 1)}\n`);
    return manifest;
  }

  /**
   * What a pmem root needs (the root image through DAX): FS_DAX in the kernel (its config in /boot) and the
   * initrdPmem modules, loaded after the initramfs's own (those it already loads are left out). `why` says what is
   * missing; then the initramfs gets no pmem modules and the image no PFN info block.
   */
  private async daxSupport(initrd: LoadPlan): Promise<{ modules: LoadPlan['load']; why?: string }> {
    const configFile = `/boot/config-${this.kernel.release}`;
    const config = await fs.readFile(configFile, 'utf8').catch(() => undefined);
    if (config === undefined)
      return { modules: [], why: `${configFile} is missing (the kernel's options are unknown)` };
    await this.addInputs([configFile]);
    for (const option of ['CONFIG_FS_DAX', 'CONFIG_ZONE_DEVICE'])
      if (!new RegExp(`^${option}=y$`, 'm').test(config))
        return { modules: [], why: `${this.kernel.release} is built without ${option}` };
    const plan = resolveLoadOrder(
      this.kernel.index,
      this.kernel.builtin,
      GUEST_MODULES.initrdPmem,
      new Set(GUEST_MODULES.initrdPmem),
    );
    if (plan.missing.length > 0)
      return { modules: [], why: `${this.kernel.release} lacks the module(s) ${plan.missing.join(', ')}` };
    const loaded = new Set(initrd.load.map((m) => m.name));
    return { modules: plan.load.filter((m) => !loaded.has(m.name)) };
  }

  private async addInputs(files: readonly string[]): Promise<void> {
    for (const file of files) if (!this.inputs.has(file)) this.inputs.set(file, await fileIdentity(file));
  }

  private async writeManifest(
    started: number,
    initrd: LoadPlan,
    rootfs: LoadPlan,
    bundle: AgentBundle,
    codeCacheBytes: number,
    ext4: Ext4Result,
    rootDax: Manifest['rootDax'],
  ): Promise<Manifest> {
    const files: Manifest['files'] = {};
    for (const name of ['vmlinuz', 'initrd.img', 'rootfs.img']) {
      const file = path.join(this.out, name);
      files[name] = { size: (await fs.stat(file)).size, sha256: await fileSha256(file) };
    }
    const kernelPkg = `linux-image-${this.kernel.release}`;
    const kernelVersion =
      (await packageVersion(kernelPkg)) ?? (await packageVersion(`${kernelPkg}-unsigned`)) ?? 'unknown';
    const manifest: Manifest = {
      kernelRelease: this.kernel.release,
      packages: Object.fromEntries([...this.settings.packages.entries(), [kernelPkg, kernelVersion] as const].sort()),
      node: { version: process.version, host: this.settings.node, flags: AGENT_NODE_FLAGS },
      esbuild: this.settings.esbuild,
      agent: { entry: shown(this.args.agent), bundleBytes: bundle.bytes, codeCacheBytes, natives: bundle.natives },
      programs: Object.fromEntries([...this.programs.entries()].sort()),
      modules: {
        initrd: initrd.load.map((m) => m.name),
        rootfs: rootfs.load.map((m) => m.name),
        builtin: rootfs.builtin,
        missing: rootfs.missing,
      },
      rootfs: { sizeBytes: ext4.sizeBytes, contentBytes: ext4.usedBytes, inodes: ext4.inodes },
      rootDax,
      files,
      builtAt: new Date().toISOString(),
      buildSeconds: Number(((performance.now() - started) / 1000).toFixed(2)),
    };
    await fs.writeFile(path.join(this.out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    return manifest;
  }

  private plan(names: readonly string[], optional: readonly string[] = []): LoadPlan {
    const plan = resolveLoadOrder(
      this.kernel.index,
      this.kernel.builtin,
      names,
      new Set([...GUEST_MODULES.optional, ...optional]),
    );
    for (const name of plan.missing)
      console.warn(`guest: optional kernel module ${name} is not available in ${this.kernel.release}; skipped`);
    return plan;
  }

  private async copyKernel(): Promise<void> {
    await this.addInputs([
      ...['modules.dep', 'modules.softdep', 'modules.builtin'].map((f) => path.join(this.kernel.modulesDir, f)),
      this.kernel.vmlinuz,
    ]);
    await fs.copyFile(this.kernel.vmlinuz, path.join(this.out, 'vmlinuz'));
  }

  private async writeInitramfs(plan: LoadPlan, pmem: LoadPlan['load'], busybox: string): Promise<void> {
    const moduleFiles = new Map<string, Buffer>();
    for (const info of [...plan.load, ...pmem]) {
      await this.addInputs([path.join(this.kernel.modulesDir, info.path)]);
      moduleFiles.set(info.name, await readModule(this.kernel, info));
    }
    const initrd = buildInitramfs({
      busybox: await fs.readFile(busybox),
      moduleFiles,
      modules: plan.load.map((m) => m.name),
      pmemModules: pmem.map((m) => m.name),
      rootDevice: GUEST_PATHS.rootDevice,
      rootWaitSeconds: ROOT_WAIT_SECONDS,
      init: GUEST_PATHS.init,
      comment: `kernel ${this.kernel.release}, busybox-static ${this.settings.packages.get('busybox-static') ?? '?'}`,
    });
    await fs.writeFile(path.join(this.out, 'initrd.img'), initrd.image);
  }

  private async stageAgent(): Promise<AgentBundle> {
    // Loaded here, not at the top, so that the up-to-date check does not pay for loading esbuild.
    const { bundleAgent } = await import('./agent-bundle.js');
    const bundle = await bundleAgent(
      this.args.agent,
      staged(this.staging, GUEST_PATHS.agentDir),
      NATIVE_MODULES,
      BUNDLE_FILE,
    );
    await this.addInputs(bundle.inputs);
    // The loader without its source map comment (there is no map in the image).
    const loader = (await fs.readFile(AGENT_LOADER, 'utf8')).replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
    await writeGuestFile(this.staging, GUEST_PATHS.agentMain, loader);
    return bundle;
  }

  /**
   * The bundle's V8 code cache, made by the image's own node (same V8, same AGENT_NODE_FLAGS) in a chroot of the
   * staging folder: the loader runs the bundle's top-level code without starting the agent and writes the cache.
   * Its inputs (bundle, node, flags, loader) are all in the fingerprint. Needs root, like the self-test; without
   * it the image has no cache and the agent compiles its bundle at boot. Returns the cache's size (0: none).
   */
  private async writeCodeCache(): Promise<number> {
    if (process.getuid?.() !== 0) return 0;
    const cache = path.posix.join(GUEST_PATHS.agentDir, CODE_CACHE_FILE);
    const made = await run(
      'chroot',
      [this.staging, GUEST_PATHS.node, ...AGENT_NODE_FLAGS, GUEST_PATHS.agentMain, '--write-code-cache', cache],
      { allowFailure: true },
    );
    if (made.code !== 0)
      throw new Error(`the staged node could not load the agent bundle to make its code cache: ${made.stderr.trim()}`);
    return (await fs.stat(staged(this.staging, cache))).size;
  }

  /**
   * node, crun and iproute2's ip, and the shared libraries of those and of any native agent module. Libraries keep the absolute
   * path ldd reports (e.g. /lib/x86_64-linux-gnu/libc.so.6, /lib64/ld-linux-x86-64.so.2), as regular files, so
   * the dynamic loader finds them through its built-in search path.
   */
  private async stagePrograms(nativeObjects: readonly string[], ip: string): Promise<void> {
    const programs: ReadonlyArray<[string, string | undefined]> = [
      [this.settings.node, GUEST_PATHS.node],
      ['/usr/bin/crun', GUEST_PATHS.crun],
      [ip, GUEST_PATHS.ip],
      ...nativeObjects.map((o): [string, undefined] => [o, undefined]), // already in the staging folder
    ];
    for (const [host, guest] of programs) {
      const libs = (await sharedLibraries(host)).filter((lib) => !this.libs.has(lib));
      if (guest) await this.addInputs([host]);
      await this.addInputs(libs);
      if (guest) {
        await copyToGuest(this.staging, host, guest);
        this.programs.set(guest, host);
      }
      for (const lib of libs) {
        this.libs.add(lib);
        await copyToGuest(this.staging, lib, lib);
      }
    }
  }

  /** The modules at their usual paths (decompressed), the kernel's builtin lists, and a modules.dep from depmod. */
  private async stageModules(plan: LoadPlan): Promise<void> {
    const guestDir = `/lib/modules/${this.kernel.release}`;
    for (const info of plan.load) {
      await this.addInputs([path.join(this.kernel.modulesDir, info.path)]);
      const guestPath = `${guestDir}/${info.path.replace(/\.(xz|gz|zst)$/, '')}`;
      await writeGuestFile(this.staging, guestPath, await readModule(this.kernel, info));
    }
    for (const name of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) {
      const file = path.join(this.kernel.modulesDir, name);
      if (await fs.stat(file).catch(() => undefined)) await copyToGuest(this.staging, file, `${guestDir}/${name}`);
    }
    // An empty configuration, so that depmod ignores any /etc/depmod.d of the host.
    const conf = path.join(this.workDir, 'depmod.conf');
    await fs.writeFile(conf, '');
    await run('depmod', ['-b', this.staging, '-C', conf, this.kernel.release]);
  }

  /** hull-init at /sbin/hull-init, compiled with the agent's command, and /sbin/init -> hull-init (relative: it is
   * checked from the initramfs, before switch_root); hull-ctty next to it. */
  private async stageInit(): Promise<void> {
    await this.addInputs([HULL_INIT_SOURCE, HULL_CTTY_SOURCE, HULL_RESEED_SOURCE]);
    await compileHullInit(
      [GUEST_PATHS.node, ...AGENT_NODE_FLAGS, GUEST_PATHS.agentMain],
      this.workDir,
      staged(this.staging, GUEST_PATHS.hullInit),
    );
    await guestSymlink(
      this.staging,
      GUEST_PATHS.init,
      path.posix.relative(path.posix.dirname(GUEST_PATHS.init), GUEST_PATHS.hullInit),
    );
    await compileHullCtty(staged(this.staging, GUEST_PATHS.hullCtty));
    await compileHullReseed(staged(this.staging, GUEST_PATHS.hullReseed));
  }

  /**
   * Runs the staged node (and the agent's native packages in it), hull-init and hull-ctty in a chroot of the staging
   * folder: catches a missing library now, not at boot.
   */
  private async selfTest(natives: readonly string[]): Promise<void> {
    if (process.getuid?.() !== 0) return;
    const node = await run('chroot', [this.staging, GUEST_PATHS.node, '-e', 'process.stdout.write(process.version)']);
    if (node.stdout !== process.version)
      throw new Error(`staged node printed '${node.stdout}', expected ${process.version}`);
    for (const pkg of natives) {
      // Loads the package the way the bundle does (from the agent's folder), native module included.
      const script = `require(${JSON.stringify(`${GUEST_PATHS.agentDir}/node_modules/${pkg}`)}); process.stdout.write('ok')`;
      const loaded = await run('chroot', [this.staging, GUEST_PATHS.node, '-e', script], { allowFailure: true });
      if (loaded.stdout !== 'ok')
        throw new Error(`the staged agent cannot load its native package ${pkg}: ${loaded.stderr.trim()}`);
    }
    // crun itself cannot run here (it re-executes itself through /proc); check that its libraries resolve.
    parseLdd((await run('chroot', [this.staging, '/lib64/ld-linux-x86-64.so.2', '--list', GUEST_PATHS.crun])).stdout);
    await run('chroot', [this.staging, '/bin/sh', '-c', 'exit 0']);
    // iproute2's ip, not busybox's: -V names iproute2 (and loads every library it links).
    const ip = await run('chroot', [this.staging, GUEST_PATHS.ip, '-V'], { allowFailure: true });
    if (ip.code !== 0 || !/iproute2/.test(ip.stdout))
      throw new Error(`staged ${GUEST_PATHS.ip} -V failed (exit ${ip.code}): ${(ip.stdout + ip.stderr).trim()}`);
    // hull-init, not as PID 1 (it then exits with its child's code instead of powering off).
    const init = await run('chroot', [this.staging, GUEST_PATHS.init, '--exec', '/bin/sh', '-c', 'exit 3'], {
      allowFailure: true,
    });
    if (init.code !== 3)
      throw new Error(`staged hull-init returned ${init.code} for a child exiting with 3: ${init.stderr.trim()}`);
    // hull-ctty with no terminal on stdin: it says so and exits 126 (a pty is tested on the host, guest/test).
    const ctty = await run('chroot', [this.staging, GUEST_PATHS.hullCtty, '/bin/true'], { allowFailure: true });
    if (ctty.code !== 126 || !/controlling terminal/.test(ctty.stderr))
      throw new Error(`staged hull-ctty returned ${ctty.code}: ${ctty.stderr.trim()}`);
  }
}

async function currentSettings(args: Args): Promise<{ settings: Settings; kernel: string }> {
  const [pkgs, builder] = await Promise.all([queryPackages(PACKAGES), builderHash(__dirname)]);
  const settings: Settings = {
    builder,
    packages: pkgs.versions,
    kernelRelease: pkgs.kernelRelease,
    agent: args.agent,
    node: process.execPath,
    esbuild: await esbuildVersion(),
  };
  return { settings, kernel: pkgs.kernelRelease };
}

async function main(): Promise<void> {
  const started = performance.now();
  const args = parseArgs(process.argv.slice(2));
  const { settings, kernel: release } = await currentSettings(args);
  const rel = path.relative(process.cwd(), OUT_DIR) || '.';

  const previous = await readStamp(path.join(OUT_DIR, 'stamp.json'));
  if (!args.force && previous && (await outputsIntact(OUT_DIR, previous))) {
    const key = stampKey(settings, await inputIdentities(previous.inputs));
    if (key === previous.key) {
      console.log(`guest: ${rel} is up to date (${((performance.now() - started) / 1000).toFixed(2)}s)`);
      return;
    }
  }

  const unlock = await takeLock();
  const workDir = path.join(GUEST_DIR, `.build-${process.pid}`);
  // On Ctrl-C, remove the work folder (guest/out is only ever replaced whole, so it needs nothing).
  const onSignal = (signal: NodeJS.Signals): void => {
    fs_rmSync(workDir, { recursive: true, force: true });
    fs_rmSync(LOCK, { force: true });
    console.error(`guest: interrupted (${signal}); ${rel} left as it was`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    await removeStaleWorkDirs();
    await fs.mkdir(workDir, { recursive: true });
    const kernel = await kernelFiles(release);
    console.log(`guest: building ${rel} (kernel ${release}, node ${process.version}, agent ${shown(args.agent)})`);
    const manifest = await new ImageBuild(workDir, args, settings, kernel).run(started);

    // Swap the finished folder in: rename out away, rename the new one in, then delete the old one.
    const old = path.join(GUEST_DIR, `.out-old-${process.pid}`);
    const hadOut = await fs.stat(OUT_DIR).then(
      () => true,
      () => false,
    );
    if (hadOut) await fs.rename(OUT_DIR, old);
    await fs.rename(path.join(workDir, 'out'), OUT_DIR);
    if (hadOut) await fs.rm(old, { recursive: true, force: true });

    const f = manifest.files;
    const total = Object.values(f).reduce((n, x) => n + x.size, 0);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`guest: built ${rel} in ${seconds}s`);
    console.log(
      `  vmlinuz     ${mib(f['vmlinuz']?.size ?? 0).padStart(10)}  ${KERNEL_METAPACKAGE} ${manifest.packages[KERNEL_METAPACKAGE] ?? ''}`,
    );
    console.log(
      `  initrd.img  ${mib(f['initrd.img']?.size ?? 0).padStart(10)}  busybox + ${manifest.modules.initrd.length} modules (${manifest.modules.initrd.join(' ')})`,
    );
    console.log(
      `  rootfs.img  ${mib(f['rootfs.img']?.size ?? 0).padStart(10)}  ${mib(manifest.rootfs.contentBytes)} content; node ${process.version}, crun, ip, agent ${(manifest.agent.bundleBytes / 1024).toFixed(0)} KiB, ${manifest.modules.rootfs.length} modules`,
    );
    console.log(`  total       ${mib(total).padStart(10)}`);
  } finally {
    await fs.rm(workDir, { recursive: true, force: true });
    await unlock();
  }
}

main().catch((err: unknown) => {
  console.error(`guest: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env['HULL_DEBUG'] && err instanceof Error) console.error(err.stack);
  process.exit(1);
});
