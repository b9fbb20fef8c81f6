/**
 * Pure QEMU argv builders: each option group is a small function returning its argv words, and buildQemuArgv()
 * strings them together. No I/O, no shell: the argv goes straight to spawn(). Every value that lands inside QEMU's
 * comma-separated option syntax goes through checkOptionValue (a comma would smuggle in another option).
 */
import { InvalidArgumentError } from '../../errors';
import { checkOptionValue } from '../config';
import { checkQemuUser, sandboxOptions, type QemuConfinement } from '../confine';
import { AGENT_LOG_SERIAL_NAME } from '../guest-log';
import { ROOT_IMAGE_ALIGN, type RootImage } from '../root-image';
import {
  AGENT_SERIAL_NAME,
  DEBUG_SERIAL_NAME,
  GUEST_SHARE_TAG,
  MEMORY_HOTPLUG_BLOCK_MIB,
  type Accel,
  TEMPLATE_NIC_PORTS,
  type AgentTransport,
  type VmNic,
} from '../types';

/**
 * The guest kernel words hull always passes; kernelParams come after them (so they win). After the console and
 * panic handling come boot-time savers that Kata passes too: trust the TSC, skip the timer check, the legacy
 * keyboard controller probes, SMP alternatives patching and crypto self-tests, expedite RCU. Measured under TCG:
 * about 0.5 s less from QEMU start to agent ready. (`mitigations=off` would save more and is deliberately absent.)
 */
export const BASE_KERNEL_PARAMS: readonly string[] = Object.freeze([
  'console=ttyS0',
  'panic=-1',
  'quiet',
  'reboot=k',
  'tsc=reliable',
  'no_timer_check',
  'rcupdate.rcu_expedited=1',
  'noreplace-smp',
  'cryptomgr.notests',
  'i8042.direct=1',
  'i8042.dumbkbd=1',
  'i8042.nopnp=1',
  'i8042.noaux=1',
]);

/**
 * With memory hot-plug room, the guest kernel onlines a hot-plugged DIMM's memory blocks itself, as soon as it
 * handles the ACPI event (no race with the agent's OnlineCPUMem, which onlines any block still offline).
 */
export const MEMORY_AUTO_ONLINE_PARAM = 'memhp_default_state=online';

/**
 * With device memory (memory hot-plug room, a pmem root image) QEMU places it above 4 GiB, and Linux then reserves a
 * 64 MiB swiotlb bounce buffer at boot (x86 enables swiotlb when any memory could be above 4 GiB), which the
 * guest touches: measured, 66 MiB less MemTotal and 28 MiB more guest RAM touched per VM. Every device hull gives the
 * guest is virtio without VIRTIO_F_ACCESS_PLATFORM (64-bit DMA, no IOMMU, no bouncing), so the buffer is never
 * used: `swiotlb=noforce` leaves it out.
 */
export const NO_SWIOTLB_PARAM = 'swiotlb=noforce';

/** qboot, a minimal firmware that loads the kernel faster than SeaBIOS; used when QEMU's package ships it. */
export const QBOOT_FIRMWARE = '/usr/share/qemu/qboot.rom';
/** id of the memory backend, of the agent and fs chardevs. */
export const MEMORY_BACKEND_ID = 'mem';

export type AgentChannel = { transport: 'serial'; socketPath: string } | { transport: 'vsock'; cid: number };

