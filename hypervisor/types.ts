/**
 * The contract core depends on: a `Hypervisor` runs one sandbox's VM. Core never sees QEMU, QMP or virtiofsd; it
 * sees this interface (and tests it through a fake). Grouped as in Kata's runtime-rs `Hypervisor` trait: VM manager
 * (prepare, start, stop, wait, pause, resume), device manager (addDevice) and utilities (agentAddress, pids, ...).
 */

import type { RootImageDevice } from './root-image';
import type { VirtiofsCache } from './virtiofsd-options';

export type Accel = 'kvm' | 'tcg';

export interface VmConfig {
  /** Sandbox id, validated with containerd's identifier rule (protos/identifiers.ts). */
  id: string;
  /** Per-VM folder the driver owns (created by prepare, removed by cleanup): its sockets. */
  stateDir: string;
  /** Absolute paths to guest/out/{vmlinuz,initrd.img,rootfs.img}. */
  kernel: string;
  initrd: string;
  image: string;
  vcpus: number;
  memoryMiB: number;
  /**
   * Hot-plug room: the most vCPUs and MiB of RAM resize() may grow the VM to (each at least vcpus / memoryMiB).
   * Absent (both) = no hot-plug room: the argv is exactly the one without hot-plug. See hypervisor/README.md.
   */
  maxVcpus?: number;
  maxMemoryMiB?: number;
  /** auto = detect (KVM only where it really runs a stock guest kernel; see accel.ts). */
  accel: 'auto' | Accel;
  /** auto = vsock when /dev/vhost-vsock exists, else serial. */
  agentTransport: 'auto' | 'vsock' | 'serial';
  /** Host folder exported to the guest with virtiofsd (tag GUEST_SHARE_TAG); absent = no virtio-fs. */
  sharedDir?: string;
  /** Extra kernel command line words, appended after the base ones (so they win). */
  kernelParams?: string[];
  /** Defaults DEFAULT_QEMU_PATH, DEFAULT_VIRTIOFSD_PATH. */
  qemuPath?: string;
  virtiofsdPath?: string;
  /** virtiofsd's cache mode (hypervisor/virtiofsd-options.ts); default 'auto'. */
  virtiofsCache?: VirtiofsCache;
  /** Extra virtiofsd arguments, allow-listed (checkVirtiofsdExtraArgs); after hull's own. */
  virtiofsdExtraArgs?: string[];
  /** Verbose guest kernel (no `quiet`) and virtiofsd debug logging. */
  debug?: boolean;
  /**
   * Test-only: one more virtio-serial port, DEBUG_SERIAL_NAME, on a unix socket QEMU listens on (VmPaths'
   * debugPortSocket), with nothing on the host side of hull's own. The agent's debug hooks write raw bytes to it so
   * that the benchmarks measure the channel's floor (bench/datapath.ts). hull sets it only with `[runtime]
   * debug_hooks = true`.
   */
  debugPort?: boolean;
  /**
   * The pod's network: QEMU is started inside `netnsPath` (through nsenter, which execs QEMU, so QEMU keeps the pid
   * and its own argv) with one virtio-net NIC per tap. The taps must already exist in that namespace (the host-side
   * plumbing makes them and redirects the pod's veth to them). virtiofsd stays in the host's namespace.
   */
  network?: VmNetwork;
  /** Default DEFAULT_NSENTER_PATH; used only with `network`. */
  nsenterPath?: string;
  /**
   * Called synchronously the moment each helper process (QEMU, virtiofsd, the virtiofsd probe) has been spawned,
   * before the driver does anything else, so that the caller can record it for crash recovery. If it throws, the
   * helper is killed and start() fails with that error.
   */
  onSpawn?: (helper: SpawnedHelper) => void;
  /** QEMU's seccomp filter (`-sandbox`, hypervisor/confine.ts) where the kernel has seccomp. Default true. */
  seccomp?: boolean;
  /**
   * The user QEMU drops to (`-runas`) once its devices are open: a user name or "uid:gid"; "" (the default) = none.
   * Used only where the shim is root and the user exists; otherwise QEMU keeps the shim's uid (logged).
   */
  qemuUser?: string;
  /**
   * A virtio-balloon device with free-page-reporting=on: the guest's virtio_balloon driver reports pages it freed
   * (in 4 MiB chunks) and QEMU gives them back to the host (a hole punched in the memfd). Default false.
   */
  freePageReporting?: boolean;
  /**
   * How the root image is attached (root-image.ts): 'virtio-blk' (the default), or through DAX as 'nvdimm' or
   * 'virtio-pmem' (the guest maps the host's page cache of the image instead of copying it). DAX falls back to
   * virtio-blk, logged as a warning with the reason, when the image lacks the DAX layout (its kernel lacks support).
   */
  rootImageDevice?: RootImageDevice;
  /**
   * TCG's translation cache in MiB (`-accel tcg,tb-size=N`), applied only when the guest runs under TCG (KVM has no
   * translation cache); absent or 0 = QEMU's default (1 GiB, filled as code is translated).
   */
  tcgTbSizeMiB?: number;
  /**
   * VM templates (hypervisor/README.md, "Templates"); absent = a cold boot, the argv exactly as before.
   * `make`: boot with guest RAM in `memoryFile` (a file on tmpfs, share=on), a spare PCIe root port and no virtio-fs
   * device, so that saveTemplate() can save the device state beside it. `clone`: start QEMU with the same layout on
   * a copy of `memoryFile` in stateDir, load `stateFile` (migrate-incoming, x-ignore-shared), resume, then hot-plug
   * the virtio-fs device (with sharedDir) on the spare port. The VM's size, hot-plug room, kernel, image, firmware
   * and devices must be the template's (core/template.ts keys a template by them).
   */
  template?: VmTemplateUse;
}

