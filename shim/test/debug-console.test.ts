/**
 * The shim's debug.sock over a pretend guest console: the socket is root's only (0600), a session runs and is
 * logged (who, command, end, status; never the bytes), input and resizes reach the guest in order, a client that
 * goes away ends the guest process, a refusal reaches the client, and at most MAX_SESSIONS run at once.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { DebugProcessSpec, GuestDebugConsole } from '../../agent-client';
import { FailedPreconditionError, UnavailableError } from '../../errors';
import type { Logger } from '../../log';
import { Frame, FrameDecoder, encodeFrame, encodeJson, type DebugFrame } from '../../protos/debug-socket';
import { DebugConsoleServer, MAX_SESSIONS } from '../debug-console';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A guest process that echoes its input on stdout and exits with the status the test sets. */
class FakeGuest implements GuestDebugConsole {
  readonly calls: string[] = [];
  readonly specs: DebugProcessSpec[] = [];
  private output: Buffer[] = [];
  private wakeRead: (() => void) | undefined;
  private exit: ((status: number) => void) | undefined;
  private readonly exited = new Promise<number>((resolve) => (this.exit = resolve));
  private eof = false;
  /** Reads fail (the VM went away): the shim must carry on. */
  failReads = false;

  start(spec: DebugProcessSpec): Promise<{ pid: number }> {
    this.specs.push(spec);
    this.calls.push(`start ${spec.args.join(' ')}`);
    return Promise.resolve({ pid: 42 });
  }
  async read(_id: string, stream: 1 | 2): Promise<Buffer> {
    if (this.failReads) throw new UnavailableError('agent ReadOutput: the agent connection is closed');
    if (stream === 2) return Buffer.alloc(0);
    while (this.output.length === 0 && !this.eof) await new Promise<void>((r) => (this.wakeRead = r));
    return this.output.shift() ?? Buffer.alloc(0);
  }
  write(_id: string, data: Buffer): Promise<void> {
    this.calls.push(`write ${data.toString()}`);
    this.output.push(Buffer.from(`echo:${data.toString()}`));
    this.wakeRead?.();
    return Promise.resolve();
  }
  closeInput(): Promise<void> {
    this.calls.push('closeInput');
    return Promise.resolve();
  }
  resize(_id: string, rows: number, columns: number): Promise<void> {
    this.calls.push(`resize ${rows}x${columns}`);
    return Promise.resolve();
  }
  signal(_id: string, signal: number): Promise<void> {
    this.calls.push(`signal ${signal}`);
    return Promise.resolve();
  }
  wait(): Promise<number> {
    return this.exited;
  }
  remove(): Promise<void> {
    this.calls.push('remove');
    return Promise.resolve();
  }
  finish(status: number): void {
    this.eof = true;
    this.wakeRead?.();
    this.exit!(status);
  }
}

function recordingLogger(): Logger & { lines: { obj: Record<string, unknown>; msg: string }[] } {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  const add = (obj: object, msg: string): void => void lines.push({ obj: obj as Record<string, unknown>, msg });
  return { lines, info: add, warn: add, debug: add, error: add };
}

/** A client: sends the hello, collects frames. */
function client(sock: string, args: string[], terminal = false) {
  const s = net.createConnection(sock);
  const frames: DebugFrame[] = [];
  const d = new FrameDecoder();
  s.on('data', (c: Buffer) => frames.push(...d.push(c)));
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
  s.on('connect', () =>
    s.write(
      encodeJson(Frame.Hello, {
        args,
        terminal,
        rows: 24,
        columns: 80,
        term: 'xterm',
        client: { pid: 99, uid: 0, user: 'ops', loginUid: 1000, tty: '/dev/pts/1' },
      }),
    ),
  );
  const until = async (type: number): Promise<DebugFrame> => {
    for (let i = 0; i < 200; i++) {
      const f = frames.find((x) => x.type === type);
      if (f) return f;
      await sleep(10);
    }
    throw new Error(`no frame 0x${type.toString(16)}: ${frames.map((f) => f.type).join(',')}`);
  };
  return { s, frames, closed, until };
}

