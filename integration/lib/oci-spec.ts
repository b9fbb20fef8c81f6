/**
 * Short OCI specs for the tests that drive the agent directly (no containerd): what containerd would write for a
 * plain container (its default capabilities, mounts, namespaces, masked and read-only paths), from a few fields.
 * They go through the agent client's OCI path (createOciContainer, execOciProcess), the one core uses.
 */
import type { OciLinuxResources, OciMount, OciProcess, OciSpec } from '../../agent-client';

/** A process to run in a container (the container's init or an exec'd process). */
export interface TestProcess {
  args: string[];
  /** NAME=value entries; default PATH only. */
  env?: string[];
  /** Absolute path inside the container; default '/'. */
  cwd?: string;
  /** Not root: no effective capabilities. */
  uid?: number;
  gid?: number;
  terminal?: boolean;
}

/** A container: its init process, and whether its rootfs (shared beforehand) is mounted read-only. */
export interface TestContainer extends TestProcess {
  rootReadonly?: boolean;
  hostname?: string;
  /** Mounts after the default ones (proc, /dev, /sys...): volumes, typically. */
  mounts?: OciMount[];
  resources?: OciLinuxResources;
}

/** containerd's default capabilities for a container process. */
const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];
const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

export function testProcess(p: TestProcess): OciProcess {
  const caps = p.uid ? [] : DEFAULT_CAPABILITIES;
  return {
    terminal: p.terminal ?? false,
    user: { uid: p.uid ?? 0, gid: p.gid ?? 0 },
    args: p.args,
    env: p.env ?? DEFAULT_ENV,
    cwd: p.cwd ?? '/',
    capabilities: { bounding: DEFAULT_CAPABILITIES, effective: caps, permitted: caps, inheritable: [], ambient: [] },
    noNewPrivileges: true,
  };
}

/** The OCI spec containerd would send for a plain container: default mounts and namespaces. */
export function testSpec(c: TestContainer): OciSpec {
  return {
    ociVersion: '1.0.2',
    process: testProcess(c),
    root: { path: 'rootfs', readonly: c.rootReadonly ?? false },
    hostname: c.hostname ?? '',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...(c.mounts ?? []),
    ],
    linux: {
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      ...(c.resources ? { resources: c.resources } : {}),
    },
  };
}
