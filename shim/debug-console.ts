/**
 * The debug console's socket (`hull exec`): served by the daemon on `<state_dir>/<namespace>/<sandbox>/debug.sock`
 * (mode 0600: root only) when `[agent] debug_console_enabled` is on, from the moment the sandbox exists; absent
 * otherwise. Each connection is one session (protos/debug-socket.ts): a process in the guest itself, outside every
 * container, started and driven through the agent channel (hull.agent.v1.DebugConsole; virtio-serial or vsock).
 *
 * Every session is logged: who (as the client reports itself: only root can connect), the command, whether it had
 * a terminal, its start and its end with the exit status or why it ended; never the bytes. A client that goes away
 * ends its session: the guest process is removed (SIGKILL if it still runs). At most MAX_SESSIONS at once.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { GuestDebugConsole } from '../agent-client';
import type { Sandbox } from '../core';
import { errorMessage } from '../errors';
import type { Logger } from '../log';
import {
  DEBUG_SOCKET,
  Frame,
  FrameDecoder,
  encodeFrame,
  encodeJson,
  parseHello,
  parseResize,
  type DebugHello,
} from '../protos/debug-socket';

export const MAX_SESSIONS = 4;
/** How long a client may take to send its hello. */
const HELLO_TIMEOUT_MS = 10_000;
/** After the exit status, how long output still being read may take to reach the client. */
const OUTPUT_DRAIN_MS = 2_000;
/** The guest's shell when no command is given (busybox's). */
export const DEFAULT_SHELL = '/bin/sh';

export class DebugConsoleServer {
  private readonly sessions = new Set<net.Socket>();
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    readonly path: string,
    private readonly console: () => GuestDebugConsole,
    private readonly logger: Logger,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  static async listen(
    socketPath: string,
    console: () => GuestDebugConsole,
    logger: Logger,
  ): Promise<DebugConsoleServer> {
    fs.rmSync(socketPath, { force: true }); // a previous daemon's, dead (this shim owns the folder)
    const server = net.createServer();
    // Created 0600 from the start: no moment at which another user could connect. listen() binds synchronously
    // (the 'listening' event comes later), so the umask is the process's for no longer than this call.
    const listening = new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', () => resolve());
    });
    const mask = process.umask(0o177);
    try {
      server.listen(socketPath);
    } finally {
      process.umask(mask);
    }
    await listening;
    fs.chmodSync(socketPath, 0o600);
    server.unref(); // the daemon's life is the Task server's
    return new DebugConsoleServer(server, socketPath, console, logger);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    for (const s of this.sessions) s.destroy();
    fs.rmSync(this.path, { force: true });
  }

  private accept(socket: net.Socket): void {
    const fail = (message: string): void => {
      socket.end(encodeJson(Frame.Failed, { message }));
    };
    if (this.closed) return void socket.destroy();
    if (this.sessions.size >= MAX_SESSIONS) return fail(`at most ${MAX_SESSIONS} debug console sessions at once`);
    this.sessions.add(socket);
    socket.on('close', () => this.sessions.delete(socket));
    socket.on('error', () => undefined);
    const decoder = new FrameDecoder();
    let session: Session | undefined;
    const timer = setTimeout(() => fail('no hello in time'), HELLO_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        clearTimeout(timer);
        session?.abandon(`protocol error: ${errorMessage(err)}`);
        return fail(`protocol error: ${errorMessage(err)}`);
      }
      for (const f of frames) {
        if (!session) {
          clearTimeout(timer);
          if (f.type !== Frame.Hello) return fail('the first frame must be the hello');
          const hello = parseHello(f.payload);
          if (typeof hello === 'string') return fail(`bad hello: ${hello}`);
          session = new Session(socket, hello, this.logger);
          session
            .run(this.console)
            .catch((err: unknown) => this.logger.error({ error: errorMessage(err) }, 'debug console: session'));
        } else session.frame(f.type, f.payload);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      session?.abandon('the client went away');
    });
  }
}

