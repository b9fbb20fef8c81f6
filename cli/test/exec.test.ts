/**
 * `hull exec`'s argument handling, how it finds the sandbox (or says why not), and a session against a pretend shim
 * speaking protos/debug-socket.ts on a unix socket.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type { SandboxRecord } from '../../core/store';
import { processStartTime } from '../../hypervisor/process';
import { Frame, FrameDecoder, encodeFrame, encodeJson, parseHello, type DebugHello } from '../../protos/debug-socket';
import { EXEC_FAILED, findSandbox, helloFor, parseExecArgs, runSession, type ExecIo } from '../exec';
import { parseArgs } from '../main';

describe('cli/exec (hull exec)', () => {
  describe('arguments', () => {
    it('takes the sandbox, --namespace, -t/-T, and the command with its own options', () => {
      assert.deepEqual(parseExecArgs(['sb1']), { sandbox: 'sb1', command: [] });
      assert.deepEqual(parseExecArgs(['sb1', 'ls', '-l', '--namespace', 'x']), {
        sandbox: 'sb1',
        command: ['ls', '-l', '--namespace', 'x'],
      });
      assert.deepEqual(parseExecArgs(['--namespace', 'k8s.io', '-t', 'sb1', 'sh']), {
        sandbox: 'sb1',
        namespace: 'k8s.io',
        tty: true,
        command: ['sh'],
      });
      assert.deepEqual(parseExecArgs(['sb1', '-T', '--namespace=default', '--', '-weird', 'x']), {
        sandbox: 'sb1',
        namespace: 'default',
        tty: false,
        command: ['-weird', 'x'],
      });
    });

    it('refuses what is not a sandbox id or namespace, and unknown options', () => {
      assert.match(parseExecArgs([]) as string, /needs a sandbox id/);
      assert.match(parseExecArgs(['../etc']) as string, /not a sandbox id/);
      assert.match(parseExecArgs(['sb', '--namespace', 'a/b']) as string, /not a namespace/);
      assert.match(parseExecArgs(['--namespace']) as string, /needs a value/);
      assert.match(parseExecArgs(['--bogus', 'sb']) as string, /unknown option/);
      assert.match(parseExecArgs(['sb', '--', '']) as string, /empty/);
    });

    it('main: list takes --json and --config; exec takes --config before the sandbox', () => {
      assert.deepEqual(parseArgs(['list', '--json']), { command: 'list', json: true });
      assert.deepEqual(parseArgs(['exec', '--config', '/c.toml', 'sb', 'cat', '--json']), {
        command: 'exec',
        json: false,
        config: '/c.toml',
        exec: { sandbox: 'sb', command: ['cat', '--json'] },
      });
      assert.match(parseArgs(['exec']) as string, /needs a sandbox id/);
      assert.match(parseArgs(['list', 'x']) as string, /unknown argument/);
    });
  });

  describe('finding the sandbox', () => {
    let tmp: string;
    const start = processStartTime(process.pid)!;
    beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-exec-'))));
    afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

    function write(ns: string, id: string, extra: Partial<SandboxRecord> = {}): string {
      const dir = path.join(tmp, ns, id);
      fs.mkdirSync(dir, { recursive: true });
      const r: SandboxRecord = {
        version: 1,
        namespace: ns,
        sandboxId: id,
        shimPid: process.pid,
        shimStartTime: start,
        vmStateDir: path.join(dir, 'vm'),
        shareRoot: dir,
        shareId: 'share',
        containers: {},
        ...extra,
      };
      fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(r));
      return dir;
    }

    it('says why not: no such sandbox, several namespaces, a dead shim, the console disabled', async () => {
      const args = (sandbox: string, namespace?: string) => ({
        sandbox,
        command: [],
        ...(namespace ? { namespace } : {}),
      });
      assert.match(findSandbox(tmp, args('none'), 'x.toml') as string, /no sandbox none in/);
      write('a', 'twice');
      write('b', 'twice');
      assert.match(findSandbox(tmp, args('twice'), 'x.toml') as string, /namespaces a, b: name one with --namespace/);
      assert.match(
        findSandbox(tmp, args('twice', 'a'), '/etc/hull/x.toml') as string,
        /debug console is disabled.*\/etc\/hull\/x.toml/,
      );
      write('a', 'dead', { shimPid: 0x3ffffff0 });
      assert.match(findSandbox(tmp, args('dead'), 'x.toml') as string, /shim .* is not running/);
      const dir = write('a', 'on', { debugConsole: true });
      await new Promise<void>((resolve) => net.createServer().listen(path.join(dir, 'debug.sock'), resolve).unref());
      const found = findSandbox(tmp, args('on'), 'x.toml');
      assert.ok(typeof found !== 'string', typeof found === 'string' ? found : '');
      assert.equal(found.dir, dir);
    });
  });

  describe('a session against a pretend shim', () => {
    let tmp: string;
    let server: net.Server;
    let hellos: DebugHello[];
    let received: { type: number; payload: Buffer }[];
    beforeEach(() => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-exec-s-'));
      hellos = [];
      received = [];
    });
    afterEach(() => {
      server?.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    /** A shim that answers the hello with `script(socket)`. */
    async function shim(script: (s: net.Socket) => void): Promise<string> {
      const sock = path.join(tmp, 'debug.sock');
      server = net.createServer((s) => {
        const d = new FrameDecoder();
        s.on('data', (c: Buffer) => {
          for (const f of d.push(c)) {
            if (f.type === Frame.Hello) {
              hellos.push(parseHello(f.payload) as DebugHello);
              script(s);
            } else received.push(f);
          }
        });
      });
      await new Promise<void>((resolve) => server.listen(sock, resolve));
      return sock;
    }

    function io(input = ''): ExecIo & { out: () => string; err: () => string } {
      const stdin = new PassThrough() as unknown as NodeJS.ReadStream;
      const stdout = new PassThrough() as unknown as NodeJS.WriteStream;
      const stderr = new PassThrough() as unknown as NodeJS.WriteStream;
      let out = '';
      let err = '';
      (stdout as unknown as PassThrough).on('data', (c: Buffer) => (out += c.toString()));
      (stderr as unknown as PassThrough).on('data', (c: Buffer) => (err += c.toString()));
      setImmediate(() => (stdin as unknown as PassThrough).end(input));
      return { stdin, stdout, stderr, out: () => out, err: () => err };
    }

    const hello = (args: string[]): DebugHello =>
      helloFor(
        { sandbox: 'sb', command: args, tty: false },
        { stdin: process.stdin, stdout: process.stdout },
        {
          TERM: 'xterm',
          SUDO_USER: 'ops',
        },
      );

    it('relays output, input and its end, and returns the exit status', async () => {
      const sock = await shim((s) => {
        s.write(encodeJson(Frame.Started, { pid: 7, execId: 'e' }));
        s.write(encodeFrame(Frame.Stdout, Buffer.from('out\n')));
        s.write(encodeFrame(Frame.Stderr, Buffer.from('err\n')));
        setTimeout(() => s.end(encodeJson(Frame.Exit, { status: 3 })), 100);
      });
      const streams = io('typed');
      const code = await runSession(sock, hello(['cat']), streams);
      assert.equal(code, 3);
      assert.equal(streams.out(), 'out\n');
      assert.equal(streams.err(), 'err\n');
      assert.deepEqual(hellos[0]!.args, ['cat']);
      assert.equal(hellos[0]!.terminal, false);
      assert.equal(hellos[0]!.client.user, 'ops');
      assert.equal(hellos[0]!.client.pid, process.pid);
      assert.deepEqual(
        received.map((f) => [f.type, f.payload.toString()]),
        [
          [Frame.Input, 'typed'],
          [Frame.InputEnd, ''],
        ],
      );
    });

    it("the shim's refusal is hull exec's message and 125; a shim that goes away too", async () => {
      let sock = await shim((s) => s.end(encodeJson(Frame.Failed, { message: 'the debug console is disabled' })));
      let streams = io();
      assert.equal(await runSession(sock, hello([]), streams), EXEC_FAILED);
      assert.match(streams.err(), /^hull exec: the debug console is disabled\n$/);
      server.close();
      sock = await shim((s) => s.destroy());
      streams = io();
      assert.equal(await runSession(sock, hello([]), streams), EXEC_FAILED);
      assert.match(streams.err(), /the shim closed the connection/);
      streams = io();
      assert.equal(await runSession(path.join(tmp, 'absent.sock'), hello([]), streams), EXEC_FAILED);
      assert.match(streams.err(), /absent\.sock/);
    });
  });
});
