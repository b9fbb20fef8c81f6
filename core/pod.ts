/**
 * What a Kubernetes pod changes (containers created through containerd's CRI plugin, recognised by its annotations):
 * - the VM is sized from the pod: the sandbox's cpu quota/period (or shares) and memory annotations are added to the
 *   configured base (Kata's static sizing), capped at what the host has;
 * - the pod's network, IPC and UTS namespaces are the VM's own: the sandbox (pause) container makes none, the other
 *   containers' paths to them mean the guest's (agent/oci.ts), and the host name goes to CreateSandbox;
 * - the pod's /dev/shm is a tmpfs in the guest of the size containerd made on the host (Kata's `ephemeral` storage),
 *   bound into every container of the pod instead of sharing the host's tmpfs over virtio-fs.
 */
import fs from 'node:fs';
import os from 'node:os';
import { InvalidArgumentError } from '../errors';
import type { OciMount, OciSpec } from '../agent-client';
import { GUEST_SHARED_DIR } from '../fs-share';
import { GUEST_SHARE_TAG, type VmConfig } from '../hypervisor/types';

export const CRI_ANNOTATIONS = {
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  cpuPeriod: 'io.kubernetes.cri.sandbox-cpu-period',
  cpuQuota: 'io.kubernetes.cri.sandbox-cpu-quota',
  cpuShares: 'io.kubernetes.cri.sandbox-cpu-shares',
  memory: 'io.kubernetes.cri.sandbox-memory',
} as const;

/** Where the agent mounts the pod's shm in the guest (agent/init.ts SANDBOX_SHM). */
export const GUEST_POD_SHM = '/run/kata-containers/sandbox/shm';
/** containerd's own size for a pod's /dev/shm, used when the host folder is not a tmpfs we can measure. */
const DEFAULT_SHM_BYTES = 64 * 1024 * 1024;
const TMPFS_MAGIC = 0x01021994;
/** Namespaces a pod shares, which are the VM's own. */
const POD_NAMESPACES = new Set(['network', 'ipc', 'uts']);

export type PodRole = 'sandbox' | 'container';

/**
 * The host namespaces a VM cannot share, in the order they are reported: how a pod (CRI) or `ctr run` asks for
 * each, and why the guest cannot give it. UTS goes with the network (containerd drops both for hostNetwork).
 */
const HOST_NAMESPACES: readonly { type: string; name: string; cri: string; ctr?: string; reason: string }[] = [
  {
    type: 'network',
    name: 'network',
    cri: 'hostNetwork: namespace_options.network = NODE',
    ctr: 'ctr run --net-host',
    reason:
      "the guest has its own network stack, so the containers would get only a loopback interface and none of the host's network",
  },
  {
    type: 'ipc',
    name: 'IPC',
    cri: 'hostIPC: namespace_options.ipc = NODE',
    reason:
      "the guest kernel has its own IPC objects, so the containers could not see the host's shared memory, semaphores or message queues",
  },
  {
    type: 'pid',
    name: 'PID',
    cri: 'hostPID: namespace_options.pid = NODE',
    reason: "the guest kernel has its own processes, so the containers could not see or signal the host's",
  },
  { type: 'uts', name: 'UTS', cri: "the host's UTS namespace", reason: 'the guest kernel has its own host name' },
];

/**
 * Refuses a container that asks to share a host namespace, which a VM cannot do. In an OCI spec a namespace type
 * missing from `linux.namespaces` is the runtime's own, the host's: containerd's CRI plugin writes a pod's host
 * namespaces that way (hostNetwork drops network and uts, hostIPC ipc, hostPID pid), and `ctr run --net-host` drops
 * network. Under hull the container would silently get the guest's instead (for the network, a VM with nothing but
 * a loopback), so this is an InvalidArgumentError (the request can never be served, whatever the host's state),
 * thrown before anything is made. A spec without a namespace list at all (a hand-written bundle; containerd always
 * writes one) is not checked.
 */
export function checkNoHostNamespaces(spec: OciSpec, role: PodRole | undefined, id: string): void {
  const list = spec.linux?.namespaces;
  if (!Array.isArray(list)) return;
  const has = new Set(list.map((n) => n?.type));
  const missing = HOST_NAMESPACES.filter((n) => !has.has(n.type) && !(n.type === 'uts' && !has.has('network')));
  if (missing.length === 0) return;
  const what =
    role === 'sandbox' ? `pod sandbox ${id}` : role === 'container' ? `container ${id} of a pod` : `container ${id}`;
  const asked = missing.map((n) => {
    const how = role ? n.cri : `no "${n.type}" entry in linux.namespaces${n.ctr ? `, as ${n.ctr} writes` : ''}`;
    return `the host's ${n.name} namespace (${how})`;
  });
  throw new InvalidArgumentError(
    `${what} asks for ${asked.join(' and ')}, which a VM cannot share: hull runs every container in a VM, where ${missing.map((n) => n.reason).join('; ')}. ` +
      'Run it with a runtime without a VM (runc)',
  );
}

