/**
 * A container process as the agent sees it: the pipes it created for its stdio (or its terminal: terminal.ts), its
 * output buffered until the host reads it (ReadStdout/ReadStderr), and its exit code from hull-init's reaper.
 *
 * The exit is its own event (containerd's runc shim publishes it as soon as the process is reaped). WaitProcess
 * answers once the process has exited and then both output pipes reached end of file, or EXIT_DRAIN_MS after the
 * exit, whichever comes first: a background child that inherited the pipes (`sh -c 'sleep 300 & echo started'`)
 * keeps them open and must not hold the exit. What the process wrote before it exited is in the pipe by then and
 * read within the bound; the pipes stay open and the output buffered after the answer, so output of such a child
 * keeps flowing to ReadStdout/ReadStderr until the process is forgotten (close(), at RemoveContainer).
 */
import type { Readable, Writable } from 'node:stream';
import { Code, StatusError } from 'ttrpc-ts';

/** Output buffered per stream before the pipe is paused (the process then blocks writing until the host reads). */
export const OUTPUT_BUFFER_LIMIT = 1 << 20;
/** Largest ReadStdout/ReadStderr answer. */
export const READ_LIMIT = 1 << 20;
/** Largest WriteStdin request. */
export const WRITE_LIMIT = 1 << 20;
/**
 * How long WaitProcess waits after the exit for end of file on the process's output: runc's shim waits 2 s for its
 * output copy when the process is deleted (pkg/process waitTimeout) and then closes the IO. Here the output of
 * an exited process is normally at end of file within milliseconds; the bound only matters when a child of the
 * process holds the pipes.
 */
export const EXIT_DRAIN_MS = 2_000;

/** Chunks (reads of the pipe or socket) and bytes every OutputBuffer took in, and its answers: the profile hook reports them. */
export const outputTotals = { chunks: 0, bytes: 0, answers: 0 };

/** A pipe's output, buffered up to a cap; read() blocks until there is data or end of file. */
export class OutputBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private eof = false;
  private waiters: (() => void)[] = [];
  private readonly endedPromise: Promise<void>;

  constructor(
    private readonly stream: Readable | null | undefined,
    private readonly limit = OUTPUT_BUFFER_LIMIT,
  ) {
    let markEnded!: () => void;
    this.endedPromise = new Promise((resolve) => (markEnded = resolve));
    const end = (): void => {
      if (this.eof) return;
      this.eof = true;
      markEnded();
      this.wake();
    };
    if (!stream) {
      end();
      return;
    }
    stream.on('data', (chunk: Buffer) => {
      outputTotals.chunks++;
      outputTotals.bytes += chunk.length;
      this.chunks.push(chunk);
      this.size += chunk.length;
      if (this.size >= this.limit) stream.pause();
      this.wake();
    });
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
  }

  /** Resolves once the pipe reached end of file (what is buffered may still be unread). */
  ended(): Promise<void> {
    return this.endedPromise;
  }

  /** Up to `len` bytes, waiting for some; empty at end of file. */
  async read(len: number): Promise<Buffer> {
    while (this.size === 0 && !this.eof) await new Promise<void>((resolve) => this.waiters.push(resolve));
    if (this.size === 0) return Buffer.alloc(0);
    const parts: Buffer[] = [];
    let want = len;
    while (want > 0 && this.chunks.length) {
      const head = this.chunks[0]!;
      if (head.length <= want) {
        parts.push(head);
        this.chunks.shift();
        want -= head.length;
      } else {
        parts.push(head.subarray(0, want));
        this.chunks[0] = head.subarray(want);
        want = 0;
      }
    }
    const out = Buffer.concat(parts);
    this.size -= out.length;
    outputTotals.answers++;
    if (this.size < this.limit && this.stream?.isPaused()) this.stream.resume();
    return out;
  }

  /** Drops the buffer and stops reading (the process is forgotten); blocked readers get end of file. */
  close(): void {
    this.chunks = [];
    this.size = 0;
    this.stream?.destroy();
    this.eof = true;
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** What a process with a terminal has besides its streams (terminal.ts). */
export interface ProcessTerminal {
  resize(size: { rows: number; cols: number }): void;
  /** Resolves once the process runs its program; rejects when it could not (see Terminal.execed). */
  execed(timeoutMs: number): Promise<void>;
  close(): void;
}

export class ContainerProcess {
  readonly stdout: OutputBuffer;
  readonly stderr: OutputBuffer;
  private stdinClosed = false;
  /** Set by start(): the process's pid and exit code. */
  pid = 0;
  exitCode: number | undefined;
  private exitPromise: Promise<number> | undefined;
  private drained: Promise<number> | undefined;

  constructor(
    readonly execId: string,
    private readonly stdin: Writable | null | undefined,
    stdout: Readable | null | undefined,
    stderr: Readable | null | undefined,
    readonly terminal?: ProcessTerminal,
  ) {
    this.stdout = new OutputBuffer(stdout);
    this.stderr = new OutputBuffer(stderr);
    stdin?.on('error', () => {
      this.stdinClosed = true; // EPIPE: the process closed its stdin or exited
    });
  }

  /** Records the pid and its exit code as the reaper reports it. */
  started(pid: number, exit: Promise<number>): void {
    this.pid = pid;
    this.exitPromise = exit.then((code) => {
      this.exitCode = code;
      return code;
    });
  }

  get exited(): boolean {
    return this.exitCode !== undefined;
  }

  /**
   * The exit code, once the process exited and its stdout and stderr reached end of file, or `drainMs` after the
   * exit (a child holds them); the bound counts from the exit, once for every caller.
   */
  wait(drainMs = EXIT_DRAIN_MS): Promise<number> {
    const exit = this.exitPromise;
    if (!exit)
      return Promise.reject(
        new StatusError(Code.FAILED_PRECONDITION, `process ${this.execId || '(init)'} has not been started`),
      );
    this.drained ??= exit.then(async (code) => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)));
      await Promise.race([Promise.all([this.stdout.ended(), this.stderr.ended()]), deadline]);
      clearTimeout(timer);
      return code;
    });
    return this.drained;
  }

  async write(data: Uint8Array): Promise<number> {
    if (data.length > WRITE_LIMIT)
      throw new StatusError(Code.INVALID_ARGUMENT, `stdin write of ${data.length} bytes is larger than ${WRITE_LIMIT}`);
    const stdin = this.stdin;
    if (!stdin || this.stdinClosed || stdin.destroyed || stdin.writableEnded)
      throw new StatusError(Code.FAILED_PRECONDITION, 'stdin is closed');
    await new Promise<void>((resolve, reject) => {
      stdin.write(Buffer.from(data), (err) =>
        err ? reject(new StatusError(Code.FAILED_PRECONDITION, `stdin: ${err.message}`)) : resolve(),
      );
    });
    return data.length;
  }

  /** End of file on stdin: the pipe is closed; a terminal gets VEOF (^D) and stays open. */
  closeStdin(): void {
    this.stdinClosed = true;
    this.stdin?.end();
  }

  /** TtyWinResize; only for a process with a terminal. */
  resize(size: { rows: number; cols: number }): void {
    if (!this.terminal)
      throw new StatusError(Code.FAILED_PRECONDITION, `process ${this.execId || '(init)'} has no terminal`);
    this.terminal.resize(size);
  }

  /** Forgets the process's pipes (and closes its terminal). */
  close(): void {
    this.closeStdin();
    this.stdin?.destroy();
    this.stdout.close();
    this.stderr.close();
    this.terminal?.close();
  }
}
