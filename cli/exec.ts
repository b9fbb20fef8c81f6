/**
 * `hull exec <sandbox-id> [--namespace NS] [-t|-T] [--] [command...]`: a shell (the guest's /bin/sh) or a command
 * in the guest itself, outside every container, through the sandbox's shim (its debug.sock: protos/debug-socket.ts,
 * shim/debug-console.ts) and the agent channel. Off unless `[agent] debug_console_enabled` was on when the
 * sandbox was created.
 *
 * With a terminal (the default when stdin and stdout are terminals; -t forces one, -T none) the local terminal is
 * put in raw mode, so every key, ^C included, goes to the guest's pty, whose line discipline turns ^C into SIGINT
 * for the guest's foreground process group; a window change (SIGWINCH) resizes the guest's pty. Without one,
 * SIGINT, SIGTERM and SIGHUP received here are passed on to the guest process. The exit status is the guest
 * process's; 125 when hull exec itself fails (no such sandbox, the console disabled, the shim gone), as docker does.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  DEBUG_SOCKET,
  Frame,
  FrameDecoder,
  MAX_FRAME,
  encodeFrame,
  encodeJson,
  type DebugClient,
  type DebugHello,
} from '../protos/debug-socket';
import { isIdentifier } from '../protos/identifiers';
import { listSandboxes, type ListOptions, type SandboxEntry } from './list';

/** hull exec's own failures (before or around the guest process). */
export const EXEC_FAILED = 125;

export interface ExecArgs {
  sandbox: string;
  namespace?: string;
  /** true: -t, false: -T, undefined: when stdin and stdout are terminals. */
  tty?: boolean;
  command: string[];
}

/** `exec`'s arguments (after the word `exec`); a reason string when they are wrong. */
export function parseExecArgs(argv: readonly string[]): ExecArgs | string {
  let sandbox: string | undefined;
  let namespace: string | undefined;
  let tty: boolean | undefined;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (a === '--namespace' || a === '-n') {
      const v = argv[++i];
      if (v === undefined) return `${a} needs a value`;
      namespace = v;
    } else if (a.startsWith('--namespace=')) namespace = a.slice('--namespace='.length);
    else if (a === '-t' || a === '--tty') tty = true;
    else if (a === '-T' || a === '--no-tty') tty = false;
    else if (a.startsWith('-') && sandbox === undefined) return `unknown option ${JSON.stringify(a)}`;
    else if (sandbox === undefined) sandbox = a;
    else break; // the command starts here; its own options are its own
  }
  if (sandbox === undefined) return 'exec needs a sandbox id (hull list shows them)';
  if (!isIdentifier(sandbox)) return `${JSON.stringify(sandbox.slice(0, 80))} is not a sandbox id`;
  if (namespace !== undefined && !isIdentifier(namespace))
    return `${JSON.stringify(namespace.slice(0, 80))} is not a namespace`;
  const command = argv.slice(i);
  if (command.length > 0 && command[0] === '') return 'the command is empty';
  return { sandbox, ...(namespace !== undefined ? { namespace } : {}), ...(tty !== undefined ? { tty } : {}), command };
}

/** The sandbox named, or why not: none, several namespaces, no console. */
export function findSandbox(
  stateDir: string,
  args: ExecArgs,
  configName: string,
  o: ListOptions = {},
): SandboxEntry | string {
  const all = listSandboxes(stateDir, o).sandboxes.filter(
    (s) => s.id === args.sandbox && (args.namespace === undefined || s.namespace === args.namespace),
  );
  if (all.length === 0)
    return `no sandbox ${args.sandbox}${args.namespace ? ` in namespace ${args.namespace}` : ''} in ${stateDir} (hull list shows them)`;
  if (all.length > 1)
    return `sandbox ${args.sandbox} is in namespaces ${all.map((s) => s.namespace).join(', ')}: name one with --namespace`;
  const s = all[0]!;
  if (!s.shim.alive) return `the shim of sandbox ${s.namespace}/${s.id} (pid ${s.shim.pid}) is not running`;
  if (!s.debugConsole)
    return (
      `the debug console is disabled for sandbox ${s.namespace}/${s.id}: it was created without ` +
      `[agent] debug_console_enabled = true (${configName}); set it and create the sandbox again`
    );
  return s;
}

/** What the client says of itself in the shim's log. */
export function describeClient(env: NodeJS.ProcessEnv): DebugClient {
  let loginUid = -1;
  try {
    const v = Number(fs.readFileSync('/proc/self/loginuid', 'utf8').trim());
    if (Number.isInteger(v) && v >= 0 && v < 0xffffffff) loginUid = v;
  } catch {
    // no audit login uid
  }
  let tty = '';
  try {
    if (process.stdin.isTTY) tty = fs.readlinkSync('/proc/self/fd/0');
  } catch {
    // not known
  }
  return {
    pid: process.pid,
    uid: process.getuid?.() ?? -1,
    user: (env.SUDO_USER || env.USER || '').slice(0, 64),
    loginUid,
    tty: tty.slice(0, 64),
  };
}

