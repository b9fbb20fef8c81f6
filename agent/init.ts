/**
 * What the agent does as the guest's init (PID 1) before it serves: mount the kernel filesystems the guest and its
 * containers need, and load the kernel modules of the agent channel, virtio-fs and overlay. Mounts already present
 * (made by the initramfs) are left alone.
 */
import fs from 'node:fs';
import { log } from './log';
import { isMountPoint, mount, run } from './system';

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
  { fstype: 'devpts', source: 'devpts', target: '/dev/pts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
  { fstype: 'tmpfs', source: 'shm', target: '/dev/shm', options: ['nosuid', 'nodev', 'mode=1777'] },
  { fstype: 'tmpfs', source: 'run', target: '/run', options: ['nosuid', 'nodev', 'mode=0755'] },
  { fstype: 'tmpfs', source: 'tmp', target: '/tmp', options: ['nosuid', 'nodev', 'mode=1777'] },
  { fstype: 'cgroup2', source: 'cgroup2', target: '/sys/fs/cgroup', options: ['nosuid', 'nodev', 'noexec'] },
];

/** Modules loaded at boot: the agent channel (serial or vsock), virtio-fs and overlay for container roots. */
export const BOOT_MODULES = ['virtio_console', 'vmw_vsock_virtio_transport', 'virtiofs', 'overlay'];

export const SHARED_ROOT = '/run/kata-containers';
export const SHARED_CONTAINERS = `${SHARED_ROOT}/shared/containers`;

export async function initGuest(): Promise<void> {
  for (const m of MOUNTS) {
    // /proc is mounted first, so isMountPoint (which reads /proc/self/mountinfo) works for the rest.
    if (m.target !== '/proc' && isMountPoint(m.target)) continue;
    if (m.target === '/proc' && fs.existsSync('/proc/self')) continue;
    try {
      await mount(m.fstype, m.source, m.target, m.options);
    } catch (err) {
      log.warn('mount failed', { target: m.target, error: (err as Error).message });
    }
  }
  try {
    await run('modprobe', ['-a', ...BOOT_MODULES]);
  } catch (err) {
    // A module missing from the image is reported, not fatal: the feature that needs it fails later, clearly.
    log.warn('loading kernel modules failed', { modules: BOOT_MODULES, error: (err as Error).message });
  }
  fs.mkdirSync(SHARED_CONTAINERS, { recursive: true, mode: 0o755 });
}
