/**
 * virtiofsd (QEMU 7.2's C daemon, /usr/lib/qemu/virtiofsd): one per VM, exporting sharedDir to the guest over a
 * vhost-user socket QEMU connects to. It exits by itself when QEMU disconnects; stop() makes sure.
 *
 * Confinement: the share must not let the guest reach anything outside sharedDir, e.g. by creating a symlink to /
 * and following it. virtiofsd resolves every guest path itself, so its sandbox is what keeps it inside:
 *  - sandbox=namespace (preferred): new mount, pid and net namespaces, then pivot_root(2) into sharedDir, so "/" for
 *    the daemon *is* the share and a symlink to /etc resolves to <sharedDir>/etc. It forks: the pid we spawn waits
 *    for a child living in the new pid namespace (that child dies with it via PR_SET_PDEATHSIG). Its mount
 *    namespace is a slave of ours, so bind mounts fs-share makes under sharedDir later still show up in the guest.
 *  - sandbox=chroot (fallback where namespaces are not permitted, e.g. some containers): chroot(2) into sharedDir,
 *    which confines path resolution the same way, without the extra namespaces.
 * Namespace setup happens only after QEMU connects, so a failure would surface as QEMU failing to start. We
 * therefore probe once per binary (probeSandboxMode): start a throwaway daemon in namespace mode, connect, send the
 * vhost-user GET_FEATURES request and see whether an answer comes back (it does only after the sandbox is up).
 */
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { UnavailableError } from '../errors';
import { checkOptionValue } from './config';
import {
  DEFAULT_VIRTIOFS_CACHE,
  checkVirtiofsCache,
  checkVirtiofsdExtraArgs,
  virtiofsdCacheArg,
  type VirtiofsCache,
} from './virtiofsd-options';
import { OwnedProcess, childPids, reapForeign } from './process';
import { NOOP_LOGGER, type Logger } from '../log';
import type { SpawnedHelper } from './types';
import { abortError, connectWithRetry, settlesWithin, sleep } from './util';

export type SandboxMode = 'namespace' | 'chroot';

export interface VirtiofsdOptions {
  binary: string;
  socketPath: string;
  sharedDir: string;
  sandbox: SandboxMode;
  debug?: boolean;
  /** `[hypervisor] virtio_fs_cache`; default DEFAULT_VIRTIOFS_CACHE ('auto'). */
  cache?: VirtiofsCache;
  /** `[hypervisor] virtio_fs_extra_args`, checked again here (checkVirtiofsdExtraArgs); after hull's own. */
  extraArgs?: readonly string[];
}

/** The argv (pure). No --syslog: stderr is captured and logged by us. The operator's extra arguments come last. */
export function virtiofsdArgs(o: VirtiofsdOptions): string[] {
  const args = [
    `--socket-path=${checkOptionValue('virtiofsd socket', o.socketPath)}`,
    '-o',
    `source=${checkOptionValue('sharedDir', o.sharedDir)}`,
    '-o',
    virtiofsdCacheArg(checkVirtiofsCache('virtiofsd cache mode', o.cache ?? DEFAULT_VIRTIOFS_CACHE)),
    '-o',
    `sandbox=${o.sandbox}`,
    // Bind mounts under the share (one per container rootfs) appear as their own submounts with distinct st_dev,
    // so inode numbers from different mounts cannot collide in the guest.
    '-o',
    'announce_submounts',
  ];
  if (o.debug) args.push('-o', 'log_level=debug');
  if (o.extraArgs !== undefined) args.push(...checkVirtiofsdExtraArgs('virtiofsd extra arguments', o.extraArgs));
  return args;
}

/** Bound on the daemon creating its socket. */
export const VIRTIOFSD_READY_TIMEOUT_MS = 5000;

export class Virtiofsd {
  /** Milliseconds from spawn until the socket existed. */
  readonly readyMs: number;

  private constructor(
    readonly process: OwnedProcess,
    readonly socketPath: string,
    readyMs: number,
  ) {
    this.readyMs = readyMs;
  }

  get pid(): number | undefined {
    return this.process.alive ? this.process.pid : undefined;
  }

  /**
   * Spawn and wait (bounded, abortable) until the vhost-user socket exists. Kills the daemon on any failure.
   * `onSpawn` hears of the daemon the moment it is spawned (named `name`, default 'virtiofsd').
   */
  static async start(
    o: VirtiofsdOptions,
    signal: AbortSignal,
    logger: Logger = NOOP_LOGGER,
    report: { name?: string; onSpawn?: (helper: SpawnedHelper) => void } = {},
  ): Promise<Virtiofsd> {
    fs.rmSync(o.socketPath, { force: true });
    // spawns: virtiofsd; configuration virtiofsdPath
    const proc = OwnedProcess.spawn(o.binary, virtiofsdArgs(o), {
      name: report.name ?? 'virtiofsd',
      logger,
      ...(report.onSpawn ? { onSpawn: report.onSpawn } : {}),
    });
    const started = performance.now();
    try {
      for (;;) {
        if (signal.aborted) throw abortError(signal, 'start virtiofsd');
        if (proc.exit) {
          throw new UnavailableError(
            `virtiofsd exited before creating its socket (${describeExit(proc)}): ${proc.stderrTail().trim()}`,
            proc.exit.error ? { cause: proc.exit.error } : undefined,
          );
        }
        if (fs.existsSync(o.socketPath)) break;
        if (performance.now() - started > VIRTIOFSD_READY_TIMEOUT_MS) {
          throw new UnavailableError(
            `virtiofsd did not create ${o.socketPath} within ${VIRTIOFSD_READY_TIMEOUT_MS} ms: ${proc.stderrTail().trim()}`,
          );
        }
        await sleep(5, signal).catch(() => undefined);
      }
    } catch (err) {
      await new Virtiofsd(proc, o.socketPath, 0).stop(0);
      throw err;
    }
    const d = new Virtiofsd(proc, o.socketPath, performance.now() - started);
    logger.info(
      { pid: proc.pid, sandbox: o.sandbox, cache: o.cache ?? DEFAULT_VIRTIOFS_CACHE, readyMs: Math.round(d.readyMs) },
      'virtiofsd listening',
    );
    return d;
  }

