/**
 * The operator's virtiofsd options (`[hypervisor] virtio_fs_cache` and `virtio_fs_extra_args`), checked. Pure and
 * small: core/config.ts imports it at shim start-up.
 *
 * Cache mode: `auto` (virtiofsd's default, and hull's before the key existed), `always` or `never` (`none`, the word
 * QEMU 7.2's C virtiofsd takes, is accepted as the same). virtiofsdCacheArg maps it to `cache=auto|always|none`.
 *
 * Extra arguments go after hull's own, so only options that cannot undo what hull sets are let through: an
 * allow-list, everything else is refused with an InvalidArgumentError naming the argument. Refused on purpose:
 *  - the socket, the shared folder, the cache mode and the sandbox (`--socket-path`, `--socket-group`, `--fd`,
 *    `source=`, `cache=`, `sandbox=`): hull sets them (the cache mode has its own key);
 *  - the process's shape (`-f`, `-d`, `debug`, `--daemonize`, `--syslog`, `--print-capabilities`, `-h`, `-V`):
 *    hull owns the daemon by pid and logs its stderr;
 *  - privileges (`modcaps=`, `allow_root`, `killpriv_v2`/`no_killpriv_v2`);
 *  - extended attributes (`xattr`, `xattrmap=`, `posix_acl`, `security_label`): with them the guest's root could
 *    set `trusted.*`/`security.*` attributes (overlayfs metadata, file capabilities) on host files through the
 *    daemon, which runs as root; hull has no xattr policy yet, so they stay off (`no_xattr` is allowed);
 *  - anything not listed below, including options of later virtiofsd versions.
 * Allowed: `-o` followed by one or more (comma-separated) of flock, no_flock, posix_lock, no_posix_lock, readdirplus,
 * no_readdirplus, writeback, no_writeback, allow_direct_io, no_allow_direct_io, no_xattr, announce_submounts,
 * timeout=<0-86400>, max_idle_threads=<0-1024>, log_level=debug|info|warn|err; and `--thread-pool-size=<0-1024>`,
 * `--rlimit-nofile=<0-1048576>`. The checked list is returned normalised (`-o` and one option per pair).
 */
import { InvalidArgumentError } from '../errors';

export const VIRTIOFS_CACHE_MODES = Object.freeze(['auto', 'always', 'never'] as const);
export type VirtiofsCache = (typeof VIRTIOFS_CACHE_MODES)[number];
/** What hull has always used (virtiofsd's own default). */
export const DEFAULT_VIRTIOFS_CACHE: VirtiofsCache = 'auto';

/** At most this many extra arguments, each at most MAX_EXTRA_ARG_LENGTH characters. */
export const MAX_EXTRA_ARGS = 32;
export const MAX_EXTRA_ARG_LENGTH = 256;

/** `auto`/`always`/`never`, or `none` as the same as `never`; anything else is an InvalidArgumentError. */
export function checkVirtiofsCache(what: string, value: unknown): VirtiofsCache {
  if (value === 'none') return 'never';
  if (typeof value === 'string' && (VIRTIOFS_CACHE_MODES as readonly string[]).includes(value))
    return value as VirtiofsCache;
  throw new InvalidArgumentError(
    `${what} must be one of "auto", "always", "never" ("none" = "never"), got ${JSON.stringify(value)}`,
  );
}

/** The `-o` value QEMU 7.2's virtiofsd takes for a mode. */
export function virtiofsdCacheArg(mode: VirtiofsCache): string {
  return `cache=${mode === 'never' ? 'none' : mode}`;
}

const FLAGS = new Set([
  'flock',
  'no_flock',
  'posix_lock',
  'no_posix_lock',
  'readdirplus',
  'no_readdirplus',
  'writeback',
  'no_writeback',
  'allow_direct_io',
  'no_allow_direct_io',
  'no_xattr',
  'announce_submounts',
]);
const NUMERIC_O: Record<string, number> = { timeout: 86400, max_idle_threads: 1024 };
const LONG: Record<string, number> = { '--thread-pool-size': 1024, '--rlimit-nofile': 1048576 };
const LOG_LEVELS = new Set(['debug', 'info', 'warn', 'err']);
/** Why a known but refused option is refused (the message says it). */
const REFUSED: Record<string, string> = {
  source: 'hull sets the shared folder',
  cache: 'use [hypervisor] virtio_fs_cache',
  sandbox: 'hull chooses the sandbox (namespace, else chroot)',
  modcaps: 'it changes the daemon’s capabilities',
  allow_root: 'it changes who may access the share',
  killpriv_v2: 'it changes who clears setuid bits',
  no_killpriv_v2: 'it changes who clears setuid bits',
  xattr: 'extended attributes would let the guest set trusted.*/security.* attributes on host files',
  xattrmap: 'extended attributes would let the guest set trusted.*/security.* attributes on host files',
  posix_acl: 'it needs extended attributes, which hull keeps off',
  no_posix_acl: 'it is the default; leave it out',
  security_label: 'it needs extended attributes, which hull keeps off',
  no_security_label: 'it is the default; leave it out',
  debug: 'hull runs the daemon in the foreground and logs its stderr ([runtime] debug sets log_level=debug)',
};

