/**
 * Kata's protobuf OCI spec (grpc.Spec, Go-style field names) to an OCI runtime-spec config.json for crun, keeping
 * only what means something inside the guest and checking every value the host sent:
 * - root.path is the container's rootfs in the virtio-fs share (computed by the agent, never the host's path);
 * - bind mounts are volumes: kept only if their source is in the share (volumes.ts), refused otherwise;
 * - the network namespace is dropped (containers use the guest's network, the pod's); a namespace given with a path
 *   (a Kubernetes container joining its pod's ipc or uts namespace) means the guest's own, which is the pod's; a pid
 *   namespace given with a path is the pod's first container's (Kubernetes' shareProcessNamespace), otherwise a new
 *   one, never the guest's (the agent runs there); hooks, AppArmor/SELinux labels and the device list are dropped
 *   (it names the host's device nodes); the device cgroup rules are kept (the kernel's fixed numbers are the same);
 * - a privileged container (its device cgroup rules end by allowing every device, as containerd's `--privileged` and
 *   CRI's privileged do) gets every device allowed and the guest's on-demand device nodes (PRIVILEGED_DEVICES: loop,
 *   tun, fuse), whose first open has the guest kernel load the module, as runc gives the host's devices;
 * - the seccomp profile is checked and kept for crun, which applies it inside the guest (seccomp.ts); an absent or
 *   empty one stays absent;
 * - namespaced sysctls (net.*, the IPC ones) are kept for crun when the container has that namespace of its own, and
 *   returned as `guestSysctls` otherwise: the agent writes those into the guest, whose namespaces are the pod's;
 * - linux.cgroupsPath is /hull/<cid>; memory, CPU and pids resources are kept;
 * - process.terminal and consoleSize are kept as asked: crun opens the container's pty and sends its master on
 *   --console-socket (terminal.ts).
 */
import path from 'node:path';
import type { grpc } from '../protos/agent';
import { SANDBOX_SHM, SHARED_CONTAINERS } from './init';
import { onlineSets, toOciResources } from './resources';
import { toOciSeccomp } from './seccomp';
import { invalid, uint16 } from './validate';
import { isBindMount, volumeMount } from './volumes';

const MAX_ARGS = 4096;
const MAX_ENV = 4096;
const MAX_STRING_BYTES = 128 * 1024;
const MAX_TOTAL_BYTES = 1 << 20;
const MAX_MOUNTS = 128;
const MAX_OPTIONS = 64;
const MAX_PATHS = 256;
const UINT32_MAX = 0xffffffff;

/** Mount types that need no host path: kept. */
const KEPT_MOUNT_TYPES = new Set(['proc', 'sysfs', 'devpts', 'tmpfs', 'mqueue', 'cgroup', 'cgroup2']);
/** Namespace types created for the container (network: the guest's is the pod's; user: only with mappings). */
const KEPT_NAMESPACES = new Set(['pid', 'ipc', 'uts', 'mount', 'cgroup']);
/** Namespaces a path joins to the guest's own (the pod's) instead of making a new one. */
const POD_NAMESPACES = new Set(['ipc', 'uts']);
const MAX_SYSCTLS = 64;
/**
 * Device nodes a privileged container gets in its /dev, by the kernel's fixed numbers (Documentation/admin-guide/
 * devices.txt). Their modules need not be loaded: the first open of a node has the guest kernel load its module
 * (modules.alias: char-major-10-237, block-major-7-*, ...), as on a host. The host's device list (ctr and CRI put the
 * host's /dev in a privileged spec) names the host's devices and is dropped.
 */
export const PRIVILEGED_DEVICES: ReadonlyArray<{ path: string; type: 'b' | 'c'; major: number; minor: number }> = [
  { path: '/dev/loop-control', type: 'c', major: 10, minor: 237 },
  ...Array.from({ length: 8 }, (_, i) => ({ path: `/dev/loop${i}`, type: 'b' as const, major: 7, minor: i })),
  { path: '/dev/net/tun', type: 'c', major: 10, minor: 200 },
  { path: '/dev/fuse', type: 'c', major: 10, minor: 229 },
];
const MAX_DEVICE_RULES = 256;

/**
 * Whether device cgroup rules (in order, a later rule overriding an earlier one) end by allowing every device for
 * read, write and mknod: what containerd's `--privileged` (WithAllDevicesAllowed) and CRI's privileged send.
 */
export function allowsAllDevices(rules: readonly grpc.ILinuxDeviceCgroup[] | null | undefined): boolean {
  const list = rules ?? [];
  if (list.length > MAX_DEVICE_RULES) throw invalid(`more than ${MAX_DEVICE_RULES} device cgroup rules`);
  let all = false;
  for (const r of list) {
    const type = r.Type ?? '';
    const anyNumber = (v: unknown): boolean => v === null || v === undefined || Number(v) < 0;
    if ((type !== '' && type !== 'a') || !anyNumber(r.Major) || !anyNumber(r.Minor)) continue;
    const access = r.Access ?? '';
    if (r.Allow) all ||= ['r', 'w', 'm'].every((c) => access.includes(c));
    else all = false;
  }
  return all;
}