export interface QemuCmdline {
  id: string;
  accel: Accel;
  vcpus: number;
  memoryMiB: number;
  /** CPU hot-plug room (`-smp N,maxcpus=M`); absent or = vcpus: none. */
  maxVcpus?: number;
  /** Memory hot-plug room in MiB, whole DIMMs (`-m N,slots=S,maxmem=N+room`); absent or 0: none. */
  memoryRoomMiB?: number;
  kernel: string;
  initrd: string;
  image: string;
  /** How the image is attached (root-image.ts); absent = virtio-blk with the filesystem at offset 0. */
  rootImage?: RootImage;
  kernelParams: readonly string[];
  debug: boolean;
  agent: AgentChannel;
  /** The unix socket QEMU serves for the agent's log port (AGENT_LOG_SERIAL_NAME); absent = no log port. */
  agentLogSocket?: string;
  /** The unix socket QEMU serves for the test-only raw port (DEBUG_SERIAL_NAME); absent = no such port. */
  debugPortSocket?: string;
  /** virtiofsd's vhost-user socket; absent = no virtio-fs device. */
  virtiofsSocket?: string;
  qmpSocket: string;
  /** Firmware image (`-bios`); absent = QEMU's default (SeaBIOS). */
  firmware?: string;
  /** virtio-net NICs on existing taps (QEMU must run in the taps' network namespace); absent or [] = none. */
  nics?: readonly VmNic[];
  /** vhost-net for the NICs' data path (only where /dev/vhost-net is usable and KVM runs the guest). */
  vhostNet?: boolean;
  /** Seccomp filter and unprivileged user (hypervisor/confine.ts); absent = neither. */
  confinement?: QemuConfinement;
  /** virtio-balloon with free page reporting (balloonArgs); absent or false = no balloon device. */
  freePageReporting?: boolean;
  /** TCG's translation cache in MiB; ignored under KVM; absent or 0 = QEMU's default. */
  tcgTbSizeMiB?: number;
  /**
   * A VM template's layout (qemu/template.ts): guest RAM in this file (share=on), spare PCIe root ports for the
   * virtio-fs device and TEMPLATE_NIC_PORTS NICs, and neither device on the command line; `clone` adds the
   * virtio-fs chardev and each NIC's netdev (opened at start, before -runas) and `-incoming defer`. Absent: the
   * argv exactly as before.
   */
  template?: { role: 'make' | 'clone'; memoryFile: string };
}

/**
 * q35 with the accelerator and the shared memory backend as guest RAM; `-cpu max` under TCG, `host` under KVM.
 * With a TCG translation cache size, or TCG's single thread (TCG only: KVM has neither, so they are never passed
 * there) the accelerator moves to `-accel tcg,tb-size=N,thread=single`, since QEMU refuses `-accel` together with
 * `-machine accel=`.
 *
 * `tcgSingleThread` (a VM with CPU hot-plug room under TCG): one host thread runs every vCPU in turn, so a
 * hot-added vCPU needs no translation region of its own. With a thread per vCPU (MTTCG, QEMU's default for x86 on
 * x86), QEMU 7.2 divides the translation cache into regions (tb-size / 2 MiB, at most 8 per max CPU) that any
 * running vCPU takes as it fills one; a vCPU thread started by device_add takes its first region with an assertion
 * that one is free, and aborts QEMU (`tcg_region_initial_alloc__locked: assertion failed`) whenever the running
 * vCPUs hold them all, which they do for the last region's worth of every cycle of the cache (with tb-size 64 the
 * boot alone fills it: 58 of 64 MiB). No tb-size avoids that; see README.md, "Root image through DAX".
 */
export function machineArgs(accel: Accel, tcgTbSizeMiB = 0, nvdimm = false, tcgSingleThread = false): string[] {
  if (!Number.isInteger(tcgTbSizeMiB) || tcgTbSizeMiB < 0)
    throw new InvalidArgumentError(`TCG translation cache size ${tcgTbSizeMiB} MiB must be a non-negative integer`);
  const cpu = ['-cpu', accel === 'kvm' ? 'host' : 'max'];
  const extra = nvdimm ? ',nvdimm=on' : '';
  if (accel === 'tcg' && (tcgTbSizeMiB > 0 || tcgSingleThread))
    return [
      '-machine',
      `q35,memory-backend=${MEMORY_BACKEND_ID}${extra}`,
      '-accel',
      `tcg${tcgTbSizeMiB > 0 ? `,tb-size=${tcgTbSizeMiB}` : ''}${tcgSingleThread ? ',thread=single' : ''}`,
      ...cpu,
    ];
  return ['-machine', `q35,accel=${accel},memory-backend=${MEMORY_BACKEND_ID}${extra}`, ...cpu];
}

/**
 * virtio-balloon with free page reporting: the guest's virtio_balloon driver (loaded by the initramfs) reports
 * free pages in chunks of 4 MiB (pageblock order) once they have stayed free a while, and QEMU discards them
 * (fallocate PUNCH_HOLE on the memfd), so memory the guest touched and freed goes back to the host. The balloon is
 * never inflated: hull does not take memory from a guest, only what it has given up.
 */
export function balloonArgs(): string[] {
  return ['-device', 'virtio-balloon-pci,id=balloon0,free-page-reporting=on'];
}

/** No default devices, no config files, no display, and a guest reboot ends QEMU (with panic=-1: a panic does). */
export function baseArgs(): string[] {
  return ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot'];
}

