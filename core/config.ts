/**
 * hull's configuration file, in the manner of Kata's configuration.toml but with only the keys hull implements.
 * `config/configuration.toml` in the checkout documents every key with its default (a unit test keeps it equal to
 * `defaultConfig`).
 *
 * Which file: the CRI runtime option `ConfigPath`, else `$HULL_CONFIG`, else /etc/hull/configuration.toml. A file
 * named by either of the first two must exist; when the default file does not exist the built-in defaults apply,
 * so a checkout runs in place without any file. The guest artefacts default to paths relative to the shim binary
 * (`guestArtifactDir`). Unknown sections and keys, wrong types and out-of-range values are InvalidArgumentErrors
 * that name the file and the dotted key; TOML syntax errors name the file, line and column.
 *
 * The shim loads this at start-up, so it stays light: the hypervisor's small constant modules (not the QEMU driver),
 * and smol-toml (28 KB, no dependencies), required only when there is a file to parse.
 */
import fs from 'node:fs';
import path from 'node:path';
import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };
import { FailedPreconditionError, InvalidArgumentError } from '../errors';
import { checkQemuUser } from '../hypervisor/confine';
import { MAX_MEMORY_MIB, MAX_TCG_TB_SIZE_MIB, MAX_VCPUS, MIN_MEMORY_MIB, checkOptionValue } from '../hypervisor/config';
import {
  DEFAULT_QEMU_PATH,
  DEFAULT_VIRTIOFSD_PATH,
  type Accel,
  type AgentTransport,
  type VmConfig,
} from '../hypervisor/types';
import {
  DEFAULT_VIRTIOFS_CACHE,
  checkVirtiofsCache,
  checkVirtiofsdExtraArgs,
  type VirtiofsCache,
} from '../hypervisor/virtiofsd-options';

/**
 * The user QEMU runs as once its devices are open. Debian's base-passwd always has `nobody` (uid 65534), and Debian
 * policy says it owns no files, so creating nothing on the host QEMU ends up unable to read or write anything but
 * what it already holds open. All VMs share it, though: one escaped QEMU could signal another; a dedicated user or
 * "uid:gid" per host is the stronger choice where the host can give one.
 */
export const DEFAULT_QEMU_USER = 'nobody';
/** virtio-balloon free page reporting (`free_page_reporting`): measured in bench/density.ts, see hypervisor/README. */
export const DEFAULT_FREE_PAGE_REPORTING = true;
/**
 * The root image through DAX (`root_image_dax`): an nvdimm backed by the image file, so the guest reads node and its
 * libraries from the host's page cache, shared by every VM, instead of copying them into its own. Works together
 * with CPU and memory hot-plug. Measured in bench/density.ts, see hypervisor/README.md.
 */
export const DEFAULT_ROOT_IMAGE_DAX = true;
/** The device `root_image_dax = true` uses: an nvdimm, Kata's default for QEMU (the guest sees it read-only). */
export const ROOT_IMAGE_DAX_DEVICE = 'nvdimm';
/** TCG's translation cache (`tcg_tb_size_mib`), TCG only; 0 = QEMU's default (1 GiB). Measured in bench/density.ts. */
export const DEFAULT_TCG_TB_SIZE_MIB = 64;
export const DEFAULT_CONFIG_PATH = '/etc/hull/configuration.toml';
/** The environment variable that names the file when the runtime option `ConfigPath` does not. */
export const CONFIG_PATH_ENV = 'HULL_CONFIG';
export const DEFAULT_STATE_DIR = '/run/hull';
export const DEFAULT_VCPUS = 1;
export const DEFAULT_MEMORY_MIB = 512;
/**
 * Hot-plug room (core/vm-size.ts): the most vCPUs and MiB a pod's VM may grow to as its containers come and their
 * limits are updated, each capped at the host's CPUs and memory when a VM starts. 0 = no hot-plug: the VM keeps the
 * size it booted with and an Update beyond it is refused (the behaviour before hot-plug).
 */
export const DEFAULT_MAX_VCPUS = 255;
export const DEFAULT_MAX_MEMORY_MIB = 32768;
/**
 * What a pod's VM takes on the host beyond its guest memory, for the pod's cgroup memory check (core/sandbox.ts).
 * Measured on this TCG host with a 512 MiB guest, the DAX root image and a 64 MiB translation cache: QEMU's RSS
 * outside the guest RAM mapping 181 MiB (the translation cache full, its anonymous memory, its binary and the root
 * image's pages, all counted whole), the shim daemon up to ~57 MiB anonymous after relaying 32 MiB of stdout (17 at
 * idle) and virtiofsd ~4 MiB: 242 MiB, rounded up. The pod cgroup's own peak beyond the guest memory it touched was
 * 119 MiB (bench/citizen.ts). Under KVM QEMU has no translation cache; the key lowers it.
 */
