/**
 * /proc/<pid>/smaps of a QEMU process split by what its memory is: guest RAM (the memfd backend), TCG's translation
 * cache, QEMU's other anonymous memory, and file pages. Used by bench/density.ts and the free page reporting test.
 */
import fs from 'node:fs';

/** PSS and RSS in KiB of one process, split by mapping kind. */
export interface SmapsSplit {
  guestRamPss: number;
  guestRamRss: number;
  tcgCachePss: number;
  anonPss: number;
  filePss: number;
  /** The guest's root image mapped through DAX (a mapping of `imageFile`; not in filePss): shared by every VM. */
  imagePss: number;
  imageRss: number;
  totalPss: number;
}

/**
 * Splits /proc/<pid>/smaps text: memfd mappings (guest RAM), anonymous executable mappings of at least 1 MiB (TCG's
 * code buffer, mapped rwx), other anonymous mappings (no path, [heap], [stack], [anon:...]) and files. Special
 * mappings ([vdso], [vvar]) count as files; they are a few KiB.
 */
export function splitSmaps(text: string, imageFile?: string): SmapsSplit {
  const out: SmapsSplit = {
    guestRamPss: 0,
    guestRamRss: 0,
    tcgCachePss: 0,
    anonPss: 0,
    filePss: 0,
    imagePss: 0,
    imageRss: 0,
    totalPss: 0,
  };
  let kind: 'ram' | 'tcg' | 'anon' | 'file' | 'image' = 'file';
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const size = parseInt(head[2]!, 16) - parseInt(head[1]!, 16);
      const name = head[4]!;
      if (name.startsWith('/memfd:')) kind = 'ram';
      else if (imageFile !== undefined && name === imageFile) kind = 'image';
      else if (name === '' || name === '[heap]' || name.startsWith('[stack') || name.startsWith('[anon'))
        kind = head[3]!.includes('x') && size >= 1 << 20 ? 'tcg' : 'anon';
      else kind = 'file';
      continue;
    }
    const m = /^(Pss|Rss):\s+(\d+) kB/.exec(line);
    if (!m) continue;
    const kib = Number(m[2]);
    if (m[1] === 'Rss') {
      if (kind === 'ram') out.guestRamRss += kib;
      else if (kind === 'image') out.imageRss += kib;
      continue;
    }
    out.totalPss += kib;
    if (kind === 'ram') out.guestRamPss += kib;
    else if (kind === 'tcg') out.tcgCachePss += kib;
    else if (kind === 'anon') out.anonPss += kib;
    else if (kind === 'image') out.imagePss += kib;
    else out.filePss += kib;
  }
  return out;
}

/** Guest RAM of a running QEMU that the guest has touched (the memfd mappings' RSS), in KiB. */
export function guestRamRssKiB(qemuPid: number): number {
  return splitSmaps(fs.readFileSync(`/proc/${qemuPid}/smaps`, 'utf8')).guestRamRss;
}
