/**
 * VmConfig validation and defaults, and the fixed layout of a VM's state folder. Shapes are InvalidArgumentError
 * (a caller bug); missing host files are FailedPreconditionError with the command that makes them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../errors';
import { validateId } from '../protos/validate-id';
import { checkQemuUser } from './confine';
import { ROOT_IMAGE_DEVICES, type RootImageDevice } from './root-image';
import {
  DEFAULT_VIRTIOFS_CACHE,
  checkVirtiofsCache,
  checkVirtiofsdExtraArgs,
  type VirtiofsCache,
} from './virtiofsd-options';
import { checkIfName, checkMac, checkNetnsPathShape, isValidMtu } from './network/validate';
import {
  DEFAULT_NSENTER_PATH,
  DEFAULT_QEMU_PATH,
  DEFAULT_VIRTIOFSD_PATH,
  MEMORY_HOTPLUG_BLOCK_MIB,
  type Accel,
  type AgentTransport,
  type VmConfig,
  type VmNetwork,
  type VmNic,
} from './types';

export const MIN_MEMORY_MIB = 64;
/** 4 TiB; anything QEMU itself rejects above the host's limits surfaces as its own start error. */
export const MAX_MEMORY_MIB = 4 * 1024 * 1024;
export const MAX_VCPUS = 255;
/** QEMU's x86 limit of DIMM slots (ACPI_MAX_RAM_SLOTS): the most DIMMs a VM can be grown by. */
export const MAX_MEMORY_SLOTS = 256;
/** sun_path is 108 bytes with its NUL. */
const MAX_SOCKET_PATH = 107;
/** NICs per VM (each is a PCI device on the root bus). */
export const MAX_NICS = 16;
/** The largest TCG translation cache hull asks for (QEMU's own default is 1 GiB). */
export const MAX_TCG_TB_SIZE_MIB = 4096;

/** Everything the driver keeps in stateDir. */
export interface VmPaths {
  stateDir: string;
  qmpSocket: string;
  agentSocket: string;
  /** The agent's log port (a virtio-serial port on a unix socket QEMU listens on; guest-log.ts). */
  agentLogSocket: string;
  virtiofsdSocket: string;
  /** The test-only raw port (DEBUG_SERIAL_NAME), with VmConfig.debugPort only. */
  debugPortSocket: string;
}

export function vmPaths(stateDir: string): VmPaths {
  return {
    stateDir,
    qmpSocket: path.join(stateDir, 'qmp.sock'),
    agentSocket: path.join(stateDir, 'agent.sock'),
    agentLogSocket: path.join(stateDir, 'agent-log.sock'),
    virtiofsdSocket: path.join(stateDir, 'virtiofsd.sock'),
    debugPortSocket: path.join(stateDir, 'debug.sock'),
  };
}

/** VmConfig with defaults applied and every value checked. */
export interface ResolvedConfig {
  id: string;
  kernel: string;
  initrd: string;
  image: string;
  vcpus: number;
  memoryMiB: number;
  /** = vcpus when there is no CPU hot-plug room. */
  maxVcpus: number;
  /** = memoryMiB when there is no memory hot-plug room; as configured (memoryRoomMiB is rounded to whole DIMMs). */
  maxMemoryMiB: number;
  /** maxMemoryMiB - memoryMiB rounded up to whole DIMMs of MEMORY_HOTPLUG_BLOCK_MIB: QEMU's maxmem is memoryMiB + this. */
  memoryRoomMiB: number;
  accel: 'auto' | Accel;
  agentTransport: 'auto' | AgentTransport;
  sharedDir: string | undefined;
  kernelParams: string[];
  qemuPath: string;
  virtiofsdPath: string;
  virtiofsCache: VirtiofsCache;
  /** Checked and normalised. */
  virtiofsdExtraArgs: string[];
  debug: boolean;
  /** The test-only raw virtio-serial port (VmConfig.debugPort). */
  debugPort: boolean;
  /** Checked, MACs lower-cased; undefined = no network devices, QEMU in the caller's network namespace. */
  network: VmNetwork | undefined;
  nsenterPath: string;
  seccomp: boolean;
  /** "" = QEMU keeps the shim's uid. */
  qemuUser: string;
  freePageReporting: boolean;
  /** How the root image should be attached; prepare falls back to virtio-blk when the image has no DAX layout. */
  rootImageDevice: RootImageDevice;
  /** 0 = QEMU's default. */
  tcgTbSizeMiB: number;
  paths: VmPaths;
}

/** What validation asks the filesystem (injectable for tests). */
export interface FileProbe {
  kind(p: string): 'file' | 'dir' | 'other' | 'missing';
  executable(p: string): boolean;
}

export const realFileProbe: FileProbe = {
  kind: (p) => {
    try {
      const st = fs.statSync(p);
      return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other';
    } catch {
      return 'missing';
    }
  },
  executable: (p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  },
};