export const DEFAULT_MEMORY_OVERHEAD_MIB = 256;
export const MAX_MEMORY_OVERHEAD_MIB = 65536;
/**
 * From the start of boot until the agent answers. An idle 2-core host boots a TCG guest in about 5 s; several pods
 * starting at once on a loaded host can take many times that, and a failed boot gives up with the guest console's
 * last lines anyway. 60 s is 12 times the idle boot, and stays below kubelet's 2-minute runtime request timeout,
 * so that the user sees hull's boot error rather than kubelet's cancellation.
 */
export const DEFAULT_BOOT_TIMEOUT_S = 60;
export const MAX_BOOT_TIMEOUT_S = 3600;
/**
 * The agent's health check (core/health.ts): one Health.Check every 10 s, and the VM is declared lost (QEMU killed,
 * every task exits 255) when none has succeeded for 60 s. A Check is a few hundred bytes each way and is answered by
 * the agent's event loop at once; under TCG on a loaded 2-core host it has taken up to a few seconds, so 60 s is
 * far from a false alarm and still bounds how long a hung pod looks alive.
 */
export const DEFAULT_HEALTH_INTERVAL_S = 10;
export const DEFAULT_HEALTH_TIMEOUT_S = 60;
/** The files `make guest` writes to guest/out/ and `make install` copies to <prefix>/share/hull/guest/. */
export const GUEST_ARTIFACT_NAMES = Object.freeze({ kernel: 'vmlinuz', initrd: 'initrd.img', image: 'rootfs.img' });

export type AccelSetting = 'auto' | Accel;
export type TransportSetting = 'auto' | AgentTransport;
/** The only shared file system hull implements. */
export type SharedFs = 'virtio-fs';

export interface HypervisorSettings {
  /** QEMU binary. */
  readonly path: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly image: string;
  /** Extra guest kernel command line words, after hull's own. */
  readonly kernelParams: readonly string[];
  readonly defaultVcpus: number;
  readonly defaultMemoryMiB: number;
  /** `default_maxvcpus`: the most vCPUs hot-plug may grow a VM to (capped at the host's CPUs); 0 = no CPU hot-plug. */
  readonly maxVcpus: number;
  /** `default_maxmemory`: the most MiB hot-plug may grow a VM to (capped at the host's memory); 0 = no memory hot-plug. */
  readonly maxMemoryMiB: number;
  readonly accel: AccelSetting;
  readonly sharedFs: SharedFs;
  /** virtiofsd binary. */
  readonly virtioFsDaemon: string;
  /** `virtio_fs_cache`: virtiofsd's cache mode, 'auto' | 'always' | 'never' (the file may say "none" for never). */
  readonly virtioFsCache: VirtiofsCache;
  /** `virtio_fs_extra_args`: allow-listed virtiofsd arguments (hypervisor/virtiofsd-options.ts), normalised. */
  readonly virtioFsExtraArgs: readonly string[];
  /** MiB the VM takes on the host beyond its guest memory (QEMU, virtiofsd and the shim): `memory_overhead`. */
  readonly memoryOverheadMiB: number;
  /** QEMU's seccomp filter (-sandbox). */
  readonly seccomp: boolean;
  /** The user QEMU drops to (-runas): a name, "uid:gid", or "" for none. */
  readonly qemuUser: string;
  /** `free_page_reporting`: a virtio-balloon device that gives pages the guest freed back to the host. */
  readonly freePageReporting: boolean;
  /** `root_image_dax`: the root image on an nvdimm through DAX instead of a virtio-blk disk. */
  readonly rootImageDax: boolean;
  /** `tcg_tb_size_mib`: TCG's translation cache in MiB, used only under TCG; 0 = QEMU's default. */
  readonly tcgTbSizeMiB: number;
  /** `enable_template`: boot sandboxes from a VM template (core/template.ts); default false. */
  readonly enableTemplate: boolean;
  /**
   * `enable_annotations`: regular expressions (sources, checked to compile) of the per-pod annotations honoured
   * (core/annotations.ts); empty = none.
   */
  readonly enableAnnotations: readonly string[];
  /** `valid_kernel_paths`, `valid_initrd_paths`, `valid_image_paths`: what a path-valued annotation may name. */
  readonly validKernelPaths: readonly string[];
  readonly validInitrdPaths: readonly string[];
  readonly validImagePaths: readonly string[];
}

