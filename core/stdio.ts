/**
 * A process's stdio between containerd's FIFOs on the host and the agent's streams in the guest (Kata's model:
 * one blocking ReadStdout/ReadStderr at a time per stream, empty data = end of stream; WriteStdin; CloseStdin).
 *
 * FIFOs are opened without blocking and driven by libuv's event loop (net.Socket over the fd), never by a
 * thread-pool read that could hang forever:
 * - stdout/stderr are opened read-write: the open cannot block or fail for want of a reader, and a reader that
 *   goes away makes writes wait (backpressure into the guest) instead of failing with EPIPE and losing bytes.
 * - stdin is opened read-only plus a keep-alive writer of our own, so that the pipe does not report end of file
 *   before containerd's writer has opened it. CloseIO drops the keep-alive: once containerd's writer is closed
 *   too, what is still in the pipe is read, forwarded, and then the agent's stdin is closed.
 * `stdout`/`stderr` may be plain paths, `fifo://` or `file://` URIs (appended to); `binary://` loggers are refused.
 */
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { NotImplementedError, InvalidArgumentError, errorMessage } from '../errors';
import type { ContainerAgentClient } from '../agent-client';
import type { Logger } from '../hypervisor/types';
import type { StdioPaths } from './events';

/** Largest ReadStdout/ReadStderr asked for (the agent's limit): fewer round trips over the agent channel. */
const READ_CHUNK = 1 << 20;
/** Largest WriteStdin sent at once. */
const WRITE_CHUNK = 64 * 1024;

type Sink = { write(chunk: Buffer): Promise<void>; end(): Promise<void> };

/** A host path for one stdio stream, or undefined when not attached. */
export function stdioTarget(uri: string, what: string): { kind: 'fifo' | 'file'; path: string } | undefined {
  if (uri === '') return undefined;
  let kind: 'fifo' | 'file' = 'fifo';
  let p = uri;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//.exec(uri);
  if (scheme) {
    if (scheme[1] === 'fifo') p = uri.slice('fifo://'.length);
    else if (scheme[1] === 'file') {
      kind = 'file';
      p = uri.slice('file://'.length);
    } else if (scheme[1] === 'binary') throw new NotImplementedError(`${what}: binary:// logging drivers are not supported by hull`);
    else throw new InvalidArgumentError(`${what}: unsupported scheme in ${JSON.stringify(uri)}`);
  }
  if (!p.startsWith('/') || p.includes('\0')) throw new InvalidArgumentError(`${what}: ${JSON.stringify(uri)} is not an absolute path`);
  return { kind, path: p };
}

function socketSink(sock: net.Socket): Sink {
  let failed: Error | undefined;
  sock.on('error', (err) => (failed = err));
  return {
    write: (chunk) =>
      new Promise((resolve, reject) => {
        if (failed) return reject(failed);
        if (sock.write(chunk)) return resolve();
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          if (failed) reject(failed);
          else resolve();
        };
        sock.on('drain', done);
        sock.on('close', done);
      }),
    end: () =>
      new Promise((resolve) => {
        if (sock.destroyed) return resolve();
        sock.end(() => {
          sock.destroy();
          resolve();
        });
      }),
  };
}

/** Opens a path containerd named: a path that cannot be opened is the request's fault (INVALID_ARGUMENT). */
async function openNamed<T>(what: string, p: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) throw new InvalidArgumentError(`${what}: cannot open ${JSON.stringify(p)}: ${code}`, { cause: err });
    throw err;
  }
}

async function openSink(what: string, target: { kind: 'fifo' | 'file'; path: string }): Promise<Sink> {
  if (target.kind === 'file') {
    const handle = await openNamed(what, target.path, () => fs.promises.open(target.path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o640));
    return {
      write: async (chunk) => {
        await handle.write(chunk);
      },
      end: () => handle.close(),
    };
  }
  const fd = await openFifo(what, target.path, fs.constants.O_RDWR);
  return socketSink(new net.Socket({ fd, readable: false, writable: true }));
}

const openFd = promisify(fs.open);
const fstat = promisify(fs.fstat);

