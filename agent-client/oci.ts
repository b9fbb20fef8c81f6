/**
 * The OCI runtime spec as containerd writes it (config.json, JSON field names) and its translation into Kata's
 * protobuf `grpc.Spec` (Go field names), the form the agent's CreateContainer takes. Only the shape is checked
 * here (a wrong type is InvalidArgumentError naming the field); what a value means inside the guest is the agent's
 * business, and the agent checks every value again since it trusts no one. The exception is what Kata's messages
 * cannot carry and would otherwise be lost on the way (a seccomp listener, a default errno other than EPERM,
 * integers a protobuf field would wrap): refused here, never dropped.
 */
import { InvalidArgumentError } from '../errors';
import type { grpc } from '../protos/agent';

export interface OciUser {
  uid?: number;
  gid?: number;
  additionalGids?: number[];
  username?: string;
}
export interface OciCapabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}
export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}
export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height?: number; width?: number };
  user?: OciUser;
  args?: string[];
  env?: string[];
  cwd?: string;
  capabilities?: OciCapabilities;
  rlimits?: OciRlimit[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
}
export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}
export interface OciLinuxResources {
  devices?: { allow?: boolean; type?: string; major?: number; minor?: number; access?: string }[];
  memory?: {
    limit?: number;
    reservation?: number;
    swap?: number;
    kernel?: number;
    kernelTCP?: number;
    swappiness?: number;
    disableOOMKiller?: boolean;
  };
  cpu?: {
    shares?: number;
    quota?: number;
    period?: number;
    realtimeRuntime?: number;
    realtimePeriod?: number;
    cpus?: string;
    mems?: string;
  };
  pids?: { limit?: number };
  hugepageLimits?: { pageSize?: string; limit?: number }[];
}
export interface OciSeccomp {
  defaultAction?: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: {
    names?: string[];
    action?: string;
    errnoRet?: number;
    args?: { index?: number; value?: number; valueTwo?: number; op?: string }[];
  }[];
}
export interface OciLinux {
  uidMappings?: { containerID?: number; hostID?: number; size?: number }[];
  gidMappings?: { containerID?: number; hostID?: number; size?: number }[];
  sysctl?: Record<string, string>;
  resources?: OciLinuxResources;
  cgroupsPath?: string;
  namespaces?: { type: string; path?: string }[];
  devices?: {
    path: string;
    type: string;
    major?: number;
    minor?: number;
    fileMode?: number;
    uid?: number;
    gid?: number;
  }[];
  seccomp?: OciSeccomp;
  rootfsPropagation?: string;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
}
export interface OciSpec {
  ociVersion?: string;
  process?: OciProcess;
  root?: { path?: string; readonly?: boolean };
  hostname?: string;
  mounts?: OciMount[];
  annotations?: Record<string, string>;
  linux?: OciLinux;
}

type Obj = Record<string, unknown>;

function obj(v: unknown, what: string): Obj | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError(`OCI spec: ${what} is not an object`);
  return v as Obj;
}
function list(v: unknown, what: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new InvalidArgumentError(`OCI spec: ${what} is not an array`);
  return v;
}
function str(v: unknown, what: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new InvalidArgumentError(`OCI spec: ${what} is not a string`);
  return v;
}
function strs(v: unknown, what: string): string[] {
  return list(v, what).map((s, i) => str(s, `${what}[${i}]`));
}
function num(v: unknown, what: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || !Number.isInteger(v))
    throw new InvalidArgumentError(`OCI spec: ${what} is not an integer`);
  return v;
}
function bool(v: unknown, what: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`OCI spec: ${what} is not a boolean`);
  return v;
}
function strMap(v: unknown, what: string): Record<string, string> {
  const o = obj(v, what) ?? {};
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) out[k] = str(val, `${what}.${k}`);
  return out;
}