  /**
   * Let it exit by itself for up to `graceMs` (it does once QEMU is gone), then SIGTERM, then SIGKILL; also the
   * namespace-sandbox child, by pid. Removes the socket. Idempotent.
   */
  async stop(graceMs: number): Promise<void> {
    const pid = this.process.pid;
    const sandboxChildren = pid === undefined || !this.process.alive ? [] : childPids(pid);
    if (this.process.alive && !(await this.process.waitExit(graceMs))) await this.process.terminate(1000, 2000);
    const socketArg = `--socket-path=${this.socketPath}`;
    for (const child of sandboxChildren) await reapForeign(child, (argv) => argv.includes(socketArg), 1000);
    fs.rmSync(this.socketPath, { force: true });
  }
}

function describeExit(p: OwnedProcess): string {
  const e = p.exit;
  if (!e) return 'running';
  if (e.error) return `spawn failed: ${e.error.message}`;
  return e.signal ? `signal ${e.signal}` : `exit code ${e.code}`;
}

export interface SandboxChoice {
  value: SandboxMode;
  reason: string;
}

const probes = new Map<string, Promise<SandboxChoice>>();

/**
 * Which sandbox mode works with this binary on this host (cached per binary for the life of the process).
 * `scratchDir` is a folder we own (the VM's stateDir); the probe's share and socket live there and are removed.
 */
export function probeSandboxMode(
  binary: string,
  scratchDir: string,
  logger: Logger = NOOP_LOGGER,
  onSpawn?: (helper: SpawnedHelper) => void,
): Promise<SandboxChoice> {
  let p = probes.get(binary);
  if (!p) {
    p = runProbe(binary, scratchDir, logger, onSpawn);
    probes.set(binary, p);
    p.catch(() => probes.delete(binary));
  }
  return p;
}

/** For tests: forget cached probe results. */
export function resetSandboxProbeCache(): void {
  probes.clear();
}

const VHOST_USER_GET_FEATURES = 1;
const VHOST_USER_VERSION = 0x1;
const VHOST_USER_REPLY = 0x4;
const PROBE_TIMEOUT_MS = 3000;

async function runProbe(
  binary: string,
  scratchDir: string,
  logger: Logger,
  onSpawn?: (helper: SpawnedHelper) => void,
): Promise<SandboxChoice> {
  const share = path.join(scratchDir, 'vfs-probe');
  const socketPath = path.join(scratchDir, 'vfs-probe.sock');
  fs.mkdirSync(share, { recursive: true });
  const deadline = AbortSignal.timeout(PROBE_TIMEOUT_MS);
  let daemon: Virtiofsd | undefined;
  let conn: net.Socket | undefined;
  try {
    daemon = await Virtiofsd.start({ binary, socketPath, sharedDir: share, sandbox: 'namespace' }, deadline, logger, {
      name: 'virtiofsd-probe',
      ...(onSpawn ? { onSpawn } : {}),
    });
    conn = await connectWithRetry(socketPath, deadline, 10);
    const answered = await askFeatures(conn, daemon.process, deadline);
    if (answered)
      return {
        value: 'namespace',
        reason: 'sandbox=namespace works here (pivot_root into the share in new mount/pid/net namespaces)',
      };
    const said = daemon.process
      .stderrTail()
      .trim()
      .split('\n')
      .filter((l) => !/Waiting for vhost-user|Received vhost-user/.test(l))
      .slice(-3)
      .join(' | ');
    return {
      value: 'chroot',
      reason: `sandbox=namespace fails here (${said || 'no answer from the daemon'}); using sandbox=chroot`,
    };
  } catch (err) {
    return {
      value: 'chroot',
      reason: `sandbox=namespace probe failed (${(err as Error).message}); using sandbox=chroot`,
    };
  } finally {
    conn?.destroy();
    await daemon?.stop(1000);
    fs.rmSync(share, { recursive: true, force: true });
    fs.rmSync(socketPath, { force: true });
  }
}

/** Send GET_FEATURES; true when a well-formed reply arrives, false when the daemon exits/closes or time runs out. */
async function askFeatures(conn: net.Socket, proc: OwnedProcess, signal: AbortSignal): Promise<boolean> {
  const header = Buffer.alloc(12);
  header.writeUInt32LE(VHOST_USER_GET_FEATURES, 0);
  header.writeUInt32LE(VHOST_USER_VERSION, 4);
  header.writeUInt32LE(0, 8);
  const reply = new Promise<boolean>((resolve) => {
    let got = Buffer.alloc(0);
    conn.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 12)
        resolve(got.readUInt32LE(0) === VHOST_USER_GET_FEATURES && (got.readUInt32LE(4) & VHOST_USER_REPLY) !== 0);
    });
    conn.on('close', () => resolve(false));
    conn.on('error', () => resolve(false));
    signal.addEventListener('abort', () => resolve(false), { once: true });
    void proc.exited.then(() => setTimeout(() => resolve(false), 50));
  });
  conn.write(header);
  const answered = await reply;
  // Let a failing daemon finish writing why.
  if (!answered) await settlesWithin(proc.exited, 200);
  return answered;
}
