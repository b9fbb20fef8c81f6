/**
 * A real containerd-shim-runc-v2 (Debian's containerd package), started the way containerd starts it: its `start`
 * subcommand, run in a temporary bundle with its own `-address` (so its socket hash, state and TTRPC_ADDRESS are
 * private to the test), with the `log` FIFO containerd would have made. Used by the ttrpc interop test and bench.
 * `stop()` ends only the process this harness started (found by pid, cross-checked by its cwd) and removes its
 * socket and folders.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
export const RUNC_SHIM = '/usr/bin/containerd-shim-runc-v2';
export const NAMESPACE = 'hull-test';
export const NAMESPACE_METADATA = { 'containerd-namespace-ttrpc': NAMESPACE };

export interface RuncShim {
  /** `unix:///run/containerd/s/<sha256>` as printed by `start`. */
  address: string;
  bundle: string;
  id: string;
  /** The daemon's pid: the process whose cwd is the bundle. */
  pid: number;
  /** What the shim wrote to its log FIFO so far (for diagnostics). */
  log(): string;
  stop(): Promise<void>;
}

export async function startRuncShim(id = `interop-${process.pid}-${Date.now().toString(36)}`): Promise<RuncShim> {
  if (!fs.existsSync(RUNC_SHIM))
    throw new Error(`${RUNC_SHIM} is missing: run 'make deps' (Debian package containerd)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-runc-shim-'));
  const bundle = path.join(dir, 'bundle');
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: {} }));
  await execFileAsync('mkfifo', ['-m', '0700', path.join(bundle, 'log')]);
  // As containerd does: hold the FIFO open read-write so the daemon's open never blocks, and drain it.
  const logFd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const logStream = new net.Socket({ fd: logFd, readable: true, writable: false });
  let logText = '';
  logStream.on('data', (chunk: Buffer) => {
    logText = (logText + chunk.toString()).slice(-65536);
  });
  logStream.on('error', () => undefined);

  const grpcAddress = path.join(dir, 'containerd.sock');
  let address = '';
  let pid = 0;
  const stop = async (): Promise<void> => {
    if (pid === 0) pid = findByCwd(bundle) ?? 0;
    if (pid !== 0 && processCwd(pid) === bundle) {
      process.kill(pid, 'SIGKILL');
      await waitGone(pid, 5000);
    }
    if (address.startsWith('unix://')) fs.rmSync(address.slice('unix://'.length), { force: true });
    logStream.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const started = execFileAsync(
      RUNC_SHIM,
      ['-namespace', NAMESPACE, '-address', grpcAddress, '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'],
      { cwd: bundle, env: { ...process.env, TTRPC_ADDRESS: `${grpcAddress}.ttrpc` }, timeout: 10_000 },
    );
    started.child.stdin?.end(); // no runtime options: `start` reads stdin to EOF
    const { stdout, stderr } = await started;
    address = (stdout + stderr).trim();
    if (!address.startsWith('unix://')) throw new Error(`runc shim start printed ${JSON.stringify(address)}`);
    pid = findByCwd(bundle) ?? 0;
    if (pid === 0) throw new Error(`runc shim daemon is not running; its log: ${logText}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, bundle, id, pid, log: () => logText, stop };
}

/** The pid of the process whose cwd is `dir` (the shim daemon runs in its bundle). */
function findByCwd(dir: string): number | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (processCwd(Number(entry)) === dir) return Number(entry);
  }
  return undefined;
}

export function processCwd(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return undefined;
  }
}

export function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!isRunning(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !isRunning(pid);
}