export interface OciDeviceRule {
  allow: boolean;
  type?: 'a' | 'b' | 'c';
  major?: number;
  minor?: number;
  access?: string;
}

/**
 * The device cgroup rules for crun, checked. Device numbers of the kernel's fixed devices (1:3 null, 5:0 tty, 7:*
 * loop, 10:200 tun, ...) are the same in the guest, so containerd's rules mean what they say there: without them
 * crun allows every device, and a container with CAP_MKNOD could open the guest's disks.
 */
export function deviceRules(rules: readonly grpc.ILinuxDeviceCgroup[] | null | undefined): OciDeviceRule[] {
  const list = rules ?? [];
  if (list.length > MAX_DEVICE_RULES) throw invalid(`more than ${MAX_DEVICE_RULES} device cgroup rules`);
  return list.map((r, i) => {
    const type = r.Type ?? '';
    if (type !== '' && type !== 'a' && type !== 'b' && type !== 'c')
      throw invalid(`device rule ${i}: type ${JSON.stringify(type.slice(0, 8))} is not a, b or c`);
    const access = r.Access ?? '';
    if (!/^[rwm]{0,3}$/.test(access))
      throw invalid(`device rule ${i}: access ${JSON.stringify(access.slice(0, 8))} is not made of r, w and m`);
    const number = (v: unknown, what: string): number | undefined => {
      if (v === null || v === undefined || Number(v) === -1) return undefined;
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0 || n > UINT32_MAX)
        throw invalid(`device rule ${i}: ${what} ${n} is not a device number`);
      return n;
    };
    const out: OciDeviceRule = { allow: Boolean(r.Allow) };
    if (type !== '') out.type = type;
    const major = number(r.Major, 'major');
    const minor = number(r.Minor, 'minor');
    if (major !== undefined) out.major = major;
    if (minor !== undefined) out.minor = minor;
    if (access !== '') out.access = access;
    return out;
  });
}

/** Guest folders the agent made that a bind mount may name as its source: the pod's shm. */
const GUEST_SOURCES: ReadonlySet<string> = new Set([SANDBOX_SHM]);

export interface OciProcess {
  /** Whether the process asked for a terminal: crun opens it in the container (terminal.ts). */
  terminal: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number; additionalGids?: number[] };
  args: string[];
  env: string[];
  cwd: string;
  capabilities?: Record<string, string[]>;
  rlimits?: { type: string; hard: number; soft: number }[];
  noNewPrivileges?: boolean;
  oomScoreAdj?: number;
}

function str(value: unknown, what: string, maxBytes = MAX_STRING_BYTES): string {
  if (typeof value !== 'string') throw invalid(`${what} is not a string`);
  if (value.includes('\0')) throw invalid(`${what} contains a NUL byte`);
  if (Buffer.byteLength(value) > maxBytes) throw invalid(`${what} is longer than ${maxBytes} bytes`);
  return value;
}

function strings(values: readonly unknown[] | null | undefined, what: string, max: number): string[] {
  const list = values ?? [];
  if (list.length > max) throw invalid(`${what}: more than ${max} entries`);
  return list.map((v, i) => str(v, `${what}[${i}]`));
}

function uint32(value: unknown, what: string): number {
  const n = Number(value ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > UINT32_MAX) throw invalid(`${what} ${String(value)} is not a valid id`);
  return n;
}

/** An absolute, normalized path (inside the container: nothing is resolved here). */
function absPath(value: unknown, what: string): string {
  const p = str(value, what, 4096);
  if (!path.posix.isAbsolute(p) || path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/'))) {
    throw invalid(`${what} ${JSON.stringify(p)} is not an absolute normalized path`);
  }
  return p;
}