/**
 * How many NICs a VM template's layout has room for: spare PCIe root ports where a clone hot-plugs its NICs
 * (qemu/cmdline.ts templateLayoutArgs). A VM with more NICs than this is booted cold (core/sandbox.ts logs why).
 * Part of every template's key (core/template.ts): a change makes new templates.
 */
export const TEMPLATE_NIC_PORTS = 2;

export type VmTemplateUse =
  { role: 'make'; memoryFile: string } | { role: 'clone'; memoryFile: string; stateFile: string };

/** A helper process as crash recovery knows it: a pid alone could be reused, the pid and its start time cannot. */
export interface SpawnedHelper {
  /** 'qemu', 'virtiofsd' or 'virtiofsd-probe'. */
  name: string;
  pid: number;
  /** /proc/<pid>/stat field 22 (clock ticks after boot), as a decimal string. */
  startTime: string;
}

/** A VM's network devices and the network namespace QEMU runs in. */
export interface VmNetwork {
  /** Absolute, normalised path of the network namespace, e.g. /run/netns/cni-1234 or /proc/<pid>/ns/net. */
  netnsPath: string;
  /** At most MAX_NICS; tap names and MACs unique. */
  nics: VmNic[];
}

export interface VmNic {
  /** The tap's interface name in that namespace (Linux rules: 1-15 bytes, no '/', ':' or whitespace; here [A-Za-z0-9_.-]). */
  tap: string;
  /** The guest NIC's MAC (the pod veth's), unicast, six octets "aa:bb:cc:dd:ee:ff". */
  mac: string;
  /** Passed to the guest driver as host_mtu (68-65535); absent = the driver's default (1500). */
  mtu?: number;
}

export type AgentTransport = 'vsock' | 'serial';

export type AgentAddress = { transport: 'serial'; path: string } | { transport: 'vsock'; cid: number; port: number };

export interface VmExit {
  /** QEMU's exit code, or null when a signal ended it (or it never started). */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when stop() had been requested before QEMU exited. */
  expected: boolean;
  /** The last few KiB QEMU wrote to stderr. */
  stderrTail: string;
  /** The last lines of the guest console (ttyS0), as consoleTail() gives them. */
  consoleTail: string[];
}

/**
 * A device to add to the VM. A placeholder for hotplug (a later issue): the shapes core will hand over, each
 * returned filled in with where the guest sees it.
 */
export type Device =
  | {
      kind: 'block';
      id: string;
      hostPath: string;
      readOnly: boolean;
      /** filled in: guest PCI path */ pciPath?: string;
    }
  | { kind: 'network'; id: string; tapName: string; mac: string; /** filled in: guest PCI path */ pciPath?: string };

