/**
 * The daemon's log: pino JSON lines written to the bundle's `log` FIFO, which containerd copies into its own log.
 * containerd holds the FIFO open read-write, so opening it never blocks; while containerd is down writes fail,
 * and the logger must never take the shim down for that.
 */
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { Logger } from '../log';

export function openLogger(
  bundle: string,
  debug: boolean,
  id: string,
  namespace: string,
): Logger & { flush(): void; level: string } {
  let fd: number;
  try {
    fd = fs.openSync(path.join(bundle, 'log'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | fs.constants.O_APPEND);
  } catch {
    fd = fs.openSync('/dev/null', 'w');
  }
  const dest = pino.destination({ dest: fd, sync: false });
  dest.on('error', () => undefined);
  return pino({ level: debug ? 'debug' : 'info', base: { runtime: 'hull', id, namespace, pid: process.pid } }, dest);
}