/** A raw descriptor (net.Socket takes it over), opened without blocking; the path must be a FIFO. */
async function openFifo(what: string, p: string, mode: number): Promise<number> {
  const fd = await openNamed(what, p, () => openFd(p, mode | fs.constants.O_NONBLOCK));
  try {
    if (!(await fstat(fd)).isFIFO()) throw new InvalidArgumentError(`${p} is not a FIFO`);
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

export interface ProcessIoOptions {
  agent: ContainerAgentClient;
  containerId: string;
  /** The process as the agent knows it. */
  execId: string;
  stdio: StdioPaths;
  logger: Logger;
}

export class ProcessIo {
  /** Resolves when stdout and stderr reached end of stream and every byte was handed to the FIFOs. */
  readonly outputDone: Promise<void>;
  private stdinSocket: net.Socket | undefined;
  private stdinKeepAlive: number | undefined;
  private stdinDone: Promise<void> = Promise.resolve();
  private readonly sinks: Sink[] = [];
  private outSink: Sink | undefined;
  private errSink: Sink | undefined;
  private started = false;
  private closed = false;
  private resolveOutput!: () => void;

  private constructor(private readonly o: ProcessIoOptions) {
    this.outputDone = new Promise((resolve) => (this.resolveOutput = resolve));
  }

  /** Opens the FIFOs (before the process starts, so that no output can be missed) and starts copying. */
  static async open(o: ProcessIoOptions): Promise<ProcessIo> {
    const io = new ProcessIo(o);
    try {
      const stdout = stdioTarget(o.stdio.stdout, 'stdout');
      const stderr = o.stdio.terminal ? undefined : stdioTarget(o.stdio.stderr, 'stderr');
      const stdin = stdioTarget(o.stdio.stdin, 'stdin');
      const outSink = stdout ? await openSink('stdout', stdout) : undefined;
      if (outSink) io.sinks.push(outSink);
      const errSink = stderr ? await openSink('stderr', stderr) : undefined;
      if (errSink) io.sinks.push(errSink);
      if (stdin) {
        if (stdin.kind !== 'fifo') throw new InvalidArgumentError('stdin must be a FIFO');
        const fd = await openFifo('stdin', stdin.path, fs.constants.O_RDONLY);
        io.stdinSocket = new net.Socket({ fd, readable: true, writable: false });
        io.stdinKeepAlive = fs.openSync(stdin.path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      }
      io.outSink = outSink;
      io.errSink = errSink;
      return io;
    } catch (err) {
      io.close();
      throw err;
    }
  }

  /** Starts copying output and input; call once the process exists in the guest (created, not yet started). */
  start(): void {
    if (this.started) return;
    this.started = true;
    void Promise.all([this.pump('stdout', this.outSink), this.o.stdio.terminal ? undefined : this.pump('stderr', this.errSink)]).then(() => this.resolveOutput());
    this.startStdin();
  }

  private startStdin(): void {
    const sock = this.stdinSocket;
    if (!sock) return;
    const { agent, containerId, execId, logger } = this.o;
    this.stdinDone = new Promise<void>((resolve) => {
      let chain = Promise.resolve();
      let broken = false;
      sock.on('data', (chunk: Buffer) => {
        sock.pause();
        chain = chain.then(async () => {
          if (broken) return;
          try {
            for (let off = 0; off < chunk.length; ) off += await agent.writeStdin(containerId, execId, chunk.subarray(off, off + WRITE_CHUNK));
          } catch (err) {
            broken = true;
            logger.debug({ containerId, execId, error: errorMessage(err) }, 'stdin: the process no longer takes input');
          }
          if (!sock.destroyed) sock.resume();
        });
      });
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        void chain.then(async () => {
          if (!broken && !this.closed) {
            await agent.closeStdin(containerId, execId).catch((err: unknown) => logger.debug({ containerId, execId, error: errorMessage(err) }, 'stdin: close'));
          }
          resolve();
        });
      };
      sock.once('end', finish);
      sock.once('error', finish);
      sock.once('close', finish); // destroyed by close(): the process is gone, a later CloseIO must not wait forever
    });
  }

  /** CloseIO: stdin ends once containerd's writer is closed and what is still in the pipe was forwarded. */
  async closeStdin(): Promise<void> {
    if (this.stdinKeepAlive !== undefined) {
      fs.closeSync(this.stdinKeepAlive);
      this.stdinKeepAlive = undefined;
    }
    if (this.stdinSocket === undefined) {
      await this.o.agent.closeStdin(this.o.containerId, this.o.execId);
      return;
    }
    await this.stdinDone;
  }

  private async pump(stream: 'stdout' | 'stderr', sink: Sink | undefined): Promise<void> {
    const { agent, containerId, execId, logger } = this.o;
    const read = stream === 'stdout' ? agent.readStdout.bind(agent) : agent.readStderr.bind(agent);
    try {
      for (;;) {
        const data = await read(containerId, execId, READ_CHUNK);
        if (data.length === 0) break;
        // Without a sink the output is still read, or the process would block on a full pipe in the guest.
        if (sink && !this.closed) await sink.write(data);
      }
    } catch (err) {
      if (!this.closed) logger.debug({ containerId, execId, stream, error: errorMessage(err) }, 'output copy ended');
    } finally {
      await sink?.end().catch(() => undefined);
    }
  }

  /** Releases every descriptor (after the process's exit was handled, or on a failed create). */
  close(): void {
    this.closed = true;
    if (!this.started) {
      for (const sink of this.sinks) void sink.end().catch(() => undefined);
      this.resolveOutput();
    }
    if (this.stdinKeepAlive !== undefined) fs.closeSync(this.stdinKeepAlive);
    this.stdinKeepAlive = undefined;
    this.stdinSocket?.destroy();
  }
}
