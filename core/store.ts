/**
 * What a dead shim leaves for the `delete` subcommand: one JSON record per sandbox, written atomically (temporary
 * file, fsync, rename) when something that would outlive a crash appears or goes (the VM and virtiofsd, a
 * container's share). Nothing reads it while the daemon lives: handlers use the sandbox in memory.
 *
 * Each container's bundle gets a pointer file (BUNDLE_POINTER) naming the record and the state folder it lives in,
 * because `delete` is given only a container id and its bundle, and the record's place depends on configuration
 * that `delete` never sees (CRI's ConfigPath is passed to `start` only).
 *
 * Every helper process (QEMU, virtiofsd) is in the record from the moment it is spawned, with its start time
 * (/proc/<pid>/stat field 22): recovery kills a pid only while its start time and its argv (which names the VM's
 * state folder) still match, so a reused pid is never killed. Every path in a record must lie in the sandbox's own
 * folder `<state_dir>/<namespace>/<sandbox>/`, or the record is refused. Recoveries of one sandbox (containerd runs
 * `delete` once per container of a crashed pod, possibly at once) run one at a time under RecordLock.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, errorMessage } from '../errors';
import type { FsShare } from '../fs-share';
import { detachEndpoints, removeLocalhostRedirects } from '../hypervisor/network';
import { childPids, processStartTime } from '../hypervisor/process';
import type { SpawnedHelper } from '../hypervisor/types';
import type { Logger } from '../log';
import { HostCgroup, checkRecordedCgroupDirs, checkUnitName, type SystemdOptions } from './host-cgroup';

export const BUNDLE_POINTER = 'hull-sandbox.json';
/**
 * Recovery's bound on systemd's stop job (the helpers are dead by then: the scope is empty, systemd has usually
 * dropped it already). Within containerd's 5 s for the whole `delete`; a recovery cut short keeps the record.
 */
const RECOVERY_SYSTEMD_TIMEOUT_MS = 2_000;
const RECORD_VERSION = 1;
const MAX_RECORD_BYTES = 1 << 20;

export interface SandboxRecord {
  version: number;
  namespace: string;
  sandboxId: string;
  /** The daemon's pid, to tell a live shim from a dead one. */
  shimPid: number;
  /** The daemon's start time (/proc/<pid>/stat field 22): a reused shimPid is not the daemon. */
  shimStartTime?: string;
  /** The hypervisor's state folder (sockets): its path is in QEMU's and virtiofsd's argv. */
  vmStateDir: string;
  /** Reported in `delete`'s answer; recovery kills by `helpers`. */
  qemuPid?: number;
  virtiofsdPid?: number;
  /** Every helper process, recorded the moment it was spawned (one entry per name: the latest). */
  helpers?: SpawnedHelper[];
  /** VirtioFsShare's root and id. */
  shareRoot: string;
  shareId: string;
  containers: Record<string, { bundle: string }>;
  /** A pod's network namespace and the taps hull put in it (removed after QEMU). */
  network?: { netnsPath: string; taps: string[] };
  /** The sandbox's cgroup folders on the host, one per hierarchy (removed after QEMU and virtiofsd). */
  cgroup?: string[];
  /** The systemd driver's scope unit holding that cgroup (stopped by recovery before the folders go). */
  systemdUnit?: string;
  /** What `hull list` shows of the VM once it booted: its accelerator and its size now (hot-plug grows it). */
  vm?: { accel: string; vcpus: number; memoryMiB: number };
  /** The sandbox was created with the debug console enabled (`hull exec`; shim/debug-console.ts). */
  debugConsole?: boolean;
}

export class Store {
  constructor(readonly file: string) {}

