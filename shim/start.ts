/**
 * `containerd-shim-hull-v2 ... start`, run by containerd in the container's bundle. Prints the ttrpc address of
 * the shim that will serve this container, in the form its caller reads (bootstrap.ts: a bare address for
 * containerd 1.6, JSON bootstrap parameters for 1.7 to 2.2, a protobuf BootstrapResult for 2.3, announcing task API
 * v3 to 2.x), and nothing else (containerd reads stdout and stderr together):
 * - a pod container: its pod's address (the pod's daemon already runs; nothing is started);
 * - a sandbox or a lone container: listen on the address here, hand the listening socket to a detached daemon as
 *   its fd 3 (runc's way: containerd's first connection waits in the backlog until the daemon accepts, so `start`
 *   does not wait for the daemon to load), and print. If a live daemon already holds the address, reuse it.
 * Kept to Node built-ins so that start-up stays short.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sandboxOf, socketAddress, socketPath } from './address';
import { chooseAnswer, formatAnswer } from './bootstrap';
import { DAEMON_NODE_FLAGS, daemonEnv } from './daemon-launch';
import { readStdin } from './stdin';
import { readSpec } from './spec';
import type { ShimFlags } from './flags';

function writeAddress(bundle: string, address: string): void {
  const tmp = path.join(bundle, '.address');
  fs.writeFileSync(tmp, address, { mode: 0o644 });
  fs.renameSync(tmp, path.join(bundle, 'address'));
}

function canConnect(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function listen(p: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ path: p, exclusive: true }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** Listens on the address, or returns undefined if a live daemon already does. */
async function claim(p: string): Promise<net.Server | undefined> {
  fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o711 });
  try {
    return await listen(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
  }
  if (await canConnect(p)) return undefined;
  fs.unlinkSync(p); // stale: its daemon died
  return listen(p);
}

/** containerd writes stdin as it starts us and closes it: a short deadline never holds a start up for long. */
const START_STDIN_TIMEOUT_MS = 1000;

export async function start(flags: ShimFlags, entry: string): Promise<Buffer> {
  const answer = chooseAnswer({
    input: await readStdin({ timeoutMs: START_STDIN_TIMEOUT_MS }),
    env: process.env,
    publishBinary: flags.publishBinary,
  });
  return formatAnswer(answer, await startShim(flags, entry));
}

/** The address of the shim that serves this container, started if need be. */
async function startShim(flags: ShimFlags, entry: string): Promise<string> {
  const bundle = process.cwd();
  const { sandboxId, joins } = sandboxOf(flags.id, readSpec(bundle).annotations);
  const address = socketAddress(flags.address, flags.namespace, sandboxId);
  if (joins) {
    writeAddress(bundle, address);
    return address;
  }
  const p = socketPath(address);
  const server = await claim(p);
  if (server) {
    try {
      fs.chmodSync(p, 0o600);
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      const args = [
        ...process.execArgv,
        ...DAEMON_NODE_FLAGS.filter((f) => !process.execArgv.includes(f)),
        entry,
        '-namespace',
        flags.namespace,
        '-id',
        flags.id,
        '-address',
        flags.address,
      ];
      if (flags.publishBinary) args.push('-publish-binary', flags.publishBinary);
      if (flags.debug) args.push('-debug');
      const child = spawn(process.execPath, args, {
        cwd: bundle,
        detached: true,
        env: daemonEnv(process.env),
        stdio: ['ignore', 'ignore', 'ignore', fd],
      });
      child.unref();
      if (!child.pid) throw new Error('could not start the shim daemon');
    } catch (err) {
      fs.rmSync(p, { force: true });
      throw err;
    }
    // The listening socket now belongs to the daemon too; exiting (without close(), which would unlink it) is enough.
  }
  writeAddress(bundle, address);
  return address;
}
