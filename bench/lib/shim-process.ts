/** The shim process of a container on a private containerd, and its memory, as the benches read them from /proc. */
import fs from 'node:fs';
import type { PrivateContainerd } from '../../integration/lib/containerd';

/** The shim daemon serving container `id`: its argv names an id and its cwd is the container's bundle. */
export function shimPid(ctd: PrivateContainerd, id: string): number {
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
      if (cwd.endsWith(`/${ctd.namespace}/${id}`) && /containerd-shim/.test(cmd) && cmd.includes('-id'))
        return Number(pid);
    } catch {
      // gone
    }
  }
  throw new Error(`no shim process for ${id}`);
}

/** A process's resident set (VmRSS), in bytes. */
export const rssBytes = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