  /** Atomic replace; the folder is created if needed. */
  save(record: SandboxRecord): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
      0o600,
    );
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

  /**
   * The record, or undefined if there is none. A malformed record is an error (never guessed at), and so is one
   * whose file is not `<stateDir>/<namespace>/<sandboxId>/state.json` or that names a path outside that folder.
   */
  static load(file: string, stateDir?: string): SandboxRecord | undefined {
    let text: string;
    const notARecordFile = (): InvalidArgumentError =>
      new InvalidArgumentError(`${file} is not a regular file of at most ${MAX_RECORD_BYTES} bytes`);
    let fd: number;
    try {
      // O_NOFOLLOW and fstat on what was opened: a symlink swapped in after a check is never read through.
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP') throw notARecordFile();
      throw err;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size > MAX_RECORD_BYTES) throw notARecordFile();
      const buf = Buffer.alloc(MAX_RECORD_BYTES + 1);
      let n = 0;
      for (let got = -1; got !== 0 && n < buf.length; n += got) got = fs.readSync(fd, buf, n, buf.length - n, null);
      if (n > MAX_RECORD_BYTES) throw notARecordFile();
      text = buf.toString('utf8', 0, n);
    } finally {
      fs.closeSync(fd);
    }
    const r = JSON.parse(text) as SandboxRecord;
    const abs = (p: unknown): boolean => typeof p === 'string' && path.isAbsolute(p);
    const pid = (p: unknown): boolean => p === undefined || (Number.isSafeInteger(p) && (p as number) > 1);
    const network =
      r.network === undefined ||
      (abs(r.network.netnsPath) &&
        Array.isArray(r.network.taps) &&
        r.network.taps.every((t) => typeof t === 'string' && TAP.test(t)));
    const helpers =
      r.helpers === undefined ||
      (Array.isArray(r.helpers) &&
        r.helpers.length <= MAX_HELPERS &&
        r.helpers.every(
          (h) =>
            typeof h?.name === 'string' &&
            pid(h.pid) &&
            typeof h.startTime === 'string' &&
            /^\d{1,20}$/.test(h.startTime),
        ));
    const containers = typeof r.containers === 'object' && r.containers !== null && !Array.isArray(r.containers);
    const vm =
      r.vm === undefined ||
      (typeof r.vm === 'object' &&
        r.vm !== null &&
        typeof r.vm.accel === 'string' &&
        /^[a-z]{1,8}$/.test(r.vm.accel) &&
        Number.isSafeInteger(r.vm.vcpus) &&
        r.vm.vcpus > 0 &&
        Number.isSafeInteger(r.vm.memoryMiB) &&
        r.vm.memoryMiB > 0);
    if (
      r.version !== RECORD_VERSION ||
      !abs(r.vmStateDir) ||
      !abs(r.shareRoot) ||
      !isId(r.sandboxId) ||
      !isId(r.namespace) ||
      !containers ||
      !vm ||
      (r.debugConsole !== undefined && typeof r.debugConsole !== 'boolean') ||
      !network ||
      !helpers ||
      !pid(r.qemuPid) ||
      !pid(r.virtiofsdPid) ||
      !pid(r.shimPid)
    ) {
      throw new InvalidArgumentError(`${file} is not a hull sandbox record of version ${RECORD_VERSION}`);
    }
    const badCgroup = r.cgroup === undefined ? undefined : checkRecordedCgroupDirs(r.cgroup);
    if (badCgroup) throw new InvalidArgumentError(`${file}: ${badCgroup}`);
    const badUnit =
      r.systemdUnit === undefined
        ? undefined
        : r.cgroup === undefined
          ? 'systemdUnit without cgroup'
          : (checkUnitName(r.systemdUnit) ??
            (r.systemdUnit.endsWith('.scope') ? undefined : 'systemdUnit is not a scope'));
    if (badUnit) throw new InvalidArgumentError(`${file}: ${badUnit}`);
    // Confinement: recovery removes these folders, so a record may only name its own sandbox's folder.
    const dir = path.dirname(file);
    const expected = stateDir === undefined ? undefined : path.join(stateDir, r.namespace, r.sandboxId);
    if (
      path.basename(file) !== 'state.json' ||
      path.normalize(file) !== file ||
      (expected !== undefined ? dir !== expected : !dir.endsWith(`/${r.namespace}/${r.sandboxId}`))
    ) {
      throw new InvalidArgumentError(
        `${file} is not where the record of sandbox ${r.namespace}/${r.sandboxId} belongs${expected ? ` (${expected}/state.json)` : ''}`,
      );
    }
    for (const [what, p] of [
      ['vmStateDir', r.vmStateDir],
      ['shareRoot', r.shareRoot],
    ] as const) {
      if (!within(dir, p))
        throw new InvalidArgumentError(`${file}: ${what} ${JSON.stringify(p)} is outside the sandbox folder ${dir}`);
    }
    for (const id of Object.keys(r.containers))
      if (!isId(id))
        throw new InvalidArgumentError(`${file}: container id ${JSON.stringify(id).slice(0, 90)} is not valid`);
    return r;
  }
}