export function nameArgs(id: string): string[] {
  return ['-name', checkOptionValue('sandbox id', `hull-${id}`)];
}

/**
 * vCPUs and RAM. Guest RAM is a shared memfd (share=on) so that vhost-user devices (virtiofsd) can map it; a
 * private anonymous RAM would make virtio-fs fail. Hot-plug room: `maxcpus` empty CPU slots for device_add, and
 * one DIMM slot per MEMORY_HOTPLUG_BLOCK_MIB of `memoryRoomMiB` (each DIMM is a shared memfd too, see resize()).
 * Without room the argv is exactly the one without hot-plug.
 */
export function cpuMemoryArgs(
  vcpus: number,
  memoryMiB: number,
  maxVcpus = vcpus,
  memoryRoomMiB = 0,
  deviceMemory: DeviceMemory = { slots: 0, MiB: 0 },
  memoryFile?: string,
): string[] {
  if (!Number.isInteger(vcpus) || vcpus < 1)
    throw new InvalidArgumentError(`vcpus ${vcpus} must be a positive integer`);
  if (!Number.isInteger(memoryMiB) || memoryMiB < 1)
    throw new InvalidArgumentError(`memoryMiB ${memoryMiB} must be a positive integer`);
  if (!Number.isInteger(maxVcpus) || maxVcpus < vcpus)
    throw new InvalidArgumentError(`maxVcpus ${maxVcpus} must be an integer of at least vcpus ${vcpus}`);
  if (!Number.isInteger(memoryRoomMiB) || memoryRoomMiB < 0 || memoryRoomMiB % MEMORY_HOTPLUG_BLOCK_MIB !== 0)
    throw new InvalidArgumentError(
      `memory hot-plug room ${memoryRoomMiB} MiB must be whole DIMMs of ${MEMORY_HOTPLUG_BLOCK_MIB} MiB`,
    );
  const slots = memoryRoomMiB / MEMORY_HOTPLUG_BLOCK_MIB + deviceMemory.slots;
  // With room, the DIMMs go on memory-block boundaries behind the device memory (qemu.ts alignedDimmAddress), so
  // maxmem counts that memory rounded up to whole blocks: the room fits without counting on QEMU's own slack.
  const device =
    memoryRoomMiB > 0
      ? Math.ceil(deviceMemory.MiB / MEMORY_HOTPLUG_BLOCK_MIB) * MEMORY_HOTPLUG_BLOCK_MIB
      : deviceMemory.MiB;
  const maxmem = memoryMiB + memoryRoomMiB + device;
  return [
    '-smp',
    maxVcpus > vcpus ? `${vcpus},maxcpus=${maxVcpus}` : String(vcpus),
    '-m',
    maxmem > memoryMiB ? `${memoryMiB}M${slots > 0 ? `,slots=${slots}` : ''},maxmem=${maxmem}M` : `${memoryMiB}M`,
    '-object',
    memoryFile === undefined
      ? `memory-backend-memfd,id=${MEMORY_BACKEND_ID},size=${memoryMiB}M,share=on`
      : `memory-backend-file,id=${MEMORY_BACKEND_ID},size=${memoryMiB}M,mem-path=${checkOptionValue('memory file', memoryFile)},share=on`,
  ];
}

/** The guest kernel command line: BASE_KERNEL_PARAMS (minus `quiet` when debugging), the agent transport, extras. */
export function kernelCommandLine(transport: AgentTransport, extra: readonly string[], debug: boolean): string {
  const base = debug ? BASE_KERNEL_PARAMS.filter((w) => w !== 'quiet') : BASE_KERNEL_PARAMS;
  for (const word of extra) {
    if (word.length === 0 || /\s/.test(word))
      throw new InvalidArgumentError(`kernel parameter ${JSON.stringify(word)} must be one word`);
  }
  return [...base, `hull.agent=${transport}`, ...extra].join(' ');
}

export function kernelArgs(kernel: string, initrd: string, append: string): string[] {
  return [
    '-kernel',
    checkOptionValue('kernel', kernel),
    '-initrd',
    checkOptionValue('initrd', initrd),
    '-append',
    append,
  ];
}

/** Memory devices outside the boot RAM that need room in QEMU's device memory: DIMM slots and MiB of maxmem. */
export interface DeviceMemory {
  slots: number;
  MiB: number;
}