describe('shim/debug-console (debug.sock)', () => {
  let tmp: string;
  let server: DebugConsoleServer | undefined;
  beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-dbg-'))));
  afterEach(() => {
    server?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('serves a session on a 0600 socket, in order, and logs it without its bytes', async () => {
    const guest = new FakeGuest();
    const log = recordingLogger();
    const sock = path.join(tmp, 'debug.sock');
    server = await DebugConsoleServer.listen(sock, () => guest, log);
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    const c = client(sock, [], true);
    const started = await c.until(Frame.Started);
    assert.equal(JSON.parse(started.payload.toString()).pid, 42);
    assert.deepEqual(guest.specs[0]!.args, ['/bin/sh'], 'the default shell');
    assert.deepEqual(guest.specs[0]!.env, ['TERM=xterm']);
    assert.equal(guest.specs[0]!.terminal, true);
    c.s.write(encodeFrame(Frame.Input, Buffer.from('secret-typing')));
    c.s.write(encodeJson(Frame.Resize, { rows: 30, columns: 100 }));
    c.s.write(encodeFrame(Frame.Signal, Buffer.from([2])));
    c.s.write(encodeFrame(Frame.InputEnd));
    const out = await c.until(Frame.Stdout);
    assert.equal(out.payload.toString(), 'echo:secret-typing');
    await sleep(50);
    guest.finish(7);
    const exit = await c.until(Frame.Exit);
    assert.equal(JSON.parse(exit.payload.toString()).status, 7);
    await c.closed;
    await sleep(20);
    assert.deepEqual(guest.calls, [
      'start /bin/sh',
      'write secret-typing',
      'resize 30x100',
      'signal 2',
      'closeInput',
      'remove',
    ]);
    const starts = log.lines.filter((l) => l.msg === 'debug console: session starts');
    const ends = log.lines.filter((l) => l.msg === 'debug console: session ends');
    assert.equal(starts.length, 1);
    assert.equal(ends.length, 1);
    assert.equal(ends[0]!.obj.exitStatus, 7);
    assert.deepEqual(ends[0]!.obj.command, ['/bin/sh']);
    assert.equal((ends[0]!.obj.client as { user: string }).user, 'ops');
    assert.ok(!JSON.stringify(log.lines).includes('secret-typing'), 'never the bytes');
  });

  it('a failing read is no unhandled rejection: the session still ends with the status', async () => {
    const guest = new FakeGuest();
    guest.failReads = true;
    const sock = path.join(tmp, 'debug.sock');
    server = await DebugConsoleServer.listen(sock, () => guest, recordingLogger());
    const c = client(sock, ['true']);
    await c.until(Frame.Started);
    await sleep(50); // the reads have failed by now
    guest.finish(0);
    assert.equal(JSON.parse((await c.until(Frame.Exit)).payload.toString()).status, 0);
  });

  it('a client that goes away ends the guest process', async () => {
    const guest = new FakeGuest();
    const log = recordingLogger();
    const sock = path.join(tmp, 'debug.sock');
    server = await DebugConsoleServer.listen(sock, () => guest, log);
    const c = client(sock, ['sleep', '60']);
    await c.until(Frame.Started);
    c.s.destroy();
    for (let i = 0; i < 100 && !guest.calls.includes('remove'); i++) await sleep(10);
    assert.ok(guest.calls.includes('remove'), guest.calls.join(','));
    const end = log.lines.find((l) => l.msg === 'debug console: session ends');
    assert.equal(end?.obj.error, 'the client went away');
  });

  it("the sandbox's refusal reaches the client; bad hellos and too many sessions are refused", async () => {
    const log = recordingLogger();
    const sock = path.join(tmp, 'debug.sock');
    let refuse = true;
    const guest = new FakeGuest();
    server = await DebugConsoleServer.listen(
      sock,
      () => {
        if (refuse) throw new FailedPreconditionError('sandbox sb was created without the debug console');
        return guest;
      },
      log,
    );
    const c = client(sock, ['true']);
    const failed = await c.until(Frame.Failed);
    assert.match(JSON.parse(failed.payload.toString()).message, /created without the debug console/);
    await c.closed;

    const bad = net.createConnection(sock);
    const d = new FrameDecoder();
    const got: DebugFrame[] = [];
    bad.on('data', (x: Buffer) => got.push(...d.push(x)));
    bad.write(encodeFrame(Frame.Input, Buffer.from('x')));
    await new Promise((r) => bad.on('close', r));
    assert.match(JSON.parse(got[0]!.payload.toString()).message, /first frame must be the hello/);

    refuse = false;
    const many = Array.from({ length: MAX_SESSIONS }, () => client(sock, ['sleep', '60']));
    for (const m of many) await m.until(Frame.Started);
    const extra = client(sock, ['true']);
    const tooMany = await extra.until(Frame.Failed);
    assert.match(JSON.parse(tooMany.payload.toString()).message, /at most 4/);
    for (const m of many) m.s.destroy();
  });
});