/** containerd's identifier rule (as validateId), without importing sandbox.ts into `delete`. */
const ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const TAP = /^[A-Za-z0-9_.-]{1,15}$/;
const MAX_HELPERS = 16;

function isId(s: unknown): s is string {
  return typeof s === 'string' && s.length > 0 && s.length <= 76 && ID.test(s);
}

/** `p` is `dir` itself or below it, written without `..` or doubled slashes. */
function within(dir: string, p: string): boolean {
  return typeof p === 'string' && path.normalize(p) === p && (p === dir || p.startsWith(`${dir}/`));
}

/**
 * One recovery of a sandbox at a time: an abstract unix socket named after the record's path, bound while the
 * lock is held. The kernel releases it when its holder exits however it exits (SIGKILL included), so there is no
 * stale lock to detect and break, and nothing on disk to clean up. Abstract names are per network namespace:
 * containerd runs every `delete` in its own.
 */
export class RecordLock {
  private constructor(private readonly server: net.Server) {}

  static lockName(recordFile: string): string {
    return `\0hull-record-lock-${crypto.createHash('sha256').update(recordFile).digest('hex').slice(0, 32)}`;
  }

  /**
   * Waits up to `timeoutMs` for the lock (DeadlineExceededError after that). Abstract names are open to every
   * user: a name held by no process of our own user is squatted, and the lock is refused at once
   * (FailedPreconditionError) rather than waited for.
   */
  static async acquire(recordFile: string, timeoutMs: number): Promise<RecordLock> {
    const name = RecordLock.lockName(recordFile);
    const until = Date.now() + timeoutMs;
    let checked = false;
    for (;;) {
      const server = net.createServer();
      const bound = await new Promise<boolean>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          err.code === 'EADDRINUSE' ? resolve(false) : reject(err),
        );
        server.listen({ path: name, exclusive: true }, () => resolve(true));
      });
      if (bound) {
        server.unref();
        return new RecordLock(server);
      }
      server.close();
      if (!checked) {
        checked = true;
        const owners = abstractSocketOwners(name);
        if (owners !== undefined && owners.length > 0 && !owners.includes(process.getuid?.() ?? 0)) {
          throw new FailedPreconditionError(
            `the lock of ${recordFile} is held by another user (uid ${owners.join(', ')}), not by a recovery`,
          );
        }
      }
      if (Date.now() >= until)
        throw new DeadlineExceededError(`another recovery of ${recordFile} held its lock for ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  release(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * The uids of the processes holding a descriptor of the abstract unix socket `name` (from /proc/net/unix and the
 * processes' fds); undefined when that cannot be read.
 */
function abstractSocketOwners(name: string): number[] | undefined {
  let table: string;
  try {
    table = fs.readFileSync('/proc/net/unix', 'latin1');
  } catch {
    return undefined;
  }
  // The kernel shows an abstract name with '@' for each NUL, the leading one and Node's padding to sun_path's size.
  const shown = `@${name.slice(1)}`;
  const ours = (p: string | undefined): boolean =>
    p !== undefined && p.startsWith(shown) && /^@*$/.test(p.slice(shown.length));
  const inodes = new Set(
    table
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((w) => ours(w[7]))
      .map((w) => `socket:[${w[6]}]`),
  );
  if (inodes.size === 0) return [];
  const uids = new Set<number>();
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (!inodes.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))) continue;
        uids.add(fs.statSync(`/proc/${pid}`).uid);
        break;
      } catch {
        // gone
      }
    }
  }
  return [...uids];
}

/**
 * How long a `delete` waits for another recovery of the same sandbox. containerd kills a `delete` after 5 s
 * (io.containerd.timeout.shim.cleanup): a waiter that gives up leaves the work to the holder, which is doing it.
 */
export const RECORD_LOCK_TIMEOUT_MS = 4_000;

/** The bundle's pointer to its sandbox record, and the state folder the record must be in. */
export function writeBundlePointer(bundle: string, recordFile: string, stateDir: string): void {
  const p = path.join(bundle, BUNDLE_POINTER);
  const tmp = `${p}.tmp`;
  const fd = fs.openSync(
    tmp,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
    0o600,
  );
  try {
    fs.writeSync(fd, JSON.stringify({ record: recordFile, stateDir }));
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, p);
}

export function readBundlePointer(bundle: string): { record: string; stateDir: string } | undefined {
  try {
    const fd = fs.openSync(path.join(bundle, BUNDLE_POINTER), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let text: string;
    try {
      text = fs.readFileSync(fd, 'utf8').slice(0, 64 * 1024);
    } finally {
      fs.closeSync(fd);
    }
    const { record, stateDir } = JSON.parse(text) as { record?: unknown; stateDir?: unknown };
    const abs = (p: unknown): p is string => typeof p === 'string' && path.isAbsolute(p) && path.normalize(p) === p;
    return abs(record) && abs(stateDir) ? { record, stateDir } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive and its command line mentions `marker` (so a recycled pid is never killed). */
export function processMatches(pid: number | undefined, marker: string): boolean {
  if (!pid || !Number.isInteger(pid) || pid <= 1) return false;
  try {
    return fs
      .readFileSync(`/proc/${pid}/cmdline`, 'latin1')
      .split('\0')
      .some((arg) => arg.includes(marker));
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

/** Whether the recorded helper still runs: same start time (so the same process) and its argv names `marker`. */
export function helperRuns(h: { pid: number; startTime?: string }, marker: string): boolean {
  if (h.startTime !== undefined && processStartTime(h.pid) !== h.startTime) return false;
  return processMatches(h.pid, marker);
}

/** How long recovery waits for a SIGKILLed helper to be gone (it is not our child: no exit to wait on). */
export const RECOVERY_KILL_WAIT_MS = 3_000;

/** SIGKILL `pid` (known to be the process meant, at `startTime`) and poll until it is gone or a zombie. */
async function killAndWait(pid: number, startTime: string | undefined, ms: number): Promise<void> {
  try {
    if (startTime !== undefined && processStartTime(pid) !== startTime) return;
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  const until = Date.now() + ms;
  for (;;) {
    let state: string;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      if (startTime !== undefined && processStartTime(pid) !== startTime) return; // gone, and the pid reused already
      state = stat.slice(stat.lastIndexOf(')') + 2)[0] ?? '';
    } catch {
      return;
    }
    if (state === 'Z' || state === 'X') return;
    if (Date.now() >= until) throw new DeadlineExceededError(`pid ${pid} still runs ${ms} ms after SIGKILL`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The helpers a record names: `helpers` (with start times), or for a record written before they existed, the
 * QEMU and virtiofsd pids (matched by argv only).
 */
function recordedHelpers(record: SandboxRecord): Array<{ name: string; pid: number; startTime?: string }> {
  if (record.helpers) return record.helpers;
  const out: Array<{ name: string; pid: number }> = [];
  if (record.qemuPid) out.push({ name: 'qemu', pid: record.qemuPid });
  if (record.virtiofsdPid) out.push({ name: 'virtiofsd', pid: record.virtiofsdPid });
  return out;
}

/**
 * Stops every helper of the record that still runs, and the processes they forked that name the VM's state folder
 * (virtiofsd's namespace-sandbox child), all at once; bounded by RECOVERY_KILL_WAIT_MS.
 */
async function stopHelpers(
  record: SandboxRecord,
  step: (what: string, fn: () => unknown) => Promise<void>,
): Promise<void> {
  const marker = record.vmStateDir;
  const targets: Array<{ what: string; pid: number; startTime: string | undefined }> = [];
  for (const h of recordedHelpers(record)) {
    if (!helperRuns(h, marker)) continue;
    // Read before the parent dies: a forked child is reparented (or dies by PR_SET_PDEATHSIG) once it does.
    for (const c of childPids(h.pid)) {
      const startTime = processStartTime(c);
      if (startTime !== undefined && processMatches(c, marker))
        targets.push({ what: `${h.name}'s child`, pid: c, startTime });
    }
    targets.push({ what: h.name, pid: h.pid, startTime: h.startTime ?? processStartTime(h.pid) });
  }
  await Promise.all(
    targets.map((t) =>
      step(`stop ${t.what} (pid ${t.pid})`, () => killAndWait(t.pid, t.startTime, RECOVERY_KILL_WAIT_MS)),
    ),
  );
}