/** One `hull exec`: a guest process and its connection. */
class Session {
  readonly execId = `debug-${crypto.randomBytes(6).toString('hex')}`;
  private console: GuestDebugConsole | undefined;
  private started = false;
  private ended = false;
  private readonly begun = Date.now();
  /** Input, resizes and signals go to the guest in the order they came. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly args: string[];

  constructor(
    private readonly socket: net.Socket,
    private readonly hello: DebugHello,
    private readonly logger: Logger,
  ) {
    this.args = hello.args.length ? hello.args : [DEFAULT_SHELL];
  }

  private get what(): Record<string, unknown> {
    return { session: this.execId, client: this.hello.client, command: this.args, terminal: this.hello.terminal };
  }

  async run(getConsole: () => GuestDebugConsole): Promise<void> {
    this.logger.info(this.what, 'debug console: session starts');
    let pid: number;
    try {
      this.console = getConsole();
      ({ pid } = await this.console.start({
        execId: this.execId,
        args: this.args,
        env: this.hello.terminal ? [`TERM=${this.hello.term || 'xterm'}`] : [],
        terminal: this.hello.terminal,
        rows: this.hello.rows,
        columns: this.hello.columns,
      }));
    } catch (err) {
      return this.end({ error: errorMessage(err) });
    }
    this.started = true;
    if (this.ended) return void this.remove(); // the client left while it started
    this.send(encodeJson(Frame.Started, { pid, execId: this.execId }));
    // Handled at once: a read that fails (the VM gone, the process removed) must never be an unhandled rejection.
    const pumps = [this.pump(1, Frame.Stdout), ...(this.hello.terminal ? [] : [this.pump(2, Frame.Stderr)])].map((p) =>
      p.catch((err: unknown) =>
        this.logger.debug({ session: this.execId, error: errorMessage(err) }, 'debug console: output'),
      ),
    );
    let status: number;
    try {
      status = await this.console.wait(this.execId);
      // The agent answers once the output ended, or its drain bound after the exit (a child holds the pipes).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(pumps),
        new Promise((resolve) => (timer = setTimeout(resolve, OUTPUT_DRAIN_MS))),
      ]);
      clearTimeout(timer);
    } catch (err) {
      return this.end({ error: errorMessage(err) });
    }
    this.end({ status });
  }

  /** A frame from the client after the hello. */
  frame(type: number, payload: Buffer): void {
    const c = this.console;
    if (!c || !this.started || this.ended) return; // before the start: nothing to give it to yet
    const then = (fn: () => Promise<unknown>): void => {
      this.queue = this.queue.then(fn).catch((err: unknown) => {
        this.logger.debug({ session: this.execId, error: errorMessage(err) }, 'debug console: input');
      });
    };
    switch (type) {
      case Frame.Input:
        return then(() => c.write(this.execId, payload));
      case Frame.InputEnd:
        return then(() => c.closeInput(this.execId));
      case Frame.Resize: {
        const size = parseResize(payload);
        if (size && this.hello.terminal) then(() => c.resize(this.execId, size.rows, size.columns));
        return;
      }
      case Frame.Signal:
        if (payload.length === 1 && payload[0]! >= 1 && payload[0]! <= 64)
          then(() => c.signal(this.execId, payload[0]!));
        return;
      default:
        return;
    }
  }

  /** The connection closed (or broke) before the process ended. */
  abandon(why: string): void {
    if (this.ended) return;
    this.end({ error: why });
  }

  private async pump(stream: 1 | 2, type: number): Promise<void> {
    for (;;) {
      const data = await this.console!.read(this.execId, stream);
      if (data.length === 0 || this.ended) return;
      if (!this.socket.write(encodeFrame(type, data)) && !this.socket.destroyed)
        await new Promise<void>((resolve) => {
          this.socket.once('drain', resolve);
          this.socket.once('close', resolve);
        });
    }
  }

  private send(frame: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(frame);
  }

  private end(outcome: { status: number } | { error: string }): void {
    if (this.ended) return;
    this.ended = true;
    const ms = Date.now() - this.begun;
    if ('status' in outcome) {
      this.logger.info({ ...this.what, exitStatus: outcome.status, ms }, 'debug console: session ends');
      if (!this.socket.destroyed) this.socket.end(encodeJson(Frame.Exit, { status: outcome.status }));
    } else {
      this.logger.warn({ ...this.what, error: outcome.error, ms }, 'debug console: session ends');
      if (!this.socket.destroyed) this.socket.end(encodeJson(Frame.Failed, { message: outcome.error }));
    }
    if (this.started) void this.remove();
  }

  private async remove(): Promise<void> {
    try {
      await this.console?.remove(this.execId);
    } catch (err) {
      this.logger.warn({ session: this.execId, error: errorMessage(err) }, 'debug console: remove');
    }
  }
}

/** The daemon's debug console: served once the sandbox exists, when its configuration enables it. */
export interface DaemonDebugConsole {
  serve(sandbox: Sandbox, enabled: boolean): void;
  close(): void;
}

export function startDebugConsole(logger: Logger): DaemonDebugConsole {
  let server: DebugConsoleServer | undefined;
  let closed = false;
  let serving = false;
  return {
    serve(sandbox, enabled) {
      if (!enabled || serving || closed) return;
      serving = true;
      const socket = path.join(path.dirname(sandbox.recordFile), DEBUG_SOCKET);
      DebugConsoleServer.listen(socket, () => sandbox.debugConsole(), logger).then(
        (s) => {
          if (closed) return s.close();
          server = s;
          logger.info({ socket }, 'debug console served');
        },
        (err: unknown) => logger.warn({ error: errorMessage(err), socket }, 'debug console not served'),
      );
    },
    close() {
      closed = true;
      server?.close();
      server = undefined;
    },
  };
}