/**
 * Refuses a bind mount with shared propagation (`shared`/`rshared`: Kubernetes' Bidirectional mountPropagation,
 * `ctr run --mount ...,options=rbind:rshared`): mounts made in the container would have to appear on the host and the
 * host's new mounts in the container, and a volume reaches the guest over virtio-fs, which carries files, not mounts.
 * Without this the guest agent refuses the option after the VM has booted. `rslave` (HostToContainer) is kept, as a
 * downgrade: the container sees the volume's files, and host changes to them, but not mounts the host makes below
 * it later. Thrown before anything is made.
 */
export function checkNoSharedPropagation(spec: OciSpec, id: string): void {
  for (const m of spec.mounts ?? []) {
    const options = Array.isArray(m?.options) ? m.options : [];
    const shared = options.find((o) => o === 'shared' || o === 'rshared');
    if (!shared) continue;
    throw new InvalidArgumentError(
      `container ${id}: mount ${JSON.stringify(String(m.destination).slice(0, 256))} asks for ${shared} propagation (Kubernetes' Bidirectional), which a VM cannot give: ` +
        'the volume reaches the guest over virtio-fs, which carries files, not mounts, so no mount crosses between the host and the container. ' +
        'Use rslave or private propagation (HostToContainer or None), or a runtime without a VM (runc)',
    );
  }
}

/**
 * Why no mount may be idmapped in hull's guest; shim/info.ts announces `mountExtensions.idmap.enabled: false` for the
 * same reason, so containerd 2.x refuses such a container itself before it reaches the shim.
 */
export const IDMAP_REFUSAL =
  "the guest kernel (Debian bookworm's 6.1) cannot idmap the file systems hull gives a container: volumes and the " +
  'rootfs reach the guest over virtio-fs, which as FUSE gained idmapped mounts only in Linux 6.9 (with a virtio-fs ' +
  'daemon that allows them), and tmpfs only in 6.3; of 6.1 file systems only ext4, xfs and btrfs on a block ' +
  'device can be idmapped, and hull passes no block device to a container';

/**
 * Refuses an idmapped mount: `uidMappings`/`gidMappings` on a mount, or its `idmap`/`ridmap` option (containerd's
 * rule for "uses idmap mounts", `ctr run --mount ...,uidmap=...`, Kubernetes' user namespaces). Dropping the mapping
 * would give the container files owned by the wrong ids, so it is INVALID_ARGUMENT, thrown before anything is made.
 */
export function checkNoIdmappedMounts(spec: OciSpec, id: string): void {
  for (const m of spec.mounts ?? []) {
    // Read as containerd wrote it: OciMount leaves out the mappings, which hull never passes on.
    const raw = m as { uidMappings?: unknown; gidMappings?: unknown; options?: unknown };
    const options = Array.isArray(raw.options) ? raw.options : [];
    const option = options.find((o) => o === 'idmap' || o === 'ridmap') as string | undefined;
    const mapped = option ?? (raw.uidMappings != null || raw.gidMappings != null ? 'uid/gid mappings' : undefined);
    if (!mapped) continue;
    throw new InvalidArgumentError(
      `container ${id}: mount ${JSON.stringify(String(m?.destination).slice(0, 256))} is idmapped (${mapped}), which hull cannot do: ${IDMAP_REFUSAL}. ` +
        'Run it without the mapping, or with a runtime without a VM (runc)',
    );
  }
}

/** The container's role in a Kubernetes pod, or undefined for a container of its own (`ctr run`). */
export function podRole(spec: OciSpec): PodRole | undefined {
  const t = spec.annotations?.[CRI_ANNOTATIONS.containerType];
  if (t === undefined) return undefined;
  if (t === 'sandbox' || t === 'container') return t;
  throw new InvalidArgumentError(
    `annotation ${CRI_ANNOTATIONS.containerType}=${JSON.stringify(t)}: expected "sandbox" or "container"`,
  );
}

function annotationInt(annotations: Record<string, string>, key: string): number {
  const v = annotations[key];
  if (v === undefined || v === '') return 0;
  if (!/^-?[0-9]{1,19}$/.test(v))
    throw new InvalidArgumentError(`annotation ${key}=${JSON.stringify(v.slice(0, 32))} is not an integer`);
  return Number(v);
}

export interface PodSizing {
  /** vCPUs and MiB the pod asks for on top of the configured base. */
  extraVcpus: number;
  extraMemoryMiB: number;
}

/** The pod's sizing annotations: quota/period rounded up, else whole CPUs of shares (1024 per CPU); memory in MiB. */
export function podSizing(annotations: Record<string, string> = {}): PodSizing {
  const quota = annotationInt(annotations, CRI_ANNOTATIONS.cpuQuota);
  const period = annotationInt(annotations, CRI_ANNOTATIONS.cpuPeriod);
  const shares = annotationInt(annotations, CRI_ANNOTATIONS.cpuShares);
  const memory = annotationInt(annotations, CRI_ANNOTATIONS.memory);
  let extraVcpus = 0;
  if (quota > 0 && period > 0) extraVcpus = Math.ceil(quota / period);
  else if (quota <= 0 && shares > 1024) extraVcpus = Math.floor(shares / 1024);
  const extraMemoryMiB = memory > 0 ? Math.ceil(memory / (1024 * 1024)) : 0;
  return { extraVcpus, extraMemoryMiB };
}

