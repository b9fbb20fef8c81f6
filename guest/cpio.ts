/**
 * A small writer (its tests have a reader: test/lib/newc-reader.ts) of the cpio "newc" format, the one the kernel unpacks as an
 * initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
 *
 * Each entry is a 110-byte ASCII header (magic "070701" and thirteen 8-digit hex fields), the NUL-terminated name
 * padded so that header + name is a multiple of 4 bytes, then the data padded to 4. The archive ends with an entry
 * named "TRAILER!!!" and is padded to a 512-byte block.
 *
 * Everything is owned by root and gets one fixed mtime, so the same input gives the same bytes. Every entry has
 * its own inode number and a link count of 1 (2 for directories): the kernel treats entries that share an inode
 * number and have nlink > 1 as hard links. Parent directories are added automatically, before their contents,
 * because the kernel creates entries in archive order.
 */

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

export interface CpioEntry {
  name: string;
  ino: number;
  /** File type and permission bits (st_mode). */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  /** File contents, or a symlink's target. */
  data: Buffer;
}

export interface NewcWriterOptions {
  /** Seconds since the epoch stamped on every entry (default 0, for reproducible archives). */
  mtime?: number;
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff)
    throw new RangeError(`cpio: ${field} ${value} does not fit in 32 bits`);
  return value.toString(16).padStart(8, '0');
}

function checkName(name: string): void {
  if (name === '' || name.startsWith('/') || name.endsWith('/') || name.includes('\0'))
    throw new Error(`cpio: bad entry name '${name}'`);
  for (const part of name.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new Error(`cpio: bad entry name '${name}'`);
  }
}

export class NewcWriter {
  private readonly chunks: Buffer[] = [];
  private readonly names = new Map<string, number>(); // name -> file type
  private nextIno = 1;
  private finished = false;
  private readonly mtime: number;

  constructor(options: NewcWriterOptions = {}) {
    this.mtime = options.mtime ?? 0;
  }

  directory(name: string, permissions = 0o755): this {
    this.add(name, S_IFDIR | permissions, Buffer.alloc(0), 2);
    return this;
  }

  file(name: string, data: Buffer | string, permissions = 0o644): this {
    this.add(name, S_IFREG | permissions, Buffer.isBuffer(data) ? data : Buffer.from(data), 1);
    return this;
  }

  symlink(name: string, target: string): this {
    if (target === '') throw new Error(`cpio: empty symlink target for '${name}'`);
    this.add(name, S_IFLNK | 0o777, Buffer.from(target), 1);
    return this;
  }

  charDevice(name: string, major: number, minor: number, permissions = 0o600): this {
    this.add(name, S_IFCHR | permissions, Buffer.alloc(0), 1, major, minor);
    return this;
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** Appends the trailer and returns the whole archive. The writer cannot be used afterwards. */
  finish(): Buffer {
    this.assertOpen();
    this.chunks.push(this.encode(TRAILER, 0, Buffer.alloc(0), 1, 0, 0, 0, 0));
    this.finished = true;
    const size = this.chunks.reduce((n, c) => n + c.length, 0);
    this.chunks.push(Buffer.alloc((512 - (size % 512)) % 512));
    return Buffer.concat(this.chunks);
  }

  private add(name: string, mode: number, data: Buffer, nlink: number, rdevMajor = 0, rdevMinor = 0): void {
    this.assertOpen();
    checkName(name);
    if (this.names.has(name)) {
      // Asking twice for the same directory is harmless; anything else is a mistake in the caller.
      if ((mode & S_IFMT) === S_IFDIR && this.names.get(name) === S_IFDIR) return;
      throw new Error(`cpio: duplicate entry '${name}'`);
    }
    const slash = name.lastIndexOf('/');
    if (slash > 0) {
      const parent = name.slice(0, slash);
      if (!this.names.has(parent)) this.directory(parent);
      else if (this.names.get(parent) !== S_IFDIR) throw new Error(`cpio: parent of '${name}' is not a directory`);
    }
    this.names.set(name, mode & S_IFMT);
    this.chunks.push(this.encode(name, mode, data, nlink, this.nextIno++, rdevMajor, rdevMinor, this.mtime));
  }

  private encode(
    name: string,
    mode: number,
    data: Buffer,
    nlink: number,
    ino: number,
    rdevMajor: number,
    rdevMinor: number,
    mtime: number,
  ): Buffer {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [ino, mode, 0, 0, nlink, mtime, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0];
    const names = [
      'ino',
      'mode',
      'uid',
      'gid',
      'nlink',
      'mtime',
      'filesize',
      'devmajor',
      'devminor',
      'rdevmajor',
      'rdevminor',
      'namesize',
      'check',
    ];
    const header = MAGIC + fields.map((v, i) => hex8(v, names[i] ?? '')).join('');
    return Buffer.concat([
      Buffer.from(header, 'ascii'),
      nameBytes,
      Buffer.alloc(pad4(HEADER_SIZE + nameBytes.length)),
      data,
      Buffer.alloc(pad4(data.length)),
    ]);
  }

  private assertOpen(): void {
    if (this.finished) throw new Error('cpio: archive already finished');
  }
}
