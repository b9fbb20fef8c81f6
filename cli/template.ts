/**
 * `hull template make|list|remove`: VM templates (`[hypervisor] enable_template`, core/template.ts) made ahead of
 * the first sandbox, looked at, and removed. `make` makes the template of the configuration's default sandbox
 * (core's `sandboxTemplateVm`, what a sandbox without extra size clones from) with core's `VmTemplates.make`;
 * `remove` goes through `VmTemplates.remove`, under the key's build lock (never while a build holds it).
 *
 * `list` reads `<state_dir>/_templates/` as untrusted input: entries are lstat'ed and a symlink is never followed,
 * `fingerprint.json` is opened with O_NOFOLLOW and read only when a regular file of at most 64 KiB, at most
 * MAX_TEMPLATE_ENTRIES entries are looked at, and anything that is not what hull makes is named as a problem.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { HullConfig } from '../core/config';
import {
  FINGERPRINT_FILE,
  MEMORY_FILE,
  STATE_FILE,
  TEMPLATE_KEY,
  TEMPLATE_NAME,
  VmTemplates,
  isTmpfs,
  sandboxTemplateVm,
  templateIdentity,
  templatesRoot,
} from '../core/template';
import { processStartTime } from '../hypervisor/process';
import type { Hypervisor } from '../hypervisor/types';
import { NOOP_LOGGER, type Logger } from '../log';

/** Entries of `_templates/` looked at, at most. */
export const MAX_TEMPLATE_ENTRIES = 1024;
/** fingerprint.json is a few hundred bytes; a bigger one is not read. */
export const MAX_FINGERPRINT_BYTES = 64 * 1024;

export interface TemplateEntry {
  name: string;
  key: string;
  fingerprint: string;
  dir: string;
  /** The RAM file's size and what it holds on tmpfs (it is sparse); null when missing or not a regular file. */
  memory: { sizeBytes: number; allocatedBytes: number } | null;
  stateBytes: number | null;
  /** From fingerprint.json; null when unreadable. */
  madeAt: string | null;
  /** The template the current configuration and artefacts (kernel, initrd, image, QEMU) would use. */
  current: boolean;
  /** What is wrong with it (missing files, a fingerprint.json that does not match its name), if anything. */
  problem: string | null;
}

export interface TemplateList {
  stateDir: string;
  root: string;
  /** The key and fingerprint of the current configuration's template (whether templates are on or not). */
  wanted: { key: string; fingerprint: string };
  enabled: boolean;
  templates: TemplateEntry[];
  /** Build locks (`<key>.lock`): a build in progress, or one whose builder is gone (taken over by the next). */
  builds: { key: string; pid: number | null; alive: boolean }[];
  problems: string[];
}

export interface TemplateCliOptions {
  /** Whether a folder is on tmpfs (default: statfs). */
  onTmpfs?: (dir: string) => boolean;
  /** The VM driver a template is made with (default: QEMU). */
  hypervisor?: () => Hypervisor;
  logger?: Logger;
  /** The host's CPUs and memory, for hot-plug room (default: this host's). */
  host?: { cpus: number; memoryMiB: number };
}

/** The current configuration's template identity. */
export function wantedTemplate(config: HullConfig, o: TemplateCliOptions = {}): { key: string; fingerprint: string } {
  const { key, fingerprint } = templateIdentity(sandboxTemplateVm(config, o.host));
  return { key, fingerprint };
}

