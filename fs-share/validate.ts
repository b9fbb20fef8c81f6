/** Pure checks on everything fs-share receives from outside: ids, paths, rootfs mounts and volume names. */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { InvalidArgumentError } from '../errors';
import type { Mount } from './types';

/** An absolute, normalized path with no NUL, newline, comma or backslash (so it is safe in a mount option). */
export function validateAbsolutePath(what: string, p: string, opts: { allowComma?: boolean } = {}): string {
  if (
    typeof p !== 'string' ||
    p === '' ||
    !path.isAbsolute(p) ||
    path.normalize(p) !== p ||
    (p.length > 1 && p.endsWith('/'))
  ) {
    throw new InvalidArgumentError(`${what} must be an absolute normalized path, got ${JSON.stringify(p)}`);
  }
  if (/[\0\n\\]/.test(p) || (!opts.allowComma && p.includes(','))) {
    throw new InvalidArgumentError(`${what} contains a forbidden character: ${JSON.stringify(p)}`);
  }
  return p;
}

/** The folder name of a volume under mounts/<cid>/volumes: a hash of its destination, never a path piece. */
export function volumeName(destination: string): string {
  validateAbsolutePath('volume destination', destination, { allowComma: true });
  return createHash('sha256').update(destination).digest('hex').slice(0, 16);
}

/** A validated rootfs mount: what shareRootfs will do. */
export type RootfsPlan =
  | { kind: 'overlay'; options: string[]; dirs: string[]; readOnly: boolean }
  | { kind: 'bind'; source: string; recursive: boolean; readOnly: boolean };

const OVERLAY_PATH_KEYS = new Set(['lowerdir', 'upperdir', 'workdir']);
const OVERLAY_VALUES: Record<string, readonly string[]> = {
  index: ['on', 'off'],
  xino: ['on', 'off', 'auto'],
  redirect_dir: ['on', 'off', 'follow', 'nofollow'],
  metacopy: ['on', 'off'],
};
const OVERLAY_FLAGS = new Set(['userxattr', 'ro', 'rw']);
const BIND_FLAGS = new Set(['bind', 'rbind', 'ro', 'rw', 'nosuid', 'nodev', 'noexec']);

function checkOption(o: unknown): string {
  if (typeof o !== 'string' || o === '' || o.includes(',') || /[\0\n]/.test(o)) {
    throw new InvalidArgumentError(`invalid mount option ${JSON.stringify(o)}`);
  }
  return o;
}

/** Validate containerd's rootfs mount (exactly one; overlay, bind or rbind) and turn it into a plan. */
export function planRootfs(mounts: Mount[]): RootfsPlan {
  if (!Array.isArray(mounts) || mounts.length !== 1) {
    throw new InvalidArgumentError(
      `expected exactly one rootfs mount, got ${Array.isArray(mounts) ? mounts.length : 'none'}`,
    );
  }
  const m = mounts[0]!;
  const options = (Array.isArray(m.options) ? m.options : []).map(checkOption);
  if (m.type === 'overlay') {
    const out: string[] = [];
    const dirs: string[] = [];
    const seen = new Set<string>();
    for (const o of options) {
      const eq = o.indexOf('=');
      const key = eq < 0 ? o : o.slice(0, eq);
      const value = eq < 0 ? undefined : o.slice(eq + 1);
      if (seen.has(key)) throw new InvalidArgumentError(`overlay option ${key} given twice`);
      seen.add(key);
      if (OVERLAY_PATH_KEYS.has(key)) {
        if (value === undefined) throw new InvalidArgumentError(`overlay option ${key} needs a value`);
        const parts = key === 'lowerdir' ? value.split(':') : [value];
        for (const p of parts) dirs.push(validateAbsolutePath(`overlay ${key}`, p));
        if (key !== 'lowerdir' && value.includes(':')) throw new InvalidArgumentError(`overlay ${key} contains ':'`);
      } else if (key in OVERLAY_VALUES) {
        if (value === undefined || !OVERLAY_VALUES[key]!.includes(value)) {
          throw new InvalidArgumentError(`overlay option ${JSON.stringify(o)} is not allowed`);
        }
      } else if (!(OVERLAY_FLAGS.has(key) && value === undefined)) {
        throw new InvalidArgumentError(`overlay option ${JSON.stringify(o)} is not allowed`);
      }
      out.push(o);
    }
    if (!seen.has('lowerdir')) throw new InvalidArgumentError('overlay rootfs without lowerdir');
    if (seen.has('upperdir') !== seen.has('workdir'))
      throw new InvalidArgumentError('overlay upperdir and workdir go together');
    if (seen.has('ro') && seen.has('rw')) throw new InvalidArgumentError('overlay rootfs both ro and rw');
    return { kind: 'overlay', options: out, dirs, readOnly: seen.has('ro') || !seen.has('upperdir') };
  }
  if (m.type === 'bind' || m.type === 'rbind') {
    for (const o of options) {
      if (!BIND_FLAGS.has(o)) throw new InvalidArgumentError(`bind option ${JSON.stringify(o)} is not allowed`);
    }
    if (options.includes('ro') && options.includes('rw')) throw new InvalidArgumentError('bind rootfs both ro and rw');
    return {
      kind: 'bind',
      source: validateAbsolutePath('rootfs source', m.source),
      recursive: m.type === 'rbind' || options.includes('rbind'),
      readOnly: options.includes('ro'),
    };
  }
  throw new InvalidArgumentError(`rootfs mount type ${JSON.stringify(m.type)} is not supported (overlay, bind, rbind)`);
}