/** The process part of the spec (CreateContainer's init and ExecProcess). */
export function toOciProcess(p: grpc.IProcess | null | undefined): OciProcess {
  if (!p) throw invalid('the spec has no process');
  const args = strings(p.Args, 'process args', MAX_ARGS);
  if (args.length === 0) throw invalid('process args are empty');
  const env = strings(p.Env, 'process env', MAX_ENV);
  for (const e of env)
    if (!/^[^=]+=/.test(e)) throw invalid(`environment entry ${JSON.stringify(e.slice(0, 64))} is not NAME=value`);
  const total = [...args, ...env].reduce((n, s) => n + Buffer.byteLength(s) + 1, 0);
  if (total > MAX_TOTAL_BYTES) throw invalid(`process args and env are larger than ${MAX_TOTAL_BYTES} bytes`);
  const out: OciProcess = {
    terminal: Boolean(p.Terminal),
    user: { uid: uint32(p.User?.UID, 'uid'), gid: uint32(p.User?.GID, 'gid') },
    args,
    env,
    cwd: p.Cwd ? absPath(p.Cwd, 'cwd') : '/',
  };
  if (p.Terminal && p.ConsoleSize)
    out.consoleSize = {
      height: uint16(p.ConsoleSize.Height, 'console height'),
      width: uint16(p.ConsoleSize.Width, 'console width'),
    };
  const gids = p.User?.AdditionalGids ?? [];
  if (gids.length > 64) throw invalid('more than 64 additional gids');
  if (gids.length) out.user.additionalGids = gids.map((g, i) => uint32(g, `additional gid ${i}`));
  const caps = p.Capabilities;
  if (caps) {
    const capList = (list: readonly string[] | null | undefined, what: string): string[] =>
      strings(list, what, 64).map((c) => {
        if (!/^CAP_[A-Z_]{1,32}$/.test(c)) throw invalid(`${what}: ${JSON.stringify(c)} is not a capability name`);
        return c;
      });
    out.capabilities = {
      bounding: capList(caps.Bounding, 'bounding capabilities'),
      effective: capList(caps.Effective, 'effective capabilities'),
      inheritable: capList(caps.Inheritable, 'inheritable capabilities'),
      permitted: capList(caps.Permitted, 'permitted capabilities'),
      ambient: capList(caps.Ambient, 'ambient capabilities'),
    };
  }
  const rlimits = p.Rlimits ?? [];
  if (rlimits.length > 32) throw invalid('more than 32 rlimits');
  if (rlimits.length) {
    out.rlimits = rlimits.map((r) => {
      const type = str(r.Type, 'rlimit type', 32);
      if (!/^RLIMIT_[A-Z]{1,16}$/.test(type)) throw invalid(`rlimit ${JSON.stringify(type)} is not valid`);
      return { type, hard: nonNegative(r.Hard, `${type} hard`), soft: nonNegative(r.Soft, `${type} soft`) };
    });
  }
  if (p.NoNewPrivileges) out.noNewPrivileges = true;
  if (p.OOMScoreAdj) {
    const adj = Number(p.OOMScoreAdj);
    if (!Number.isInteger(adj) || adj < -1000 || adj > 1000) throw invalid(`oom score adj ${adj} is out of range`);
    out.oomScoreAdj = adj;
  }
  return out;
}

function nonNegative(value: unknown, what: string): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) throw invalid(`${what} ${String(value)} is not a non-negative integer`);
  return n;
}

function mounts(list: readonly grpc.IMount[] | null | undefined, sharedRoot: string): object[] {
  const all = list ?? [];
  if (all.length > MAX_MOUNTS) throw invalid(`more than ${MAX_MOUNTS} mounts`);
  const out: object[] = [];
  for (const [i, m] of all.entries()) {
    if (isBindMount(m)) {
      out.push(volumeMount(m, i, sharedRoot, GUEST_SOURCES));
      continue;
    }
    const type = m.type ?? '';
    if (!KEPT_MOUNT_TYPES.has(type)) continue;
    const destination = absPath(m.destination, `mount ${i} destination`);
    const source = str(m.source ?? type, `mount ${i} source`, 256);
    if (source.includes('/')) continue; // a path as the source of a kernel filesystem: not ours to pass on
    const options = strings(m.options, `mount ${destination} options`, MAX_OPTIONS);
    for (const o of options) if (o.length > 256) throw invalid(`mount ${destination}: option too long`);
    out.push({ destination, type, source: source || type, options });
  }
  return out;
}

/** crun's config.json, and (not part of it) the sysctls the agent applies to the guest itself. */
export type RuntimeSpec = Record<string, unknown> & {
  process: OciProcess;
  guestSysctls?: { key: string; value: string }[];
};

/**
 * config.json for crun, for container `cid` whose rootfs (already checked to exist) is `rootPath`; volume sources
 * must be inside `sharedRoot` (where the guest mounts the share).
 */