export function grpcProcessFromOci(p: unknown, what = 'process'): grpc.IProcess {
  const o = obj(p, what);
  if (!o) throw new InvalidArgumentError(`OCI spec: ${what} is missing`);
  const user = obj(o.user, `${what}.user`) ?? {};
  const caps = obj(o.capabilities, `${what}.capabilities`);
  const size = obj(o.consoleSize, `${what}.consoleSize`);
  return {
    Terminal: bool(o.terminal, `${what}.terminal`),
    ConsoleSize: size
      ? { Height: num(size.height, `${what}.consoleSize.height`), Width: num(size.width, `${what}.consoleSize.width`) }
      : null,
    User: {
      UID: num(user.uid, `${what}.user.uid`),
      GID: num(user.gid, `${what}.user.gid`),
      AdditionalGids: list(user.additionalGids, `${what}.user.additionalGids`).map((g, i) =>
        num(g, `${what}.user.additionalGids[${i}]`),
      ),
      Username: str(user.username, `${what}.user.username`),
    },
    Args: strs(o.args, `${what}.args`),
    Env: strs(o.env, `${what}.env`),
    Cwd: str(o.cwd, `${what}.cwd`) || '/',
    Capabilities: caps
      ? {
          Bounding: strs(caps.bounding, `${what}.capabilities.bounding`),
          Effective: strs(caps.effective, `${what}.capabilities.effective`),
          Inheritable: strs(caps.inheritable, `${what}.capabilities.inheritable`),
          Permitted: strs(caps.permitted, `${what}.capabilities.permitted`),
          Ambient: strs(caps.ambient, `${what}.capabilities.ambient`),
        }
      : null,
    Rlimits: list(o.rlimits, `${what}.rlimits`).map((r, i) => {
      const rl = obj(r, `${what}.rlimits[${i}]`) ?? {};
      return {
        Type: str(rl.type, `${what}.rlimits[${i}].type`),
        Hard: num(rl.hard, `${what}.rlimits[${i}].hard`),
        Soft: num(rl.soft, `${what}.rlimits[${i}].soft`),
      };
    }),
    NoNewPrivileges: bool(o.noNewPrivileges, `${what}.noNewPrivileges`),
    ApparmorProfile: str(o.apparmorProfile, `${what}.apparmorProfile`),
    OOMScoreAdj: num(o.oomScoreAdj, `${what}.oomScoreAdj`),
    SelinuxLabel: str(o.selinuxLabel, `${what}.selinuxLabel`),
  };
}

function grpcResourcesFromOci(r: unknown, what = 'linux.resources'): grpc.ILinuxResources {
  const o = obj(r, what) ?? {};
  const mem = obj(o.memory, `${what}.memory`);
  const cpu = obj(o.cpu, `${what}.cpu`);
  const pids = obj(o.pids, `${what}.pids`);
  return {
    Devices: list(o.devices, `${what}.devices`).map((d, i) => {
      const x = obj(d, `${what}.devices[${i}]`) ?? {};
      const w = `${what}.devices[${i}]`;
      return {
        Allow: bool(x.allow, `${w}.allow`),
        Type: str(x.type, `${w}.type`),
        Major: x.major == null ? -1 : num(x.major, `${w}.major`),
        Minor: x.minor == null ? -1 : num(x.minor, `${w}.minor`),
        Access: str(x.access, `${w}.access`),
      };
    }),
    Memory: mem
      ? {
          Limit: num(mem.limit, `${what}.memory.limit`),
          Reservation: num(mem.reservation, `${what}.memory.reservation`),
          Swap: num(mem.swap, `${what}.memory.swap`),
          Kernel: num(mem.kernel, `${what}.memory.kernel`),
          KernelTCP: num(mem.kernelTCP, `${what}.memory.kernelTCP`),
          Swappiness: num(mem.swappiness, `${what}.memory.swappiness`),
          DisableOOMKiller: bool(mem.disableOOMKiller, `${what}.memory.disableOOMKiller`),
        }
      : null,
    CPU: cpu
      ? {
          Shares: num(cpu.shares, `${what}.cpu.shares`),
          Quota: num(cpu.quota, `${what}.cpu.quota`),
          Period: num(cpu.period, `${what}.cpu.period`),
          RealtimeRuntime: num(cpu.realtimeRuntime, `${what}.cpu.realtimeRuntime`),
          RealtimePeriod: num(cpu.realtimePeriod, `${what}.cpu.realtimePeriod`),
          Cpus: str(cpu.cpus, `${what}.cpu.cpus`),
          Mems: str(cpu.mems, `${what}.cpu.mems`),
        }
      : null,
    Pids: pids ? { Limit: num(pids.limit, `${what}.pids.limit`) } : null,
    HugepageLimits: list(o.hugepageLimits, `${what}.hugepageLimits`).map((h, i) => {
      const x = obj(h, `${what}.hugepageLimits[${i}]`) ?? {};
      return {
        Pagesize: str(x.pageSize, `${what}.hugepageLimits[${i}].pageSize`),
        Limit: num(x.limit, `${what}.hugepageLimits[${i}].limit`),
      };
    }),
  };
}