/** The VM's configuration grown by the pod's sizing, within the host's CPUs and memory. */
export function sizeVm(
  vm: VmConfig,
  sizing: PodSizing,
  host = { cpus: os.availableParallelism(), memoryMiB: Math.floor(os.totalmem() / (1024 * 1024)) },
): { vm: VmConfig; capped: string[] } {
  const capped: string[] = [];
  let vcpus = vm.vcpus + sizing.extraVcpus;
  if (vcpus > Math.max(host.cpus, vm.vcpus)) {
    capped.push(`vCPUs ${vcpus} → ${Math.max(host.cpus, vm.vcpus)} (the host has ${host.cpus})`);
    vcpus = Math.max(host.cpus, vm.vcpus);
  }
  const memoryMiB = vm.memoryMiB + sizing.extraMemoryMiB;
  if (memoryMiB > host.memoryMiB) {
    throw new InvalidArgumentError(
      `the pod asks for a VM of ${memoryMiB} MiB (${vm.memoryMiB} base + ${sizing.extraMemoryMiB} from ${CRI_ANNOTATIONS.memory}), more than the host's ${host.memoryMiB} MiB`,
    );
  }
  return { vm: { ...vm, vcpus, memoryMiB }, capped };
}

/** The pod's /dev/shm as the sandbox container's spec has it: containerd's host folder and its size. */
export interface PodShm {
  hostSource: string | undefined;
  sizeBytes: number;
}

const isShmMount = (m: OciMount): boolean => m.destination === '/dev/shm' || m.destination === '/dev/shm/';

/** The pod's shm from the sandbox container's spec (a tmpfs containerd mounted on the host), if it has one. */
export function podShm(spec: OciSpec): PodShm | undefined {
  const m = (spec.mounts ?? []).find(isShmMount);
  if (!m) return undefined;
  let sizeBytes = DEFAULT_SHM_BYTES;
  if (m.source && (m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind'))) {
    try {
      const st = fs.statfsSync(m.source);
      if (st.type === TMPFS_MAGIC && st.blocks > 0) sizeBytes = st.blocks * st.bsize;
    } catch {
      // not there: containerd's default size
    }
  }
  return { hostSource: m.source, sizeBytes };
}

/** CreateSandbox's storage for the sandbox's virtio-fs share, mounted in the guest at GUEST_SHARED_DIR. */
export function sharedDirStorage(): {
  driver: string;
  source: string;
  fstype: string;
  options: string[];
  mountPoint: string;
} {
  return {
    driver: 'virtio-fs',
    source: GUEST_SHARE_TAG,
    fstype: 'virtiofs',
    options: ['nodev'],
    mountPoint: GUEST_SHARED_DIR,
  };
}

/** CreateSandbox's storage for the pod's shm. */
export function shmStorage(shm: PodShm): {
  driver: string;
  source: string;
  fstype: string;
  options: string[];
  mountPoint: string;
} {
  return {
    driver: 'ephemeral',
    source: 'shm',
    fstype: 'tmpfs',
    options: [`size=${shm.sizeBytes}`, 'mode=1777', 'nosuid', 'nodev', 'noexec'],
    mountPoint: GUEST_POD_SHM,
  };
}

/**
 * A pod container's spec as the guest gets it: the sandbox container makes no network, IPC or UTS namespace and sets
 * no host name (the VM's are the pod's); /dev/shm binds the pod's shm in the guest when the pod has one, and is
 * dropped from what the host shares.
 */
export function podContainerSpec(spec: OciSpec, role: PodRole, shm: PodShm | undefined): OciSpec {
  const out: OciSpec = { ...spec };
  if (role === 'sandbox') {
    delete out.hostname;
    if (spec.linux?.namespaces)
      out.linux = {
        ...spec.linux,
        namespaces: spec.linux.namespaces.filter((n) => !(POD_NAMESPACES.has(n.type) && !n.path)),
      };
  }
  if (spec.mounts) {
    out.mounts = spec.mounts.map((m) => {
      if (!isShmMount(m) || !shm) return m;
      const options = (m.options ?? []).filter((o) => ['ro', 'rw', 'nosuid', 'nodev', 'noexec'].includes(o));
      return { destination: '/dev/shm', type: 'bind', source: GUEST_POD_SHM, options: ['rbind', ...options] };
    });
  }
  return out;
}

/** A mount that podContainerSpec pointed at the guest's pod shm: nothing of the host's to share. */
export function isGuestPodShm(m: { source?: string; destination: string }): boolean {
  return m.source === GUEST_POD_SHM && isShmMount(m);
}