/** What the root image's device takes of the device memory: a pmem device is the image's size (an nvdimm a slot too). */
export function rootImageDeviceMemory(root: RootImage | undefined): DeviceMemory {
  if (root === undefined || root.device === 'virtio-blk') return { slots: 0, MiB: 0 };
  if (!Number.isSafeInteger(root.sizeBytes) || root.sizeBytes <= 0 || root.sizeBytes % ROOT_IMAGE_ALIGN !== 0)
    throw new InvalidArgumentError(
      `root image size ${root.sizeBytes} must be a positive multiple of ${ROOT_IMAGE_ALIGN}`,
    );
  return { slots: root.device === 'nvdimm' ? 1 : 0, MiB: root.sizeBytes / (1024 * 1024) };
}

/** The guest's root device as the initramfs's /init takes it (`root=`); absent = its default, /dev/vda. */
export function rootKernelParams(root: RootImage | undefined): string[] {
  return root === undefined || root.device === 'virtio-blk' ? [] : ['root=/dev/pmem0'];
}

/** id of the root image's memory backend (DAX). */
export const ROOT_IMAGE_BACKEND_ID = 'rootimg';

/**
 * The guest image, read-only. virtio-blk: a raw disk (/dev/vda) from `dataOffset` on. DAX: a `memory-backend-file`
 * on the image, `readonly=on` (QEMU opens it O_RDONLY and maps it PROT_READ, so neither the guest nor QEMU can
 * write it) and `share=on` (MAP_SHARED: the host's page cache pages themselves, shared by every VM), as an nvdimm
 * (`unarmed=on`: the guest marks the region read-only; QEMU requires it for a read-only backend) or a virtio-pmem
 * device. The guest finds /dev/pmem0 and mounts it with `-o dax` (root=/dev/pmem0, rootKernelParams).
 */
export function rootDiskArgs(image: string, root?: RootImage): string[] {
  const file = checkOptionValue('image', image);
  if (root === undefined || root.device === 'virtio-blk') {
    const offset = root?.dataOffset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % 512 !== 0)
      throw new InvalidArgumentError(`root image offset ${offset} must be a non-negative multiple of 512`);
    return [
      '-drive',
      `file=${file},if=none,id=rootfs,format=raw,readonly=on${offset > 0 ? `,offset=${offset}` : ''}`,
      '-device',
      'virtio-blk-pci,drive=rootfs',
    ];
  }
  rootImageDeviceMemory(root); // checks the size
  const backend = `memory-backend-file,id=${ROOT_IMAGE_BACKEND_ID},mem-path=${file},size=${root.sizeBytes},share=on,readonly=on`;
  return [
    '-object',
    backend,
    '-device',
    root.device === 'nvdimm'
      ? `nvdimm,id=rootnv,memdev=${ROOT_IMAGE_BACKEND_ID},unarmed=on`
      : `virtio-pmem-pci,id=rootpmem,memdev=${ROOT_IMAGE_BACKEND_ID}`,
  ];
}

/** The agent's channel: a virtio-serial port backed by a unix socket QEMU listens on, or a vhost-vsock device. */
export function agentArgs(agent: AgentChannel): string[] {
  if (agent.transport === 'vsock') {
    if (!Number.isInteger(agent.cid) || agent.cid < 3 || agent.cid >= 0xffffffff) {
      throw new InvalidArgumentError(`guest CID ${agent.cid} is not in [3, 2^32-2]`);
    }
    return ['-device', `vhost-vsock-pci,guest-cid=${agent.cid}`];
  }
  return [
    '-device',
    'virtio-serial-pci',
    '-chardev',
    `socket,id=agent,path=${checkOptionValue('agent socket', agent.socketPath)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agent,name=${AGENT_SERIAL_NAME}`,
  ];
}

/**
 * The agent's log: a virtio-serial port of its own (AGENT_LOG_SERIAL_NAME) on a unix socket QEMU listens on and the
 * driver reads (guest-log.ts), whatever the agent channel is, so the agent's records never mix with the console.
 * The serial agent channel has made the virtio-serial bus already; with vsock, the port needs one.
 */
export function agentLogArgs(socketPath: string, transport: AgentTransport): string[] {
  return [
    ...(transport === 'vsock' ? ['-device', 'virtio-serial-pci'] : []),
    '-chardev',
    `socket,id=agentlog,path=${checkOptionValue('agent log socket', socketPath)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=agentlog,name=${AGENT_LOG_SERIAL_NAME}`,
  ];
}

