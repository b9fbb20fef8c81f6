/**
 * The pod's cgroup on the host holds the VM (Kata runtime-rs's default, `sandbox_cgroup_only`): the sandbox
 * container's `linux.cgroupsPath` names a cgroup, hull makes it, and the shim daemon moves itself into it before it
 * spawns QEMU and virtiofsd, which inherit it (every thread: a pid written to `cgroup.procs` moves its whole thread
 * group). kubelet's pod limits, accounting and eviction then see the VM.
 *
 * - cgroupsPath forms (containerd's CRI plugin): cgroupfs `/kubepods/burstable/pod<uid>/<id>` (SystemdCgroup =
 *   false), systemd `slice:prefix:name` (SystemdCgroup = true). Both are parsed and checked here.
 * - The systemd driver (runc's libcontainer/cgroups/systemd way): the cgroup is a transient scope unit
 *   `<prefix>-<name>.scope` in the slice, made by systemd (StartTransientUnit over D-Bus, core/systemd.ts) with the
 *   daemon's pid in it and `Delegate=yes`; then, as runc's v1 driver does, the daemon is written into the scope's
 *   folder on every v1 hierarchy systemd does not own (cpuset, freezer, …; made if missing). Removed by StopUnit,
 *   then the folders hull made. systemd not reachable: FailedPrecondition naming the sockets tried, never a silent
 *   fall back to cgroupfs.
 * - cgroups v1 (one directory per mounted hierarchy: cpu, cpuacct, cpuset, memory, pids, …; a hybrid host's
 *   unified hierarchy too) and v2 (one directory; the controllers enabled down the path, as runc's fs2 does).
 * - Only the leaf (the sandbox's own cgroup) is removed, at teardown and by crash recovery; the folders above it
 *   belong to kubelet (or to whoever made them), as with runc.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../errors';
import type { SystemdSocket, UnitProperty } from './systemd';

/** systemd's client and its D-Bus code, loaded only for the systemd driver (the shim daemon's start stays lean). */
const withSystemd: typeof import('./systemd').withSystemd = (...args) =>
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: only the systemd driver needs it
  (require('./systemd') as typeof import('./systemd')).withSystemd(...args);

/** Where every cgroup hierarchy is mounted; recorded cgroup folders must lie below it. */
export const CGROUP_ROOT = '/sys/fs/cgroup';
const MAX_PATH = 4096;
const MAX_COMPONENT = 255;
/** cgroup v1's "no limit" is PAGE_COUNTER_MAX pages rounded (9223372036854771712); anything this large is none. */
const V1_UNLIMITED = 2 ** 62;
/**
 * How long `remove()` retries an rmdir that is EBUSY (the last processes of the VM still exiting). Short: recovery
 * has waited for them already, and containerd gives a whole `delete` 5 s; a recovery cut short keeps the record.
 */
const RMDIR_RETRY_MS = 1_000;

export type CgroupDriver = 'cgroupfs' | 'systemd';

/** A checked cgroupsPath: the cgroup's path below each hierarchy's root, and for systemd the unit that owns it. */
export interface ParsedCgroupsPath {
  driver: CgroupDriver;
  /** '/'-separated, absolute, normalised, never the root. */
  path: string;
  /** systemd: the slice the unit goes in and the unit's name (`<prefix>-<name>.scope`). */
  slice?: string;
  unit?: string;
}

/** One mounted hierarchy: v1 has one per controller set (`name=systemd` too), v2 has one. */
export interface CgroupHierarchy {
  mountPoint: string;
  /** v1: the controllers of this hierarchy; v2: empty (the controllers are in cgroup.controllers). */
  controllers: string[];
  version: 1 | 2;
}

export interface CgroupLayout {
  /** 2 only on a unified host (cgroup2 mounted at /sys/fs/cgroup); a hybrid host is 1. */
  version: 1 | 2;
  hierarchies: CgroupHierarchy[];
}