/** rm -r of a folder, refused while anything is mounted below it (rm would reach into the mount). */
export function removeUnmounted(dir: string): void {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) =>
      (line.split(' ')[4] ?? '').replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))),
    )
    .filter((mp) => mp === dir || mp.startsWith(prefix));
  if (mounted.length > 0)
    throw new InvalidArgumentError(`not removing ${dir}: ${mounted.length} mount(s) below it, e.g. ${mounted[0]}`);
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
  /** The systemd driver's sockets (tests; default: the system bus, then systemd's private socket). */
  systemd?: SystemdOptions,
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
  await stopHelpers(record, step);
  if (record.network) {
    const { netnsPath, taps } = record.network;
    await step(`remove the taps ${taps.join(', ')} from ${netnsPath}`, () => detachEndpoints(netnsPath, taps));
    await step(`remove the port forwarding rule from ${netnsPath}`, () => removeLocalhostRedirects(netnsPath));
  }
  const cgroup = record.cgroup;
  if (cgroup) {
    const unit = record.systemdUnit;
    await step(
      unit ? `stop systemd's unit ${unit} and remove the sandbox's cgroup` : "remove the sandbox's cgroup",
      () => HostCgroup.recorded(cgroup, unit, { jobTimeoutMs: RECOVERY_SYSTEMD_TIMEOUT_MS, ...systemd }).remove(),
    );
  }
  await step('unmount the share', () => share.cleanup());
  await step('remove the VM state folder', () => removeUnmounted(record.vmStateDir));
  // The record goes only once nothing is left that it points to: a later `delete` can then try again.
  if (problems.length > 0) return problems;
  await step('remove the record', () => new Store(recordFile).remove());
  await step('remove the sandbox folder', () => removeUnmounted(path.dirname(recordFile)));
  return problems;
}

