/** The built guest image (`make guest`), as integration tests and benchmarks use it. */
import fs from 'node:fs';
import path from 'node:path';

export const GUEST_OUT = path.resolve(__dirname, '..', '..', '..', 'guest', 'out');

export interface GuestArtifacts {
  kernel: string;
  initrd: string;
  image: string;
  manifest: { kernelRelease: string } & Record<string, unknown>;
}

export function guestArtifacts(): GuestArtifacts {
  const files = {
    kernel: path.join(GUEST_OUT, 'vmlinuz'),
    initrd: path.join(GUEST_OUT, 'initrd.img'),
    image: path.join(GUEST_OUT, 'rootfs.img'),
  };
  for (const f of Object.values(files)) if (!fs.existsSync(f)) throw new Error(`${f} is missing: run 'make guest'`);
  const manifest = JSON.parse(
    fs.readFileSync(path.join(GUEST_OUT, 'manifest.json'), 'utf8'),
  ) as GuestArtifacts['manifest'];
  return { ...files, manifest };
}

/** Processes whose parent is `ppid` and whose executable is one of `names` (our own children only). */
export function childProcesses(ppid: number, names: string[]): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid && fields[0] !== 'Z' && names.some((n) => comm.startsWith(n.slice(0, 15))))
        out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

/** Mount points (from /proc/self/mountinfo) that contain `fragment`. */
export function mountsContaining(fragment: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.includes(fragment));
}
