/**
 * What a dead shim leaves for the `delete` subcommand: one JSON record per sandbox, written atomically (temporary
 * file, fsync, rename) when something that would outlive a crash appears or goes (the VM and virtiofsd, a
 * container's share). Nothing reads it while the daemon lives: handlers use the sandbox in memory.
 *
 * Each container's bundle gets a pointer file (BUNDLE_POINTER) naming the record, because `delete` is given only a
 * container id and its bundle, and the record's place depends on configuration that `delete` never sees.
 */
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, errorMessage } from '../errors';
import type { FsShare } from '../fs-share';
import { detachEndpoints, removeLocalhostRedirects } from '../hypervisor/network';
import type { Logger } from '../log';
import { HostCgroup, checkRecordedCgroupDirs } from './host-cgroup';

export const BUNDLE_POINTER = 'hull-sandbox.json';
const RECORD_VERSION = 1;
const MAX_RECORD_BYTES = 1 << 20;

export interface SandboxRecord {
  version: number;
  namespace: string;
  sandboxId: string;
  /** The daemon's pid, to tell a live shim from a dead one. */
  shimPid: number;
  /** The hypervisor's state folder (sockets, pid files): its path is in QEMU's and virtiofsd's argv. */
  vmStateDir: string;
  qemuPid?: number;
  virtiofsdPid?: number;
  /** VirtioFsShare's root and id. */
  shareRoot: string;
  shareId: string;
  containers: Record<string, { bundle: string }>;
  /** A pod's network namespace and the taps hull put in it (removed after QEMU). */
  network?: { netnsPath: string; taps: string[] };
  /** The sandbox's cgroup folders on the host, one per hierarchy (removed after QEMU and virtiofsd). */
  cgroup?: string[];
}

export class Store {
  constructor(readonly file: string) {}

  /** Atomic replace; the folder is created if needed. */
  save(record: SandboxRecord): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(record));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }

  remove(): void {
    fs.rmSync(this.file, { force: true });
    fs.rmSync(`${this.file}.tmp`, { force: true });
  }

  /** The record, or undefined if there is none. A malformed record is an error (never guessed at). */
  static load(file: string): SandboxRecord | undefined {
    let text: string;
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile() || st.size > MAX_RECORD_BYTES) throw new InvalidArgumentError(`${file} is not a regular file of at most ${MAX_RECORD_BYTES} bytes`);
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const r = JSON.parse(text) as SandboxRecord;
    const abs = (p: unknown): boolean => typeof p === 'string' && path.isAbsolute(p);
    const network = r.network === undefined || (abs(r.network.netnsPath) && Array.isArray(r.network.taps) && r.network.taps.every((t) => typeof t === 'string'));
    if (r.version !== RECORD_VERSION || !abs(r.vmStateDir) || !abs(r.shareRoot) || typeof r.sandboxId !== 'string' || typeof r.containers !== 'object' || !network) {
      throw new InvalidArgumentError(`${file} is not a hull sandbox record of version ${RECORD_VERSION}`);
    }
    const badCgroup = r.cgroup === undefined ? undefined : checkRecordedCgroupDirs(r.cgroup);
    if (badCgroup) throw new InvalidArgumentError(`${file}: ${badCgroup}`);
    return r;
  }
}

/** The bundle's pointer to its sandbox record. */
export function writeBundlePointer(bundle: string, recordFile: string): void {
  const p = path.join(bundle, BUNDLE_POINTER);
  const tmp = `${p}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, JSON.stringify({ record: recordFile }));
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, p);
}

export function readBundlePointer(bundle: string): string | undefined {
  try {
    const fd = fs.openSync(path.join(bundle, BUNDLE_POINTER), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let text: string;
    try {
      text = fs.readFileSync(fd, 'utf8').slice(0, 64 * 1024);
    } finally {
      fs.closeSync(fd);
    }
    const record = (JSON.parse(text) as { record?: unknown }).record;
    return typeof record === 'string' && path.isAbsolute(record) ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive and its command line mentions `marker` (so a recycled pid is never killed). */
export function processMatches(pid: number | undefined, marker: string): boolean {
  if (!pid || !Number.isInteger(pid) || pid <= 1) return false;
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').some((arg) => arg.includes(marker));
  } catch {
    return false;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function killAndWait(pid: number, ms: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  // Not our child (the dead shim's), so there is no exit to wait on: poll until the pid is gone or a zombie.
  const until = Date.now() + ms;
  while (Date.now() < until) {
    let state: string;
    try {
      state = fs.readFileSync(`/proc/${pid}/stat`, 'latin1').replace(/^.*\) /, '')[0] ?? '';
    } catch {
      return;
    }
    if (state === 'Z' || state === 'X') return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** rm -r of a folder, refused while anything is mounted below it (rm would reach into the mount). */
export function removeUnmounted(dir: string): void {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((mp) => mp === dir || mp.startsWith(prefix));
  if (mounted.length > 0) throw new InvalidArgumentError(`not removing ${dir}: ${mounted.length} mount(s) below it, e.g. ${mounted[0]}`);
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Cleans up after a dead daemon: the whole sandbox (VM, virtiofsd, every share mount, its folders) when
 * `containerId` is the sandbox or undefined, else only that container's share. Best effort: every step runs, and
 * the failures come back as messages.
 */
export async function recoverFromRecord(
  record: SandboxRecord,
  recordFile: string,
  containerId: string | undefined,
  share: FsShare,
  logger: Logger,
): Promise<string[]> {
  const problems: string[] = [];
  const step = async (what: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${errorMessage(err)}`);
      logger.warn({ error: errorMessage(err) }, `recovery: ${what}`);
    }
  };
  if (containerId !== undefined && containerId !== record.sandboxId) {
    await step(`unshare container ${containerId}`, () => share.unshare(containerId));
    await step('update the record', () => {
      const next = { ...record, containers: { ...record.containers } };
      delete next.containers[containerId];
      new Store(recordFile).save(next);
    });
    return problems;
  }
  for (const [what, pid] of [['QEMU', record.qemuPid], ['virtiofsd', record.virtiofsdPid]] as const) {
    if (processMatches(pid, record.vmStateDir)) await step(`stop ${what} (pid ${pid})`, () => killAndWait(pid!, 3000));
  }
  if (record.network) {
    const { netnsPath, taps } = record.network;
    await step(`remove the taps ${taps.join(', ')} from ${netnsPath}`, () => detachEndpoints(netnsPath, taps));
    await step(`remove the port forwarding rule from ${netnsPath}`, () => removeLocalhostRedirects(netnsPath));
  }
  const cgroup = record.cgroup;
  if (cgroup) await step('remove the sandbox\'s cgroup', () => HostCgroup.recorded(cgroup).remove());
  await step('unmount the share', () => share.cleanup());
  await step('remove the VM state folder', () => removeUnmounted(record.vmStateDir));
  // The record goes only once nothing is left that it points to: a later `delete` can then try again.
  if (problems.length > 0) return problems;
  await step('remove the record', () => new Store(recordFile).remove());
  await step('remove the sandbox folder', () => removeUnmounted(path.dirname(recordFile)));
  return problems;
}