/** A small file read without following a symlink, or why not. */
function readSmall(file: string): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_FINGERPRINT_BYTES) throw new Error(`${st.size} bytes, more than ${MAX_FINGERPRINT_BYTES}`);
    const buf = Buffer.alloc(st.size);
    const n = fs.readSync(fd, buf, 0, st.size, 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

function regular(file: string): fs.Stats | undefined {
  try {
    const st = fs.lstatSync(file);
    return st.isFile() ? st : undefined;
  } catch {
    return undefined;
  }
}

function entryOf(root: string, name: string, key: string, fingerprint: string, wanted: string): TemplateEntry {
  const dir = path.join(root, name);
  const mem = regular(path.join(dir, MEMORY_FILE));
  const state = regular(path.join(dir, STATE_FILE));
  const problems: string[] = [];
  if (!mem) problems.push(`no ${MEMORY_FILE} file`);
  if (!state) problems.push(`no ${STATE_FILE} file`);
  let madeAt: string | null = null;
  try {
    const saved = JSON.parse(readSmall(path.join(dir, FINGERPRINT_FILE))) as Record<string, unknown>;
    if (saved === null || typeof saved !== 'object') throw new Error('not an object');
    if (saved.fingerprint !== fingerprint || saved.key !== key)
      problems.push(`${FINGERPRINT_FILE} names another template`);
    if (typeof saved.madeAt === 'string' && !Number.isNaN(Date.parse(saved.madeAt)))
      madeAt = new Date(saved.madeAt).toISOString();
  } catch (err) {
    problems.push(`${FINGERPRINT_FILE}: ${(err as Error).message}`);
  }
  return {
    name,
    key,
    fingerprint,
    dir,
    memory: mem ? { sizeBytes: mem.size, allocatedBytes: mem.blocks * 512 } : null,
    stateBytes: state ? state.size : null,
    madeAt,
    current: name === wanted && problems.length === 0,
    problem: problems.length ? problems.join('; ') : null,
  };
}

/** The templates below `stateDir`, read as untrusted input. */
export function listTemplates(config: HullConfig, o: TemplateCliOptions = {}): TemplateList {
  const stateDir = config.runtime.stateDir;
  const root = templatesRoot(stateDir);
  const wanted = wantedTemplate(config, o);
  const list: TemplateList = {
    stateDir,
    root,
    wanted,
    enabled: config.hypervisor.enableTemplate,
    templates: [],
    builds: [],
    problems: [],
  };
  let names: string[];
  try {
    const st = fs.lstatSync(root);
    if (!st.isDirectory()) {
      list.problems.push(`${root}: ${st.isSymbolicLink() ? 'a symlink, not followed' : 'not a folder'}`);
      return list;
    }
    names = fs.readdirSync(root).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') list.problems.push(`${root}: ${(err as Error).message}`);
    return list;
  }
  if (names.length > MAX_TEMPLATE_ENTRIES) {
    list.problems.push(`${root}: ${names.length} entries; only the first ${MAX_TEMPLATE_ENTRIES} are looked at`);
    names = names.slice(0, MAX_TEMPLATE_ENTRIES);
  }
  for (const name of names) {
    const full = path.join(root, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(full);
    } catch {
      continue; // gone meanwhile
    }
    if (st.isSymbolicLink()) {
      list.problems.push(`${full}: a symlink, not followed`);
      continue;
    }
    const m = TEMPLATE_NAME.exec(name);
    const lockKey = name.endsWith('.lock') ? name.slice(0, -'.lock'.length) : undefined;
    if (st.isDirectory() && m) {
      list.templates.push(entryOf(root, name, m[1]!, m[2]!, `${wanted.key}-${wanted.fingerprint}`));
    } else if (st.isDirectory() && lockKey !== undefined && TEMPLATE_KEY.test(lockKey)) {
      let owner: { pid: number; startTime: string } | undefined;
      try {
        const [pid, startTime] = readSmall(path.join(full, 'owner')).trim().split(' ');
        if (/^[1-9][0-9]{0,9}$/.test(pid ?? '')) owner = { pid: Number(pid), startTime: startTime ?? '' };
      } catch {
        // being written, or not there
      }
      list.builds.push({
        key: lockKey,
        pid: owner?.pid ?? null,
        alive: owner ? processStartTime(owner.pid) === owner.startTime : Date.now() - st.mtimeMs < 60_000,
      });
    } else if (st.isDirectory() && name.endsWith('.new') && TEMPLATE_NAME.test(name.slice(0, -4))) {
      list.problems.push(`${full}: a build's leftover (hull template remove removes it)`);
    } else {
      list.problems.push(`${full}: not a template`);
    }
  }
  return list;
}

const mib = (b: number): string => `${(b / (1024 * 1024)).toFixed(0)} MiB`;

/** The text table of `hull template list`. */
export function formatTemplates(list: TemplateList): string {
  const rows = [['KEY', 'FINGERPRINT', 'RAM (ON DISK / SIZE)', 'MADE', 'CURRENT']];
  for (const t of list.templates)
    rows.push([
      t.key,
      t.fingerprint,
      t.memory ? `${mib(t.memory.allocatedBytes)} / ${mib(t.memory.sizeBytes)}` : '-',
      t.madeAt ?? '-',
      t.problem ? `broken: ${t.problem}` : t.current ? 'yes' : 'no (stale)',
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
  if (list.templates.length === 0) lines.push(`(no template in ${list.root})`);
  for (const b of list.builds)
    lines.push(
      b.alive
        ? `building: ${b.key} (pid ${b.pid ?? '?'})`
        : `a build of ${b.key} whose builder is gone (the next build takes its lock over)`,
    );
  lines.push(
    `current configuration: ${list.wanted.key}-${list.wanted.fingerprint}` +
      (list.enabled ? '' : ' (templates are off: [hypervisor] enable_template = false)'),
  );
  for (const p of list.problems) lines.push(`warning: ${p}`);
  return lines.join('\n');
}

/** The nearest folder of `dir` that exists (state_dir may not exist yet). */
function existing(dir: string): string {
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

export type MakeResult =
  | { ok: true; made: boolean; dir: string; key: string; fingerprint: string; ms: number }
  | { ok: false; reason: string };

/** `hull template make`: the template of the configuration's default sandbox, made unless up to date. */
export async function makeTemplate(
  config: HullConfig,
  source: string,
  o: TemplateCliOptions = {},
): Promise<MakeResult> {
  if (!config.hypervisor.enableTemplate)
    return {
      ok: false,
      reason: `VM templates are off in ${source}: set [hypervisor] enable_template = true (sandboxes would not use the template)`,
    };
  const root = templatesRoot(config.runtime.stateDir);
  if (!(o.onTmpfs ?? isTmpfs)(existing(root)))
    return {
      ok: false,
      reason: `state_dir ${config.runtime.stateDir} is not on tmpfs: a template keeps guest RAM in a file there; put state_dir on tmpfs (/run is, on most hosts)`,
    };
  const vm = sandboxTemplateVm(config, o.host);
  const { key, fingerprint } = templateIdentity(vm);
  const templates = new VmTemplates({
    root,
    hypervisor:
      o.hypervisor ??
      ((): Hypervisor => {
        throw new Error('no hypervisor');
      }),
    bootTimeoutMs: config.agent.bootTimeoutMs,
    logger: o.logger ?? NOOP_LOGGER,
    ...(o.onTmpfs ? { onTmpfs: o.onTmpfs } : {}),
  });
  const t0 = performance.now();
  const found = templates.find(vm);
  if (found) return { ok: true, made: false, dir: found.dir, key, fingerprint, ms: performance.now() - t0 };
  const made = await templates.make(vm);
  if (!made)
    return {
      ok: false,
      reason: `the template ${key} is being made by another process (a sandbox's shim or hull template make): try again once it is done`,
    };
  return { ok: true, made: true, dir: made.dir, key, fingerprint, ms: performance.now() - t0 };
}

export interface RemoveResult {
  removed: string[];
  /** Keys whose build lock is held: nothing of them was removed. */
  busy: string[];
}

/** What `hull template remove` removes: 'stale' (every template but the current configuration's), 'all', or a key. */
export type RemoveWhich = 'stale' | 'all' | { key: string };

export function removeTemplates(config: HullConfig, which: RemoveWhich, o: TemplateCliOptions = {}): RemoveResult {
  const list = listTemplates(config, o);
  const templates = new VmTemplates({
    root: list.root,
    hypervisor: (): Hypervisor => {
      throw new Error('no hypervisor');
    },
    bootTimeoutMs: config.agent.bootTimeoutMs,
    logger: o.logger ?? NOOP_LOGGER,
  });
  const keys = new Set<string>();
  if (which === 'stale' || which === 'all') {
    for (const t of list.templates) keys.add(t.key);
    for (const p of list.problems) {
      const m = /([0-9a-f]{16})-[0-9a-f]{16}\.new: /.exec(p);
      if (m) keys.add(m[1]!);
    }
  } else keys.add(which.key);
  const out: RemoveResult = { removed: [], busy: [] };
  for (const key of [...keys].sort()) {
    const keep = which === 'stale' && key === list.wanted.key ? list.wanted.fingerprint : undefined;
    const removed = templates.remove(key, keep);
    if (removed === undefined) out.busy.push(key);
    else out.removed.push(...removed);
  }
  return out;
}
