/**
 * What the agent does as the guest's init (PID 1) before it serves: mount the kernel filesystems the guest and its
 * containers need, load the kernel modules of the agent channel, virtio-fs, overlay and virtio-net, and bring the
 * loopback up. Mounts already present
 * (made by the initramfs) are left alone.
 */
import fs from 'node:fs';
import { log } from './log';
import { execIp, linkUp } from './net-ip';
import { agentChannels, isMountPoint, mount, run } from './system';

interface MountEntry {
  fstype: string;
  source: string;
  target: string;
  options: string[];
}

const MOUNTS: MountEntry[] = [
  { fstype: 'proc', source: 'proc', target: '/proc', options: ['nosuid', 'nodev', 'noexec'] },
  { fstype: 'sysfs', source: 'sysfs', target: '/sys', options: ['nosuid', 'nodev', 'noexec'] },
  { fstype: 'devtmpfs', source: 'dev', target: '/dev', options: ['nosuid', 'mode=0755'] },
  {
    fstype: 'devpts',
    source: 'devpts',
    target: '/dev/pts',
    options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
  },
  { fstype: 'tmpfs', source: 'shm', target: '/dev/shm', options: ['nosuid', 'nodev', 'mode=1777'] },
  { fstype: 'tmpfs', source: 'run', target: '/run', options: ['nosuid', 'nodev', 'mode=0755'] },
  { fstype: 'tmpfs', source: 'tmp', target: '/tmp', options: ['nosuid', 'nodev', 'mode=1777'] },
  { fstype: 'cgroup2', source: 'cgroup2', target: '/sys/fs/cgroup', options: ['nosuid', 'nodev', 'noexec'] },
];

/**
 * Modules the agent channel needs before the agent can serve (the serial port's driver), and modules loaded in the
 * background after it serves (vsock, virtio-fs, overlay): what needs them waits for `modulesReady`.
 */
export const CHANNEL_MODULES = ['virtio_console']; // loaded by the initramfs already; modprobe is then a no-op
/** The vsock channel's transport (it pulls in vsock and the common virtio transport code), loaded before listening. */
export const VSOCK_CHANNEL_MODULES = ['vmw_vsock_virtio_transport'];
export const BACKGROUND_MODULES = ['vmw_vsock_virtio_transport', 'virtiofs', 'overlay', 'virtio_net'];

export const SHARED_ROOT = '/run/kata-containers';
export const SHARED_CONTAINERS = `${SHARED_ROOT}/shared/containers`;
/** The pod's /dev/shm: a tmpfs the agent mounts at CreateSandbox (an `ephemeral` storage) for every container to bind. */
export const SANDBOX_SHM = `${SHARED_ROOT}/sandbox/shm`;

/** Resolves when the background modules are loaded (or failed to: the failure is logged, not fatal). */
export let modulesReady: Promise<void> = Promise.resolve();
/** Resolves when the NIC driver (virtio_net) is loaded and lo is up (failures logged): what the network RPCs wait for. */
export let networkReady: Promise<void> = Promise.resolve();

/** The loopback up, with iproute2's ip (the kernel leaves it down); a failure is logged, not fatal. */
async function loopbackUp(): Promise<void> {
  try {
    await execIp()(linkUp('lo'));
  } catch (err) {
    log.warn('bringing lo up failed', { error: (err as Error).message });
  }
}

async function loadModules(modules: string[]): Promise<void> {
  try {
    await run('modprobe', ['-a', ...modules]);
  } catch (err) {
    // A module missing from the image is reported, not fatal: the feature that needs it fails later, clearly.
    log.warn('loading kernel modules failed', { modules, error: (err as Error).message });
  }
}

/**
 * Loads the vsock channel's modules unless they are there already (initGuest loads them when the agent is init);
 * a failure is logged, and listening then says why.
 */
export async function loadVsockModules(): Promise<void> {
  if (VSOCK_CHANNEL_MODULES.every((m) => fs.existsSync(`/sys/module/${m}`))) return;
  await loadModules(VSOCK_CHANNEL_MODULES);
}

async function mountMissing(entries: MountEntry[]): Promise<void> {
  await Promise.all(
    entries.map(async (m) => {
      if (isMountPoint(m.target)) return;
      try {
        await mount(m.fstype, m.source, m.target, m.options);
      } catch (err) {
        log.warn('mount failed', { target: m.target, error: (err as Error).message });
      }
    }),
  );
}

/**
 * Mounts what is missing and loads the channels' modules (the vsock transport too when `hull.agent` names vsock).
 * The initramfs normally hands over /dev, /proc and /sys already mounted; every spawn saved matters under
 * emulation, so independent mounts run concurrently, and one modprobe loads all the channel modules.
 */
export async function initGuest(): Promise<void> {
  if (!fs.existsSync('/proc/self')) await mount('proc', 'proc', '/proc', ['nosuid', 'nodev', 'noexec']);
  const first = MOUNTS.filter((m) => ['/sys', '/dev', '/run', '/tmp'].includes(m.target));
  const second = MOUNTS.filter((m) => ['/dev/pts', '/dev/shm', '/sys/fs/cgroup'].includes(m.target));
  const channelModules = [
    ...(fs.existsSync('/sys/module/virtio_console') ? [] : CHANNEL_MODULES),
    ...(agentChannels().includes('vsock')
      ? VSOCK_CHANNEL_MODULES.filter((m) => !fs.existsSync(`/sys/module/${m}`))
      : []),
  ];
  const channelReady = channelModules.length ? loadModules(channelModules) : Promise.resolve();
  await Promise.all([mountMissing(first), channelReady]);
  await mountMissing(second);
  fs.mkdirSync(SHARED_CONTAINERS, { recursive: true, mode: 0o755 });
  modulesReady = loadModules(BACKGROUND_MODULES.filter((m) => !channelModules.includes(m)));
  networkReady = Promise.all([modulesReady, loopbackUp()]).then(() => undefined);
}
