/**
 * `containerd-shim-hull-v2 -info`, as containerd's runc shim answers it (containerd 2.x `pkg/shim` runInfo): reads
 * the runtime options containerd writes on stdin (a google.protobuf.Any, possibly empty), prints a
 * containerd.types.RuntimeInfo (raw protobuf, not length-delimited) on stdout and exits 0. Its `features` is the OCI
 * runtime-spec features document (features.json, as JSON in an Any of type
 * `types.containerd.io/opencontainers/runtime-spec/1/features/Features`) of what hull and its guest really do with
 * a spec, which containerd checks before a create that asks for idmapped mounts (and CRI for user namespaces).
 *
 * No VM, no configuration file, no guest files: the facts below are hull's and its guest image's (Debian bookworm's
 * cloud kernel 6.1, crun 1.8.1), fixed by the code that enforces them (named beside each). Node built-ins only.
 */
import { decodeAny, encodeRuntimeInfo, type AnyMessage } from './wire';
import type { StdinInput } from './stdin';

export const RUNTIME_NAME = 'io.containerd.hull.v2';
export const FEATURES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/features/Features';
/** The runtime options hull understands in CreateTaskRequest.options (core/config.ts): CRI's. */
export const RUNTIME_OPTIONS_TYPE_URL = 'runtimeoptions.v1.Options';

/** OCI runtime-spec `features.json` (v1.1), the fields hull fills. */
export interface OciFeatures {
  ociVersionMin: string;
  ociVersionMax: string;
  hooks: string[];
  mountOptions: string[];
  linux: {
    namespaces: string[];
    capabilities: string[];
    cgroup: { v1: boolean; v2: boolean; systemd: boolean; systemdUser: boolean; rdma: boolean };
    seccomp: {
      enabled: boolean;
      actions: string[];
      operators: string[];
      archs: string[];
      knownFlags: string[];
      supportedFlags: string[];
    };
    apparmor: { enabled: boolean };
    selinux: { enabled: boolean };
    intelRdt: { enabled: boolean };
    mountExtensions: { idmap: { enabled: boolean } };
  };
  annotations: Record<string, string>;
}

/** Linux 6.1's capabilities, 0 (CAP_CHOWN) to 40 (CAP_CHECKPOINT_RESTORE): crun sets any of them in the guest. */
const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/**
 * Mount options hull passes on: a volume's (agent/volumes.ts BIND_OPTIONS; shared and rshared propagation are
 * refused, core/pod.ts) and the flags of the guest's own file systems (proc, sysfs, tmpfs, ...: agent/validate.ts
 * MOUNT_FLAGS, handed to crun). No idmap or ridmap (core/pod.ts IDMAP_REFUSAL).
 */
const MOUNT_OPTIONS = [
  'async',
  'atime',
  'bind',
  'dev',
  'diratime',
  'dirsync',
  'exec',
  'noatime',
  'nodev',
  'nodiratime',
  'noexec',
  'norelatime',
  'nostrictatime',
  'nosuid',
  'private',
  'rbind',
  'relatime',
  'ro',
  'rprivate',
  'rslave',
  'rw',
  'slave',
  'strictatime',
  'suid',
  'sync',
];

/** The features document: hull's and its guest's, not the host's runc's. */
export function hullFeatures(version: string): OciFeatures {
  return {
    ociVersionMin: '1.0.0',
    // The spec containerd writes is read field by field (agent-client/oci.ts); the guest's crun gets a 1.0.2 one.
    ociVersionMax: '1.3.0',
    hooks: [], // never run: neither on the host nor sent to the guest (agent-client/oci.ts)
    mountOptions: MOUNT_OPTIONS,
    linux: {
      // agent/oci.ts: pid, ipc, uts, mount and cgroup are made for the container; network is the pod's (the VM's).
      // The host's namespaces are refused (core/pod.ts); time is not made. Not user: the agent passes a user
      // namespace with mappings on, but crun 1.8.1 in the guest then fails to make the rootfs (a virtio-fs
      // bind) private (`ctr run --uidmap` under containerd 1.6: "Permission denied").
      namespaces: ['cgroup', 'ipc', 'mount', 'network', 'pid', 'uts'],
      capabilities: CAPABILITIES,
      // The pod's host cgroup (core/host-cgroup.ts): cgroupfs or systemd paths, v1 or v2 hierarchies. In the guest
      // every container has its own cgroup v2 group.
      cgroup: { v1: true, v2: true, systemd: true, systemdUser: false, rdma: false },
      // agent/seccomp.ts: crun 1.8.1 with the guest's libseccomp; SCMP_ACT_NOTIFY is refused (no seccomp agent).
      seccomp: {
        enabled: true,
        actions: [
          'SCMP_ACT_ALLOW',
          'SCMP_ACT_ERRNO',
          'SCMP_ACT_KILL',
          'SCMP_ACT_KILL_PROCESS',
          'SCMP_ACT_KILL_THREAD',
          'SCMP_ACT_LOG',
          'SCMP_ACT_TRACE',
          'SCMP_ACT_TRAP',
        ],
        operators: [
          'SCMP_CMP_EQ',
          'SCMP_CMP_GE',
          'SCMP_CMP_GT',
          'SCMP_CMP_LE',
          'SCMP_CMP_LT',
          'SCMP_CMP_MASKED_EQ',
          'SCMP_CMP_NE',
        ],
        // The guest is x86_64: its filter may name the 32-bit ABIs the kernel also runs.
        archs: ['SCMP_ARCH_X86', 'SCMP_ARCH_X86_64', 'SCMP_ARCH_X32'],
        knownFlags: [
          'SECCOMP_FILTER_FLAG_TSYNC',
          'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
          'SECCOMP_FILTER_FLAG_LOG',
          'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
        ],
        supportedFlags: [
          'SECCOMP_FILTER_FLAG_TSYNC',
          'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
          'SECCOMP_FILTER_FLAG_LOG',
          'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
        ],
      },
      // AppArmor profiles and SELinux labels are dropped (agent/oci.ts): the guest has neither.
      apparmor: { enabled: false },
      selinux: { enabled: false },
      intelRdt: { enabled: false },
      mountExtensions: { idmap: { enabled: false } },
    },
    annotations: {
      'io.hull.version': version,
      'io.hull.guest.kernel': '6.1',
      'io.github.containers.crun.version': '1.8.1',
    },
  };
}

/**
 * The runtime options to echo in RuntimeInfo.options: an Any of the one type hull understands, as containerd sent
 * it. Anything else (no input, another type, bytes that are not an Any) is left out, as runc's shim leaves out
 * options it cannot read.
 */
export function runtimeOptionsOf(input: StdinInput): AnyMessage | undefined {
  if (input.kind !== 'data') return undefined;
  try {
    const any = decodeAny(input.data);
    return any.typeUrl === RUNTIME_OPTIONS_TYPE_URL ? any : undefined;
  } catch {
    return undefined;
  }
}

export function runtimeInfo(version: string, input: StdinInput): Buffer {
  const options = runtimeOptionsOf(input);
  return encodeRuntimeInfo({
    name: RUNTIME_NAME,
    version: { version, revision: '' },
    ...(options ? { options } : {}),
    features: { typeUrl: FEATURES_TYPE_URL, value: Buffer.from(JSON.stringify(hullFeatures(version)), 'utf8') },
  });
}
