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
 *
 * Exits (containerd's runc shim is the reference: it publishes an exit as soon as the process is reaped, and on
 * Delete waits at most 2 s for its output copy before it closes the IO). The agent answers WaitProcess once the
 * process exited and its pipes reached end of file, or at most its own 2 s drain bound after the exit (a
 * background child may hold the pipes forever). Then drained() waits, at most EXIT_DRAIN_MS, until what the agent
 * holds has reached the FIFOs: until end of stream, or until each stream's read has waited IDLE_MS in the agent
 * (which answers a read at once when it has data; while draining, reads ask for DRAIN_CHUNK at most, so that an
 * answer still crossing a slow channel is not taken for a wait). Only then is the exit published, so containerd sees the output
 * the process wrote before it exited first. Output of a background child keeps flowing to the FIFOs after the exit
 * is published, until the process is deleted: close() then closes the FIFOs (containerd's reader gets end of
 * file, `ctr task exec` returns) and what still comes from the agent is read and dropped, so that the child does
 * not block on a full pipe in the guest.
 */
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { NotImplementedError, InvalidArgumentError, errorMessage } from '../errors';
import type { ContainerAgentClient } from '../agent-client';
import type { Logger } from '../log';
import type { StdioPaths } from './events';

/** Largest ReadStdout/ReadStderr asked for (the agent's limit): fewer round trips over the agent channel. */
const READ_CHUNK = 1 << 20;
/** Largest WriteStdin sent at once. */
const WRITE_CHUNK = 64 * 1024;
/**
 * Longest wait, after the agent reported an exit, for its output to reach the FIFOs: runc's bound on Delete
 * (2 s). It only runs out when the output keeps coming (a background child writing) or containerd reads slowly.
 */
export const EXIT_DRAIN_MS = 2_000;
/** A read that has waited this long in the agent found nothing buffered there (the agent answers at once with data). */
export const IDLE_MS = 100;
/**
 * Largest read while an exit's output drains: a read only counts as waiting in the agent (IDLE_MS) when its answer
 * crosses the channel in far less than IDLE_MS. A 1 MiB answer takes ~150 ms at the ~7 MB/s a TCG guest pushes
 * through virtio-serial, and would count as idle while still in transit; 64 KiB take ~10 ms.
 */
export const DRAIN_CHUNK = 64 * 1024;

/** end() flushes what was written and closes; destroy() closes at once, dropping what is not yet written. */
type Sink = { write(chunk: Buffer): Promise<void>; end(): Promise<void>; destroy(): void };

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
    } else if (scheme[1] === 'binary')
      throw new NotImplementedError(`${what}: binary:// logging drivers are not supported by hull`);
    else throw new InvalidArgumentError(`${what}: unsupported scheme in ${JSON.stringify(uri)}`);
  }
  if (!p.startsWith('/') || p.includes('\0'))
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(uri)} is not an absolute path`);
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
    destroy: () => sock.destroy(),
  };
}

/** Opens a path containerd named: a path that cannot be opened is the request's fault (INVALID_ARGUMENT). */
async function openNamed<T>(what: string, p: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code))
      throw new InvalidArgumentError(`${what}: cannot open ${JSON.stringify(p)}: ${code}`, { cause: err });
    throw err;
  }
}

async function openSink(what: string, target: { kind: 'fifo' | 'file'; path: string }): Promise<Sink> {
  if (target.kind === 'file') {
    const handle = await openNamed(what, target.path, () =>
      fs.promises.open(
        target.path,
        fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
        0o640,
      ),
    );
    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => (closing ??= handle.close());
    return {
      write: async (chunk) => {
        await handle.write(chunk);
      },
      end: close,
      destroy: () => void close().catch(() => undefined),
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
  /** Per output stream copied: whether it ended, and since when (performance.now()) its read waits in the agent. */
  private readonly pumps: { ended: boolean; readingSince: number | undefined; drainRead: boolean }[] = [];
  /** Set while drained() waits: reads are DRAIN_CHUNK at most, and only those count towards idleness. */
  private draining = false;

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
    void Promise.all([
      this.pump('stdout', this.outSink),
      this.o.stdio.terminal ? undefined : this.pump('stderr', this.errSink),
    ]).then(() => this.resolveOutput());
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
            for (let off = 0; off < chunk.length;)
              off += await agent.writeStdin(containerId, execId, chunk.subarray(off, off + WRITE_CHUNK));
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
            await agent
              .closeStdin(containerId, execId)
              .catch((err: unknown) => logger.debug({ containerId, execId, error: errorMessage(err) }, 'stdin: close'));
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

  /**
   * Resolves once the output the agent holds has reached the FIFOs, after the agent reported the exit: at end of
   * stream, or once every stream's read has waited IDLE_MS in the agent, or after `boundMs` (see the top).
   */
  drained(boundMs = EXIT_DRAIN_MS): Promise<void> {
    if (!this.started) return Promise.resolve();
    const deadline = performance.now() + boundMs;
    let timer: NodeJS.Timeout | undefined;
    this.draining = true;
    const idle = new Promise<void>((resolve) => {
      const check = (): void => {
        const now = performance.now();
        // A read issued before the drain may be a large answer still crossing the channel: only the drain's small
        // reads tell that the agent holds nothing.
        const quiet = this.pumps.every(
          (p) => p.ended || (p.readingSince !== undefined && p.drainRead && now - p.readingSince >= IDLE_MS),
        );
        if (quiet || now >= deadline) return resolve();
        timer = setTimeout(check, 20);
      };
      check();
    });
    return Promise.race([this.outputDone, idle]).finally(() => {
      clearTimeout(timer);
      this.draining = false;
    });
  }

  private async pump(stream: 'stdout' | 'stderr', sink: Sink | undefined): Promise<void> {
    const { agent, containerId, execId, logger } = this.o;
    const read = stream === 'stdout' ? agent.readStdout.bind(agent) : agent.readStderr.bind(agent);
    const state = { ended: false, readingSince: undefined as number | undefined, drainRead: false };
    this.pumps.push(state);
    let reads = 0;
    let bytes = 0;
    try {
      for (;;) {
        state.readingSince = performance.now();
        state.drainRead = this.draining;
        const data = await read(containerId, execId, this.draining ? DRAIN_CHUNK : READ_CHUNK);
        state.readingSince = undefined;
        if (data.length === 0) break;
        reads++;
        bytes += data.length;
        // Without a sink the output is still read, or the process would block on a full pipe in the guest.
        if (sink && !this.closed) await sink.write(data);
      }
    } catch (err) {
      if (!this.closed) logger.debug({ containerId, execId, stream, error: errorMessage(err) }, 'output copy ended');
    } finally {
      state.ended = true;
      if (bytes) logger.debug({ containerId, execId, stream, reads, bytes }, 'output copied');
      await sink?.end().catch(() => undefined);
    }
  }

  /**
   * Releases every descriptor (when the process is deleted, or on a failed create): the FIFOs are closed at once,
   * so containerd's reader gets end of file even while a background child of the process still writes; what the
   * agent still sends is read and dropped.
   */
  close(): void {
    this.closed = true;
    for (const sink of this.sinks) sink.destroy();
    if (!this.started) this.resolveOutput();
    if (this.stdinKeepAlive !== undefined) fs.closeSync(this.stdinKeepAlive);
    this.stdinKeepAlive = undefined;
    this.stdinSocket?.destroy();
  }
}
