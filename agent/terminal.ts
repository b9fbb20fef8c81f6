/**
 * Terminal processes (OCI process.terminal): the process gets a pty as its stdin, stdout and stderr and as its
 * controlling terminal. Its output is the pty's (stdout; stderr is at end of file at once, as Kata does it), stdin
 * writes go to the pty, CloseStdin sends VEOF (^D) and TtyWinResize sets the pty's size.
 *
 * A container's terminal is the container's own, as with runc: crun opens the pty in the container's devpts, makes
 * it the process's controlling terminal and stdio, and sends the master on `--console-socket` (`crun create` for the
 * init, `crun exec --detach` for an exec) before it exits; the agent receives it through hull-vsock's ConsoleSocket
 * (SCM_RIGHTS, which node cannot receive: exactly one descriptor, a pty master, anything else closed) and keeps it
 * (`Terminal.fromConsole`). So inside the container /proc/self/fd/0 is /dev/pts/N of its own /dev/pts, `tty` and
 * ttyname() answer, and the pty is gone with the container's devpts. TIOCSWINSZ on the master (hull-vsock's
 * setWindowSize) sends SIGWINCH to the foreground process group, ^C is SIGINT for it, exit statuses are exact
 * (hull-init's reaper: crun has exited), and WaitProcess answers once the master reached end of file (EIO once the
 * last slave is closed), so all output is read first, or at the latest EXIT_DRAIN_MS after the exit when a
 * background child still holds the slave (process.ts).
 *
 * A guest process outside any container (the debug console) gets a pty of the guest's devpts instead
 * (`Terminal.open`: node-pty's openpty) as its stdio through `stdio()`, and hull-ctty (guest/init/hull-ctty.c: setsid
 * and TIOCSCTTY on stdin, then exec, fd 4 its exec status channel, `attach()`/`execed()`) makes it the controlling
 * terminal. node-pty is used through its native layer (open: openpty; resize: TIOCSWINSZ), which it exports as
 * `native` without promising it (hence the exact version in package.json); its UnixTerminal is not used (it
 * destroys the pty 200 ms after the child exits, read or not, and its writes retry EAGAIN in a busy loop). Its fds
 * are not close-on-exec; the agent's slave copy is closed as soon as the process has it (`releaseSlave()`).
 *
 * The master is read with non-blocking reads of its own (PtyOutput), not with node's tty.ReadStream: libuv takes
 * a hangup seen after a short read for end of file, and a pty returns a few KiB per read, so when a process
 * exits right after writing, what the pty still holds is dropped (here the tail of 3000 lines written at once was
 * lost in one run out of five to eight). Reads go on until EIO, which the master returns once every slave fd is closed; while the
 * pty is empty it is polled, every 1 ms at first and at most every 50 ms, and at once again after input.
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { setWindowSize, type ConsoleMaster } from 'hull-vsock';
import { Code, StatusError } from 'ttrpc-ts';
import { log } from './log';
import type { OciProcess } from './oci';
import type { ProcessTerminal } from './process';

/** Where the guest image has hull-ctty (guest/config.ts, GUEST_PATHS.hullCtty). */
export const HULL_CTTY = '/sbin/hull-ctty';
/** hull-ctty's fd 3 (an open hull-ctty, `stdio()`'s helper); fd 4 is its exec status channel. */
export const CTTY_ARG0 = '/proc/self/fd/3';
export const PRESERVED_FDS = 2;

/** The size a terminal gets when the spec has no console size (the usual VT100 default). */
export const DEFAULT_SIZE: TerminalSize = { rows: 24, cols: 80 };

const VEOF = Buffer.from([0x04]);
/** Longest exec failure line read from hull-ctty. */
const REPORT_LIMIT = 1024;
/** Delays between polls of an empty pty (output) or a full one (input), growing to the last. */
const POLL_MS = [1, 2, 5, 10, 20, 50];
const READ_CHUNK = 64 * 1024;

export interface TerminalSize {
  rows: number;
  cols: number;
}

/** node-pty's native module (src/unix/pty.cc), the two functions used here. */
interface PtyNative {
  open(cols: number, rows: number): { master: number; slave: number; pty: string };
  resize(fd: number, cols: number, rows: number): void;
}