/** Whitespace, control characters and backslashes (fuse's option parser reads `\,` as an escaped comma). */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\s\u0000-\u001f\u007f\\]/;

/** Check the extra arguments; returns them normalised (`-o`, one option per pair). Never goes through a shell. */
export function checkVirtiofsdExtraArgs(what: string, args: unknown): string[] {
  if (!Array.isArray(args)) throw new InvalidArgumentError(`${what} must be an array of strings`);
  if (args.length > MAX_EXTRA_ARGS) throw new InvalidArgumentError(`${what} has more than ${MAX_EXTRA_ARGS} arguments`);
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg: unknown = args[i];
    const refuse = (why: string, a: unknown = arg): InvalidArgumentError =>
      new InvalidArgumentError(`${what} may not hold ${JSON.stringify(a)}: ${why}`);
    if (typeof arg !== 'string' || arg.length === 0 || arg.length > MAX_EXTRA_ARG_LENGTH || UNSAFE.test(arg))
      throw refuse(
        `each must be a non-empty string of at most ${MAX_EXTRA_ARG_LENGTH} characters without whitespace or backslashes`,
      );
    if (arg === '-o') {
      const value: unknown = args[++i];
      if (typeof value !== 'string' || value.length === 0 || value.length > MAX_EXTRA_ARG_LENGTH)
        throw refuse('-o must be followed by an option, e.g. ["-o", "writeback"]');
      if (UNSAFE.test(value)) throw refuse('no whitespace or backslashes', value);
      for (const opt of value.split(',')) {
        out.push(
          '-o',
          checkOption(opt, (why) => refuse(why, opt)),
        );
      }
      continue;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg : arg.slice(0, eq);
      const max = LONG[name];
      if (max === undefined) throw refuse(longWhy(name));
      out.push(`${name}=${checkNumber(arg.slice(eq + 1), eq < 0, max, refuse)}`);
      continue;
    }
    if (arg.startsWith('-o')) throw refuse('write -o and its option as two list items, e.g. ["-o", "writeback"]');
    if (['-f', '-d', '-h', '-V'].includes(arg))
      throw refuse('hull runs virtiofsd in the foreground and owns it by pid');
    throw refuse('not an option hull lets through (see [hypervisor] virtio_fs_extra_args)');
  }
  return out;
}

function checkOption(opt: string, refuse: (why: string) => InvalidArgumentError): string {
  if (FLAGS.has(opt)) return opt;
  const eq = opt.indexOf('=');
  const name = eq < 0 ? opt : opt.slice(0, eq);
  const value = opt.slice(eq + 1);
  if (name in NUMERIC_O)
    return `${name}=${checkNumber(value, eq < 0, NUMERIC_O[name]!, () => refuse(`${name} takes an integer from 0 to ${NUMERIC_O[name]}`))}`;
  if (name === 'log_level') {
    if (eq < 0 || !LOG_LEVELS.has(value)) throw refuse('log_level must be debug, info, warn or err');
    return opt;
  }
  const why = REFUSED[name];
  if (why !== undefined) throw refuse(why);
  if (opt === '') throw refuse('empty option');
  throw refuse('not an option hull lets through (see [hypervisor] virtio_fs_extra_args)');
}

function checkNumber(
  value: string,
  missing: boolean,
  max: number,
  refuse: (why: string) => InvalidArgumentError,
): number {
  if (missing || !/^[0-9]{1,7}$/.test(value) || Number(value) > max) throw refuse(`takes an integer from 0 to ${max}`);
  return Number(value);
}

function longWhy(name: string): string {
  if (['--socket-path', '--socket-group', '--fd'].includes(name)) return 'hull sets the vhost-user socket';
  if (['--daemonize', '--syslog', '--print-capabilities', '--help', '--version'].includes(name))
    return 'hull runs virtiofsd in the foreground, owns it by pid and logs its stderr';
  return 'not an option hull lets through (see [hypervisor] virtio_fs_extra_args)';
}