export interface ExecIo {
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** Signals to watch and pass on without a terminal (tests leave it empty). */
  signals?: NodeJS.Signals[];
}

/** Runs the session on the sandbox's socket; resolves to hull exec's exit status. */
export function runSession(socketPath: string, hello: DebugHello, io: ExecIo): Promise<number> {
  return new Promise((resolve) => {
    const socket = net.createConnection(socketPath);
    const decoder = new FrameDecoder();
    const raw = hello.terminal && io.stdin.isTTY === true;
    let done = false;
    let started = false;
    const cleanups: (() => void)[] = [];
    const finish = (code: number, message?: string): void => {
      if (done) return;
      done = true;
      for (const c of cleanups.splice(0)) c();
      if (message) io.stderr.write(`${raw ? '\r\n' : ''}hull exec: ${message}\n`);
      socket.destroy();
      resolve(code);
    };
    const send = (frame: Buffer): void => {
      if (!socket.destroyed) socket.write(frame);
    };
    const startIo = (): void => {
      if (raw) {
        io.stdin.setRawMode(true);
        cleanups.push(() => io.stdin.setRawMode(false));
      }
      const onData = (chunk: Buffer): void => {
        for (let off = 0; off < chunk.length; off += MAX_FRAME)
          send(encodeFrame(Frame.Input, chunk.subarray(off, off + MAX_FRAME)));
      };
      const onEnd = (): void => send(encodeFrame(Frame.InputEnd));
      io.stdin.on('data', onData);
      io.stdin.on('end', onEnd);
      io.stdin.resume();
      cleanups.push(() => {
        io.stdin.off('data', onData);
        io.stdin.off('end', onEnd);
        io.stdin.pause();
      });
      if (hello.terminal && io.stdout.isTTY) {
        const onResize = (): void =>
          send(encodeJson(Frame.Resize, { rows: io.stdout.rows, columns: io.stdout.columns }));
        io.stdout.on('resize', onResize);
        cleanups.push(() => io.stdout.off('resize', onResize));
      }
    };
    if (!hello.terminal)
      for (const sig of io.signals ?? []) {
        const number = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1, SIGQUIT: 3 }[sig as string] ?? 0;
        const handler = (): void => {
          if (started) send(encodeFrame(Frame.Signal, Buffer.from([number])));
          else finish(EXEC_FAILED, `interrupted (${sig})`);
        };
        process.on(sig, handler);
        cleanups.push(() => process.off(sig, handler));
      }
    socket.on('connect', () => send(encodeJson(Frame.Hello, hello)));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      finish(
        EXEC_FAILED,
        err.code === 'EACCES'
          ? `${socketPath}: permission denied (the debug console is root's only)`
          : `${socketPath}: ${err.message}`,
      ),
    );
    socket.on('close', () =>
      finish(EXEC_FAILED, started ? 'the shim closed the session' : 'the shim closed the connection'),
    );
    socket.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        return finish(EXEC_FAILED, `protocol error: ${(err as Error).message}`);
      }
      for (const f of frames) {
        switch (f.type) {
          case Frame.Started:
            started = true;
            startIo();
            break;
          case Frame.Stdout:
            io.stdout.write(f.payload);
            break;
          case Frame.Stderr:
            io.stderr.write(f.payload);
            break;
          case Frame.Exit: {
            const status = (JSON.parse(f.payload.toString('utf8')) as { status?: unknown }).status;
            const code =
              Number.isInteger(status) && (status as number) >= 0 && (status as number) <= 255
                ? (status as number)
                : EXEC_FAILED;
            // What was written reaches the terminal before the status is returned.
            io.stdout.write('', () => finish(code));
            return;
          }
          case Frame.Failed: {
            let message = 'failed';
            try {
              const m = (JSON.parse(f.payload.toString('utf8')) as { message?: unknown }).message;
              if (typeof m === 'string') message = m.slice(0, 4096);
            } catch {
              // keep the default
            }
            return finish(EXEC_FAILED, message);
          }
          default:
            return finish(EXEC_FAILED, `protocol error: unexpected frame 0x${f.type.toString(16)}`);
        }
      }
    });
  });
}

/** The hello for this invocation. */
export function helloFor(args: ExecArgs, io: Pick<ExecIo, 'stdin' | 'stdout'>, env: NodeJS.ProcessEnv): DebugHello {
  const terminal = args.tty ?? (io.stdin.isTTY === true && io.stdout.isTTY === true);
  const term = env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(env.TERM) ? env.TERM : 'xterm';
  return {
    args: args.command,
    terminal,
    rows: terminal && io.stdout.isTTY ? io.stdout.rows : 0,
    columns: terminal && io.stdout.isTTY ? io.stdout.columns : 0,
    term,
    client: describeClient(env),
  };
}

export const socketOf = (s: SandboxEntry): string => path.join(s.dir, DEBUG_SOCKET);