const UNIT_WORD = /^[A-Za-z0-9_.:@-]+$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** containerd's cgroupsPath, checked: an InvalidArgumentError names what is wrong with it. */
export function parseCgroupsPath(value: unknown): ParsedCgroupsPath {
  if (typeof value !== 'string' || value === '')
    throw new InvalidArgumentError('linux.cgroupsPath must be a non-empty string');
  const shown = JSON.stringify(value.slice(0, 120));
  if (value.length > MAX_PATH || CONTROL.test(value))
    throw new InvalidArgumentError(
      `linux.cgroupsPath ${shown} is longer than ${MAX_PATH} characters or has control characters`,
    );
  if (!value.startsWith('/') && value.includes(':')) return parseSystemdPath(value, shown);
  if (!value.startsWith('/')) {
    throw new InvalidArgumentError(
      `linux.cgroupsPath ${shown} is neither an absolute cgroupfs path (/kubepods/…/<id>) nor systemd's slice:prefix:name`,
    );
  }
  const parts = value.split('/').filter((p) => p !== '');
  if (parts.length === 0)
    throw new InvalidArgumentError(`linux.cgroupsPath ${shown} names the root cgroup, which hull never takes`);
  for (const p of parts) {
    if (p === '.' || p === '..')
      throw new InvalidArgumentError(
        `linux.cgroupsPath ${shown} has a "${p}" component: it must name a cgroup below the hierarchy's root`,
      );
    if (p.length > MAX_COMPONENT)
      throw new InvalidArgumentError(
        `linux.cgroupsPath ${shown} has a component longer than ${MAX_COMPONENT} characters`,
      );
  }
  return { driver: 'cgroupfs', path: `/${parts.join('/')}` };
}

/**
 * systemd's `slice:prefix:name` (runc's form): the unit `<prefix>-<name>.scope` (or `<name>` if it is a slice) in
 * `slice` (default system.slice), whose folder is the slice expanded (`a-b.slice` → `/a.slice/a-b.slice`).
 */
function parseSystemdPath(value: string, shown: string): ParsedCgroupsPath {
  const parts = value.split(':');
  if (parts.length !== 3)
    throw new InvalidArgumentError(
      `linux.cgroupsPath ${shown}: the systemd form is slice:prefix:name (3 fields, got ${parts.length})`,
    );
  const [sliceIn, prefix, name] = parts as [string, string, string];
  const slice = sliceIn === '' ? 'system.slice' : sliceIn;
  for (const [what, w] of [
    ['slice', slice],
    ['prefix', prefix],
    ['name', name],
  ] as const) {
    if (w !== '' && (!UNIT_WORD.test(w) || w.length > MAX_COMPONENT || w === '.' || w === '..')) {
      throw new InvalidArgumentError(
        `linux.cgroupsPath ${shown}: the ${what} ${JSON.stringify(w)} is not a systemd unit name`,
      );
    }
  }
  if (name === '')
    throw new InvalidArgumentError(`linux.cgroupsPath ${shown}: the systemd form needs a name (slice:prefix:name)`);
  const unit = name.endsWith('.slice') ? name : prefix === '' ? `${name}.scope` : `${prefix}-${name}.scope`;
  const sliceDir = expandSlice(slice, shown);
  const bad = checkUnitName(unit) ?? checkUnitName(slice);
  if (bad) throw new InvalidArgumentError(`linux.cgroupsPath ${shown}: ${bad}`);
  return { driver: 'systemd', path: `${sliceDir}/${unit}`, slice, unit };
}

/**
 * systemd's rule for a unit name (unit_name_is_valid, plain names only): at most 255 characters, a non-empty name of
 * [A-Za-z0-9:_.-] (no '\\' escapes, no '@' templates: hull never needs them) and a `.scope` or `.slice` suffix.
 * Returns why not, or undefined.
 */
export function checkUnitName(unit: unknown): string | undefined {
  const shown = JSON.stringify(String(unit).slice(0, 120));
  if (typeof unit !== 'string' || unit.length > MAX_COMPONENT) return `${shown} is not a systemd unit name`;
  const m = /^([A-Za-z0-9:_.-]+)\.(scope|slice)$/.exec(unit);
  if (!m || m[1]!.startsWith('.')) return `${shown} is not a systemd scope or slice unit name`;
  return undefined;
}

/** systemd's slice folder: `-.slice` is the root, `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`. */
export function expandSlice(slice: string, shown = JSON.stringify(slice)): string {
  if (!slice.endsWith('.slice') || slice.includes('/'))
    throw new InvalidArgumentError(
      `linux.cgroupsPath ${shown}: ${JSON.stringify(slice)} is not a slice name (<name>.slice)`,
    );
  const base = slice.slice(0, -'.slice'.length);
  if (base === '-') return '';
  if (base === '' || base.startsWith('-') || base.endsWith('-') || base.includes('--')) {
    throw new InvalidArgumentError(`linux.cgroupsPath ${shown}: ${JSON.stringify(slice)} is not a valid slice name`);
  }
  let prefix = '';
  let out = '';
  for (const word of base.split('-')) {
    prefix = prefix === '' ? word : `${prefix}-${word}`;
    out += `/${prefix}.slice`;
  }
  return out;
}

