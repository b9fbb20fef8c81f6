/**
 * QEMU's confinement: its seccomp filter (`-sandbox`) and the unprivileged user it drops to (`-runas`). Like the
 * accelerator, what the host allows is detected through a probe (injectable for tests), never assumed, and the
 * choice is logged with its reason.
 *
 * The order inside QEMU 7.2 decides the seccomp options. The filter is installed while QEMU parses its early
 * options (qemu_process_early_options -> parse_sandbox), before it opens anything; `-runas` takes effect much later,
 * in os_setup_post() just before the guest runs (setgid, setgroups, setuid), after KVM, vhost, the taps, the memfd,
 * the sockets and the guest images are open. `elevateprivileges=deny` forbids set*uid/set*gid with SIGSYS, and
 * `elevateprivileges=children` forbids the same set (it only adds no_new_privs), so with `-runas` either one kills
 * QEMU ("Bad system call"; seen on Debian's 7.2). With `-runas` we therefore leave set*id allowed: once QEMU has
 * become that user it has no capabilities left (CapPrm/CapEff 0) and no_new_privs is set (libseccomp's default),
 * so set*id can only move between that user's own ids, and spawn=deny forbids execve of anything setuid anyway.
 * Without `-runas` (the shim is not root, or no user is configured) it is `deny`.
 *
 * spawn=deny (fork, vfork, execve) is safe for hull: QEMU runs no tap scripts (script=no,downscript=no), no bridge
 * helper, is not daemonized, and its vhost devices are opened, not spawned. resourcecontrol=deny (setpriority,
 * sched_setaffinity, ...: EPERM) is safe: hull asks QEMU for neither.
 */
import fs from 'node:fs';
import { InvalidArgumentError } from '../errors';
import type { Choice } from './accel';

/** What QEMU is told: the -sandbox options and the -runas user (absent = QEMU keeps the shim's uid). */
export interface QemuConfinement {
  /** `-sandbox on,...`; false only where the kernel has no seccomp or it is configured off. */
  seccomp: boolean;
  /** A user name or "uid:gid" for `-runas`. */
  runAs?: string;
}

/** What confinement detection asks the host. */
export interface ConfineProbe {
  /** The shim's effective uid (only root can make QEMU drop to another user). */
  euid(): number;
  /** Whether the kernel filters system calls with seccomp (a `Seccomp:` line in /proc/self/status). */
  kernelSeccomp(): boolean;
  /** Whether a user of that name exists (the passwd database's files source, /etc/passwd). */
  userExists(name: string): boolean;
}

export const PASSWD_FILE = '/etc/passwd';

export const realConfineProbe: ConfineProbe = {
  euid: () => process.geteuid?.() ?? -1,
  kernelSeccomp: () => {
    try {
      return /^Seccomp:\s/m.test(fs.readFileSync('/proc/self/status', 'utf8'));
    } catch {
      return false;
    }
  },
  userExists: (name) => {
    try {
      return fs
        .readFileSync(PASSWD_FILE, 'utf8')
        .split('\n')
        .some((line) => line.split(':')[0] === name);
    } catch {
      return false;
    }
  },
};

/** Largest uid/gid: 2^32-2 ((uid_t)-1 means "unchanged" to setresuid). */
const MAX_ID = 0xfffffffe;
/** POSIX-portable user names as Debian's adduser accepts them by default, at most 32 bytes. */
const USER_NAME = /^[a-z_][a-z0-9_-]{0,30}[$]?$/;

/**
 * Checks the shape of a qemuUser value: "" (no -runas), a user name, or numeric "uid:gid" (QEMU 7.2's -runas takes
 * both). Root (name or uid/gid 0) is refused: dropping to root drops nothing.
 */
export function checkQemuUser(what: string, value: unknown): string {
  if (typeof value !== 'string')
    throw new InvalidArgumentError(`${what} must be a string, got ${JSON.stringify(value)}`);
  if (value === '') return value;
  const numeric = /^(\d{1,10}):(\d{1,10})$/.exec(value);
  if (numeric) {
    const [uid, gid] = [Number(numeric[1]), Number(numeric[2])];
    if (uid < 1 || uid > MAX_ID || gid < 1 || gid > MAX_ID) {
      throw new InvalidArgumentError(
        `${what} ${JSON.stringify(value)}: uid and gid must be from 1 to ${MAX_ID} (not root)`,
      );
    }
    return value;
  }
  if (!USER_NAME.test(value)) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(value)} must be "", a user name or "uid:gid"`);
  }
  if (value === 'root') throw new InvalidArgumentError(`${what} must not be root (QEMU would drop nothing)`);
  return value;
}

/**
 * -sandbox options (see the file comment for elevateprivileges).
 */
export function sandboxOptions(runAs: boolean): string {
  return `on,obsolete=deny,elevateprivileges=${runAs ? 'allow' : 'deny'},spawn=deny,resourcecontrol=deny`;
}

/**
 * What QEMU is confined with on this host. `seccomp` false or `qemuUser` "" turn that part off (configuration);
 * otherwise a part the host cannot do (no seccomp in the kernel; the shim not root; no such user) is left out, with
 * the reason. The caller logs the reason.
 */
export function chooseConfinement(
  requested: { seccomp: boolean; qemuUser: string },
  probe: ConfineProbe = realConfineProbe,
): Choice<QemuConfinement> {
  let runAs: string | undefined;
  let userWhy: string;
  const user = requested.qemuUser;
  const euid = probe.euid();
  if (user === '') userWhy = `configured: no qemu_user, QEMU keeps uid ${euid}`;
  else if (euid !== 0)
    userWhy = `hull runs as uid ${euid}, not root: QEMU keeps that uid (only root can drop to ${user})`;
  else if (!/^\d+:\d+$/.test(user) && !probe.userExists(user))
    userWhy = `user ${user} does not exist (${PASSWD_FILE}): QEMU keeps uid 0`;
  else {
    runAs = user;
    userWhy = `QEMU drops to ${user} (-runas) after opening its devices`;
  }

  let seccomp = requested.seccomp;
  let seccompWhy: string;
  if (!seccomp) seccompWhy = 'configured: no seccomp filter';
  else if (!probe.kernelSeccomp()) {
    seccomp = false;
    seccompWhy = 'the kernel has no seccomp (no Seccomp: line in /proc/self/status): no seccomp filter';
  } else {
    seccompWhy =
      `seccomp filter -sandbox ${sandboxOptions(runAs !== undefined)}` +
      (runAs === undefined ? '' : ' (set*id allowed: QEMU 7.2 installs the filter before -runas drops)');
  }
  return { value: runAs === undefined ? { seccomp } : { seccomp, runAs }, reason: `${seccompWhy}; ${userWhy}` };
}