export interface AgentSettings {
  readonly transport: TransportSetting;
  /** `boot_timeout` (seconds in the file), in milliseconds as BootOptions wants it. */
  readonly bootTimeoutMs: number;
  /** `health_check_interval` in milliseconds; 0 = no health checks. */
  readonly healthIntervalMs: number;
  /** `health_check_timeout` in milliseconds. */
  readonly healthTimeoutMs: number;
  /**
   * `debug_console_enabled`: `hull exec` may run a shell or a command in the guest itself (outside every container),
   * through the shim's root-only debug.sock; the agent is told at CreateSandbox and refuses otherwise. Off by default.
   */
  readonly debugConsoleEnabled: boolean;
}

export interface RuntimeSettings {
  readonly debug: boolean;
  /** Where hull keeps per-sandbox state for crash recovery. */
  readonly stateDir: string;
  /**
   * Test-only fault hooks (off by default): the guest honours `io.hull.debug.*` annotations (e.g. its agent hangs)
   * only when this is on. Never enable it in production.
   */
  readonly debugHooks: boolean;
  /** Honour the `io.hull.failpoint` annotation (crash tests only). */
  readonly enableFailpoints: boolean;
  /** OpenTelemetry traces to an OTLP/gRPC collector (shim/tracing.ts); off: the SDK is not even loaded. */
  readonly enableTracing: boolean;
  /** The collector, `http(s)://host:port`; '' = the exporter's own (OTEL_EXPORTER_OTLP_*, else localhost:4317). */
  readonly tracingEndpoint: string;
  /** The share of new traces kept (0 to 1); a parent's decision (containerd's traceparent) is followed. */
  readonly tracingSamplingRatio: number;
}

/** The whole configuration, deeply frozen. */
export interface HullConfig {
  readonly hypervisor: HypervisorSettings;
  readonly agent: AgentSettings;
  readonly runtime: RuntimeSettings;
}

export interface LoadedConfig {
  readonly config: HullConfig;
  /** The file read, or 'defaults' when none was named and the default file does not exist. */
  readonly source: string;
}

/** Every section and key the file may hold, in the order the shipped file documents them. */
export const CONFIG_KEYS = Object.freeze({
  hypervisor: Object.freeze([
    'path',
    'kernel',
    'initrd',
    'image',
    'kernel_params',
    'default_vcpus',
    'default_memory',
    'default_maxvcpus',
    'default_maxmemory',
    'accel',
    'shared_fs',
    'virtio_fs_daemon',
    'virtio_fs_cache',
    'virtio_fs_extra_args',
    'memory_overhead',
    'seccomp',
    'qemu_user',
    'free_page_reporting',
    'root_image_dax',
    'tcg_tb_size_mib',
    'enable_template',
    'enable_annotations',
    'valid_kernel_paths',
    'valid_initrd_paths',
    'valid_image_paths',
  ] as const),
  agent: Object.freeze([
    'transport',
    'boot_timeout',
    'health_check_interval',
    'health_check_timeout',
    'debug_console_enabled',
  ] as const),
  runtime: Object.freeze([
    'debug',
    'state_dir',
    'debug_hooks',
    'enable_failpoints',
    'enable_tracing',
    'tracing_endpoint',
    'tracing_sampling_ratio',
  ] as const),
});

/** A key's value as the file writes it (seconds, not milliseconds). */
export type FileValue = string | number | boolean | readonly string[];

/**
 * The inverse of parseConfig: every key of every section with its value as the file would write it, in the order of
 * CONFIG_KEYS (`hull env` prints it; a unit test checks it against the shipped file and CONFIG_KEYS).
 */