/**
 * The test-only raw port (VmConfig.debugPort): a virtio-serial port like the agent's, on a unix socket QEMU listens
 * on, for the benchmarks' channel floor. The log port has made the virtio-serial bus already.
 */
export function debugPortArgs(socketPath: string): string[] {
  return [
    '-chardev',
    `socket,id=hulldebug,path=${checkOptionValue('debug port socket', socketPath)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=hulldebug,name=${DEBUG_SERIAL_NAME}`,
  ];
}

/** virtio-fs: QEMU connects to virtiofsd's vhost-user socket (virtiofsd must already listen). */
export function virtiofsArgs(socketPath: string): string[] {
  return [
    '-chardev',
    `socket,id=fs,path=${checkOptionValue('virtiofsd socket', socketPath)}`,
    '-device',
    `vhost-user-fs-pci,chardev=fs,tag=${GUEST_SHARE_TAG}`,
  ];
}

/**
 * One virtio-net NIC per tap: `-netdev tap` on the existing tap (QEMU runs no scripts: the host plumbing has set the
 * tap up), `-device virtio-net-pci` with the pod's MAC, and `host_mtu` (the MTU the guest driver starts with) when
 * one is given. netdev ids are net0, net1, ... in order, so the guest's NICs come up in PCI slot order too.
 */
export function networkArgs(nics: readonly VmNic[], vhostNet: boolean): string[] {
  return nics.flatMap((nic, i) => [...netdevArgs(nic, i, vhostNet), '-device', nicDeviceProps(nic, i).join(',')]);
}

/** The tap backend of NIC `i` (`net<i>`): QEMU opens the existing tap by name, runs no scripts. */
export function netdevArgs(nic: VmNic, i: number, vhostNet: boolean): string[] {
  // The NIC was checked by resolveConfig (checkNetwork); here only QEMU's option syntax is guarded.
  const tap = checkOptionValue('tap name', nic.tap);
  return ['-netdev', `tap,id=net${i},ifname=${tap},script=no,downscript=no${vhostNet ? ',vhost=on' : ''}`];
}

/** The virtio-net device of NIC `i` on netdev `net<i>`, with the pod's MAC and host_mtu, as `key=value` words. */
export function nicDeviceProps(nic: VmNic, i: number): string[] {
  const mac = checkOptionValue('NIC MAC', nic.mac);
  return ['virtio-net-pci', `netdev=net${i}`, `mac=${mac}`, ...(nic.mtu === undefined ? [] : [`host_mtu=${nic.mtu}`])];
}

/**
 * ttyS0 on QEMU's stdout, a pipe the driver reads into a bounded ring (hypervisor/console.ts): nothing on disk. stdin
 * is /dev/null (no input to the guest's console); signal=off: no ^C handling on it.
 */
export function consoleArgs(): string[] {
  return ['-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console'];
}

export function qmpArgs(socketPath: string): string[] {
  return ['-qmp', `unix:${checkOptionValue('QMP socket', socketPath)},server=on,wait=off`];
}

/**
 * QEMU's own confinement: `-sandbox` (its seccomp filter, installed while QEMU parses its options) and `-runas`
 * (setgid/setgroups/setuid just before the guest runs, after every device and file is open). See confine.ts for
 * why elevateprivileges is `allow` exactly when -runas is given.
 */
export function confinementArgs(c: QemuConfinement): string[] {
  const runAs = c.runAs === undefined ? undefined : checkQemuUser('QEMU user', c.runAs);
  if (runAs === '') throw new InvalidArgumentError('QEMU user is empty');
  return [
    ...(c.seccomp ? ['-sandbox', sandboxOptions(runAs !== undefined)] : []),
    ...(runAs === undefined ? [] : ['-runas', runAs]),
  ];
}

