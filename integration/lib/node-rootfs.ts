/**
 * A container root filesystem that runs the host's node: busybox's mount points, node and each shared library it
 * (and any native addon) needs at the path ldd reports, and packages copied into /app/node_modules the way npm
 * would pack them (package.json and its "files"). The guest kernel then runs exactly the code the host built.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { busyboxRootfs } from './containers';

export const APP_DIR = '/app';

/** Absolute paths of the shared libraries and loader of an ELF file, from `ldd`. */
export function sharedLibraries(file: string): string[] {
  const out = execFileSync('ldd', [file], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1] && !libs.includes(m[1])) libs.push(m[1]);
    if (/not found/.test(line)) throw new Error(`ldd ${file}: ${line.trim()}`);
  }
  return libs;
}

function copyInto(root: string, hostFile: string, guestPath: string): void {
  const target = path.join(root, guestPath);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.copyFileSync(hostFile, target, fs.constants.COPYFILE_FICLONE);
}

/** package.json and what its "files" names (files or folders), or the whole folder without a "files" list. */
function packageFiles(dir: string): string[] {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { files?: string[] };
  const walk = (p: string): string[] =>
    fs.statSync(p).isDirectory() ? fs.readdirSync(p).flatMap((e) => walk(path.join(p, e))) : [p];
  if (!manifest.files) return walk(dir).filter((f) => !f.includes(`${path.sep}node_modules${path.sep}`));
  return [path.join(dir, 'package.json'), ...manifest.files.flatMap((f) => walk(path.join(dir, f)))];
}

export interface NodeRootfsOptions {
  /** Installed packages (resolvable from here) to copy to /app/node_modules/<name>. */
  packages: string[];
  /** Files to put in /app, by name. */
  appFiles: Record<string, string>;
}

/** Builds the root filesystem in `dir` (about 100 MiB, most of it node). */
export function nodeRootfs(dir: string, options: NodeRootfsOptions): string {
  busyboxRootfs(dir, ['sh']);
  const natives: string[] = [process.execPath];
  copyInto(dir, process.execPath, '/usr/bin/node');
  for (const name of options.packages) {
    const src = path.dirname(require.resolve(`${name}/package.json`));
    for (const file of packageFiles(src)) {
      copyInto(dir, file, path.posix.join(APP_DIR, 'node_modules', name, path.relative(src, file)));
      if (file.endsWith('.node')) natives.push(file);
    }
  }
  for (const [name, file] of Object.entries(options.appFiles)) copyInto(dir, file, path.posix.join(APP_DIR, name));
  for (const lib of new Set(natives.flatMap(sharedLibraries))) copyInto(dir, lib, lib);
  return dir;
}
