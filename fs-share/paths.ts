/**
 * No-follow filesystem helpers for mount targets: every component from the (trusted, canonical) base down is
 * lstat'ed and refused if it is a symlink, so nothing is ever created, mounted on or unmounted through a link.
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { FailedPreconditionError, InternalError, InvalidArgumentError } from '../errors';

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** The relative pieces of `target` below `base`; throws if target is not strictly below base. */
function piecesBelow(base: string, target: string): string[] {
  const rel = path.relative(base, target);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new InvalidArgumentError(`${target} is not below ${base}`);
  }
  return rel.split(path.sep);
}

/** Refuse if `p` exists and is a symlink; return its type or undefined if missing. */
async function lstatKind(p: string): Promise<'dir' | 'file' | 'other' | undefined> {
  try {
    const st = await fs.lstat(p);
    if (st.isSymbolicLink()) throw new FailedPreconditionError(`refusing symlink at ${p}`);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  } catch (err) {
    if (errno(err) === 'ENOENT') return undefined;
    throw err instanceof FailedPreconditionError ? err : new InternalError(`lstat ${p}`, { cause: err });
  }
}

/** Check that no component of `target` below `base` is a symlink (missing components are fine). */
export async function assertNoSymlink(base: string, target: string): Promise<void> {
  let cur = base;
  for (const piece of piecesBelow(base, target)) {
    cur = path.join(cur, piece);
    if ((await lstatKind(cur)) === undefined) return;
  }
}

/** Create the folder `target` below `base` (and its parents), refusing symlinks and non-folders on the way. */
export async function ensureDir(base: string, target: string, mode = 0o750): Promise<void> {
  let cur = base;
  for (const piece of piecesBelow(base, target)) {
    cur = path.join(cur, piece);
    const kind = await lstatKind(cur);
    if (kind === 'dir') continue;
    if (kind !== undefined) throw new FailedPreconditionError(`${cur} exists and is not a folder`);
    try {
      await fs.mkdir(cur, { mode });
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw new InternalError(`mkdir ${cur}`, { cause: err });
      if ((await lstatKind(cur)) !== 'dir') throw new FailedPreconditionError(`${cur} exists and is not a folder`);
    }
  }
}

/** Create an empty regular file at `target` below `base` (a bind target for a file), refusing symlinks. */
export async function ensureFile(base: string, target: string): Promise<void> {
  piecesBelow(base, target);
  if (path.dirname(target) !== base) await ensureDir(base, path.dirname(target));
  const kind = await lstatKind(target);
  if (kind === 'file') return;
  if (kind !== undefined) throw new FailedPreconditionError(`${target} exists and is not a file`);
  try {
    const fh = await fs.open(
      target,
      constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW,
      0o640,
    );
    await fh.close();
  } catch (err) {
    throw new InternalError(`create ${target}`, { cause: err });
  }
}

/**
 * Remove the tree at `target` below `base` without following links and without ever deleting data: only folders,
 * symlinks themselves and EMPTY regular files (mount targets) are removed; anything else → FailedPreconditionError.
 * Callers must have unmounted everything below first.
 */
export async function removeMountTargets(base: string, target: string): Promise<void> {
  if (target !== base) piecesBelow(base, target);
  let st;
  try {
    st = await fs.lstat(target);
  } catch (err) {
    if (errno(err) === 'ENOENT') return;
    throw new InternalError(`lstat ${target}`, { cause: err });
  }
  if (st.isDirectory()) {
    for (const name of await fs.readdir(target)) await removeMountTargets(base, path.join(target, name));
    await fs.rmdir(target).catch((err: unknown) => {
      if (errno(err) !== 'ENOENT') throw new FailedPreconditionError(`rmdir ${target}`, { cause: err });
    });
  } else if (st.isSymbolicLink() || (st.isFile() && st.size === 0)) {
    await fs.unlink(target).catch((err: unknown) => {
      if (errno(err) !== 'ENOENT') throw new InternalError(`unlink ${target}`, { cause: err });
    });
  } else {
    throw new FailedPreconditionError(`refusing to remove ${target}: not an empty mount target`);
  }
}