export function fileValues(config: HullConfig): {
  [S in keyof typeof CONFIG_KEYS]: Record<(typeof CONFIG_KEYS)[S][number], FileValue>;
} {
  const hv = config.hypervisor;
  const agent = config.agent;
  const rt = config.runtime;
  return {
    hypervisor: {
      path: hv.path,
      kernel: hv.kernel,
      initrd: hv.initrd,
      image: hv.image,
      kernel_params: hv.kernelParams,
      default_vcpus: hv.defaultVcpus,
      default_memory: hv.defaultMemoryMiB,
      default_maxvcpus: hv.maxVcpus,
      default_maxmemory: hv.maxMemoryMiB,
      accel: hv.accel,
      shared_fs: hv.sharedFs,
      virtio_fs_daemon: hv.virtioFsDaemon,
      virtio_fs_cache: hv.virtioFsCache,
      virtio_fs_extra_args: hv.virtioFsExtraArgs,
      memory_overhead: hv.memoryOverheadMiB,
      seccomp: hv.seccomp,
      qemu_user: hv.qemuUser,
      free_page_reporting: hv.freePageReporting,
      root_image_dax: hv.rootImageDax,
      tcg_tb_size_mib: hv.tcgTbSizeMiB,
      enable_template: hv.enableTemplate,
      enable_annotations: hv.enableAnnotations,
      valid_kernel_paths: hv.validKernelPaths,
      valid_initrd_paths: hv.validInitrdPaths,
      valid_image_paths: hv.validImagePaths,
    },
    agent: {
      transport: agent.transport,
      boot_timeout: agent.bootTimeoutMs / 1000,
      health_check_interval: agent.healthIntervalMs / 1000,
      health_check_timeout: agent.healthTimeoutMs / 1000,
      debug_console_enabled: agent.debugConsoleEnabled,
    },
    runtime: {
      debug: rt.debug,
      state_dir: rt.stateDir,
      debug_hooks: rt.debugHooks,
      enable_failpoints: rt.enableFailpoints,
      enable_tracing: rt.enableTracing,
      tracing_endpoint: rt.tracingEndpoint,
      tracing_sampling_ratio: rt.tracingSamplingRatio,
    },
  };
}

/**
 * A file that only exists in a checkout: when `<binDir>/..` has it, the shim runs in place and `make guest` writes
 * the artefacts to `<binDir>/../guest/out/`.
 */
const CHECKOUT_MARKER = path.join('guest', 'build.ts');

/**
 * Where the guest artefacts are when the file does not say. `binDir` is the folder of the shim binary with
 * symlinks resolved: `<checkout>/bin` gives `<checkout>/guest/out`, `<prefix>/bin` gives `<prefix>/share/hull/guest`.
 */
export function guestArtifactDir(binDir: string, exists: (p: string) => boolean = fs.existsSync): string {
  if (!path.isAbsolute(binDir))
    throw new InvalidArgumentError(`binDir must be an absolute path, got ${JSON.stringify(binDir)}`);
  const root = path.dirname(path.normalize(binDir));
  return exists(path.join(root, CHECKOUT_MARKER))
    ? path.join(root, 'guest', 'out')
    : path.join(root, 'share', 'hull', 'guest');
}

/** The built-in defaults: what an empty file, or no file at all, means. */
export function defaultConfig(binDir: string, exists?: (p: string) => boolean): HullConfig {
  const guest = guestArtifactDir(binDir, exists);
  return deepFreeze<HullConfig>({
    hypervisor: {
      path: DEFAULT_QEMU_PATH,
      kernel: path.join(guest, GUEST_ARTIFACT_NAMES.kernel),
      initrd: path.join(guest, GUEST_ARTIFACT_NAMES.initrd),
      image: path.join(guest, GUEST_ARTIFACT_NAMES.image),
      kernelParams: [],
      defaultVcpus: DEFAULT_VCPUS,
      defaultMemoryMiB: DEFAULT_MEMORY_MIB,
      maxVcpus: DEFAULT_MAX_VCPUS,
      maxMemoryMiB: DEFAULT_MAX_MEMORY_MIB,
      accel: 'auto',
      sharedFs: 'virtio-fs',
      virtioFsDaemon: DEFAULT_VIRTIOFSD_PATH,
      virtioFsCache: DEFAULT_VIRTIOFS_CACHE,
      virtioFsExtraArgs: [],
      memoryOverheadMiB: DEFAULT_MEMORY_OVERHEAD_MIB,
      seccomp: true,
      qemuUser: DEFAULT_QEMU_USER,
      freePageReporting: DEFAULT_FREE_PAGE_REPORTING,
      rootImageDax: DEFAULT_ROOT_IMAGE_DAX,
      tcgTbSizeMiB: DEFAULT_TCG_TB_SIZE_MIB,
      enableTemplate: false,
      enableAnnotations: [],
      validKernelPaths: [],
      validInitrdPaths: [],
      validImagePaths: [],
    },
    agent: {
      transport: 'auto',
      bootTimeoutMs: DEFAULT_BOOT_TIMEOUT_S * 1000,
      healthIntervalMs: DEFAULT_HEALTH_INTERVAL_S * 1000,
      healthTimeoutMs: DEFAULT_HEALTH_TIMEOUT_S * 1000,
      debugConsoleEnabled: false,
    },
    runtime: {
      debug: false,
      stateDir: DEFAULT_STATE_DIR,
      debugHooks: false,
      enableFailpoints: false,
      enableTracing: false,
      tracingEndpoint: '',
      tracingSamplingRatio: 1,
    },
  });
}

