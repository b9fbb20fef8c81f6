/**
 * `hull list`: the sandboxes on this host, from the crash-recovery records below `state_dir`
 * (`<state_dir>/<namespace>/<sandbox>/state.json`, core/store.ts). A record is untrusted input: it is read by
 * core's Store.load (a regular file, not a symlink, at most 1 MiB, every field checked, every path inside its own
 * folder), and the folders leading to it are looked at with lstat and never followed when they are symlinks, so
 * nothing outside state_dir is read. A pid counts as alive only while its start time (/proc/<pid>/stat field 22)
 * is the one recorded, as recovery decides it (a reused pid is not the shim or QEMU).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Store, type SandboxRecord } from '../core/store';
import { templatesRoot } from '../core/template';
import { DEBUG_SOCKET } from '../protos/debug-socket';
import { processStartTime } from '../hypervisor/process';
import { isIdentifier } from '../protos/identifiers';

/** Folders looked at, at most (namespaces and sandboxes together): state_dir is not a place for thousands. */
export const MAX_ENTRIES = 4096;

export interface ProcessView {
  pid: number;
  alive: boolean;
}

export interface SandboxEntry {
  namespace: string;
  id: string;
  /** The sandbox's folder (its record, VM sockets, debug.sock). */
  dir: string;
  shim: ProcessView;
  qemu: ProcessView | null;
  /** What the record says of the VM once it booted (null before, or from a shim that does not write it). */
  accel: string | null;
  vcpus: number | null;
  memoryMiB: number | null;
  containers: string[];
  /** Created with the debug console, and its socket is there. */
  debugConsole: boolean;
}

export interface SandboxList {
  stateDir: string;
  sandboxes: SandboxEntry[];
  /** Records that could not be read, or folders that are not what hull makes: `path: reason`. */
  problems: string[];
}

export interface ListOptions {
  /** A pid's start time (default: /proc/<pid>/stat field 22); tests pass a table. */
  startTime?: (pid: number) => string | undefined;
}

/** A folder's entries that are plain folders with an identifier's name (never symlinks). */
function folders(dir: string, budget: { left: number }, problems: string[], skip?: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`${dir}: ${(err as Error).message}`);
    return [];
  }
  const out: string[] = [];
  for (const name of names) {
    if (budget.left <= 0) {
      problems.push(`${dir}: more than ${MAX_ENTRIES} folders below state_dir; the rest is not listed`);
      break;
    }
    budget.left--;
    if (name === skip) continue;
    const full = path.join(dir, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(full);
    } catch {
      continue; // gone meanwhile
    }
    if (!st.isDirectory()) {
      if (st.isSymbolicLink()) problems.push(`${full}: a symlink, not followed`);
      continue;
    }
    if (!isIdentifier(name)) {
      problems.push(`${full}: not a namespace or sandbox id`);
      continue;
    }
    out.push(name);
  }
  return out;
}

function view(
  pid: number | undefined,
  startTime: string | undefined,
  now: (pid: number) => string | undefined,
): ProcessView | null {
  if (pid === undefined) return null;
  const current = now(pid);
  return { pid, alive: current !== undefined && (startTime === undefined || current === startTime) };
}

/** One sandbox's entry from its record. */
export function entryOf(record: SandboxRecord, dir: string, o: ListOptions = {}): SandboxEntry {
  const now = o.startTime ?? processStartTime;
  const qemuHelper = record.helpers?.find((h) => h.name === 'qemu');
  const qemuPid = qemuHelper?.pid ?? record.qemuPid;
  const shim = view(record.shimPid, record.shimStartTime, now)!;
  let socket = false;
  try {
    socket = fs.lstatSync(path.join(dir, DEBUG_SOCKET)).isSocket();
  } catch {
    // none
  }
  return {
    namespace: record.namespace,
    id: record.sandboxId,
    dir,
    shim,
    qemu: view(qemuPid, qemuHelper?.startTime, now),
    accel: record.vm?.accel ?? null,
    vcpus: record.vm?.vcpus ?? null,
    memoryMiB: record.vm?.memoryMiB ?? null,
    containers: Object.keys(record.containers).sort(),
    debugConsole: record.debugConsole === true && socket,
  };
}

/** Every sandbox below stateDir, by namespace then id. */
export function listSandboxes(stateDir: string, o: ListOptions = {}): SandboxList {
  const problems: string[] = [];
  const sandboxes: SandboxEntry[] = [];
  const budget = { left: MAX_ENTRIES };
  // VM templates (core/template.ts) live beside the namespaces: `hull template list` shows them.
  const templates = path.basename(templatesRoot(stateDir));
  const namespaces = folders(stateDir, budget, problems, templates);
  for (const ns of namespaces) {
    for (const id of folders(path.join(stateDir, ns), budget, problems)) {
      const dir = path.join(stateDir, ns, id);
      const file = path.join(dir, 'state.json');
      let record: SandboxRecord | undefined;
      try {
        record = Store.load(file, stateDir);
      } catch (err) {
        problems.push(`${file}: ${(err as Error).message}`);
        continue;
      }
      if (!record) continue; // a folder without a record: being made or removed
      if (record.namespace !== ns || record.sandboxId !== id) {
        problems.push(`${file}: names sandbox ${record.namespace}/${record.sandboxId}`);
        continue;
      }
      sandboxes.push(entryOf(record, dir, o));
    }
  }
  return { stateDir, sandboxes, problems };
}

const pidText = (p: ProcessView | null): string => (p ? `${p.pid}${p.alive ? '' : ' (dead)'}` : '-');

/** The text table of `hull list`. */
export function formatList(list: SandboxList): string {
  const rows = [['SANDBOX', 'NAMESPACE', 'SHIM', 'QEMU', 'ACCEL', 'VCPUS', 'MEMORY', 'CONSOLE', 'CONTAINERS']];
  for (const s of list.sandboxes)
    rows.push([
      s.id,
      s.namespace,
      pidText(s.shim),
      pidText(s.qemu),
      s.accel ?? '-',
      s.vcpus === null ? '-' : String(s.vcpus),
      s.memoryMiB === null ? '-' : `${s.memoryMiB} MiB`,
      s.debugConsole ? 'on' : 'off',
      s.containers.length ? s.containers.join(',') : '-',
    ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
  if (list.sandboxes.length === 0) lines.push(`(no sandbox in ${list.stateDir})`);
  for (const p of list.problems) lines.push(`warning: ${p}`);
  return lines.join('\n');
}