let native: PtyNative | undefined;

/** Loaded on first use: an agent that never opens a terminal never loads the native module. */
async function ptyNative(): Promise<PtyNative> {
  if (native) return native;
  let mod: { native?: PtyNative | null; default?: { native?: PtyNative | null } };
  try {
    // require, not import(): the guest runs the agent from a V8 code cache, whose functions lose vm.Script's
    // dynamic import callback (guest/agent-loader.ts).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require('node-pty') as typeof mod;
  } catch (cause) {
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `terminals need node-pty, which does not load here: ${(cause as Error).message}`,
      { cause },
    );
  }
  const n = mod.native ?? mod.default?.native;
  if (typeof n?.open !== 'function' || typeof n.resize !== 'function')
    throw new StatusError(Code.INTERNAL, 'node-pty has no native open/resize: not the version hull was built with');
  native = n;
  return n;
}

/** The size a process's terminal starts with: its console size where both dimensions are given. */
export function initialSize(p: OciProcess): TerminalSize {
  const box = p.consoleSize;
  return box && box.height > 0 && box.width > 0 ? { rows: box.height, cols: box.width } : DEFAULT_SIZE;
}

/**
 * The master's output until end of file (EIO: no slave fd is open any more), read without blocking and polled
 * while the pty is empty. Destroying it closes the master.
 */
export class PtyOutput extends Readable {
  private timer: NodeJS.Timeout | undefined;
  private idle = 0;
  private readonly buffer = Buffer.allocUnsafe(READ_CHUNK);

  constructor(private readonly fd: number) {
    super({ highWaterMark: READ_CHUNK });
  }

  override _read(): void {
    this.pump();
  }

  /** Output is expected soon (input was written): the next poll is at once. */
  wake(): void {
    if (!this.timer) return;
    this.idle = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
    setImmediate(() => this.pump());
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    try {
      fs.closeSync(this.fd);
    } catch {
      // closed already
    }
    done(err);
  }

  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (!this.destroyed) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buffer, 0, READ_CHUNK, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          this.timer = setTimeout(() => this.pump(), POLL_MS[Math.min(this.idle++, POLL_MS.length - 1)]);
          this.timer.unref();
        } else if (code === 'EIO') {
          this.push(null);
        } else {
          this.destroy(err as Error);
        }
        return;
      }
      if (n === 0) {
        this.push(null);
        return;
      }
      this.idle = 0;
      if (!this.push(Buffer.from(this.buffer.subarray(0, n)))) return; // _read is called again when there is room
    }
  }
}

/** Sets a terminal's window size (TIOCSWINSZ) on its master. */
type SetSize = (master: number, size: TerminalSize) => void;

/**
 * One process's pty: the master (output as a stream, input written with back-off on EAGAIN) and, for a pty the
 * agent opened until the process has it, the slave. The master is closed by the output stream: once it has ended
 * and been read, or by close().
 */
export class Terminal implements ProcessTerminal {
  readonly output: PtyOutput;
  /** The process's stdin: writes go to the master; end() sends VEOF. */
  readonly input: Writable;
  private slave: number | undefined;
  /** Whether the input written so far ends a line (VEOF then needs to be sent once, not twice). */
  private atLineStart = true;
  private report: Promise<string | undefined> | undefined;
  private channel: Readable | undefined;

