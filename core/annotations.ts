/**
 * Per-pod configuration overrides from OCI annotations, in the manner of Kata's `io.katacontainers.config.*`:
 * `io.hull.config.<section>.<key>` and, where Kata's key means the same, `io.katacontainers.config.hypervisor.<key>`,
 * so that manifests written for Kata work. They apply to one sandbox's copy of the configuration, checked with the
 * file's own rules (config.ts), and only when `[hypervisor] enable_annotations` allows the key; path-valued keys
 * also need `valid_<key>_paths`. Anything under either prefix that is unknown, not enabled or badly valued is an
 * InvalidArgumentError naming the annotation: never silently ignored. Other annotations (containerd's, hull's
 * `io.hull.debug.*` and `io.hull.failpoint`) are not this module's.
 *
 * Kernel parameters: a pod's words come after the file's (config.ts `kernelParams`), and words hull relies on are
 * refused rather than reordered: the console (the boot error's last lines), panic/reboot (a guest panic ends QEMU),
 * init/rdinit/root* (hull's agent is the guest's init), memhp_default_state (hot-plug), `hull.*` (the agent channel,
 * the test-only debug hooks) and `--` (the rest would go to init).
 */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '../errors';
import { MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB } from '../hypervisor/config';
import { MAX_BOOT_TIMEOUT_S, type HullConfig, type HypervisorSettings } from './config';

export const HULL_CONFIG_PREFIX = 'io.hull.config.';
export const KATA_CONFIG_PREFIX = 'io.katacontainers.config.';
/** At most this many characters of an annotation's value are read (kernel_params is the longest). */
const MAX_VALUE_LENGTH = 4096;

type Setter = (c: Mutable, value: string, key: string) => void;

interface Mutable {
  hypervisor: { -readonly [K in keyof HypervisorSettings]: HypervisorSettings[K] };
  agent: { bootTimeoutMs: number };
  runtime: { debug: boolean };
}

interface Setting {
  /** What `enable_annotations` is matched against: the key after `<prefix>hypervisor.`, else `<section>.<key>`. */
  allowName: string;
  /** The file's key, for messages. */
  fileKey: string;
  set: Setter;
}

const int =
  (min: number, max: number, unit: string, apply: (c: Mutable, v: number) => void): Setter =>
  (c, value, key) => {
    if (!/^[0-9]{1,10}$/.test(value) || Number(value) < min || Number(value) > max)
      throw bad(key, value, `must be an integer from ${min} to ${max}${unit}`);
    apply(c, Number(value));
  };

const guestPath =
  (which: 'kernel' | 'initrd' | 'image'): Setter =>
  (c, value, key) => {
    const list = {
      kernel: c.hypervisor.validKernelPaths,
      initrd: c.hypervisor.validInitrdPaths,
      image: c.hypervisor.validImagePaths,
    }[which];
    c.hypervisor[which] = checkAllowedPath(key, value, list, `[hypervisor] valid_${which}_paths`);
  };

const HYPERVISOR: Record<string, { fileKey: string; set: Setter }> = {
  default_vcpus: {
    fileKey: 'default_vcpus',
    set: int(1, MAX_VCPUS, '', (c, v) => (c.hypervisor.defaultVcpus = v)),
  },
  default_memory: {
    fileKey: 'default_memory',
    set: int(MIN_MEMORY_MIB, MAX_MEMORY_MIB, ' (MiB)', (c, v) => (c.hypervisor.defaultMemoryMiB = v)),
  },
  default_maxvcpus: {
    fileKey: 'default_maxvcpus',
    set: int(0, MAX_VCPUS, '', (c, v) => (c.hypervisor.maxVcpus = v)),
  },
  default_maxmemory: {
    fileKey: 'default_maxmemory',
    set: int(0, MAX_MEMORY_MIB, ' (MiB)', (c, v) => (c.hypervisor.maxMemoryMiB = v)),
  },
  kernel_params: {
    fileKey: 'kernel_params',
    set: (c, value, key) => (c.hypervisor.kernelParams = [...c.hypervisor.kernelParams, ...kernelWords(key, value)]),
  },
  kernel: { fileKey: 'kernel', set: guestPath('kernel') },
  initrd: { fileKey: 'initrd', set: guestPath('initrd') },
  image: { fileKey: 'image', set: guestPath('image') },
  accel: {
    fileKey: 'accel',
    set: (c, value, key) => {
      if (value !== 'auto' && value !== 'kvm' && value !== 'tcg')
        throw bad(key, value, 'must be one of "auto", "kvm", "tcg"');
      c.hypervisor.accel = value;
    },
  },
};

