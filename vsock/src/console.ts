/**
 * An OCI runtime's console socket (runc's and crun's `--console-socket <path>`): the runtime opens the pty in the
 * container's own devpts and sends its master here as SCM_RIGHTS. The addon (src/console.c) receives it, checks
 * that it is exactly one pty master and closes anything else that came with it; setWindowSize is TIOCSWINSZ.
 *
 *   const socket = ConsoleSocket.listen('/run/hull/consoles/1.sock');
 *   // crun create --console-socket=/run/hull/consoles/1.sock ... (exits once it has sent the master)
 *   const { fd, ptyNumber } = socket.receive();             // close-on-exec, non-blocking
 *   socket.close();                                          // closes the listener and removes the path
 */
import fs from 'node:fs';
import { errnoError } from './errors';
import { native } from './native';

export interface ConsoleMaster {
  /** The pty master: close-on-exec, non-blocking; the caller owns it. */
  fd: number;
  /** N of /dev/pts/N in the devpts the pty was opened in (the container's). */
  ptyNumber: number;
}

export class ConsoleSocket {
  private fd: number;

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
  }

  /** Listens on `path` (a new name: EADDRINUSE if it exists; at most 106 bytes, ENAMETOOLONG otherwise). */
  static listen(path: string): ConsoleSocket {
    const fd = native().consoleListen(path);
    if (fd < 0) throw errnoError(fd, 'listen', path);
    return new ConsoleSocket(path, fd);
  }

  /**
   * The master the runtime sent, without waiting: call it once the runtime has exited. A VsockError: EAGAIN
   * (nothing was sent), EPROTO (no descriptor or more than one), ENOTTY (not a pty master).
   */
  receive(): ConsoleMaster {
    if (this.fd < 0) throw errnoError(native().EBADF, 'accept', this.path);
    const r = native().consoleReceive(this.fd);
    if (typeof r === 'number') throw errnoError(r, 'recvmsg', this.path);
    return { fd: r[0], ptyNumber: r[1] };
  }

  /** Closes the listener and removes its path; idempotent. */
  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
    fs.rmSync(this.path, { force: true });
  }
}

/** TIOCSWINSZ on a terminal fd (rows and cols 0-65535); throws a VsockError (ENOTTY, EBADF). */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const r = native().setWinsize(fd, rows, cols);
  if (r < 0) throw errnoError(r, 'ioctl(TIOCSWINSZ)');
}

/** TIOCGWINSZ: a terminal's size. */
export function windowSize(fd: number): { rows: number; cols: number } {
  const r = native().getWinsize(fd);
  if (typeof r === 'number') throw errnoError(r, 'ioctl(TIOCGWINSZ)');
  return { rows: r[0], cols: r[1] };
}

/** A pipe (pipe2 with O_CLOEXEC, both ends blocking): [read fd, write fd]; throws a VsockError. */
export function pipe(): [number, number] {
  const r = native().pipe();
  if (typeof r === 'number') throw errnoError(r, 'pipe2');
  return r;
}

/** F_SETPIPE_SZ: sets a pipe's capacity (bytes, at least 4096) and returns the one the kernel chose; throws a VsockError. */
export function setPipeSize(fd: number, bytes: number): number {
  const r = native().setPipeSize(fd, bytes);
  if (r < 0) throw errnoError(r, 'fcntl(F_SETPIPE_SZ)');
  return r;
}