/** The whole argv (without argv[0]). */
export function buildQemuArgv(c: QemuCmdline): string[] {
  return [
    ...nameArgs(c.id),
    ...machineArgs(
      c.accel,
      c.tcgTbSizeMiB,
      c.rootImage?.device === 'nvdimm',
      c.maxVcpus !== undefined && c.maxVcpus > c.vcpus,
    ),
    ...(c.firmware === undefined ? [] : ['-bios', checkOptionValue('firmware', c.firmware)]),
    ...baseArgs(),
    ...cpuMemoryArgs(
      c.vcpus,
      c.memoryMiB,
      c.maxVcpus,
      c.memoryRoomMiB,
      rootImageDeviceMemory(c.rootImage),
      c.template?.memoryFile,
    ),
    ...kernelArgs(
      c.kernel,
      c.initrd,
      kernelCommandLine(
        c.agent.transport,
        [
          ...rootKernelParams(c.rootImage),
          ...((c.memoryRoomMiB ?? 0) > 0 ? [MEMORY_AUTO_ONLINE_PARAM] : []),
          ...((c.memoryRoomMiB ?? 0) > 0 || rootImageDeviceMemory(c.rootImage).MiB > 0 ? [NO_SWIOTLB_PARAM] : []),
          ...c.kernelParams,
        ],
        c.debug,
      ),
    ),
    ...rootDiskArgs(c.image, c.rootImage),
    ...agentArgs(c.agent),
    ...(c.agentLogSocket === undefined ? [] : agentLogArgs(c.agentLogSocket, c.agent.transport)),
    ...(c.debugPortSocket === undefined || c.agentLogSocket === undefined ? [] : debugPortArgs(c.debugPortSocket)),
    ...(c.template !== undefined
      ? templateLayoutArgs()
      : c.virtiofsSocket === undefined
        ? []
        : virtiofsArgs(c.virtiofsSocket)),
    ...(c.template === undefined ? networkArgs(c.nics ?? [], c.vhostNet ?? false) : []),
    ...(c.freePageReporting === true ? balloonArgs() : []),
    ...consoleArgs(),
    ...qmpArgs(c.qmpSocket),
    ...(c.confinement === undefined ? [] : confinementArgs(c.confinement)),
    ...(c.template?.role === 'clone' ? cloneArgs(c.virtiofsSocket, c.nics ?? [], c.vhostNet ?? false) : []),
  ];
}

/** The spare PCIe root port of a template's layout, where a clone hot-plugs its virtio-fs device. */
export const TEMPLATE_FS_PORT = 'hullfsport';
/** The id of a clone's hot-plugged virtio-fs device, and of its chardev. */
export const TEMPLATE_FS_DEVICE = 'hullfs';
export const TEMPLATE_FS_CHARDEV = 'fs';

/** The spare PCIe root ports of a template's layout where a clone hot-plugs its NICs: hullnetport0, 1, ... */
export const templateNicPort = (i: number): string => `hullnetport${i}`;
/** The id of a clone's hot-plugged NIC `i`. */
export const templateNicDevice = (i: number): string => `hullnet${i}`;

/**
 * What a VM template's layout has in place of the per-pod devices: empty PCIe root ports (native PCIe hot-plug,
 * which q35's root ports have and the guest's pciehp, built in, handles), one for the virtio-fs device and
 * TEMPLATE_NIC_PORTS for NICs.
 */
export function templateLayoutArgs(): string[] {
  return [
    '-device',
    `pcie-root-port,id=${TEMPLATE_FS_PORT},bus=pcie.0,chassis=1`,
    ...Array.from({ length: TEMPLATE_NIC_PORTS }, (_, i) => [
      '-device',
      `pcie-root-port,id=${templateNicPort(i)},bus=pcie.0,chassis=${i + 2}`,
    ]).flat(),
  ];
}

/**
 * A clone's extras: virtiofsd's vhost-user socket as a chardev only and each NIC's tap as a netdev only (QEMU
 * connects and opens them while still root, before -runas, exactly as a cold boot does; chardevs and netdevs are
 * backends, not part of the migrated state, devices are: qemu/template.ts hot-plugs the devices on them), and
 * `-incoming defer`: QEMU waits for migrate-incoming (qemu/template.ts) instead of booting.
 */
export function cloneArgs(virtiofsSocket?: string, nics: readonly VmNic[] = [], vhostNet = false): string[] {
  if (nics.length > TEMPLATE_NIC_PORTS)
    throw new InvalidArgumentError(`a clone has room for ${TEMPLATE_NIC_PORTS} NICs, not ${nics.length}`);
  return [
    ...(virtiofsSocket === undefined
      ? []
      : ['-chardev', `socket,id=${TEMPLATE_FS_CHARDEV},path=${checkOptionValue('virtiofsd socket', virtiofsSocket)}`]),
    ...nics.flatMap((nic, i) => netdevArgs(nic, i, vhostNet)),
    '-incoming',
    'defer',
  ];
}
