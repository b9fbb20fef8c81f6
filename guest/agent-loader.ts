/**
 * The guest agent's entry point (`/opt/hull/agent/main.js`): runs the agent bundle (`agent.js` next to it) through
 * `vm.Script` with V8's code cache (`agent.cache`), so that the guest's node deserialises the bundle's compiled
 * functions instead of parsing and compiling them under emulation. The image build copies this file (compiled,
 * node builtins only) into the image and makes the cache with the image's own node in a chroot:
 *
 *   node main.js --write-code-cache <file>
 *
 * runs the bundle's top-level code with HULL_AGENT_LOAD_ONLY=1 (the agent loads its modules and does not start),
 * then writes `script.createCachedData()`, which then covers every function compiled so far.
 *
 * The bundle must not use `import()` of an external package: functions that come from the code cache lose the
 * script's dynamic import callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), so external packages are `require`d.
 *
 * A cache that V8 rejects (another node, other V8 flags) costs only its reading: the bundle is compiled as without
 * one. What happened is kept for the agent's `ready` line (`codeCacheState()`).
 */
import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

export const BUNDLE_FILE = 'agent.js';
export const CODE_CACHE_FILE = 'agent.cache';
/** Set for the bundle while the cache is made: the agent loads its modules and returns without starting. */
export const LOAD_ONLY_ENV = 'HULL_AGENT_LOAD_ONLY';

/** `accepted`/`rejected` by V8, `absent` (no cache file), `produced` (this run wrote it). */
export type CodeCacheState = 'accepted' | 'rejected' | 'absent' | 'produced';

const STATE_KEY = Symbol.for('hull.agent.codeCache');

/** What the loader did with the code cache, for the agent to report; undefined when the agent ran without it. */
export function codeCacheState(): CodeCacheState | undefined {
  return (globalThis as Record<symbol, CodeCacheState | undefined>)[STATE_KEY];
}

function readOptional(file: string): Buffer | undefined {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export interface LoadOptions {
  /** Where to write the code cache, made after the bundle's top-level code ran (the agent is not started). */
  writeCache?: string;
}

/**
 * Compiles `bundle` (with `cache` unless writing one) and runs it as a CommonJS module whose `require` resolves from
 * the bundle's folder, as if node had loaded it (the external native packages sit in its node_modules/).
 */
export function runBundle(bundle: string, cache: string, opts: LoadOptions = {}): CodeCacheState {
  const source = fs.readFileSync(bundle, 'utf8');
  const cachedData = opts.writeCache ? undefined : readOptional(cache);
  const require = createRequire(bundle);
  const script = new vm.Script(Module.wrap(source), {
    filename: bundle,
    ...(cachedData ? { cachedData } : {}),
  });
  const state: CodeCacheState = opts.writeCache
    ? 'produced'
    : !cachedData
      ? 'absent'
      : script.cachedDataRejected
        ? 'rejected'
        : 'accepted';
  (globalThis as Record<symbol, CodeCacheState>)[STATE_KEY] = state;
  const wrapper = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: Module,
    filename: string,
    dirname: string,
  ) => void;
  const mod = new Module(bundle);
  mod.filename = bundle;
  if (opts.writeCache) process.env[LOAD_ONLY_ENV] = '1';
  try {
    wrapper.call(mod.exports, mod.exports, require, mod, bundle, path.dirname(bundle));
  } finally {
    if (opts.writeCache) delete process.env[LOAD_ONLY_ENV];
  }
  mod.loaded = true;
  if (opts.writeCache) fs.writeFileSync(opts.writeCache, script.createCachedData());
  return state;
}

function main(argv: readonly string[]): void {
  const bundle = path.join(__dirname, BUNDLE_FILE);
  const cache = path.join(__dirname, CODE_CACHE_FILE);
  if (argv.length === 0) {
    runBundle(bundle, cache);
    return;
  }
  if (argv[0] !== '--write-code-cache' || argv.length !== 2)
    throw new Error(`usage: node ${__filename} [--write-code-cache <file>]`);
  runBundle(bundle, cache, { writeCache: path.resolve(argv[1]!) });
}

if (require.main === module) main(process.argv.slice(2));
