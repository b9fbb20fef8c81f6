/** A reader of the cpio "newc" format, written apart from guest/cpio.ts' writer so that the tests check one against the other. */
import type { CpioEntry } from '../../cpio';

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/**
 * Parses a newc archive (uncompressed) into its entries, without the trailer. Throws on anything malformed,
 * including a missing trailer. The tests' check of what the writer wrote.
 */
export function readNewc(archive: Buffer): CpioEntry[] {
  const entries: CpioEntry[] = [];
  let offset = 0;
  while (true) {
    if (offset + HEADER_SIZE > archive.length) throw new Error(`cpio: truncated header at offset ${offset}`);
    const header = archive.toString('ascii', offset, offset + HEADER_SIZE);
    if (!header.startsWith(MAGIC)) throw new Error(`cpio: bad magic at offset ${offset}`);
    const field = (i: number): number => {
      const text = header.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new Error(`cpio: bad header field at offset ${offset}`);
      return parseInt(text, 16);
    };
    const nameSize = field(11);
    const fileSize = field(6);
    const nameStart = offset + HEADER_SIZE;
    if (nameSize < 1 || nameStart + nameSize > archive.length)
      throw new Error(`cpio: truncated name at offset ${offset}`);
    if (archive[nameStart + nameSize - 1] !== 0) throw new Error(`cpio: name not NUL-terminated at offset ${offset}`);
    const name = archive.toString('utf8', nameStart, nameStart + nameSize - 1);
    const dataStart = nameStart + nameSize + pad4(HEADER_SIZE + nameSize);
    if (dataStart + fileSize > archive.length) throw new Error(`cpio: truncated data of '${name}'`);
    if (name === TRAILER) return entries;
    entries.push({
      name,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      rdevMajor: field(9),
      rdevMinor: field(10),
      data: archive.subarray(dataStart, dataStart + fileSize),
    });
    offset = dataStart + fileSize + pad4(fileSize);
  }
}
