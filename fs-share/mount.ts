/**
 * The one place fs-share runs util-linux `mount`/`umount` (argv arrays through execFile, never a shell) and reads
 * /proc/self/mountinfo. Failures become hull's typed errors, with the tool's stderr in the message and the
 * original error as `cause`.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  type ShimError,
} from '../errors';

const TOOL_TIMEOUT_MS = 60_000;

/** One line of /proc/self/mountinfo (see proc(5)). */
export interface MountInfo {
  id: number;
  parentId: number;
  root: string;
  mountPoint: string;
  options: string[];
  optional: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** Decode the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash). */
export function decodeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parse the text of /proc/<pid>/mountinfo. Malformed lines → InternalError. */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (fields.length < 10 || dash < 0 || fields.length < dash + 3) {
      throw new InternalError(`malformed mountinfo line: ${JSON.stringify(line)}`);
    }
    const f = (i: number): string => fields[i] ?? '';
    out.push({
      id: Number(f(0)),
      parentId: Number(f(1)),
      root: decodeOctal(f(3)),
      mountPoint: decodeOctal(f(4)),
      options: f(5).split(','),
      optional: fields.slice(6, dash),
      fsType: decodeOctal(f(dash + 1)),
      source: decodeOctal(f(dash + 2)),
      superOptions: f(dash + 3).split(','),
    });
  }
  return out;
}

/** Whether `p` is `dir` or lies below it (plain string prefix on path components; both must be canonical). */
export function isUnder(p: string, dir: string): boolean {
  const d = dir.endsWith('/') ? dir.slice(0, -1) : dir;
  return p === d || p.startsWith(`${d}/`);
}

/** Order mount points deepest first (then later-mounted first), the order to unmount them in. */
export function deepestFirst(mounts: MountInfo[]): MountInfo[] {
  const depth = (m: MountInfo): number => m.mountPoint.split('/').length;
  return mounts
    .map((m, i) => ({ m, i }))
    .sort((a, b) => depth(b.m) - depth(a.m) || b.i - a.i)
    .map((x) => x.m);
}

/** Every mount at or below `dir` (a canonical absolute path), in mountinfo order. */
export async function mountsUnder(dir: string, mountinfoPath = '/proc/self/mountinfo'): Promise<MountInfo[]> {
  let text: string;
  try {
    text = await fs.readFile(mountinfoPath, 'utf8');
  } catch (err) {
    throw new UnavailableError(`read ${mountinfoPath}`, { cause: err });
  }
  return parseMountInfo(text).filter((m) => isUnder(m.mountPoint, dir));
}

/** Map a failed mount/umount run to a typed error. Exported for tests. */
export function classifyToolError(what: string, stderr: string, cause: unknown): ShimError {
  const msg = `${what}: ${stderr.trim() || (cause instanceof Error ? cause.message : String(cause))}`;
  const code = (cause as { code?: unknown } | null)?.code;
  if (code === 'ENOENT' && stderr === '') return new UnavailableError(`${what}: util-linux tool not found`, { cause });
  if ((cause as { killed?: boolean } | null)?.killed) return new UnavailableError(`${what}: timed out`, { cause });
  const s = stderr.toLowerCase();
  if (s.includes('target is busy') || s.includes('device or resource busy'))
    return new FailedPreconditionError(msg, { cause });
  if (s.includes('not mounted') || s.includes('no mount point specified')) return new NotFoundError(msg, { cause });
  if (s.includes('no such file or directory') || s.includes('does not exist') || s.includes("can't find")) {
    return new NotFoundError(msg, { cause });
  }
  if (s.includes('must be superuser') || s.includes('permission denied') || s.includes('operation not permitted')) {
    return new FailedPreconditionError(msg, { cause });
  }
  if (s.includes('unknown filesystem type') || s.includes('wrong fs type') || s.includes('bad option')) {
    return new InvalidArgumentError(msg, { cause });
  }
  return new InternalError(msg, { cause });
}

function run(tool: 'mount' | 'umount', args: string[]): Promise<void> {
  for (const a of args) {
    if (a.includes('\0')) throw new InvalidArgumentError(`${tool}: argument contains NUL`);
  }
  return new Promise((resolve, reject) => {
    // spawns: wrapper; run's callers name mount or umount
    execFile(
      tool,
      args,
      { timeout: TOOL_TIMEOUT_MS, env: { ...process.env, LC_ALL: 'C', LANG: 'C' } },
      (err, _stdout, stderr) => {
        if (err) reject(classifyToolError(`${tool} ${args.join(' ')}`, String(stderr ?? ''), err));
        else resolve();
      },
    );
  });
}

// Every call passes --no-canonicalize: callers have already checked the paths (no symlink components) and we do not
// want util-linux to resolve anything behind our back.

/** `mount --bind` (or `--rbind`) source on target. */
export function bindMount(source: string, target: string, opts: { recursive?: boolean } = {}): Promise<void> {
  return run('mount', ['--no-canonicalize', opts.recursive ? '--rbind' : '--bind', '--', source, target]);
}

/** Make an existing bind mount read-only (affects this mount only, not its submounts or propagated copies). */
export function remountReadOnly(target: string): Promise<void> {
  return run('mount', ['--no-canonicalize', '-o', 'remount,bind,ro', '--', target]);
}

/** `mount -t overlay overlay -o <options> target`. Options must already be validated (no commas inside). */
export function mountOverlay(options: string[], target: string): Promise<void> {
  if (options.some((o) => o.includes(','))) throw new InvalidArgumentError('overlay option contains a comma');
  return run('mount', ['--no-canonicalize', '-t', 'overlay', '-o', options.join(','), '--', 'overlay', target]);
}

export type Propagation = 'private' | 'shared' | 'slave';

/** Change the propagation type of the mount at target (not recursive). */
export function makePropagation(target: string, kind: Propagation): Promise<void> {
  return run('mount', ['--no-canonicalize', `--make-${kind}`, '--', target]);
}

/**
 * Lazily detach the mount at target. util-linux 2.38 has no `umount --no-follow`, so callers must check that no
 * component of target is a symlink first (fs-share/paths.ts); --no-canonicalize stops umount resolving the path.
 */
export function unmount(target: string): Promise<void> {
  return run('umount', ['--no-canonicalize', '--lazy', '--', target]);
}