/** A value that will sit inside QEMU's (or virtiofsd's) comma-separated option syntax. */
export function checkOptionValue(what: string, value: string): string {
  if (value.length === 0) throw new InvalidArgumentError(`${what} is empty`);
  if (value.includes(','))
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(value)} contains a comma, which QEMU's option syntax cannot take`,
    );
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} contains a control character`);
  return value;
}

function checkAbsolutePath(what: string, value: unknown): string {
  if (typeof value !== 'string' || !path.isAbsolute(value)) {
    throw new InvalidArgumentError(`${what} must be an absolute path, got ${JSON.stringify(value)}`);
  }
  return checkOptionValue(what, path.normalize(value));
}

function checkInteger(what: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${what} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`);
  }
  return value;
}

function checkBoolean(what: string, value: unknown): boolean {
  if (typeof value !== 'boolean')
    throw new InvalidArgumentError(`${what} must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

function checkEnum<T extends string>(what: string, value: unknown, allowed: readonly T[]): T {
  if (!allowed.includes(value as T))
    throw new InvalidArgumentError(`${what} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  return value as T;
}

/** Checks a VmNetwork's shape (not whether the namespace exists): an absolute normalised path, unique taps and MACs. */
export function checkNetwork(value: unknown): VmNetwork {
  if (typeof value !== 'object' || value === null)
    throw new InvalidArgumentError('network must be an object { netnsPath, nics }');
  const { nics } = value as Partial<VmNetwork>;
  const netnsPath = checkNetnsPathShape((value as Partial<VmNetwork>).netnsPath);
  if (!Array.isArray(nics)) throw new InvalidArgumentError('network.nics must be an array');
  if (nics.length > MAX_NICS)
    throw new InvalidArgumentError(`network.nics has ${nics.length} entries; at most ${MAX_NICS}`);
  const taps = new Set<string>();
  const macs = new Set<string>();
  const checked = nics.map((nic: unknown, i): VmNic => {
    if (typeof nic !== 'object' || nic === null)
      throw new InvalidArgumentError(`network.nics[${i}] must be an object { tap, mac, mtu? }`);
    const n = nic as Partial<VmNic>;
    const tap = checkIfName(n.tap, `network.nics[${i}].tap`);
    const mac = checkMac(n.mac, `network.nics[${i}].mac`);
    if (taps.has(tap)) throw new InvalidArgumentError(`network.nics: tap ${tap} is listed twice`);
    if (macs.has(mac)) throw new InvalidArgumentError(`network.nics: MAC ${mac} is listed twice`);
    taps.add(tap);
    macs.add(mac);
    if (n.mtu !== undefined && !isValidMtu(n.mtu))
      throw new InvalidArgumentError(
        `network.nics[${i}].mtu ${JSON.stringify(n.mtu)} is not an MTU a tap takes (68-65521)`,
      );
    return n.mtu === undefined ? { tap, mac } : { tap, mac, mtu: n.mtu };
  });
  return { netnsPath, nics: checked };
}

/** Validate and apply defaults. Throws InvalidArgumentError for bad values, FailedPreconditionError for missing files. */
export function resolveConfig(cfg: VmConfig, files: FileProbe = realFileProbe): ResolvedConfig {
  validateId('sandbox id', cfg.id);
  const stateDir = checkAbsolutePath('stateDir', cfg.stateDir);
  const paths = vmPaths(stateDir);
  const longest = [paths.qmpSocket, paths.agentSocket, paths.agentLogSocket, paths.virtiofsdSocket].reduce((a, b) =>
    Buffer.byteLength(b) > Buffer.byteLength(a) ? b : a,
  );
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
    throw new InvalidArgumentError(
      `stateDir ${stateDir} is too long: socket path ${longest} exceeds ${MAX_SOCKET_PATH} bytes`,
    );
  }
  const kernelParams = cfg.kernelParams ?? [];
  if (!Array.isArray(kernelParams)) throw new InvalidArgumentError('kernelParams must be an array of words');
  for (const word of kernelParams) {
    // eslint-disable-next-line no-control-regex
    if (typeof word !== 'string' || word.length === 0 || /[\s\u0000-\u001f\u007f]/.test(word)) {
      throw new InvalidArgumentError(
        `kernel parameter ${JSON.stringify(word)} must be one non-empty word without whitespace`,
      );
    }
  }
  const vcpus = checkInteger('vcpus', cfg.vcpus, 1, MAX_VCPUS);
  const memoryMiB = checkInteger('memoryMiB', cfg.memoryMiB, MIN_MEMORY_MIB, MAX_MEMORY_MIB);
  const maxVcpus = cfg.maxVcpus === undefined ? vcpus : checkInteger('maxVcpus', cfg.maxVcpus, vcpus, MAX_VCPUS);
  const maxMemoryMiB =
    cfg.maxMemoryMiB === undefined
      ? memoryMiB
      : checkInteger('maxMemoryMiB', cfg.maxMemoryMiB, memoryMiB, MAX_MEMORY_MIB);
  const memoryRoomMiB = Math.ceil((maxMemoryMiB - memoryMiB) / MEMORY_HOTPLUG_BLOCK_MIB) * MEMORY_HOTPLUG_BLOCK_MIB;
  if (memoryRoomMiB / MEMORY_HOTPLUG_BLOCK_MIB > MAX_MEMORY_SLOTS)
    throw new InvalidArgumentError(
      `maxMemoryMiB ${maxMemoryMiB} leaves more than ${MAX_MEMORY_SLOTS} DIMMs of ${MEMORY_HOTPLUG_BLOCK_MIB} MiB above memoryMiB ${memoryMiB}`,
    );
  const resolved: ResolvedConfig = {
    id: cfg.id,
    kernel: checkAbsolutePath('kernel', cfg.kernel),
    initrd: checkAbsolutePath('initrd', cfg.initrd),
    image: checkAbsolutePath('image', cfg.image),
    vcpus,
    memoryMiB,
    maxVcpus,
    maxMemoryMiB,
    memoryRoomMiB,
    accel: checkEnum('accel', cfg.accel, ['auto', 'kvm', 'tcg'] as const),
    agentTransport: checkEnum('agentTransport', cfg.agentTransport, ['auto', 'vsock', 'serial'] as const),
    sharedDir: cfg.sharedDir === undefined ? undefined : checkAbsolutePath('sharedDir', cfg.sharedDir),
    kernelParams: [...kernelParams],
    qemuPath: checkAbsolutePath('qemuPath', cfg.qemuPath ?? DEFAULT_QEMU_PATH),
    virtiofsdPath: checkAbsolutePath('virtiofsdPath', cfg.virtiofsdPath ?? DEFAULT_VIRTIOFSD_PATH),
    virtiofsCache: checkVirtiofsCache('virtiofsCache', cfg.virtiofsCache ?? DEFAULT_VIRTIOFS_CACHE),
    virtiofsdExtraArgs: checkVirtiofsdExtraArgs('virtiofsdExtraArgs', cfg.virtiofsdExtraArgs ?? []),
    debug: cfg.debug === true,
    debugPort: cfg.debugPort === true,
    network: cfg.network === undefined ? undefined : checkNetwork(cfg.network),
    nsenterPath: checkAbsolutePath('nsenterPath', cfg.nsenterPath ?? DEFAULT_NSENTER_PATH),
    seccomp: checkBoolean('seccomp', cfg.seccomp ?? true),
    qemuUser: checkQemuUser('qemuUser', cfg.qemuUser ?? ''),
    freePageReporting: checkBoolean('freePageReporting', cfg.freePageReporting ?? false),
    rootImageDevice: checkEnum('rootImageDevice', cfg.rootImageDevice ?? 'virtio-blk', ROOT_IMAGE_DEVICES),
    tcgTbSizeMiB: checkInteger('tcgTbSizeMiB', cfg.tcgTbSizeMiB ?? 0, 0, MAX_TCG_TB_SIZE_MIB),
    paths,
  };

  for (const [what, p] of [
    ['guest kernel', resolved.kernel],
    ['guest initrd', resolved.initrd],
    ['guest root image', resolved.image],
  ] as const) {
    const kind = files.kind(p);
    if (kind !== 'file') {
      throw new FailedPreconditionError(
        `${what} ${p} ${kind === 'missing' ? 'does not exist' : 'is not a regular file'}: run \`make guest\``,
      );
    }
  }
  if (!files.executable(resolved.qemuPath)) {
    throw new FailedPreconditionError(
      `QEMU ${resolved.qemuPath} is not an executable file: run \`make deps\` (Debian package qemu-system-x86)`,
    );
  }
  if (resolved.network !== undefined) {
    if (files.kind(resolved.network.netnsPath) === 'missing') {
      throw new FailedPreconditionError(`network namespace ${resolved.network.netnsPath} does not exist`);
    }
    if (!files.executable(resolved.nsenterPath)) {
      throw new FailedPreconditionError(
        `nsenter ${resolved.nsenterPath} is not an executable file: run \`make deps\` (Debian package util-linux)`,
      );
    }
  }
  if (resolved.sharedDir !== undefined) {
    if (files.kind(resolved.sharedDir) !== 'dir')
      throw new FailedPreconditionError(`sharedDir ${resolved.sharedDir} is not a directory`);
    if (!files.executable(resolved.virtiofsdPath)) {
      throw new FailedPreconditionError(
        `virtiofsd ${resolved.virtiofsdPath} is not an executable file: run \`make deps\` (Debian package qemu-system-x86)`,
      );
    }
  }
  return resolved;
}