/** Kata's names for hull's settings where the meaning is the same (`io.katacontainers.config.hypervisor.<name>`). */
const KATA_HYPERVISOR: Record<string, string> = {
  default_vcpus: 'default_vcpus',
  default_memory: 'default_memory',
  default_max_vcpus: 'default_maxvcpus',
  default_maxvcpus: 'default_maxvcpus',
  default_maxmemory: 'default_maxmemory',
  kernel_params: 'kernel_params',
  kernel: 'kernel',
  initrd: 'initrd',
  image: 'image',
};

/** hull's settings outside [hypervisor]: `io.hull.config.<section>.<key>`. */
const OTHER: Record<string, { fileKey: string; set: Setter }> = {
  'agent.boot_timeout': {
    fileKey: 'boot_timeout',
    set: int(1, MAX_BOOT_TIMEOUT_S, ' (seconds)', (c, v) => (c.agent.bootTimeoutMs = v * 1000)),
  },
  'runtime.debug': {
    fileKey: 'debug',
    set: (c, value, key) => {
      if (value !== 'true' && value !== 'false') throw bad(key, value, 'must be "true" or "false"');
      c.runtime.debug = value === 'true';
    },
  },
};

/** Parameter names a pod may not set on the guest kernel's command line (see the top of this file). */
const RESERVED_KERNEL_PARAMS = new Set([
  'console',
  'earlycon',
  'earlyprintk',
  'panic',
  'panic_on_oops',
  'reboot',
  'init',
  'rdinit',
  'root',
  'rootfstype',
  'rootflags',
  'rootwait',
  'ro',
  'rw',
  'memhp_default_state',
  'tsc',
  'no_timer_check',
  'rcupdate.rcu_expedited',
  'noreplace-smp',
  'cryptomgr.notests',
  'i8042.direct',
  'i8042.dumbkbd',
  'i8042.nopnp',
  'i8042.noaux',
]);

/** The setting an annotation names, or undefined when the annotation is not under either prefix. */
function settingOf(key: string): Setting | 'unknown' | undefined {
  if (key.startsWith(HULL_CONFIG_PREFIX)) {
    const rest = key.slice(HULL_CONFIG_PREFIX.length);
    if (rest.startsWith('hypervisor.')) {
      const name = rest.slice('hypervisor.'.length);
      const s = Object.hasOwn(HYPERVISOR, name) ? HYPERVISOR[name]! : undefined;
      return s ? { allowName: name, ...s } : 'unknown';
    }
    const s = Object.hasOwn(OTHER, rest) ? OTHER[rest]! : undefined;
    return s ? { allowName: rest, ...s } : 'unknown';
  }
  if (key.startsWith(KATA_CONFIG_PREFIX)) {
    const rest = key.slice(KATA_CONFIG_PREFIX.length);
    if (!rest.startsWith('hypervisor.')) return 'unknown';
    const name = rest.slice('hypervisor.'.length);
    const ours = Object.hasOwn(KATA_HYPERVISOR, name) ? KATA_HYPERVISOR[name]! : undefined;
    return ours ? { allowName: name, ...HYPERVISOR[ours]! } : 'unknown';
  }
  return undefined;
}

/** Every annotation this module understands, for the messages and the README. */
export function knownAnnotations(): string[] {
  return [
    ...Object.keys(HYPERVISOR).map((k) => `${HULL_CONFIG_PREFIX}hypervisor.${k}`),
    ...Object.keys(OTHER).map((k) => `${HULL_CONFIG_PREFIX}${k}`),
    ...Object.keys(KATA_HYPERVISOR).map((k) => `${KATA_CONFIG_PREFIX}hypervisor.${k}`),
  ];
}

export interface PodConfig {
  /** The sandbox's configuration: the file's, with the annotations applied (deeply frozen). */
  config: HullConfig;
  /** The annotations applied, name and value, in name order. */
  applied: { annotation: string; value: string }[];
}

/**
 * The configuration for one sandbox: `config` with the sandbox container's annotations applied. Throws an
 * InvalidArgumentError naming the first (in name order) annotation under `io.hull.config.` or
 * `io.katacontainers.config.` that is unknown, not enabled by `[hypervisor] enable_annotations`, badly valued, or
 * that disagrees with another annotation of the same setting (hull's and Kata's names). Reads the file system only
 * to resolve path-valued annotations.
 */
