/** Errors of hull-vsock: one class, told apart by `code` (an errno name such as ECONNRESET, or one of ours). */
import util from 'node:util';

export class VsockError extends Error {
  override readonly name = 'VsockError';
  /**
   * A system error's name (ECONNRESET, ETIMEDOUT, ENODEV, EADDRINUSE, ...), or ABORT_ERR (connect() or accept()
   * aborted through its signal), ERR_SERVER_CLOSED (accept() on a closed server), EINVAL (a bad vsock:// address).
   */
  readonly code: string;
  /** The positive errno, for system errors. */
  readonly errno: number | undefined;
  /** The system call (or operation) that failed: socket, connect, bind, listen, accept, read, write, shutdown, poll. */
  readonly syscall: string | undefined;
  /** vsock://cid:port, when there is one. */
  readonly address: string | undefined;

  constructor(
    message: string,
    options: { code: string; errno?: number; syscall?: string; address?: string; cause?: unknown },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.errno = options.errno;
    this.syscall = options.syscall;
    this.address = options.address;
  }
}

export function vsockUri(cid: number, port: number): string {
  return `vsock://${cid}:${port}`;
}

/** `-errno` from the addon (or a libuv status, which is the same on Linux) as a VsockError: "connect ECONNRESET vsock://3:1024 (connection reset by peer)". */
export function errnoError(negErrno: number, syscall: string, address?: string): VsockError {
  const [name, description] = util.getSystemErrorMap().get(negErrno) ?? [`errno ${-negErrno}`, 'unknown error'];
  return new VsockError(`${syscall} ${name}${address ? ` ${address}` : ''} (${description.toLowerCase()})`, {
    code: name,
    errno: -negErrno,
    syscall,
    ...(address === undefined ? {} : { address }),
  });
}
