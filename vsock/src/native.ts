/**
 * The addon (src/vsock.c), loaded on first use: importing hull-vsock never fails, even where the addon was not
 * built; using it then throws the reason once, clearly.
 */
import path from 'node:path';

/** One AF_VSOCK fd. Every call is one non-blocking system call: a result >= 0, or a negative errno. */
export interface NativeHandle {
  connect(cid: number, port: number): number;
  bind(cid: number, port: number): number;
  listen(backlog: number): number;
  /** A new non-blocking fd, or -errno (-EAGAIN: nothing pending). */
  accept(): number;
  /** Bytes read, 0 at the end of the stream, or -errno. */
  read(buffer: Uint8Array, offset: number, length: number): number;
  /** Bytes written (maybe fewer than asked), or -errno. */
  write(buffer: Uint8Array, offset: number, length: number): number;
  shutdown(how: number): number;
  /** SO_ERROR as -errno, or 0. */
  socketError(): number;
  sockname(): [number, number] | number;
  peername(): [number, number] | number;
  /** Watch for UV_READABLE | UV_WRITABLE (0 stops); readiness calls `onready`. While it polls, the handle is kept alive. */
  poll(events: number): number;
  ref(): void;
  unref(): void;
  /** Stops polling and closes the fd; idempotent. */
  close(): void;
  fd(): number;
  /** Set by the owner: called from the event loop with libuv's status (< 0 on error) and the ready events. */
  onready?: (status: number, events: number) => void;
}

export interface NativeBinding {
  Handle: new (fd: number) => NativeHandle;
  /** A new non-blocking, close-on-exec AF_VSOCK stream socket: its fd, or -errno. */
  socket(): number;
  /** This machine's CID from /dev/vsock, or -errno. */
  localCid(): number;
  /** Tests only: a connected non-blocking AF_UNIX stream pair, to run the stream logic where vsock cannot connect. */
  _socketpair(): [number, number] | number;
  /** A non-blocking, close-on-exec AF_UNIX stream socket listening on `path` (console.ts), or -errno. */
  consoleListen(path: string): number;
  /** The one pty master sent on the listener's pending connection, with its pty number, or -errno. */
  consoleReceive(listenFd: number): [number, number] | number;
  /** TIOCSWINSZ: 0 or -errno. */
  setWinsize(fd: number, rows: number, cols: number): number;
  /** TIOCGWINSZ: [rows, cols] or -errno. */
  getWinsize(fd: number): [number, number] | number;
  /** F_SETPIPE_SZ: the pipe's new capacity, or -errno. */
  setPipeSize(fd: number, bytes: number): number;
  /** pipe2(O_CLOEXEC): [read fd, write fd], or -errno. */
  pipe(): [number, number] | number;
  /** Tests only: connects to `path` and sends `fds` (SCM_RIGHTS) with one byte, as crun does; 0 or -errno. */
  _sendFds(path: string, fds: number[]): number;
  readonly VMADDR_CID_ANY: number;
  readonly VMADDR_CID_LOCAL: number;
  readonly VMADDR_CID_HOST: number;
  readonly VMADDR_PORT_ANY: number;
  readonly UV_READABLE: number;
  readonly UV_WRITABLE: number;
  readonly EAGAIN: number;
  readonly EINPROGRESS: number;
  readonly EBADF: number;
}

/**
 * Where node-gyp puts the addon, relative to this file (dist/src/native.js), then this file's own folder (where an
 * installer copies it next to a bundle).
 */
export const ADDON_PATHS = [
  path.join(__dirname, '..', '..', 'build', 'Release', 'hull_vsock.node'),
  path.join(__dirname, 'hull_vsock.node'),
];

let binding: NativeBinding | undefined;
let loadError: Error | undefined;

export function native(): NativeBinding {
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
  loadError = new Error(`hull-vsock: cannot load the addon (built by node-gyp at npm install): ${reasons.join('; ')}`);
  throw loadError;
}

/** Whether the addon loads here (AF_VSOCK itself may still be missing from the kernel). */
export function isAvailable(): boolean {
  try {
    native();
    return true;
  } catch {
    return false;
  }
}
