/**
 * The main package path a Go program was built from, read from its `.go.buildinfo` ELF section (Go 1.18 and newer
 * write the version and module strings inline there), without running it: `start` uses it to tell containerd 2.x
 * (`github.com/containerd/containerd/v2/cmd/containerd`) from 1.7 (`github.com/containerd/containerd/cmd/containerd`).
 * Reads at most the ELF header, the section headers, the section-name table and 64 KiB of the section.
 */
import fs from 'node:fs';

const MAGIC = Buffer.from('\xff Go buildinf:', 'latin1');
const MAX_SECTION_HEADERS = 4096;
const MAX_NAMES_BYTES = 1 << 20;
const MAX_BUILDINFO_BYTES = 64 * 1024;

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, offset + got);
    if (n === 0) throw new Error('short read');
    got += n;
  }
  return buf;
}

function uvarint(buf: Buffer, pos: number): { value: number; next: number } {
  let value = 0;
  for (let shift = 0, i = pos; i < buf.length && shift < 35; shift += 7, i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return { value, next: i + 1 };
  }
  throw new Error('bad varint');
}

/** The module information text (`path\t...\nmod\t...`) of a little-endian ELF64 Go binary, or undefined. */
export function goModInfo(file: string): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const eh = readAt(fd, 0, 64);
    // ELF, 64-bit, little-endian.
    if (eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return undefined;
    const shoff = Number(eh.readBigUInt64LE(0x28));
    const shentsize = eh.readUInt16LE(0x3a);
    const shnum = eh.readUInt16LE(0x3c);
    const shstrndx = eh.readUInt16LE(0x3e);
    if (shentsize !== 64 || shnum === 0 || shnum > MAX_SECTION_HEADERS || shstrndx >= shnum) return undefined;
    const headers = readAt(fd, shoff, shentsize * shnum);
    const section = (i: number): { name: number; offset: number; size: number } => ({
      name: headers.readUInt32LE(i * shentsize),
      offset: Number(headers.readBigUInt64LE(i * shentsize + 0x18)),
      size: Number(headers.readBigUInt64LE(i * shentsize + 0x20)),
    });
    const strtab = section(shstrndx);
    if (strtab.size > MAX_NAMES_BYTES) return undefined;
    const names = readAt(fd, strtab.offset, strtab.size);
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      const end = names.indexOf(0, s.name);
      if (names.toString('latin1', s.name, end < 0 ? undefined : end) !== '.go.buildinfo') continue;
      const data = readAt(fd, s.offset, Math.min(s.size, MAX_BUILDINFO_BYTES));
      // 14-byte magic, pointer size, flags (bit 1: strings inline), padding to 32; then version and modinfo.
      if (data.length < 32 || !data.subarray(0, MAGIC.length).equals(MAGIC) || (data[15]! & 2) === 0) return undefined;
      const version = uvarint(data, 32);
      const mod = uvarint(data, version.next + version.value);
      if (mod.next + mod.value > data.length) return undefined;
      const text = data.subarray(mod.next, mod.next + mod.value);
      // Between a 16-byte start and end sentinel (what Go's debug/buildinfo strips the same way).
      if (text.length >= 33 && text[text.length - 17] === 0x0a) return text.toString('utf8', 16, text.length - 16);
      return text.toString('utf8');
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** containerd's major version from its main package path (1 for `.../containerd/cmd/containerd`), or undefined. */
export function containerdMajor(modInfo: string | undefined): number | undefined {
  const m = /^path\tgithub\.com\/containerd\/containerd(?:\/v([0-9]{1,3}))?\/cmd\/containerd$/m.exec(modInfo ?? '');
  if (!m) return undefined;
  return m[1] ? Number(m[1]) : 1;
}