export function podConfig(config: HullConfig, annotations: Record<string, unknown> | undefined): PodConfig {
  const keys = Object.keys(annotations ?? {})
    .filter((k) => settingOf(k) !== undefined)
    .sort();
  if (keys.length === 0) return { config, applied: [] };
  const allow = config.hypervisor.enableAnnotations.map((re) => new RegExp(re));
  const c = structuredClone(config) as unknown as Mutable;
  const applied: PodConfig['applied'] = [];
  const seen = new Map<string, { annotation: string; value: string }>();
  for (const key of keys) {
    const s = settingOf(key)!;
    if (s === 'unknown')
      throw new InvalidArgumentError(
        `annotation ${quote(key)}: hull has no such per-pod setting (known: ${knownAnnotations().join(', ')})`,
      );
    const raw = annotations![key];
    if (typeof raw !== 'string') throw bad(key, raw, 'must be a string');
    if (!allow.some((re) => re.test(s.allowName)))
      throw new InvalidArgumentError(
        `annotation ${quote(key)} is not enabled: no regular expression of the configuration's [hypervisor] enable_annotations ` +
          `(${config.hypervisor.enableAnnotations.length === 0 ? 'empty: none are' : config.hypervisor.enableAnnotations.map((r) => JSON.stringify(r)).join(', ')}) matches ${JSON.stringify(s.allowName)}`,
      );
    if (raw.length > MAX_VALUE_LENGTH) throw bad(key, raw, `must be at most ${MAX_VALUE_LENGTH} characters`);
    const before = seen.get(s.fileKey);
    if (before && before.value !== raw)
      throw new InvalidArgumentError(
        `annotations ${quote(before.annotation)} and ${quote(key)} set the same setting (${s.fileKey}) to different values`,
      );
    seen.set(s.fileKey, { annotation: key, value: raw });
    if (before) continue; // the same value under both names: applied once (kernel_params would be doubled)
    s.set(c, raw, key);
    applied.push({ annotation: key, value: raw });
  }
  return { config: deepFreeze(c as unknown as HullConfig), applied };
}

/** A pod's kernel parameters: words separated by spaces; none that hull relies on. */
function kernelWords(key: string, value: string): string[] {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) throw bad(key, value, 'must not hold control characters');
  const words = value.split(/[ \t]+/).filter((w) => w !== '');
  for (const w of words) {
    const name = w.split('=', 1)[0]!;
    if (w === '--' || RESERVED_KERNEL_PARAMS.has(name) || name.startsWith('hull.'))
      throw bad(
        key,
        value,
        `must not set ${JSON.stringify(name)}: hull sets or relies on it (console, panic, init, root, memory hot-plug, hull.*)`,
      );
  }
  return words;
}

/**
 * A path-valued annotation's file: absolute and normalised, matching an entry of `allowed`, and so must be the file
 * it resolves to (a symlink out of the allowed folders is refused), a regular file.
 */
function checkAllowedPath(key: string, value: string, allowed: readonly string[], listName: string): string {
  if (!path.isAbsolute(value) || path.normalize(value) !== value || value.includes(','))
    throw bad(key, value, 'must be an absolute, normalised path without commas');
  if (!allowed.some((g) => globMatch(g, value)))
    throw bad(
      key,
      value,
      `is not allowed: it matches no entry of ${listName} (${allowed.length === 0 ? 'empty' : allowed.join(', ')})`,
    );
  let real: string;
  try {
    real = fs.realpathSync(value);
  } catch (err) {
    throw bad(key, value, `cannot be resolved (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (!allowed.some((g) => globMatch(g, real)))
    throw bad(key, value, `resolves to ${JSON.stringify(real)}, which matches no entry of ${listName}`);
  if (!fs.statSync(real).isFile()) throw bad(key, value, 'is not a regular file');
  return real;
}

/** `pattern` (an absolute path where `*` and `?` match within one segment) matches `p` segment by segment. */
export function globMatch(pattern: string, p: string): boolean {
  const ps = pattern.split('/');
  const vs = p.split('/');
  if (ps.length !== vs.length) return false;
  return ps.every((seg, i) => {
    const re = new RegExp(
      `^${seg
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]')}$`,
    );
    return re.test(vs[i]!);
  });
}

function quote(key: string): string {
  return JSON.stringify(key.slice(0, 256));
}

function bad(key: string, value: unknown, need: string): InvalidArgumentError {
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 128)) : typeof value;
  return new InvalidArgumentError(`annotation ${quote(key)}=${shown} ${need}`);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
