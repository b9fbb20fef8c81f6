/**
 * What the image is built from on the host: Debian package versions, the guest kernel and its modules, busybox.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { PACKAGES } from './config';
import { run, runBinary } from './exec';
import { ModuleIndex, ModuleInfo, moduleCompression, parseModulesBuiltin, parseModulesDep } from './modules';

export const MODULES_ROOT = '/lib/modules';
export const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';

export interface HostPackages {
  /** Installed version by package name; absent when not installed. */
  versions: Map<string, string>;
  /** The kernel release the metapackage points to, e.g. 6.1.0-56-cloud-amd64. */
  kernelRelease: string;
}

/**
 * Installed versions of `names` plus the kernel release from the metapackage's dependency, in one dpkg-query call.
 * dpkg-query exits 1 when some name is not installed; those are simply absent from the map.
 */
export async function queryPackages(names: readonly string[] = PACKAGES): Promise<HostPackages> {
  const { stdout } = await run(
    'dpkg-query',
    ['-W', '-f', '${Package}\t${Version}\t${db:Status-Abbrev}\t${Depends}\n', ...names],
    { allowFailure: true },
  );
  const versions = new Map<string, string>();
  let depends = '';
  for (const line of stdout.split('\n')) {
    const [pkg, version, status, deps] = line.split('\t');
    if (!pkg || !version || !status?.startsWith('ii')) continue;
    versions.set(pkg, version);
    if (pkg === KERNEL_METAPACKAGE) depends = deps ?? '';
  }
  const m = /\blinux-image-(\d[^\s,(|]*?)(-unsigned)?(\s|,|\(|$)/.exec(depends);
  if (!versions.has(KERNEL_METAPACKAGE) || !m?.[1]) {
    throw new Error(`the guest kernel package ${KERNEL_METAPACKAGE} is not installed (run: make deps)`);
  }
  for (const required of ['busybox-static', 'crun', 'iproute2', 'e2fsprogs', 'kmod']) {
    if (names.includes(required) && !versions.has(required))
      throw new Error(`Debian package ${required} is not installed (run: make deps)`);
  }
  return { versions, kernelRelease: m[1] };
}

/** The version of one installed package, or undefined. */
export async function packageVersion(name: string): Promise<string | undefined> {
  const { stdout } = await run('dpkg-query', ['-W', '-f', '${Version}\t${db:Status-Abbrev}', name], {
    allowFailure: true,
  });
  const [version, status] = stdout.split('\t');
  return version && status?.startsWith('ii') ? version : undefined;
}

/** The first file of an installed package whose path ends with `suffix` (e.g. busybox-static's /bin/busybox). */
export async function packageFile(pkg: string, suffix: string): Promise<string> {
  const { stdout } = await run('dpkg-query', ['-L', pkg]);
  for (const file of stdout.split('\n')) {
    if (!file.endsWith(suffix)) continue;
    const st = await fs.stat(file).catch(() => undefined);
    if (st?.isFile()) return file;
  }
  throw new Error(`package ${pkg} has no file ending in ${suffix}`);
}

export interface KernelFiles {
  release: string;
  vmlinuz: string;
  modulesDir: string;
  index: ModuleIndex;
  builtin: Set<string>;
}

export async function kernelFiles(release: string): Promise<KernelFiles> {
  const vmlinuz = `/boot/vmlinuz-${release}`;
  const modulesDir = path.join(MODULES_ROOT, release);
  for (const file of [vmlinuz, path.join(modulesDir, 'modules.dep')]) {
    await fs.access(file).catch(() => {
      throw new Error(`${file} is missing: is the kernel package for ${release} installed? (run: make deps)`);
    });
  }
  const read = (name: string): Promise<string> => fs.readFile(path.join(modulesDir, name), 'utf8').catch(() => '');
  const [dep, softdep, builtin] = await Promise.all([
    read('modules.dep'),
    read('modules.softdep'),
    read('modules.builtin'),
  ]);
  return { release, vmlinuz, modulesDir, index: parseModulesDep(dep, softdep), builtin: parseModulesBuiltin(builtin) };
}

/** A module file's contents, decompressed: the initramfs uses plain insmod, and the rootfs gets plain .ko files. */
export async function readModule(kernel: KernelFiles, info: ModuleInfo): Promise<Buffer> {
  const file = path.join(kernel.modulesDir, info.path);
  switch (moduleCompression(info.path)) {
    case undefined:
      return fs.readFile(file);
    case 'gz':
      return gunzipSync(await fs.readFile(file));
    case 'xz':
      return runBinary('xz', ['-dc', file]);
    case 'zst':
      return runBinary('zstd', ['-dc', file]);
  }
}

/** The applets of a busybox binary with their canonical install paths (relative, e.g. "bin/sh", "usr/bin/awk"). */
export async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await run(busybox, ['--list-full']); // spawns: busybox; busybox-static's
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}