/** Parses and checks the text of a configuration file; `file` names it in errors. Absent keys take the defaults. */
export function parseConfig(text: string, file: string, binDir: string, exists?: (p: string) => boolean): HullConfig {
  // smol-toml ships CommonJS code but only ES module typings, hence the typed require.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const toml = require('smol-toml') as typeof SmolToml;
  let doc: Record<string, unknown>;
  try {
    doc = toml.parse(text);
  } catch (err) {
    if (!(err instanceof toml.TomlError)) throw err;
    const what = err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
    const line = (text.split(/\r?\n/)[err.line - 1] ?? '').trim().slice(0, 80);
    throw new InvalidArgumentError(
      `${file}:${err.line}:${err.column}: TOML syntax error: ${what} (in ${JSON.stringify(line)})`,
      { cause: err },
    );
  }
  checkKeys(doc, file);
  const d = defaultConfig(binDir, exists);
  const hv = new Section(file, 'hypervisor', doc.hypervisor);
  const agent = new Section(file, 'agent', doc.agent);
  const runtime = new Section(file, 'runtime', doc.runtime);
  const transport = agent.oneOf('transport', ['auto', 'vsock', 'serial'] as const, d.agent.transport);
  return deepFreeze<HullConfig>({
    hypervisor: {
      path: hv.path('path', d.hypervisor.path),
      kernel: hv.path('kernel', d.hypervisor.kernel),
      initrd: hv.path('initrd', d.hypervisor.initrd),
      image: hv.path('image', d.hypervisor.image),
      kernelParams: hv.words('kernel_params', d.hypervisor.kernelParams),
      defaultVcpus: hv.integer('default_vcpus', 1, MAX_VCPUS, '', d.hypervisor.defaultVcpus),
      defaultMemoryMiB: hv.integer(
        'default_memory',
        MIN_MEMORY_MIB,
        MAX_MEMORY_MIB,
        ' (MiB)',
        d.hypervisor.defaultMemoryMiB,
      ),
      maxVcpus: hv.integer('default_maxvcpus', 0, MAX_VCPUS, '', d.hypervisor.maxVcpus),
      maxMemoryMiB: hv.integer('default_maxmemory', 0, MAX_MEMORY_MIB, ' (MiB)', d.hypervisor.maxMemoryMiB),
      accel: hv.oneOf('accel', ['auto', 'kvm', 'tcg'] as const, d.hypervisor.accel),
      sharedFs: hv.oneOf('shared_fs', ['virtio-fs'] as const, d.hypervisor.sharedFs),
      virtioFsDaemon: hv.path('virtio_fs_daemon', d.hypervisor.virtioFsDaemon),
      virtioFsCache: hv.checked('virtio_fs_cache', checkVirtiofsCache, d.hypervisor.virtioFsCache),
      virtioFsExtraArgs: hv.checked('virtio_fs_extra_args', checkVirtiofsdExtraArgs, d.hypervisor.virtioFsExtraArgs),
      memoryOverheadMiB: hv.integer(
        'memory_overhead',
        0,
        MAX_MEMORY_OVERHEAD_MIB,
        ' (MiB)',
        d.hypervisor.memoryOverheadMiB,
      ),
      seccomp: hv.boolean('seccomp', d.hypervisor.seccomp),
      qemuUser: hv.qemuUser('qemu_user', d.hypervisor.qemuUser),
      freePageReporting: hv.boolean('free_page_reporting', d.hypervisor.freePageReporting),
      rootImageDax: hv.boolean('root_image_dax', d.hypervisor.rootImageDax),
      tcgTbSizeMiB: hv.integer('tcg_tb_size_mib', 0, MAX_TCG_TB_SIZE_MIB, ' (MiB)', d.hypervisor.tcgTbSizeMiB),
      enableTemplate: hv.boolean('enable_template', d.hypervisor.enableTemplate),
      enableAnnotations: hv.regexps('enable_annotations', d.hypervisor.enableAnnotations),
      validKernelPaths: hv.pathGlobs('valid_kernel_paths', d.hypervisor.validKernelPaths),
      validInitrdPaths: hv.pathGlobs('valid_initrd_paths', d.hypervisor.validInitrdPaths),
      validImagePaths: hv.pathGlobs('valid_image_paths', d.hypervisor.validImagePaths),
    },
    agent: {
      transport,
      bootTimeoutMs:
        agent.integer('boot_timeout', 1, MAX_BOOT_TIMEOUT_S, ' (seconds)', d.agent.bootTimeoutMs / 1000) * 1000,
      healthIntervalMs:
        agent.integer(
          'health_check_interval',
          0,
          MAX_BOOT_TIMEOUT_S,
          ' (seconds; 0 = off)',
          d.agent.healthIntervalMs / 1000,
        ) * 1000,
      healthTimeoutMs:
        agent.integer('health_check_timeout', 1, MAX_BOOT_TIMEOUT_S, ' (seconds)', d.agent.healthTimeoutMs / 1000) *
        1000,
      debugConsoleEnabled: agent.boolean('debug_console_enabled', d.agent.debugConsoleEnabled),
    },
    runtime: {
      debug: runtime.boolean('debug', d.runtime.debug),
      stateDir: runtime.path('state_dir', d.runtime.stateDir),
      debugHooks: runtime.boolean('debug_hooks', d.runtime.debugHooks),
      enableFailpoints: runtime.boolean('enable_failpoints', d.runtime.enableFailpoints),
      enableTracing: runtime.boolean('enable_tracing', d.runtime.enableTracing),
      tracingEndpoint: runtime.endpoint('tracing_endpoint', d.runtime.tracingEndpoint),
      tracingSamplingRatio: runtime.ratio('tracing_sampling_ratio', d.runtime.tracingSamplingRatio),
    },
  });
}

