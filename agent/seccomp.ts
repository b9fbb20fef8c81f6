/**
 * Kata's grpc.LinuxSeccomp (what the host sends) back to the OCI runtime-spec `linux.seccomp` object that the
 * guest's crun compiles with libseccomp. Every value is checked against the OCI sets first, so that crun sees
 * nothing it would have to guess about:
 * - actions: SCMP_ACT_* from the runtime spec, except SCMP_ACT_NOTIFY (a guest has no seccomp agent listening,
 *   and the protocol carries no listener path);
 * - architectures: SCMP_ARCH_* names; flags: SECCOMP_FILTER_FLAG_* names (crun 1.8 knows all four);
 * - syscall names are plain identifiers (a name libseccomp does not know is skipped by crun with a warning, as
 *   containerd's default profile expects: it lists syscalls of other architectures and kernels);
 * - argument comparisons: index 0-5, an SCMP_CMP_* operator, values that a JavaScript number holds exactly;
 * - errnoRet is sent only when the host set it (the proto's oneof), is at most 65535 (the kernel keeps 16 bits,
 *   SECCOMP_RET_DATA) and only goes with SCMP_ACT_ERRNO or SCMP_ACT_TRACE (crun refuses it on other actions);
 * - list sizes are capped.
 * An absent profile, or one with nothing in it, is no profile: the container runs unfiltered, as it would with
 * runc given no `linux.seccomp`. Flags are written only when some are given: an empty list would turn off crun's
 * default (SECCOMP_FILTER_FLAG_SPEC_ALLOW), and protobuf cannot tell an empty list from a missing one.
 * Kata's protocol has no defaultErrnoRet: the default action's errno is always EPERM (the runtime spec's default);
 * the host refuses a profile that asks for another one (agent-client/oci.ts).
 */
import type { grpc } from '../protos/agent';
import { invalid } from './validate';

export const MAX_SECCOMP_RULES = 1024;
export const MAX_NAMES_PER_RULE = 512;
export const MAX_SECCOMP_NAMES = 8192;
const MAX_ARGS_PER_RULE = 6;
const MAX_ARCHITECTURES = 32;
const MAX_FLAGS = 8;
const MAX_ERRNO = 0xffff;

const ACTIONS: ReadonlySet<string> = new Set([
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
]);
/** The actions whose return value an errno (errnoRet) gives. */
const ERRNO_ACTIONS: ReadonlySet<string> = new Set(['SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE']);
const ARCHITECTURES: ReadonlySet<string> = new Set([
  'SCMP_ARCH_X86',
  'SCMP_ARCH_X86_64',
  'SCMP_ARCH_X32',
  'SCMP_ARCH_ARM',
  'SCMP_ARCH_AARCH64',
  'SCMP_ARCH_MIPS',
  'SCMP_ARCH_MIPS64',
  'SCMP_ARCH_MIPS64N32',
  'SCMP_ARCH_MIPSEL',
  'SCMP_ARCH_MIPSEL64',
  'SCMP_ARCH_MIPSEL64N32',
  'SCMP_ARCH_PPC',
  'SCMP_ARCH_PPC64',
  'SCMP_ARCH_PPC64LE',
  'SCMP_ARCH_S390',
  'SCMP_ARCH_S390X',
  'SCMP_ARCH_PARISC',
  'SCMP_ARCH_PARISC64',
  'SCMP_ARCH_RISCV64',
]);
const FLAGS: ReadonlySet<string> = new Set([
  'SECCOMP_FILTER_FLAG_TSYNC',
  'SECCOMP_FILTER_FLAG_LOG',
  'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
  'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
]);
const OPERATORS: ReadonlySet<string> = new Set([
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
]);
const SYSCALL_NAME = /^[a-z0-9_]{1,64}$/;

export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}
export interface OciSyscall {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: OciSeccompArg[];
}
export interface OciSeccomp {
  defaultAction: string;
  architectures?: string[];
  flags?: string[];
  syscalls?: OciSyscall[];
}

/** A bounded list of strings, each one of `allowed` (or matching it, for a pattern). */
function names(
  list: readonly unknown[] | null | undefined,
  what: { one: string; many: string },
  max: number,
  allowed: ReadonlySet<string> | RegExp,
): string[] {
  const all = list ?? [];
  if (all.length > max) throw invalid(`seccomp: more than ${max} ${what.many}`);
  return all.map((v) => {
    const ok = typeof v === 'string' && (allowed instanceof RegExp ? allowed.test(v) : allowed.has(v));
    if (!ok) throw invalid(`seccomp: ${JSON.stringify(typeof v === 'string' ? v.slice(0, 64) : v)} is not ${what.one}`);
    return v;
  });
}

