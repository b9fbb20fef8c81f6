/**
 * Kernel module bookkeeping from the files depmod writes under /lib/modules/<release>/: which file holds a module,
 * what it depends on, what is built in, and the order to load a set of modules in. Pure functions over the file
 * contents, so they are unit-tested without a kernel.
 */
import * as path from 'node:path';

export interface ModuleInfo {
  /** Canonical name: the file name without extension, '-' replaced by '_' (as the kernel and modprobe do). */
  name: string;
  /** Path relative to /lib/modules/<release>/, e.g. kernel/drivers/block/virtio_blk.ko (or .ko.xz, ...). */
  path: string;
  /** Names of the modules it needs loaded first (hard dependencies from modules.dep, then softdep "pre:"). */
  deps: string[];
  /** Names of modules modprobe loads right after it (softdep "post:"). */
  post: string[];
  /** The names in deps and post that come from modules.softdep: they may name an alias (libcrc32c's "crc32c") or a
   * module this kernel lacks, and are skipped when not found, as modprobe does. */
  soft?: string[];
}

export type ModuleIndex = Map<string, ModuleInfo>;

const MODULE_SUFFIX = /\.ko(\.(xz|gz|zst))?$/;

export function canonicalModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

/** The module name a file holds: kernel/drivers/char/hw_random/virtio-rng.ko.xz -> virtio_rng. */
export function moduleNameOf(file: string): string {
  const base = path.posix.basename(file);
  if (!MODULE_SUFFIX.test(base)) throw new Error(`not a kernel module file: ${file}`);
  return canonicalModuleName(base.replace(MODULE_SUFFIX, ''));
}

/** The compression of a module file: undefined for a plain .ko. */
export function moduleCompression(file: string): 'xz' | 'gz' | 'zst' | undefined {
  const m = MODULE_SUFFIX.exec(file);
  if (!m) throw new Error(`not a kernel module file: ${file}`);
  return m[2] as 'xz' | 'gz' | 'zst' | undefined;
}

/** Parses modules.dep ("path: dep-path dep-path ...") and, optionally, modules.softdep. */
export function parseModulesDep(depText: string, softdepText = ''): ModuleIndex {
  const index: ModuleIndex = new Map();
  for (const [n, raw] of depText.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new Error(`modules.dep line ${n + 1}: no ':' in '${line}'`);
    const file = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((d) => d !== '')
      .map(moduleNameOf);
    const name = moduleNameOf(file);
    index.set(name, { name, path: file, deps, post: [] });
  }
  for (const raw of softdepText.split('\n')) {
    // softdep <module> pre: <a> <b> post: <c>
    const words = raw.trim().split(/\s+/);
    if (words[0] !== 'softdep' || words.length < 2) continue;
    const info = index.get(canonicalModuleName(words[1] ?? ''));
    if (!info) continue;
    let list: string[] | undefined;
    for (const word of words.slice(2)) {
      if (word === 'pre:') list = info.deps;
      else if (word === 'post:') list = info.post;
      else if (list) {
        list.push(canonicalModuleName(word));
        (info.soft ??= []).push(canonicalModuleName(word));
      }
    }
  }
  return index;
}

/** Parses modules.builtin (one path per line) into module names. */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map(moduleNameOf),
  );
}

export interface LoadPlan {
  /** Modules to load, each after everything it depends on. */
  load: ModuleInfo[];
  /** Requested modules (or their dependencies) that are built into the kernel: nothing to load. */
  builtin: string[];
  /** Optional modules this kernel does not have at all. */
  missing: string[];
}

/**
 * Resolves `wanted` (module names; those in `optional` may be absent) into a load order that puts every module after
 * its dependencies (and softdep "pre:" modules) and before its softdep "post:" modules. Order is deterministic: a
 * depth-first walk in the order of `wanted` and of each dependency list. Throws on an unknown required module or a
 * dependency cycle.
 */
export function resolveLoadOrder(
  index: ModuleIndex,
  builtin: ReadonlySet<string>,
  wanted: readonly string[],
  optional: ReadonlySet<string> = new Set(),
): LoadPlan {
  const load: ModuleInfo[] = [];
  const builtinHit = new Set<string>();
  const missing: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const optionalNames = new Set([...optional].map(canonicalModuleName));

  const visit = (name: string, trail: string[], isOptional: boolean): void => {
    const st = state.get(name);
    if (st === 'done') return;
    if (st === 'visiting') throw new Error(`module dependency cycle: ${[...trail, name].join(' -> ')}`);
    const info = index.get(name);
    if (!info) {
      state.set(name, 'done');
      if (builtin.has(name)) builtinHit.add(name);
      else if (isOptional) missing.push(name);
      else
        throw new Error(
          `kernel module '${name}' not found in modules.dep or modules.builtin${trail.length ? ` (needed by ${trail.join(' -> ')})` : ''}`,
        );
      return;
    }
    state.set(name, 'visiting');
    const soft = new Set(info.soft);
    for (const dep of info.deps) visit(dep, [...trail, name], soft.has(dep));
    state.set(name, 'done');
    load.push(info);
    for (const post of info.post) visit(post, [...trail, name], soft.has(post));
  };

  for (const raw of wanted) {
    const name = canonicalModuleName(raw);
    visit(name, [], optionalNames.has(name));
  }
  return { load, builtin: [...builtinHit], missing };
}

/**
 * Names of the modules whose files lie under one of `trees` (folders below the release's `kernel/`, such as
 * `net/netfilter`), in modules.dep order. A tree the kernel does not have contributes nothing.
 */
export function modulesUnder(index: ModuleIndex, trees: readonly string[]): string[] {
  const prefixes = trees.map((t) => `kernel/${t.replace(/^\/+|\/+$/g, '')}/`);
  return [...index.values()].filter((m) => prefixes.some((p) => m.path.startsWith(p))).map((m) => m.name);
}