  private constructor(
    private readonly setSize: SetSize,
    private readonly master: number,
    slave: number | undefined,
    readonly name: string,
  ) {
    this.slave = slave;
    this.output = new PtyOutput(master);
    this.input = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        this.writeAll(chunk).then(() => done(), done);
      },
      final: (done) => {
        // ^D at the start of a line is end of file for a reader in canonical mode; after a partial line the first
        // one only hands the line over, so a second one is needed.
        const eof = this.atLineStart ? VEOF : Buffer.concat([VEOF, VEOF]);
        this.writeAll(eof).then(() => done(), done);
      },
    });
  }

  /** A new pty of the guest's devpts (node-pty's openpty), for a process the agent starts on its slave (`stdio()`). */
  static async open(size: TerminalSize): Promise<Terminal> {
    const pty = await ptyNative();
    const { master, slave, pty: name } = pty.open(size.cols, size.rows);
    return new Terminal((fd, s) => pty.resize(fd, s.cols, s.rows), master, slave, name);
  }

  /**
   * The pty a runtime opened in a container and sent on its console socket (non-blocking, close-on-exec: hull-vsock's
   * ConsoleSocket), set to `size`; the Terminal owns the master from here on.
   */
  static fromConsole(console: ConsoleMaster, size: TerminalSize): Terminal {
    const terminal = new Terminal(
      (fd, s) => setWindowSize(fd, s.rows, s.cols),
      console.fd,
      undefined,
      `/dev/pts/${console.ptyNumber} (container)`,
    );
    try {
      terminal.resize(size);
    } catch (err) {
      terminal.close();
      throw err;
    }
    return terminal;
  }

  /** crun's stdio: the slave as 0, 1 and 2, hull-ctty (`helper`, an open fd) as 3 and a new status channel as 4. */
  stdio(helper: number): StdioOptions {
    if (this.slave === undefined) throw new Error(`terminal ${this.name} has given its slave away already`);
    return [this.slave, this.slave, this.slave, helper, 'pipe'];
  }

  /** Takes hull-ctty's status channel from the crun that stdio() was given to. */
  attach(child: ChildProcess): void {
    const channel = child.stdio[4] as Readable | null | undefined;
    if (!channel) throw new Error('crun has no status channel on fd 4');
    this.channel = channel;
    this.report = new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      channel.on('data', (chunk: Buffer) => {
        if (size < REPORT_LIMIT) chunks.push(chunk);
        size += chunk.length;
      });
      const end = (): void => {
        const text = Buffer.concat(chunks).toString('utf8', 0, REPORT_LIMIT).trim();
        resolve(text || undefined);
      };
      channel.on('end', end);
      channel.on('close', end);
      channel.on('error', end);
    });
  }

  /** Once crun has given the slave to the process: the agent's copy is closed, so the output ends with the process's. */
  releaseSlave(): void {
    if (this.slave === undefined) return;
    fs.closeSync(this.slave);
    this.slave = undefined;
  }

  /**
   * Resolves once hull-ctty has executed the process's program; rejects with its report when it could not. After
   * `timeoutMs` without an answer the program is taken as started.
   */
  async execed(timeoutMs: number): Promise<void> {
    if (!this.report) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const outcome = await Promise.race([this.report, timeout]);
    clearTimeout(timer);
    this.report = undefined;
    this.channel?.destroy();
    if (outcome === 'timeout') {
      log.warn('no exec status from hull-ctty in time; the process is taken as started', {
        terminal: this.name,
        timeoutMs,
      });
      return;
    }
    if (outcome !== undefined) throw new StatusError(Code.INTERNAL, `the process cannot start: ${outcome}`);
  }

  /** Sets the window size; the kernel sends SIGWINCH to the terminal's foreground process group. */
  resize(size: TerminalSize): void {
    if (this.output.destroyed) return; // the process is gone and its output was read: nobody to tell
    this.setSize(this.master, size);
  }

  /** Closes the master (a process still on the terminal gets SIGHUP), the agent's slave and the status channel. */
  close(): void {
    this.releaseSlave();
    this.channel?.destroy();
    this.input.destroy();
    this.output.destroy();
  }

  /**
   * Writes all of `data` to the master. Writes are synchronous so that they never race the output stream closing
   * the master (its fd number could be reused); a full pty (EAGAIN) is retried with a growing delay.
   */
  private async writeAll(data: Buffer): Promise<void> {
    let offset = 0;
    let attempt = 0;
    while (offset < data.length) {
      if (this.output.destroyed) throw new Error('the terminal is closed');
      try {
        offset += fs.writeSync(this.master, data, offset);
        attempt = 0;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EAGAIN')
          throw new Error(
            code === 'EIO' ? 'the terminal has no process any more' : `terminal write: ${(err as Error).message}`,
            { cause: err },
          );
        await new Promise((resolve) => setTimeout(resolve, POLL_MS[Math.min(attempt++, POLL_MS.length - 1)]));
      }
    }
    if (data.length) {
      const last = data[data.length - 1];
      this.atLineStart = last === 0x0a || last === 0x0d || last === 0x04;
      this.output.wake(); // the terminal echoes input, and the process probably answers it
    }
  }
}
