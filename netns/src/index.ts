/**
 * hull-netns: a TCP listener made inside another network namespace (named by a path such as
 * /var/run/netns/<name> or /proc/<pid>/ns/net) for net.Server, and the original destination of a connection that
 * netfilter redirected to it. See README.md.
 */
import net from 'node:net';
import path from 'node:path';
import util from 'node:util';

interface NativeBinding {
  /** A listening, non-blocking, close-on-exec TCP socket made inside the namespace: its fd, or -errno. */
  listenTcp(nsPath: string, address: string, port: number, backlog: number): number;
  /** [4 | 6, address, port], or -errno. */
  originalDestination(fd: number): [4 | 6, string, number] | number;
}

/** An errno from the addon, named: `code` is ENOENT, EINVAL, EADDRINUSE, ... */
export class NetnsError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail: string) {
    const code = util.getSystemErrorName(errno);
    super(`${syscall} ${detail}: ${code}`);
    this.name = 'NetnsError';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }
}

/**
 * Where node-gyp puts the addon relative to this file (dist/src/index.js), then this file's own folder (where an
 * installer copies it next to a bundle).
 */
const ADDON_PATHS = [
  path.join(__dirname, '..', '..', 'build', 'Release', 'hull_netns.node'),
  path.join(__dirname, 'hull_netns.node'),
];

let binding: NativeBinding | undefined;
let loadError: Error | undefined;

function native(): NativeBinding {
  if (binding) return binding;
  if (loadError) throw loadError;
  const reasons: string[] = [];
  for (const p of ADDON_PATHS) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon can only be required
      binding = require(p) as NativeBinding;
      return binding;
    } catch (cause) {
      reasons.push(`${p}: ${(cause as Error).message.split('\n')[0]}`);
    }
  }
  loadError = new Error(`hull-netns: cannot load the addon (built by node-gyp at npm install): ${reasons.join('; ')}`);
  throw loadError;
}

/** Whether the addon loads here. */
export function isAvailable(): boolean {
  try {
    native();
    return true;
  } catch {
    return false;
  }
}

export interface ListenOptions {
  /** An IPv4 or IPv6 address of the namespace, e.g. 127.0.0.1. */
  host: string;
  /** 0: the kernel picks one. */
  port: number;
  /** Default 128. */
  backlog?: number;
  /** As for net.createServer. */
  allowHalfOpen?: boolean;
  pauseOnConnect?: boolean;
}

/**
 * A net.Server listening inside the network namespace at `nsPath` (which needs CAP_SYS_ADMIN). Its connections are
 * ordinary net.Sockets in that namespace; the caller's own threads never leave theirs.
 */
export async function listenInNetns(
  nsPath: string,
  options: ListenOptions,
  connectionListener?: (socket: net.Socket) => void,
): Promise<net.Server> {
  if (typeof nsPath !== 'string' || !path.isAbsolute(nsPath) || nsPath.includes('\0'))
    throw new TypeError(`listenInNetns: not an absolute path: ${JSON.stringify(nsPath)}`);
  if (net.isIP(options.host) === 0)
    throw new TypeError(`listenInNetns: not an IP address: ${JSON.stringify(options.host)}`);
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535)
    throw new RangeError(`listenInNetns: port ${options.port} is not in 0..65535`);
  const backlog = options.backlog ?? 128;
  const fd = native().listenTcp(nsPath, options.host, options.port, backlog);
  if (fd < 0) throw new NetnsError('listen', fd, `${options.host}:${options.port} in ${nsPath}`);
  const server = net.createServer(
    { allowHalfOpen: options.allowHalfOpen ?? false, pauseOnConnect: options.pauseOnConnect ?? false },
    connectionListener,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    server.close();
    throw err;
  }
  return server;
}

export interface Destination {
  family: 4 | 6;
  address: string;
  port: number;
}

/** The fd of a connected net.Socket (libuv's handle keeps it; node has no public accessor). */
function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new NetnsError('getsockopt', -9 /* EBADF */, 'on a socket without an fd');
  return fd;
}

/**
 * Where `socket` (accepted by a server) was connecting to before a REDIRECT or DNAT rule sent it here; for a
 * connection nothing rewrote, its own local address. NetnsError ENOENT when conntrack has no entry for it.
 */
export function originalDestination(socket: net.Socket): Destination {
  const r = native().originalDestination(socketFd(socket));
  if (typeof r === 'number') throw new NetnsError('getsockopt', r, 'SO_ORIGINAL_DST');
  return { family: r[0], address: r[1], port: r[2] };
}