/**
 * The cgroup hierarchies of /proc/self/mountinfo's text: every `cgroup` mount (v1, one per controller set) and the
 * `cgroup2` one. Unified (v2) only when cgroup2 is mounted at `root` itself and no v1 hierarchy exists.
 */
export function parseCgroupMounts(mountinfo: string, root = CGROUP_ROOT): CgroupLayout {
  const v1: CgroupHierarchy[] = [];
  let v2: CgroupHierarchy | undefined;
  const seen = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 0 || fields.length < sep + 4) continue;
    const fstype = fields[sep + 1];
    const mountPoint = (fields[4] ?? '').replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    if (mountPoint !== root && !mountPoint.startsWith(`${root}/`)) continue;
    if (fstype === 'cgroup2') {
      v2 ??= { mountPoint, controllers: [], version: 2 };
      continue;
    }
    const controllers = (fields[sep + 3] ?? '')
      .split(',')
      .filter((o) => !MOUNT_OPTIONS.has(o) && !o.startsWith('release_agent='))
      .sort();
    const key = controllers.join(',');
    if (controllers.length === 0 || seen.has(key)) continue; // the same hierarchy mounted twice
    seen.add(key);
    v1.push({ mountPoint, controllers, version: 1 });
  }
  if (v1.length > 0) return { version: 1, hierarchies: v2 ? [...v1, v2] : v1 }; // hybrid: the unified one is joined too, as runc does
  if (v2 && v2.mountPoint === root) return { version: 2, hierarchies: [v2] };
  throw new FailedPreconditionError(`no cgroup hierarchy is mounted at ${root}`);
}

const MOUNT_OPTIONS = new Set([
  'rw',
  'ro',
  'relatime',
  'noatime',
  'nosuid',
  'nodev',
  'noexec',
  'clone_children',
  'noprefix',
  'xattr',
  'cpuset_v2_mode',
  'nsdelegate',
  'memory_recursiveprot',
  'memory_localevents',
  'favordynmods',
]);

