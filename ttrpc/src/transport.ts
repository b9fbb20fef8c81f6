/**
 * Unix-domain socket transports. An address is a filesystem path (bare or `unix://`-prefixed) or an abstract
 * name (`@name` or `\0name`). Any other Duplex can be used directly with `new Client(stream)` or
 * `server.serveStream(stream)`.
 */
import fs from 'node:fs';
import net from 'node:net';
import { ConnectionClosedError } from './status';

export interface ConnectOptions {
  /** Give up connecting after this long (default 10 s). */
  connectTimeoutMs?: number;
}

/** The path Node's net module takes: a filesystem path, or `\0name` for an abstract socket. */
export function unixSocketPath(address: string): string {
  if (address.startsWith('unix://')) address = address.slice('unix://'.length);
  if (address.startsWith('@')) return `\0${address.slice(1)}`;
  if (address === '' || address === '\0') throw new TypeError('empty unix socket address');
  return address;
}

export const isAbstract = (address: string): boolean => unixSocketPath(address).startsWith('\0');

export function connectUnix(address: string, options: ConnectOptions = {}): Promise<net.Socket> {
  const path = unixSocketPath(address);
  const timeoutMs = options.connectTimeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ConnectionClosedError(`connect ${address}: timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface ListenOptions {
  /** File mode of a filesystem socket (default 0600). */
  mode?: number;
}

/** Listens on a unix socket. The caller handles EADDRINUSE (an existing socket is never removed here). */
export function listenUnix(
  address: string,
  onConnection: (socket: net.Socket) => void,
  options: ListenOptions = {},
): Promise<net.Server> {
  const path = unixSocketPath(address);
  return new Promise((resolve, reject) => {
    const server = net.createServer(onConnection);
    server.once('error', reject);
    server.listen({ path, exclusive: true }, () => {
      server.removeListener('error', reject);
      if (!path.startsWith('\0')) {
        try {
          fs.chmodSync(path, options.mode ?? 0o600);
        } catch (err) {
          server.close();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
      }
      resolve(server);
    });
  });
}