function action(value: unknown, what: string): string {
  if (value === 'SCMP_ACT_NOTIFY')
    throw invalid(`seccomp: ${what} SCMP_ACT_NOTIFY needs a seccomp agent listening, which a guest does not have`);
  if (typeof value !== 'string' || !ACTIONS.has(value))
    throw invalid(`seccomp: ${what} ${JSON.stringify(String(value).slice(0, 64))} is not a seccomp action`);
  return value;
}

/** A uint64 comparison value, only if a JavaScript number holds it exactly (above 2^53 it may have been rounded). */
function argValue(value: unknown, what: string): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n) || n < 0)
    throw invalid(`seccomp: ${what} ${String(value)} is not an integer from 0 to 2^53-1`);
  return n;
}

function arg(a: grpc.ILinuxSeccompArg, what: string): OciSeccompArg {
  const index = Number(a.Index ?? 0);
  if (!Number.isInteger(index) || index < 0 || index > 5)
    throw invalid(`seccomp: ${what} index ${String(a.Index)} is not 0 to 5`);
  const op = a.Op ?? '';
  if (!OPERATORS.has(op))
    throw invalid(`seccomp: ${what} operator ${JSON.stringify(op.slice(0, 64))} is not an SCMP_CMP_* operator`);
  const out: OciSeccompArg = { index, value: argValue(a.Value, `${what} value`), op };
  const two = argValue(a.ValueTwo, `${what} valueTwo`);
  if (two !== 0) out.valueTwo = two;
  return out;
}

function syscall(s: grpc.ILinuxSyscall, i: number): OciSyscall {
  const what = `rule ${i}`;
  const act = action(s.Action, `${what} action`);
  const out: OciSyscall = {
    names: names(
      s.Names,
      { one: `a syscall name (${what})`, many: `syscall names in ${what}` },
      MAX_NAMES_PER_RULE,
      SYSCALL_NAME,
    ),
    action: act,
  };
  // The oneof: null (or undefined, from a plain object) when the host did not set it; 0 is a value.
  if (s.errnoret !== null && s.errnoret !== undefined) {
    const errno = Number(s.errnoret);
    if (!Number.isInteger(errno) || errno < 0 || errno > MAX_ERRNO)
      throw invalid(`seccomp: ${what} errnoRet ${String(s.errnoret)} is not 0 to ${MAX_ERRNO}`);
    if (!ERRNO_ACTIONS.has(act)) throw invalid(`seccomp: ${what} has an errnoRet with ${act}, which returns no errno`);
    out.errnoRet = errno;
  }
  const args = s.Args ?? [];
  if (args.length > MAX_ARGS_PER_RULE)
    throw invalid(`seccomp: ${what} has more than ${MAX_ARGS_PER_RULE} argument comparisons`);
  if (args.length) out.args = args.map((a, j) => arg(a, `${what} argument ${j}`));
  return out;
}

/** linux.seccomp for crun, or undefined when the host sent no profile (or an empty one). */
export function toOciSeccomp(s: grpc.ILinuxSeccomp | null | undefined): OciSeccomp | undefined {
  if (!s) return undefined;
  const rules = s.Syscalls ?? [];
  const empty = !s.DefaultAction && rules.length === 0 && !(s.Architectures ?? []).length && !(s.Flags ?? []).length;
  if (empty) return undefined;
  if (!s.DefaultAction) throw invalid('seccomp: the profile has no default action');
  if (rules.length > MAX_SECCOMP_RULES) throw invalid(`seccomp: more than ${MAX_SECCOMP_RULES} rules`);
  const total = rules.reduce((n, r) => n + (r.Names?.length ?? 0), 0);
  if (total > MAX_SECCOMP_NAMES) throw invalid(`seccomp: more than ${MAX_SECCOMP_NAMES} syscall names in all`);
  const out: OciSeccomp = { defaultAction: action(s.DefaultAction, 'default action') };
  const architectures = names(
    s.Architectures,
    { one: 'an SCMP_ARCH_* architecture', many: 'architectures' },
    MAX_ARCHITECTURES,
    ARCHITECTURES,
  );
  if (architectures.length) out.architectures = architectures;
  const flags = names(s.Flags, { one: 'a SECCOMP_FILTER_FLAG_* flag', many: 'flags' }, MAX_FLAGS, FLAGS);
  if (flags.length) out.flags = flags;
  if (rules.length) out.syscalls = rules.map((r, i) => syscall(r, i));
  return out;
}
