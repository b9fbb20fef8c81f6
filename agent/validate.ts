/**
 * Checks on everything the host sends. The agent trusts no id, path or option without checking it: a bad value is
 * an INVALID_ARGUMENT status, never a mount in the wrong place.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import { identifierProblem } from '../protos/identifiers';

export const invalid = (message: string): StatusError => new StatusError(Code.INVALID_ARGUMENT, message);

const PLAIN_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/**
 * A sandbox, container or exec id: containerd's identifier rule (protos/identifiers.ts, the host's rule too), which
 * also makes it a single path component.
 */
export function identifier(value: string, what: string): string {
  const problem = identifierProblem(what, value);
  if (problem !== undefined) throw invalid(problem);
  return value;
}

/** A tag usable as a single path component. */
export function plainName(value: string, what: string): string {
  if (!PLAIN_NAME.test(value) || value === '.' || value === '..')
    throw invalid(`${what} ${JSON.stringify(value)} is not a plain name`);
  return value;
}

/** An absolute, normalized path strictly below `root` (no `..`, no `//`, no trailing slash). */
export function pathUnder(root: string, value: string, what: string): string {
  if (!path.posix.isAbsolute(value) || path.posix.normalize(value) !== value || value.endsWith('/')) {
    throw invalid(`${what} ${JSON.stringify(value)} is not an absolute normalized path`);
  }
  if (!value.startsWith(`${root}/`)) throw invalid(`${what} ${JSON.stringify(value)} is not below ${root}`);
  if (value.includes('\0')) throw invalid(`${what} contains a NUL byte`);
  return value;
}

/** Like pathUnder, and the path as it resolves on disk (symlinks followed) is still below `root`. */
export function realPathUnder(root: string, value: string, what: string): string {
  pathUnder(root, value, what);
  let real: string;
  try {
    real = fs.realpathSync(value);
  } catch (err) {
    throw new StatusError(Code.NOT_FOUND, `${what} ${value}: ${(err as NodeJS.ErrnoException).code ?? 'not found'}`);
  }
  const realRoot = fs.realpathSync(root);
  if (real !== realRoot && !real.startsWith(`${realRoot}/`)) throw invalid(`${what} ${value} resolves outside ${root}`);
  return real;
}

/**
 * Resolves `value` (strictly below `root`) one component at a time, following a symlink only while it stays below
 * `root`: a link that leads out (an absolute target elsewhere, or `..` above root) is INVALID_ARGUMENT even when its
 * target does not exist, and nothing outside root is ever looked at. A missing component is NOT_FOUND. Returns the
 * symlink-free path.
 */
export function resolveUnder(root: string, value: string, what: string): string {
  pathUnder(root, value, what);
  let realRoot: string;
  try {
    realRoot = fs.realpathSync(root);
  } catch (err) {
    throw new StatusError(
      Code.NOT_FOUND,
      `${what} ${value}: ${root}: ${(err as NodeJS.ErrnoException).code ?? 'not found'}`,
    );
  }
  const pending = value.slice(root.length + 1).split('/');
  let current = realRoot;
  let links = 0;
  const outside = (detail: string): StatusError => invalid(`${what} ${value} leads outside ${root} (${detail})`);
  while (pending.length > 0) {
    const piece = pending.shift()!;
    if (piece === '' || piece === '.') continue;
    if (piece === '..') {
      if (current === realRoot) throw outside('through ..');
      current = path.dirname(current);
      continue;
    }
    const next = `${current}/${piece}`;
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(next);
    } catch (err) {
      throw new StatusError(
        Code.NOT_FOUND,
        `${what} ${value}: ${next}: ${(err as NodeJS.ErrnoException).code ?? 'not found'}`,
      );
    }
    if (!stat.isSymbolicLink()) {
      current = next;
      continue;
    }
    if (++links > 40) throw invalid(`${what} ${value}: too many symlinks`);
    const target = fs.readlinkSync(next);
    if (target.startsWith('/')) {
      // An absolute link is read from the guest's root: fine only if it points into root.
      const inside =
        target === root || target.startsWith(`${root}/`)
          ? target.slice(root.length)
          : target === realRoot || target.startsWith(`${realRoot}/`)
            ? target.slice(realRoot.length)
            : undefined;
      if (inside === undefined) throw outside(`symlink ${next} -> ${target}`);
      current = realRoot;
      pending.unshift(...inside.split('/'));
    } else {
      pending.unshift(...target.split('/'));
    }
  }
  return current;
}

/** An integer from 0 to 65535 (a terminal's rows or columns); a missing value is 0. */
export function uint16(value: unknown, what: string): number {
  const n = Number(value ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > 0xffff)
    throw invalid(`${what} ${String(value)} is not an integer from 0 to 65535`);
  return n;
}

/** RFC 1123 host name, at most 64 bytes (the kernel's limit). */
export function hostname(value: string): string {
  if (
    value.length > 64 ||
    !/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(value)
  ) {
    throw invalid(`hostname ${JSON.stringify(value)} is not valid`);
  }
  return value;
}

/** Mount options the agent passes on; anything else is refused. */
const MOUNT_FLAGS = new Set([
  'ro',
  'rw',
  'nosuid',
  'suid',
  'nodev',
  'dev',
  'noexec',
  'exec',
  'relatime',
  'noatime',
  'nodiratime',
  'sync',
  'async',
  'dirsync',
  'bind',
  'rbind',
  'private',
  'rprivate',
  'slave',
  'rslave',
  'shared',
  'rshared',
]);
const MOUNT_KEYS = new Set([
  'mode',
  'size',
  'uid',
  'gid',
  'nr_inodes',
  'dax',
  'cache',
  'lowerdir',
  'upperdir',
  'workdir',
  'xino',
  'index',
  'metacopy',
]);

export function mountOptions(options: readonly string[]): string[] {
  for (const o of options) {
    const [key, value] = o.split('=', 2) as [string, string | undefined];
    const ok = value === undefined ? MOUNT_FLAGS.has(key) : MOUNT_KEYS.has(key) && /^[A-Za-z0-9_./:-]*$/.test(value);
    if (!ok || o.includes(',')) throw invalid(`mount option ${JSON.stringify(o)} is not allowed`);
  }
  return [...options];
}

/** A kernel module name. */
export function moduleName(value: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(value))
    throw invalid(`kernel module ${JSON.stringify(value)} is not a module name`);
  return value;
}
