/**
 * The root filesystem: a staging folder filled with busybox, node, crun, kernel modules, a minimal /etc and the
 * agent, turned into an ext4 image by `mkfs.ext4 -d` (no loop mount, no root needed for the image itself).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { run } from './exec';

/** Where a guest path lives in the staging folder. */
export function staged(staging: string, guestPath: string): string {
  if (!guestPath.startsWith('/')) throw new Error(`guest path must be absolute: ${guestPath}`);
  return path.join(staging, guestPath);
}

export async function writeGuestFile(
  staging: string,
  guestPath: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<void> {
  const file = staged(staging, guestPath);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, data, { mode });
  await fs.chmod(file, mode); // writeFile's mode is filtered by the umask
}

export async function copyToGuest(staging: string, hostFile: string, guestPath: string): Promise<void> {
  const file = staged(staging, guestPath);
  await fs.mkdir(path.dirname(file), { recursive: true });
  // copyFile would write through a symlink (say, a busybox applet link) and overwrite its target.
  const existing = await fs.lstat(file).catch(() => undefined);
  if (existing?.isSymbolicLink())
    throw new Error(
      `guest path ${guestPath} is already a symlink (to ${await fs.readlink(file)}); not copying ${hostFile} over it`,
    );
  await fs.copyFile(hostFile, file, fs.constants.COPYFILE_FICLONE); // follows symlinks; keeps the mode
}

export async function guestSymlink(staging: string, guestPath: string, target: string): Promise<void> {
  const file = staged(staging, guestPath);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.symlink(target, file);
}

/** Empty directories of the image, with their modes. /run, /tmp and the rest are mounted over by the agent. */
const DIRECTORIES: ReadonlyArray<[string, number]> = [
  ['/bin', 0o755],
  ['/sbin', 0o755],
  ['/lib', 0o755],
  ['/lib64', 0o755],
  ['/usr/bin', 0o755],
  ['/usr/sbin', 0o755],
  ['/etc', 0o755],
  ['/proc', 0o555],
  ['/sys', 0o555],
  ['/dev', 0o755],
  ['/run', 0o755],
  ['/tmp', 0o1777],
  ['/mnt', 0o755],
  ['/root', 0o700],
  ['/var', 0o755],
  ['/opt/hull/agent', 0o755],
];

const ETC_FILES: ReadonlyArray<[string, string]> = [
  ['/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'],
  ['/etc/group', 'root:x:0:\n'],
  ['/etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'],
  ['/etc/resolv.conf', ''],
  // Without this file glibc asks DNS before /etc/hosts.
  ['/etc/nsswitch.conf', 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n'],
];

export async function stageBase(staging: string): Promise<void> {
  for (const [dir, mode] of DIRECTORIES) {
    await fs.mkdir(staged(staging, dir), { recursive: true });
    await fs.chmod(staged(staging, dir), mode);
  }
  for (const [file, text] of ETC_FILES) await writeGuestFile(staging, file, text);
  await guestSymlink(staging, '/etc/mtab', '/proc/self/mounts');
  await guestSymlink(staging, '/var/run', '/run');
}

/**
 * busybox at /bin/busybox and a symlink for every applet at its usual place (bin/sh, sbin/modprobe, usr/bin/awk,
 * ...), except init and linuxrc: /sbin/init is ours.
 */
export async function stageBusybox(staging: string, busybox: string, applets: readonly string[]): Promise<number> {
  await copyToGuest(staging, busybox, '/bin/busybox');
  let count = 0;
  for (const applet of applets) {
    const guestPath = `/${applet}`;
    const name = path.posix.basename(guestPath);
    if (name === 'busybox' || name === 'init' || name === 'linuxrc' || !/^[a-z0-9_./[-]+$/.test(applet)) continue;
    await guestSymlink(staging, guestPath, '/bin/busybox');
    count++;
  }
  return count;
}

export interface Ext4Result {
  sizeBytes: number;
  usedBytes: number;
  inodes: number;
}

interface TreeUsage {
  blocks: number;
  inodes: number;
}

async function treeUsage(dir: string, blockSize: number): Promise<TreeUsage> {
  let blocks = 1;
  let inodes = 1;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      const sub = await treeUsage(full, blockSize);
      blocks += sub.blocks;
      inodes += sub.inodes;
    } else {
      const st = await fs.lstat(full);
      inodes++;
      // Symlinks under 60 bytes live in the inode; a file needs an extent block only when it is very fragmented.
      if (!entry.isSymbolicLink() || st.size >= 60) blocks += Math.ceil(st.size / blockSize);
    }
  }
  return { blocks, inodes };
}

/** Where the filesystem starts in the image file and what the file's size is a multiple of (guest/pmem.ts). */
export interface Ext4Layout {
  offsetBytes: number;
  alignBytes: number;
}

/**
 * Makes a read-only ext4 image of `staging`: no journal (the disk is never written), no reserved blocks, 4 KiB
 * blocks (DAX needs the block size to be the page size), sized to the content plus a modest margin for metadata.
 * Everything is owned by root (we run as root; the root directory is forced with root_owner). With a layout the
 * filesystem starts `offsetBytes` into the file (mke2fs's `offset=`) and the file's size is rounded up to
 * `alignBytes`; `sizeBytes` is the file's size.
 */
export async function makeExt4(
  staging: string,
  image: string,
  uuid: string,
  layout: Ext4Layout = { offsetBytes: 0, alignBytes: 4096 },
): Promise<Ext4Result> {
  const blockSize = 4096;
  const { offsetBytes, alignBytes } = layout;
  if (offsetBytes % blockSize !== 0 || alignBytes % blockSize !== 0 || offsetBytes % alignBytes !== 0)
    throw new Error(
      `ext4 layout: offset ${offsetBytes} and alignment ${alignBytes} must be whole blocks, offset aligned`,
    );
  const usage = await treeUsage(staging, blockSize);
  const inodes = Math.ceil((usage.inodes + 64) * 1.25);
  const metadata = Math.ceil((inodes * 256) / blockSize) + 64; // inode table, bitmaps, descriptors, root, lost+found
  const alignBlocks = alignBytes / blockSize;
  const blocks = Math.ceil((Math.ceil((usage.blocks + metadata) * 1.05) + 1024) / alignBlocks) * alignBlocks; // 5% and 4 MiB slack
  const sizeBytes = offsetBytes + blocks * blockSize;
  await fs.rm(image, { force: true });
  const handle = await fs.open(image, 'w');
  await handle.truncate(sizeBytes);
  await handle.close();
  await run('mkfs.ext4', [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    String(blockSize),
    '-I',
    '256',
    '-N',
    String(inodes),
    '-m',
    '0',
    '-O',
    '^has_journal',
    '-L',
    'hull-guest',
    '-U',
    uuid,
    '-E',
    offsetBytes > 0 ? `root_owner=0:0,offset=${offsetBytes}` : 'root_owner=0:0',
    '-d',
    staging,
    image,
    String(blocks),
  ]);
  return { sizeBytes, usedBytes: usage.blocks * blockSize, inodes };
}