let hostLayout: CgroupLayout | undefined;
/** This host's hierarchies (read once). */
export function hostCgroupLayout(): CgroupLayout {
  return (hostLayout ??= parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')));
}

export interface SystemdOptions {
  /**
   * Where systemd's Manager is reached, in order (default: HULL_SYSTEMD_SOCKETS if set, else the system bus, then
   * systemd's private socket).
   */
  sockets?: readonly SystemdSocket[];
  /** Bound on each start/stop job (default SYSTEMD_JOB_TIMEOUT_MS, runc's 30 s). */
  jobTimeoutMs?: number;
}

export interface HostCgroupOptions {
  layout?: CgroupLayout;
  /** The systemd driver's D-Bus sockets (tests: a private bus with a fake systemd). */
  systemd?: SystemdOptions;
  /**
   * rmdir of a cgroup folder. The kernel's removes a cgroup with its interface files; a fake cgroupfs (plain
   * folders, tests) needs a recursive removal instead.
   */
  removeDir?: (dir: string) => void;
}

/**
 * The sandbox's cgroup on the host, one folder per hierarchy: the one owner of its making (`create`), of moving
 * processes into it (`place`), of reading its memory limit, and of removing it (`remove`).
 */
export class HostCgroup {
  readonly dirs: readonly string[];

  private constructor(
    readonly parsed: ParsedCgroupsPath,
    private readonly layout: CgroupLayout,
    private readonly removeDir: (dir: string) => void,
    private readonly systemd: SystemdOptions,
  ) {
    this.dirs = layout.hierarchies.map((h) => path.join(h.mountPoint, parsed.path));
  }

  /** For a sandbox's cgroupsPath: checked (InvalidArgument), nothing made yet. */
  static forPath(cgroupsPath: unknown, options: HostCgroupOptions = {}): HostCgroup {
    const parsed = parseCgroupsPath(cgroupsPath);
    if (parsed.driver === 'systemd' && !parsed.unit!.endsWith('.scope')) {
      throw new InvalidArgumentError(
        `linux.cgroupsPath ${JSON.stringify(cgroupsPath)} names the slice ${parsed.unit}: the VM's processes go in a scope unit (slice:prefix:name with a name not ending in .slice)`,
      );
    }
    return new HostCgroup(
      parsed,
      options.layout ?? hostCgroupLayout(),
      options.removeDir ?? fs.rmdirSync,
      options.systemd ?? {},
    );
  }

  /**
   * What a crash-recovery record holds: the folders (see checkRecordedCgroupDirs) and, for the systemd driver, the
   * scope unit (stopped first). `systemd`: tests only (the default sockets otherwise).
   */
  static recorded(dirs: readonly string[], unit?: string, systemd: SystemdOptions = {}): { remove(): Promise<void> } {
    return {
      remove: () =>
        unit === undefined ? removeDirs(dirs, fs.rmdirSync) : stopThenRemove(unit, systemd, dirs, fs.rmdirSync),
    };
  }

  get path(): string {
    return this.parsed.path;
  }

  /** systemd's scope unit (systemd driver), else undefined. */
  get unit(): string | undefined {
    return this.parsed.driver === 'systemd' ? this.parsed.unit : undefined;
  }

  /**
   * Before anything is made: the systemd driver needs systemd's Manager to answer on one of its sockets
   * (FailedPrecondition naming each socket tried and why, never a fall back to cgroupfs). Nothing for cgroupfs.
   */
  async check(): Promise<void> {
    if (this.parsed.driver !== 'systemd') return;
    try {
      await withSystemd(this.systemd.sockets, this.systemd.jobTimeoutMs, async () => undefined);
    } catch (err) {
      if (!(err instanceof FailedPreconditionError)) throw err;
      throw new FailedPreconditionError(
        `linux.cgroupsPath is in systemd's form (the runtime's SystemdCgroup = true: unit ${this.parsed.unit} in ${this.parsed.slice}), but ${err.message}; on a host without systemd, set SystemdCgroup = false`,
        { cause: err },
      );
    }
  }

  /**
   * Makes the cgroup and moves `pid` (every thread) into it on every hierarchy. cgroupfs: `create` then `place`.
   * systemd: the scope unit is started with `pid` in it (StartTransientUnit, job followed); then, as runc's v1
   * driver does, every v1 hierarchy systemd does not own gets the folder (made if missing) and the pid, and each one
   * systemd owns (name=systemd, the unified one) must have it.
   */
  async join(pid: number): Promise<void> {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new InvalidArgumentError(`pid ${pid} is not a process id`);
    if (this.parsed.driver !== 'systemd') {
      this.create();
      this.place(pid);
      return;
    }
    const unit = this.parsed.unit!;
    await withSystemd(this.systemd.sockets, this.systemd.jobTimeoutMs, (m) =>
      m.startTransientUnit(unit, scopeProperties(this.parsed.slice!, unit, pid, this.layout.version)),
    );
    for (const h of this.layout.hierarchies) {
      const leaf = path.join(h.mountPoint, this.parsed.path);
      if (systemdOwns(h)) {
        if (!fs.existsSync(leaf))
          throw new FailedPreconditionError(`systemd started ${unit}, but its cgroup ${leaf} does not exist`);
        continue;
      }
      this.makeDirs(h, false);
      fs.writeFileSync(path.join(leaf, 'cgroup.procs'), String(pid));
    }
  }

  /**
   * The memory limit that applies to the cgroup: the smallest one set on it or on any folder above it (kubelet sets
   * the pod's on the pod folder, the sandbox's parent), or undefined when none is.
   */
  memoryLimitBytes(): number | undefined {
    let min: number | undefined;
    for (const h of this.layout.hierarchies) {
      const file =
        h.version === 2 ? 'memory.max' : h.controllers.includes('memory') ? 'memory.limit_in_bytes' : undefined;
      if (!file) continue;
      for (
        let dir = path.join(h.mountPoint, this.parsed.path);
        dir !== h.mountPoint && dir.startsWith(h.mountPoint);
        dir = path.dirname(dir)
      ) {
        let text: string;
        try {
          text = fs.readFileSync(path.join(dir, file), 'utf8').trim();
        } catch {
          continue; // not made yet, or no memory controller here (v2)
        }
        if (text === 'max') continue;
        if (!/^\d{1,20}$/.test(text))
          throw new InvalidArgumentError(
            `${path.join(dir, file)}: ${JSON.stringify(text.slice(0, 40))} is not a memory limit`,
          );
        const n = Number(text);
        if (n >= V1_UNLIMITED) continue;
        min = min === undefined ? n : Math.min(min, n);
      }
    }
    return min;
  }

  /**
   * Makes the folders (their missing parents too, as runc does). v1 cpuset: an empty cpuset.cpus/mems is copied
   * from the folder above, or no process could join. v2: each folder above enables its controllers for the next.
   */
  create(): void {
    for (const h of this.layout.hierarchies) this.makeDirs(h, h.version === 2);
  }

  /** The folder on one hierarchy, parents too; `enable`: v2 controllers enabled down the path. */
  private makeDirs(h: CgroupHierarchy, enable: boolean): void {
    const leaf = path.join(h.mountPoint, this.parsed.path);
    let dir = h.mountPoint;
    for (const part of this.parsed.path.split('/').filter((p) => p !== '')) {
      if (enable) enableControllers(dir);
      const parent = dir;
      dir = path.join(dir, part);
      try {
        fs.mkdirSync(dir, { mode: 0o755 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (h.controllers.includes('cpuset')) {
        for (const f of ['cpuset.cpus', 'cpuset.mems']) inheritIfEmpty(parent, dir, f);
      }
    }
    if (dir !== leaf) throw new InvalidArgumentError(`cgroup ${leaf}: made ${dir}`); // cannot happen: parsed.path is normalised
  }

  /** Moves `pid` (every thread of it) into the cgroup, in every hierarchy. */
  place(pid: number): void {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new InvalidArgumentError(`pid ${pid} is not a process id`);
    for (const dir of this.dirs) fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
  }

  /**
   * The cgroups `pid` is in now, per hierarchy (from /proc/<pid>/cgroup), to move it back with `restore` before the
   * sandbox's cgroup is removed.
   */
  origin(pid: number, procCgroup = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8')): string[] {
    const byKey = new Map<string, string>();
    for (const line of procCgroup.split('\n')) {
      const m = /^\d+:([^:]*):(.*)$/.exec(line);
      if (m) byKey.set(m[1]!.split(',').sort().join(','), m[2]!);
    }
    return this.layout.hierarchies.map((h) => {
      const p = byKey.get(h.version === 2 ? '' : h.controllers.join(',')) ?? '/';
      const rel = path.normalize(`/${p}`).replace(/\/+$/, '');
      return rel.split('/').includes('..') ? h.mountPoint : path.join(h.mountPoint, rel);
    });
  }

  /** Moves `pid` to the folders `origin` gave (missing ones skipped: the hierarchy's root then). */
  restore(pid: number, dirs: readonly string[]): void {
    this.layout.hierarchies.forEach((h, i) => {
      const dir = dirs[i] && fs.existsSync(dirs[i]) ? dirs[i] : h.mountPoint;
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
    });
  }

  /**
   * Removes the sandbox's folders (only the leaf); retried while the VM's last processes exit. systemd: the scope
   * is stopped first (StopUnit; one systemd already dropped is fine), then the folders go (those systemd removed
   * are gone already; runc removes them all, also when the stop failed).
   */
  async remove(): Promise<void> {
    if (this.parsed.driver !== 'systemd') return removeDirs(this.dirs, this.removeDir);
    await stopThenRemove(this.parsed.unit!, this.systemd, this.dirs, this.removeDir);
  }
}

/** The hierarchies systemd keeps itself (a scope's folder there is systemd's to make and remove). */
function systemdOwns(h: CgroupHierarchy): boolean {
  return h.version === 2 || h.controllers.includes('name=systemd');
}

/**
 * The transient scope's properties, runc's: where it goes, what it is, the pid, delegation, accounting on (the
 * kernel charges memory to a cgroup from the moment a process joins it), no default dependencies.
 */
export function scopeProperties(slice: string, unit: string, pid: number, version: 1 | 2): UnitProperty[] {
  const on = (name: string): UnitProperty => [name, { signature: 'b', value: true }];
  return [
    ['Description', { signature: 's', value: `hull pod sandbox ${unit}` }],
    ['Slice', { signature: 's', value: slice }],
    ['Delegate', { signature: 'b', value: true }],
    ['PIDs', { signature: 'au', value: [pid] }],
    on('MemoryAccounting'),
    on('CPUAccounting'),
    on(version === 2 ? 'IOAccounting' : 'BlockIOAccounting'),
    on('TasksAccounting'),
    ['DefaultDependencies', { signature: 'b', value: false }],
  ];
}

/** StopUnit, then the folders (also when the stop failed, as runc does); the stop's error first. */
async function stopThenRemove(
  unit: string,
  o: SystemdOptions,
  dirs: readonly string[],
  rmdir: (dir: string) => void,
): Promise<void> {
  let failure: Error | undefined;
  const keep = (err: unknown): void => {
    failure ??= err instanceof Error ? err : new FailedPreconditionError(String(err));
  };
  await stopScope(unit, o).catch(keep);
  await removeDirs(dirs, rmdir).catch(keep);
  if (failure) throw failure;
}

async function stopScope(unit: string, o: SystemdOptions): Promise<void> {
  const bad = checkUnitName(unit);
  if (bad || !unit.endsWith('.scope'))
    throw new InvalidArgumentError(`not stopping ${JSON.stringify(unit)}: ${bad ?? 'not a scope'}`);
  await withSystemd(o.sockets, o.jobTimeoutMs, (m) => m.stopUnit(unit));
}

function enableControllers(dir: string): void {
  let available: string[];
  try {
    available = fs
      .readFileSync(path.join(dir, 'cgroup.controllers'), 'utf8')
      .trim()
      .split(/\s+/)
      .filter((c) => c !== '');
  } catch {
    return;
  }
  const file = path.join(dir, 'cgroup.subtree_control');
  const enabled = new Set(fs.readFileSync(file, 'utf8').trim().split(/\s+/));
  const missing = available.filter((c) => !enabled.has(c));
  if (missing.length === 0) return;
  try {
    fs.writeFileSync(file, missing.map((c) => `+${c}`).join(' ')); // all at once, else one by one (runc's way)
    return;
  } catch {
    // below
  }
  for (const c of missing) {
    try {
      fs.writeFileSync(file, `+${c}`);
    } catch {
      // a controller the kernel will not enable here (e.g. a threaded subtree): the others still are
    }
  }
}

function inheritIfEmpty(parent: string, dir: string, file: string): void {
  const read = (d: string): string => {
    try {
      return fs.readFileSync(path.join(d, file), 'utf8').trim();
    } catch {
      return '';
    }
  };
  if (read(dir) !== '') return;
  const value = read(parent);
  if (value !== '') fs.writeFileSync(path.join(dir, file), value);
}

async function removeDirs(dirs: readonly string[], rmdir: (dir: string) => void): Promise<void> {
  const problems: string[] = [];
  const until = Date.now() + RMDIR_RETRY_MS;
  for (const dir of dirs) {
    for (;;) {
      try {
        rmdir(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code === 'EBUSY' && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        let procs = '';
        try {
          procs = fs
            .readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
            .trim()
            .split('\n')
            .filter((p) => p !== '')
            .slice(0, 8)
            .join(' ');
        } catch {
          // unreadable: the error says enough
        }
        problems.push(`${dir}: ${code ?? (err as Error).message}${procs ? ` (processes still in it: ${procs})` : ''}`);
        break;
      }
    }
  }
  if (problems.length > 0)
    throw new FailedPreconditionError(`cannot remove the sandbox's cgroup: ${problems.join('; ')}`);
}

/**
 * A crash-recovery record's cgroup folders, which recovery removes: each must be a normalised absolute path at
 * below `root`, without `..` (rmdir removes only an empty cgroup; a hierarchy's own root is refused by the kernel). Returns why not, or
 * undefined when they are fine.
 */
export function checkRecordedCgroupDirs(dirs: unknown, root = CGROUP_ROOT): string | undefined {
  if (!Array.isArray(dirs) || dirs.length === 0 || dirs.length > 32) return 'cgroup must be a list of 1 to 32 folders';
  for (const d of dirs as unknown[]) {
    if (
      typeof d !== 'string' ||
      d.length > MAX_PATH ||
      CONTROL.test(d) ||
      path.normalize(d) !== d ||
      !d.startsWith(`${root}/`)
    ) {
      return `cgroup folder ${JSON.stringify(String(d).slice(0, 120))} is not a normalised path below ${root}`;
    }
    if (d.split('/').includes('..')) return `cgroup folder ${JSON.stringify(d)} is not a cgroup below ${root}`;
  }
  return undefined;
}