/** A non-negative integer up to `max` (what a protobuf uint field holds without wrapping), or `fallback` when absent. */
function uint(v: unknown, what: string, max: number, fallback = 0): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    throw new InvalidArgumentError(`OCI spec: ${what} is not an integer from 0 to ${max}`);
  return v;
}

const UINT32_MAX = 0xffffffff;
/** EPERM: the errno of SCMP_ACT_ERRNO and SCMP_ACT_TRACE when the profile names none (the runtime spec's default). */
const EPERM = 1;

/**
 * linux.seccomp → grpc.LinuxSeccomp. errnoRet is the proto's oneof: set only when the profile has one (0 is a
 * value). Comparison values above 2^53 are refused: JSON.parse has already rounded them, and a rounded mask is a
 * different filter. Kata's message has no defaultErrnoRet and no listener: a defaultErrnoRet other than EPERM (the
 * default it would get anyway) and a listenerPath are refused rather than silently dropped.
 */
export function grpcSeccompFromOci(s: unknown): grpc.ILinuxSeccomp | null {
  const o = obj(s, 'linux.seccomp');
  if (!o) return null;
  if (str(o.listenerPath, 'linux.seccomp.listenerPath'))
    throw new InvalidArgumentError(
      'OCI spec: linux.seccomp.listenerPath: a seccomp agent cannot listen in the VM guest',
    );
  str(o.listenerMetadata, 'linux.seccomp.listenerMetadata');
  const defaultErrno = uint(o.defaultErrnoRet, 'linux.seccomp.defaultErrnoRet', UINT32_MAX, EPERM);
  if (defaultErrno !== EPERM)
    throw new InvalidArgumentError(
      `OCI spec: linux.seccomp.defaultErrnoRet ${defaultErrno}: the agent protocol carries no default errno, only EPERM (the default) is possible`,
    );
  return {
    DefaultAction: str(o.defaultAction, 'linux.seccomp.defaultAction'),
    Architectures: strs(o.architectures, 'linux.seccomp.architectures'),
    Flags: strs(o.flags, 'linux.seccomp.flags'),
    Syscalls: list(o.syscalls, 'linux.seccomp.syscalls').map((c, i) => {
      const w = `linux.seccomp.syscalls[${i}]`;
      const x = obj(c, w) ?? {};
      return {
        Names: strs(x.names, `${w}.names`),
        Action: str(x.action, `${w}.action`),
        ...(x.errnoRet == null ? {} : { errnoret: uint(x.errnoRet, `${w}.errnoRet`, UINT32_MAX) }),
        Args: list(x.args, `${w}.args`).map((a, j) => {
          const v = `${w}.args[${j}]`;
          const y = obj(a, v) ?? {};
          return {
            Index: uint(y.index, `${v}.index`, UINT32_MAX),
            Value: uint(y.value, `${v}.value`, Number.MAX_SAFE_INTEGER),
            ValueTwo: uint(y.valueTwo, `${v}.valueTwo`, Number.MAX_SAFE_INTEGER),
            Op: str(y.op, `${v}.op`),
          };
        }),
      };
    }),
  };
}