export interface ResizeTarget {
  vcpus?: number;
  memoryMiB?: number;
}

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
}

/** Memory is hot-plugged in DIMMs of this size (a multiple of the guest's 128 MiB memory block). */
export const MEMORY_HOTPLUG_BLOCK_MIB = 128;

export interface Hypervisor {
  /**
   * Validate the config (a missing kernel/initrd/image is a FailedPreconditionError naming the file and saying "run
   * `make guest`"), choose accel and agent transport (logging which and why), create stateDir, build the argv.
   */
  prepare(cfg: VmConfig): Promise<void>;
  /**
   * Start virtiofsd (with sharedDir) then QEMU; resolves when QMP reports the VM running. QEMU exiting early is an
   * UnavailableError carrying QEMU's stderr tail and the last console lines. Aborting kills everything and rejects
   * with CancelledError (or DeadlineExceededError when the signal's reason is a timeout).
   */
  start(signal: AbortSignal): Promise<void>;
  /** Graceful: QMP quit, wait, SIGTERM, wait, SIGKILL. force: SIGKILL at once. Also stops virtiofsd. Idempotent. */
  stop(opts: { force: boolean }): Promise<void>;
  /** Resolves when QEMU has exited (any number of callers, before or after the exit). */
  wait(): Promise<VmExit>;
  /**
   * A VM prepared with template role `make`, booted: pause it and save its device state into `stateFile`
   * (hypervisor/qemu/template.ts); it stays paused. Returns the state's size in bytes. Optional: fakes need not.
   */
  saveTemplate?(stateFile: string, signal: AbortSignal): Promise<number>;
  /** QMP stop / cont. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** NotImplementedError for now (hotplug comes later). */
  addDevice(d: Device): Promise<Device>;
  /**
   * Grows the VM to at least `target` (never shrinks: a smaller target is a no-op) by hot-plugging vCPUs and RAM
   * (whole DIMMs of MEMORY_HOTPLUG_BLOCK_MIB; a memory target is rounded up to one), and returns the size the VM now
   * has as QEMU sees it. The guest must still online them (AgentClient.onlineCpuMem). A target beyond the maxima is a
   * FailedPreconditionError naming them; QEMU not running is an UnavailableError.
   */
  resize(target: ResizeTarget, signal?: AbortSignal): Promise<VmSize>;
  /** serial: the unix socket QEMU serves for the agent's virtio-serial port; vsock: guest CID + AGENT_VSOCK_PORT. */
  agentAddress(): AgentAddress;
  /**
   * The last `maxLines` lines of the guest console (ttyS0; all that is kept by default), oldest first. The console
   * is kept only in memory, bounded (hypervisor/console.ts), each line capped and cleaned (it is the guest's text).
   */
  consoleTail(maxLines?: number): string[];
  /**
   * The agent's last log records from its own log port (hypervisor/guest-log.ts), as "hull-agent <level> <msg>
   * <fields>", oldest first; bounded and cleaned like the console. Optional: fakes may not have one.
   */
  agentLogTail?(maxLines?: number): string[];
  /** QEMU's pid while it runs. */
  pid(): number | undefined;
  virtiofsdPid(): number | undefined;
  accel(): Accel;
  /** After exit: remove stateDir (sockets, logs). Idempotent. */
  cleanup(): Promise<void>;
}

/** virtio-fs tag the guest mounts (Kata's name, so the agent's Storage handler works unchanged). */
export const GUEST_SHARE_TAG = 'kataShared';
/** The port the agent listens on over vsock (Kata's). */
export const AGENT_VSOCK_PORT = 1024;
/** The virtio-serial port name the agent opens (/dev/virtio-ports/agent.channel.0) when vsock is unavailable. */
export const AGENT_SERIAL_NAME = 'agent.channel.0';
/** The test-only raw port's name (VmConfig.debugPort); the agent's DEBUG_PORT_NAME. */
export const DEBUG_SERIAL_NAME = 'hull.debug.0';

export const DEFAULT_QEMU_PATH = '/usr/bin/qemu-system-x86_64';
export const DEFAULT_VIRTIOFSD_PATH = '/usr/lib/qemu/virtiofsd';
export const DEFAULT_NSENTER_PATH = '/usr/bin/nsenter';
