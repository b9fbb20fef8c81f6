/**
 * What a privileged container needs to use a whole kernel, shared into it as a read-only folder: the host's
 * iptables (nft-based, `xtables-nft-multi`, with its libraries and extensions, started through the copied dynamic
 * loader so that the busybox image needs no /lib) and a small ext4 image holding `hello.txt` to loop-mount.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { sharedLibraries } from './node-rootfs';

const XTABLES_MULTI = '/usr/sbin/xtables-nft-multi';
const XTABLES_LIBDIR = '/usr/lib/x86_64-linux-gnu/xtables';
export const KIT_HELLO = 'hello from a loop-mounted ext4\n';

export interface KernelKit {
  dir: string;
  /** The command line that runs `iptables` from the kit mounted at `mountPoint` (prefix it with `env XTABLES_LIBDIR=...`). */
  iptables(mountPoint: string): string[];
}

/** Fills `dir` (made if missing) with the kit. */
export function kernelKit(dir: string): KernelKit {
  const lib = path.join(dir, 'lib');
  fs.mkdirSync(lib, { recursive: true });
  fs.copyFileSync(XTABLES_MULTI, path.join(dir, 'xtables-nft-multi'));
  for (const l of sharedLibraries(XTABLES_MULTI))
    fs.copyFileSync(l, path.join(lib, /ld-linux/.test(l) ? 'ld.so' : path.basename(l)));
  fs.mkdirSync(path.join(dir, 'xtables'));
  for (const ext of fs.readdirSync(XTABLES_LIBDIR))
    fs.copyFileSync(path.join(XTABLES_LIBDIR, ext), path.join(dir, 'xtables', ext));
  const content = path.join(dir, 'content');
  fs.mkdirSync(content);
  fs.writeFileSync(path.join(content, 'hello.txt'), KIT_HELLO);
  execFileSync('mkfs.ext4', ['-q', '-F', '-t', 'ext4', '-d', content, path.join(dir, 'disk.img'), '4M'], {
    stdio: 'pipe',
  });
  fs.rmSync(content, { recursive: true });
  return {
    dir,
    iptables: (m) => [
      'env',
      `XTABLES_LIBDIR=${m}/xtables`,
      `${m}/lib/ld.so`,
      '--library-path',
      `${m}/lib`,
      `${m}/xtables-nft-multi`,
      'iptables',
    ],
  };
}