const idMappings = (v: unknown, what: string): grpc.ILinuxIDMapping[] =>
  list(v, what).map((m, i) => {
    const x = obj(m, `${what}[${i}]`) ?? {};
    return {
      ContainerID: num(x.containerID, `${what}[${i}].containerID`),
      HostID: num(x.hostID, `${what}[${i}].hostID`),
      Size: num(x.size, `${what}[${i}].size`),
    };
  });

/**
 * containerd's config.json → grpc.Spec. `mounts` replaces the spec's mounts when given (the caller rewrites volume
 * sources to their place in the share first); hooks are never sent (they are host-side, run by the runtime).
 */
export function grpcSpecFromOci(spec: unknown, mounts?: readonly OciMount[]): grpc.ISpec {
  const o = obj(spec, 'the spec');
  if (!o) throw new InvalidArgumentError('OCI spec: the spec is missing');
  const root = obj(o.root, 'root') ?? {};
  const linux = obj(o.linux, 'linux') ?? {};
  return {
    Version: str(o.ociVersion, 'ociVersion'),
    Process: grpcProcessFromOci(o.process),
    Root: { Path: str(root.path, 'root.path'), Readonly: bool(root.readonly, 'root.readonly') },
    Hostname: str(o.hostname, 'hostname'),
    Mounts: (mounts ?? list(o.mounts, 'mounts')).map((m, i) => {
      const x = obj(m, `mounts[${i}]`) ?? {};
      return {
        destination: str(x.destination, `mounts[${i}].destination`),
        source: str(x.source, `mounts[${i}].source`),
        type: str(x.type, `mounts[${i}].type`),
        options: strs(x.options, `mounts[${i}].options`),
      };
    }),
    Annotations: strMap(o.annotations, 'annotations'),
    Linux: {
      UIDMappings: idMappings(linux.uidMappings, 'linux.uidMappings'),
      GIDMappings: idMappings(linux.gidMappings, 'linux.gidMappings'),
      Sysctl: strMap(linux.sysctl, 'linux.sysctl'),
      Resources: grpcResourcesFromOci(linux.resources),
      CgroupsPath: str(linux.cgroupsPath, 'linux.cgroupsPath'),
      Namespaces: list(linux.namespaces, 'linux.namespaces').map((n, i) => {
        const x = obj(n, `linux.namespaces[${i}]`) ?? {};
        return { Type: str(x.type, `linux.namespaces[${i}].type`), Path: str(x.path, `linux.namespaces[${i}].path`) };
      }),
      Devices: list(linux.devices, 'linux.devices').map((d, i) => {
        const w = `linux.devices[${i}]`;
        const x = obj(d, w) ?? {};
        return {
          Path: str(x.path, `${w}.path`),
          Type: str(x.type, `${w}.type`),
          Major: num(x.major, `${w}.major`),
          Minor: num(x.minor, `${w}.minor`),
          FileMode: num(x.fileMode, `${w}.fileMode`),
          UID: num(x.uid, `${w}.uid`),
          GID: num(x.gid, `${w}.gid`),
        };
      }),
      Seccomp: grpcSeccompFromOci(linux.seccomp),
      RootfsPropagation: str(linux.rootfsPropagation, 'linux.rootfsPropagation'),
      MaskedPaths: strs(linux.maskedPaths, 'linux.maskedPaths'),
      ReadonlyPaths: strs(linux.readonlyPaths, 'linux.readonlyPaths'),
      MountLabel: str(linux.mountLabel, 'linux.mountLabel'),
    },
  };
}