export function toRuntimeSpec(
  spec: grpc.ISpec | null | undefined,
  cid: string,
  rootPath: string,
  sharedRoot = SHARED_CONTAINERS,
  podPidNamespace?: string,
): RuntimeSpec {
  if (!spec) throw invalid('CreateContainer without an OCI spec');
  const process = toOciProcess(spec.Process);
  const linux = spec.Linux ?? {};
  const namespaces: { type: string; path?: string }[] = [];
  const nsList = linux.Namespaces ?? [];
  if (nsList.length > 16) throw invalid('more than 16 namespaces');
  const hasMappings = (linux.UIDMappings?.length ?? 0) > 0;
  for (const ns of nsList) {
    const type = ns.Type ?? '';
    if (POD_NAMESPACES.has(type) && ns.Path) continue;
    if (type === 'pid' && ns.Path && podPidNamespace && !namespaces.some((n) => n.type === 'pid')) {
      namespaces.push({ type, path: podPidNamespace }); // the pod shares its processes: the sandbox container's
      continue;
    }
    if ((KEPT_NAMESPACES.has(type) || (type === 'user' && hasMappings)) && !namespaces.some((n) => n.type === type))
      namespaces.push({ type });
  }
  if (!namespaces.some((n) => n.type === 'mount')) namespaces.push({ type: 'mount' }); // crun needs one to pivot_root
  if (!namespaces.some((n) => n.type === 'pid')) namespaces.unshift({ type: 'pid' }); // never the guest's own: the agent lives there
  const out: RuntimeSpec = {
    ociVersion: '1.0.2',
    process,
    root: { path: rootPath, readonly: Boolean(spec.Root?.Readonly) },
    mounts: mounts(spec.Mounts, sharedRoot),
    linux: {
      namespaces,
      cgroupsPath: `/hull/${cid}`,
      maskedPaths: strings(linux.MaskedPaths, 'masked paths', MAX_PATHS).map((p, i) => absPath(p, `masked path ${i}`)),
      readonlyPaths: strings(linux.ReadonlyPaths, 'read-only paths', MAX_PATHS).map((p, i) =>
        absPath(p, `read-only path ${i}`),
      ),
    },
  };
  if (hasMappings) {
    const map = (list: readonly grpc.ILinuxIDMapping[] | null | undefined, what: string): object[] =>
      (list ?? []).slice(0, 64).map((m) => ({
        containerID: uint32(m.ContainerID, what),
        hostID: uint32(m.HostID, what),
        size: uint32(m.Size, what),
      }));
    Object.assign(out.linux as object, {
      uidMappings: map(linux.UIDMappings, 'uid mapping'),
      gidMappings: map(linux.GIDMappings, 'gid mapping'),
    });
  }
  const res = toOciResources(linux.Resources, onlineSets());
  const devices = deviceRules(linux.Resources?.Devices);
  if (res || devices.length)
    (out.linux as Record<string, unknown>).resources = { ...res, ...(devices.length ? { devices } : {}) };
  if (allowsAllDevices(linux.Resources?.Devices)) {
    Object.assign(out.linux as object, {
      devices: PRIVILEGED_DEVICES.map((d) => ({ ...d, fileMode: 0o660, uid: 0, gid: 0 })),
    });
  }
  const seccomp = toOciSeccomp(linux.Seccomp);
  if (seccomp) (out.linux as Record<string, unknown>).seccomp = seccomp;
  if (spec.Hostname) {
    const host = str(spec.Hostname, 'hostname', 64);
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$/.test(host))
      throw invalid(`hostname ${JSON.stringify(host)} is not valid`);
    if (!namespaces.some((n) => n.type === 'uts'))
      throw invalid(
        `hostname ${host}: the container has no UTS namespace of its own (the pod's host name is CreateSandbox's)`,
      );
    out.hostname = host;
  }
  const own = new Set(namespaces.map((n) => n.type));
  const sysctls = Object.entries(linux.Sysctl ?? {});
  const crunSysctls: Record<string, string> = {};
  if (sysctls.length > MAX_SYSCTLS) throw invalid(`more than ${MAX_SYSCTLS} sysctls`);
  for (const [key, value] of sysctls) {
    const ns = sysctlNamespace(key);
    if (!ns)
      throw invalid(`sysctl ${JSON.stringify(key.slice(0, 64))} is not a namespaced sysctl (a pod may set only those)`);
    if (!/^[\x20-\x7e]{0,256}$/.test(value))
      throw invalid(`sysctl ${key}: the value is not printable text of at most 256 bytes`);
    if (own.has(ns)) crunSysctls[key] = value;
    else (out.guestSysctls ??= []).push({ key, value });
  }
  if (Object.keys(crunSysctls).length) (out.linux as Record<string, unknown>).sysctl = crunSysctls;
  return out;
}

/** The namespace a sysctl belongs to (Kubernetes' namespaced sysctls), or undefined for a node-wide one. */
export function sysctlNamespace(key: string): 'net' | 'ipc' | undefined {
  if (!/^[a-z0-9_]+(?:[./][a-z0-9_-]+){1,8}$/.test(key) || key.length > 128) return undefined;
  const k = key.replace(/\//g, '.');
  if (k.startsWith('net.')) return 'net';
  if (
    /^kernel\.(?:shmmax|shmall|shmmni|shm_rmid_forced|msgmax|msgmnb|msgmni|sem)$/.test(k) ||
    k.startsWith('fs.mqueue.')
  )
    return 'ipc';
  return undefined;
}