export interface LockedRecoveryOptions {
  recordFile: string;
  /** The state folder the record must be in (from the bundle pointer). */
  stateDir: string;
  namespace: string;
  /** The container `delete` was run for: the sandbox's own id recovers the whole sandbox. */
  containerId: string;
  share(record: SandboxRecord): FsShare;
  logger: Logger;
  /** Default RECORD_LOCK_TIMEOUT_MS. */
  lockTimeoutMs?: number;
}

/**
 * recoverFromRecord under the sandbox's RecordLock, on the record as it is once the lock is held (another
 * `delete` may have changed or removed it meanwhile: then there may be nothing left to do). Returns the problems.
 * A lock squatted by another user does not stop the recovery: it runs unlocked, and says so among the problems.
 */
export async function recoverLocked(o: LockedRecoveryOptions): Promise<string[]> {
  const notes: string[] = [];
  const lock = await RecordLock.acquire(o.recordFile, o.lockTimeoutMs ?? RECORD_LOCK_TIMEOUT_MS).catch(
    (err: unknown) => {
      if (!(err instanceof FailedPreconditionError)) throw err;
      notes.push(`${err.message}: recovering without the lock`);
      return undefined;
    },
  );
  try {
    const record = Store.load(o.recordFile, o.stateDir);
    if (!record || record.namespace !== o.namespace) return notes;
    const whole = record.sandboxId === o.containerId;
    if (!whole && record.containers[o.containerId] === undefined) return notes;
    return [...notes, ...(await recoverFromRecord(record, o.recordFile, o.containerId, o.share(record), o.logger))];
  } finally {
    await lock?.release();
  }
}

/** Whether the record's shim daemon still runs (same pid, same start time, its argv names the sandbox). */
export function shimRuns(record: SandboxRecord): boolean {
  return (
    processAlive(record.shimPid) &&
    helperRuns({ pid: record.shimPid, startTime: record.shimStartTime }, record.sandboxId)
  );
}
