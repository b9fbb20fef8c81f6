/**
 * The one place this module runs tools: `nsenter --net=<netns> -- ip|tc|iptables <args>` through execFile (argv arrays,
 * never a shell). nsenter works for any netns file (a CNI bind mount, /proc/<pid>/ns/net), not only `ip netns`
 * names. Failures become hull's typed errors naming the netns, with the tool's stderr in the message.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  type ShimError,
} from '../../errors';
import { checkNetnsPathShape } from './validate';

const TOOL_TIMEOUT_MS = 30_000;
/** `ip -j` of a namespace with thousands of routes still fits. */
const MAX_OUTPUT = 16 * 1024 * 1024;
/** NSFS_MAGIC from linux/magic.h: what statfs(2) reports for a namespace file. */
const NSFS_MAGIC = 0x6e736673;

export type Tool = 'ip' | 'tc' | 'iptables' | 'true';

/** Turns a failed `nsenter … -- tool …` into one of our errors. Exported for unit tests. */
export function classifyNetnsToolError(netnsPath: string, what: string, stderr: string, cause: unknown): ShimError {
  const text = stderr.trim();
  const msg = `netns ${netnsPath}: ${what}: ${text || (cause instanceof Error ? cause.message : String(cause))}`;
  const e = cause as { code?: unknown; killed?: boolean } | null;
  if (e?.code === 'ENOENT' && text === '')
    return new UnavailableError(`netns ${netnsPath}: ${what}: nsenter not found (util-linux)`, { cause });
  if (e?.killed)
    return new DeadlineExceededError(`netns ${netnsPath}: ${what}: timed out after ${TOOL_TIMEOUT_MS} ms`, { cause });
  if (e?.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER')
    return new InternalError(`netns ${netnsPath}: ${what}: output larger than ${MAX_OUTPUT} bytes`, { cause });
  const s = text.toLowerCase();
  if (s.startsWith('nsenter:')) {
    if (s.includes('cannot open') && s.includes('no such file'))
      return new NotFoundError(`netns ${netnsPath} does not exist`, { cause });
    if (s.includes('reassociate to namespace')) {
      return new InvalidArgumentError(`netns ${netnsPath} is not a network namespace (${text})`, { cause });
    }
    if (s.includes('failed to execute')) return new UnavailableError(msg, { cause });
    if (s.includes('permission denied') || s.includes('operation not permitted'))
      return new FailedPreconditionError(msg, { cause });
    return new InternalError(msg, { cause });
  }
  if (s.includes('does not exist') || s.includes('cannot find device') || s.includes('no such device'))
    return new NotFoundError(msg, { cause });
  if (s.includes('file exists')) return new AlreadyExistsError(msg, { cause });
  if (s.includes('operation not permitted') || s.includes('permission denied'))
    return new FailedPreconditionError(msg, { cause });
  return new InternalError(msg, { cause });
}

/** Runs `tool args…` inside the netns and returns its stdout. The netns path must have passed checkNetnsPathShape. */
export function runInNetns(netnsPath: string, tool: Tool, args: readonly string[]): Promise<string> {
  const what = [tool, ...args].join(' ');
  for (const a of args) {
    if (a.includes('\0'))
      return Promise.reject(new InvalidArgumentError(`netns ${netnsPath}: ${what}: argument contains NUL`));
  }
  return new Promise((resolve, reject) => {
    // spawns: nsenter, ip, tc, iptables, true; the tools of the Tool type, in the netns
    execFile(
      'nsenter',
      [`--net=${netnsPath}`, '--', tool, ...args],
      { timeout: TOOL_TIMEOUT_MS, maxBuffer: MAX_OUTPUT, env: { ...process.env, LC_ALL: 'C', LANG: 'C' } },
      (err, stdout, stderr) => {
        if (err) reject(classifyNetnsToolError(netnsPath, what, String(stderr ?? ''), err));
        else resolve(String(stdout));
      },
    );
  });
}

/** Runs `ip|tc -j …` in the netns and parses its JSON (an empty output is `[]`). */
export async function runJson(netnsPath: string, tool: 'ip' | 'tc', args: readonly string[]): Promise<unknown> {
  const out = await runInNetns(netnsPath, tool, ['-j', ...args]);
  if (out.trim() === '') return [];
  try {
    return JSON.parse(out) as unknown;
  } catch (cause) {
    throw new InternalError(`netns ${netnsPath}: ${tool} -j ${args.join(' ')}: output is not JSON`, { cause });
  }
}

/** What statfs(2) finds at a netns path: nothing, a namespace file (nsfs), or something else (a plain file). */
type NetnsFileKind = 'missing' | 'nsfs' | 'other';

async function netnsFileKind(p: string): Promise<NetnsFileKind> {
  let type: number;
  try {
    type = (await fs.statfs(p)).type;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    if (code === 'EACCES' || code === 'EPERM')
      throw new FailedPreconditionError(`netns ${p}: cannot stat: ${code}`, { cause });
    throw new InternalError(`netns ${p}: statfs failed`, { cause });
  }
  return type === NSFS_MAGIC ? 'nsfs' : 'other';
}

/**
 * The shape check, then statfs(2): the path must exist and be a namespace file (nsfs), and not be this process's
 * own network namespace (the host's). Does not tell a network namespace from another kind; entering it does (the
 * first runInNetns).
 */
export async function checkNetnsFile(netnsPath: unknown): Promise<string> {
  const p = checkNetnsPathShape(netnsPath);
  const kind = await netnsFileKind(p);
  if (kind === 'missing') throw new NotFoundError(`netns ${p} does not exist`);
  if (kind === 'other') {
    throw new InvalidArgumentError(
      `netns ${p} is not a namespace file (expected nsfs, a bind mount of /proc/<pid>/ns/net)`,
    );
  }
  if (await isOwnNetns(p)) {
    // Taps and redirects there would hand the host's own traffic to the VM.
    throw new InvalidArgumentError(
      `netns ${p} is the host's own network namespace: a pod VM cannot share the host's network (host networking is not supported)`,
    );
  }
  return p;
}

/**
 * Whether the namespace a path named is gone, with everything in it: the path is missing, or is no longer a
 * namespace file (containerd unmounts a pod's netns at StopPodSandbox and may leave the plain file behind). Decided
 * by statfs(2), never from a tool's message. A namespace file of another kind is not "gone".
 */
export async function netnsGone(netnsPath: string): Promise<boolean> {
  try {
    return (await netnsFileKind(checkNetnsPathShape(netnsPath))) !== 'nsfs';
  } catch {
    return false; // cannot tell: the caller's own error says what is wrong
  }
}

/**
 * For teardown (detach, crash recovery): runs `fn` in the netns unless the namespace is gone; when `fn` fails and
 * the namespace is gone by then (unmounted or removed while we worked), there is nothing left to undo either.
 * The host's own network namespace, or a namespace of another kind, stays an error: never acted on.
 */
export async function unlessNetnsGone(netnsPath: string, fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = checkNetnsPathShape(netnsPath);
  if (await netnsGone(ns)) return;
  try {
    await fn(await checkNetnsFile(ns));
  } catch (err) {
    if (await netnsGone(ns)) return;
    throw err;
  }
}

/** Whether the namespace file is the one this process runs in (the host's, where containerd runs the shim). */
async function isOwnNetns(p: string): Promise<boolean> {
  try {
    const [ns, own] = await Promise.all([fs.stat(p), fs.stat('/proc/self/ns/net')]);
    return ns.dev === own.dev && ns.ino === own.ino;
  } catch {
    return false; // the later steps say what is wrong with the path
  }
}