export interface LoadOptions {
  /** The CRI runtime option `ConfigPath` (containerd's runtime options); empty means not set. */
  configPath?: string;
  /** Read for HULL_CONFIG (empty means not set). */
  env: NodeJS.ProcessEnv;
  /** The folder of the shim binary, symlinks resolved (see guestArtifactDir). */
  binDir: string;
  /** For tests: the file read when neither ConfigPath nor HULL_CONFIG is set. */
  defaultPath?: string;
  /** For tests: the file probe guestArtifactDir uses. */
  exists?: (p: string) => boolean;
}

/**
 * Chooses the file (ConfigPath > HULL_CONFIG > /etc/hull/configuration.toml), reads and checks it. A named file
 * that is missing is a FailedPreconditionError; a missing default file means the built-in defaults.
 */
export function loadConfig(options: LoadOptions): LoadedConfig {
  const fromEnv = options.env[CONFIG_PATH_ENV];
  const named = options.configPath
    ? { file: options.configPath, from: 'the runtime option ConfigPath' }
    : fromEnv
      ? { file: fromEnv, from: CONFIG_PATH_ENV }
      : undefined;
  if (named && !path.isAbsolute(named.file)) {
    throw new InvalidArgumentError(`${named.from} must be an absolute path, got ${JSON.stringify(named.file)}`);
  }
  const file = named?.file ?? options.defaultPath ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const missing = code === 'ENOENT' || code === 'ENOTDIR';
    if (missing && !named)
      return Object.freeze({ config: defaultConfig(options.binDir, options.exists), source: 'defaults' });
    const why = missing ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`;
    throw new FailedPreconditionError(`configuration file ${file}${named ? ` (from ${named.from})` : ''} ${why}`, {
      cause: err,
    });
  }
  return Object.freeze({ config: parseConfig(text, file, options.binDir, options.exists), source: file });
}

/** What the VM of one sandbox needs besides the configuration. */
export interface SandboxVmPlace {
  id: string;
  /** The VM's own state folder (the hypervisor creates and removes it). */
  stateDir: string;
  /** The host folder shared with the guest over virtio-fs, if any. */
  sharedDir?: string;
}

/** The hypervisor's VmConfig for one sandbox. */
export function toVmConfig(config: HullConfig, place: SandboxVmPlace): VmConfig {
  const hv = config.hypervisor;
  const vm: VmConfig = {
    id: place.id,
    stateDir: place.stateDir,
    kernel: hv.kernel,
    initrd: hv.initrd,
    image: hv.image,
    vcpus: hv.defaultVcpus,
    memoryMiB: hv.defaultMemoryMiB,
    accel: hv.accel,
    agentTransport: config.agent.transport,
    // The guest honours its test-only fault hooks only when told so here (agent/debug-hooks.ts).
    kernelParams: config.runtime.debugHooks ? [...hv.kernelParams, 'hull.debug_hooks=1'] : [...hv.kernelParams],
    // and the raw port its floor hook writes to (bench/datapath.ts)
    ...(config.runtime.debugHooks ? { debugPort: true } : {}),
    qemuPath: hv.path,
    virtiofsdPath: hv.virtioFsDaemon,
    virtiofsCache: hv.virtioFsCache,
    virtiofsdExtraArgs: [...hv.virtioFsExtraArgs],
    seccomp: hv.seccomp,
    qemuUser: hv.qemuUser,
    freePageReporting: hv.freePageReporting,
    rootImageDevice: hv.rootImageDax ? ROOT_IMAGE_DAX_DEVICE : 'virtio-blk',
    tcgTbSizeMiB: hv.tcgTbSizeMiB,
    debug: config.runtime.debug,
  };
  if (place.sharedDir !== undefined) vm.sharedDir = place.sharedDir;
  // As configured; the sandbox caps them at the host and at least at the boot size before the VM starts.
  if (hv.maxVcpus > 0) vm.maxVcpus = hv.maxVcpus;
  if (hv.maxMemoryMiB > 0) vm.maxMemoryMiB = hv.maxMemoryMiB;
  return vm;
}

/** Unknown sections, unknown keys and sections that are not tables, in the order the file has them. */
function checkKeys(doc: Record<string, unknown>, file: string): void {
  const sections = Object.keys(CONFIG_KEYS) as (keyof typeof CONFIG_KEYS)[];
  for (const [name, value] of Object.entries(doc)) {
    if (!(sections as string[]).includes(name)) {
      const what = isTable(value)
        ? 'unknown section'
        : `unknown key (keys belong in a section: ${sections.map((s) => `[${s}]`).join(', ')})`;
      throw new InvalidArgumentError(`${file}: ${name}: ${what}`);
    }
    if (!isTable(value))
      throw new InvalidArgumentError(`${file}: ${name} must be a section ([${name}]), got ${describe(value)}`);
    const known: readonly string[] = CONFIG_KEYS[name as keyof typeof CONFIG_KEYS];
    for (const key of Object.keys(value)) {
      if (!known.includes(key))
        throw new InvalidArgumentError(`${file}: ${name}.${key}: unknown key (known: ${known.join(', ')})`);
    }
  }
}

/** Typed reads of one section's values; an absent key gives the default, a bad one an error naming the key. */
class Section {
  private readonly table: Record<string, unknown>;

  constructor(
    private readonly file: string,
    private readonly name: string,
    table: unknown,
  ) {
    this.table = isTable(table) ? table : {};
  }

  path(key: string, dflt: string): string {
    const value = this.table[key];
    if (value === undefined) return dflt;
    if (typeof value !== 'string' || !path.isAbsolute(value)) throw this.bad(key, 'must be an absolute path', value);
    try {
      return checkOptionValue(this.where(key), path.normalize(value));
    } catch (err) {
      throw new InvalidArgumentError(`${this.file}: ${(err as Error).message}`);
    }
  }

  integer(key: string, min: number, max: number, unit: string, dflt: number): number {
    const value = this.table[key];
    if (value === undefined) return dflt;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw this.bad(key, `must be an integer from ${min} to ${max}${unit}`, value);
    }
    return value;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], dflt: T): T {
    const value = this.table[key];
    if (value === undefined) return dflt;
    if (!allowed.includes(value as T)) {
      const choices =
        allowed.length === 1
          ? `must be "${allowed[0]}" (the only value implemented)`
          : `must be one of ${allowed.map((a) => `"${a}"`).join(', ')}`;
      throw this.bad(key, choices, value);
    }
    return value as T;
  }

  /** A number from 0 to 1. */
  ratio(key: string, dflt: number): number {
    const value = this.table[key];
    if (value === undefined) return dflt;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1)
      throw this.bad(key, 'must be a number from 0 to 1', value);
    return value;
  }

  /** '' or a gRPC endpoint: `http://host:port`, `https://host:port`, or `host:port` (plain text). */
  endpoint(key: string, dflt: string): string {
    const value = this.table[key];
    if (value === undefined) return dflt;
    const need = 'must be "", http://host:port, https://host:port or host:port';
    if (typeof value !== 'string' || value.length > 1024) throw this.bad(key, need, value);
    if (value === '') return value;
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
    let url: URL;
    try {
      url = new URL(withScheme);
    } catch {
      throw this.bad(key, need, value);
    }
    if (!['http:', 'https:'].includes(url.protocol) || !url.hostname || url.username || url.password)
      throw this.bad(key, need, value);
    return `${url.protocol}//${url.host}`;
  }

  boolean(key: string, dflt: boolean): boolean {
    const value = this.table[key];
    if (value === undefined) return dflt;
    if (typeof value !== 'boolean') throw this.bad(key, 'must be true or false', value);
    return value;
  }

  /** A value checked by a hypervisor checker that throws InvalidArgumentError naming `<section>.<key>`. */
  checked<T>(key: string, check: (what: string, value: unknown) => T, dflt: T): T {
    const value = this.table[key];
    if (value === undefined) return dflt;
    try {
      return check(this.where(key), value);
    } catch (err) {
      throw new InvalidArgumentError(`${this.file}: ${(err as Error).message}`);
    }
  }

  /** "", a user name or "uid:gid" (hypervisor/confine.ts checkQemuUser). */
  qemuUser(key: string, dflt: string): string {
    const value = this.table[key];
    if (value === undefined) return dflt;
    try {
      return checkQemuUser(this.where(key), value);
    } catch (err) {
      throw new InvalidArgumentError(`${this.file}: ${(err as Error).message}`);
    }
  }

  /** An array of kernel command line words: non-empty, no whitespace or control characters. */
  words(key: string, dflt: readonly string[]): string[] {
    const value = this.table[key];
    if (value === undefined) return [...dflt];
    const need = 'must be an array of words without spaces, e.g. ["loglevel=7"]';
    if (!Array.isArray(value)) throw this.bad(key, need, value);
    for (const word of value as unknown[]) {
      // eslint-disable-next-line no-control-regex
      if (typeof word !== 'string' || word.length === 0 || /[\s\u0000-\u001f\u007f]/.test(word))
        throw this.bad(key, need, word);
    }
    return [...(value as string[])];
  }

  /** An array of regular expressions (JavaScript syntax, unanchored unless written with ^ and $), each compiled. */
  regexps(key: string, dflt: readonly string[]): string[] {
    const value = this.table[key];
    if (value === undefined) return [...dflt];
    const need = 'must be an array of regular expressions, e.g. ["^default_vcpus$", "^kernel_params$"]';
    if (!Array.isArray(value) || value.length > 64) throw this.bad(key, need, value);
    for (const re of value as unknown[]) {
      if (typeof re !== 'string' || re.length === 0 || re.length > 256) throw this.bad(key, need, re);
      try {
        new RegExp(re);
      } catch (err) {
        throw this.bad(key, `has an invalid regular expression (${(err as Error).message})`, re);
      }
    }
    return [...(value as string[])];
  }

  /** An array of absolute, normalised paths, where `*` and `?` may stand for characters within one path segment. */
  pathGlobs(key: string, dflt: readonly string[]): string[] {
    const value = this.table[key];
    if (value === undefined) return [...dflt];
    const need = 'must be an array of absolute paths (* and ? match within one segment), e.g. ["/opt/hull/guest/*"]';
    if (!Array.isArray(value) || value.length > 64) throw this.bad(key, need, value);
    for (const p of value as unknown[]) {
      if (typeof p !== 'string' || !path.isAbsolute(p) || p.length > 4096 || path.normalize(p) !== p || p === '/')
        throw this.bad(key, need, p);
      try {
        checkOptionValue(this.where(key), p);
      } catch (err) {
        throw new InvalidArgumentError(`${this.file}: ${(err as Error).message}`);
      }
    }
    return [...(value as string[])];
  }

  private where(key: string): string {
    return `${this.name}.${key}`;
  }

  private bad(key: string, need: string, got: unknown): InvalidArgumentError {
    return new InvalidArgumentError(`${this.file}: ${this.where(key)} ${need}, got ${describe(got)}`);
  }
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function describe(value: unknown): string {
  if (value instanceof Date) return 'a date';
  if (Array.isArray(value)) return `an array ${JSON.stringify(value)}`;
  if (isTable(value)) return 'a table';
  return JSON.stringify(value);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
