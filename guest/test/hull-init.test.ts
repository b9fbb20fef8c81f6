/**
 * hull-init: the generated header, and the real binary compiled and run on the host. Not being PID 1 there, it makes
 * itself a child subreaper, so orphans still come to it, and exits with the agent's code instead of powering off.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileHullCtty, compileHullInit, hullInitConfig } from '../hull-init';

const hasStaticLibc =
  spawnSync('gcc', ['-print-file-name=libc.a'], { encoding: 'utf8' }).stdout?.trim().startsWith('/') ?? false;

describe('hull-init', () => {
  it('compiles the agent command in as C string literals, refusing anything unusual', () => {
    assert.equal(
      hullInitConfig(['/usr/bin/node', '--max-old-space-size=128', '/opt/hull/agent/main.js']).split('\n')[1],
      '#define HULL_AGENT_ARGV "/usr/bin/node", "--max-old-space-size=128", "/opt/hull/agent/main.js"',
    );
    assert.throws(() => hullInitConfig(['/usr/bin/node', 'a"b']), /refusing/);
    assert.throws(() => hullInitConfig(['/usr/bin/node', 'a b']), /refusing/);
    assert.throws(() => hullInitConfig(['node']), /absolute/);
  });

  describe('the binary', function () {
    this.timeout(30_000);
    let dir: string;
    let init: string;

    before(async function () {
      if (!hasStaticLibc) this.skip();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-init-'));
      init = path.join(dir, 'hull-init');
      await compileHullInit(['/bin/true'], dir, init);
    });

    after(() => {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    // spawns: none; the hull-init this test compiled
    const runInit = (args: string[]): { status: number | null; stdout: string; stderr: string } =>
      spawnSync(init, args, { encoding: 'utf8', timeout: 20_000 });

    it('runs the built-in agent command and exits with its code when it is not PID 1', () => {
      const r = runInit([]);
      assert.equal(r.status, 0);
      assert.equal(r.stderr, '', 'silent on the normal path');
    });

    it('reports orphans on fd 3 as "<pid> <exit code>" lines, signals as 128+signo, but not the agent', () => {
      // The agent here is a shell that orphans two processes (they become the subreaper's), then reads fd 3.
      const script = [
        "(sh -c 'echo $$ > pid7; sleep 0.2; exit 7' &)",
        "(sh -c 'echo $$ > pid9; kill -9 $$' &)",
        'sleep 1',
        'timeout 2 head -n 2 <&3 | sort > records',
        'exit 5',
      ].join('\n');
      // spawns: none; the hull-init this test compiled
      const r = spawnSync(init, ['--exec', '/bin/sh', '-c', script], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 5, `the agent's code; stderr: ${r.stderr}`);
      assert.equal(r.stderr, '');
      const pid7 = fs.readFileSync(path.join(dir, 'pid7'), 'utf8').trim();
      const pid9 = fs.readFileSync(path.join(dir, 'pid9'), 'utf8').trim();
      const records = fs.readFileSync(path.join(dir, 'records'), 'utf8').split('\n').filter(Boolean).sort();
      assert.deepEqual(records, [`${pid7} 7`, `${pid9} 137`].sort());
    });

    it('passes a signal sent to it on to the agent', () => {
      // spawns: none; the hull-init this test compiled
      const r = spawnSync(
        init,
        [
          '--exec',
          '/bin/sh',
          '-c',
          'trap "exit 42" TERM; kill -TERM $PPID; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5; done; exit 1',
        ],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(r.status, 42, r.stderr);
    });

    it('powers off (here: exits 0) when asked with SIGUSR2, without waiting for the agent to exit', async () => {
      const t0 = Date.now();
      // spawns: none; the hull-init this test compiled
      const child = spawn(init, ['--exec', '/bin/sh', '-c', 'kill -USR2 $PPID; sleep 3; exit 4'], { stdio: 'ignore' });
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0);
      assert.ok(Date.now() - t0 < 2500, 'did not wait for the agent');
    });

    it('says why when the agent cannot be started', () => {
      const r = runInit(['--exec', path.join(dir, 'missing')]);
      assert.equal(r.status, 127);
      assert.match(r.stderr, /^hull-init: exec .*missing: No such file or directory$/m);
    });
  });

  describe('hull-ctty', function () {
    this.timeout(30_000);
    let dir: string;
    let ctty: string;
    // node-pty's native openpty, as the agent uses it (agent/terminal.ts).
    let pty: {
      open(cols: number, rows: number): { master: number; slave: number };
      resize(fd: number, cols: number, rows: number): void;
    };

    before(async function () {
      if (!hasStaticLibc) this.skip();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-ctty-'));
      ctty = path.join(dir, 'hull-ctty');
      await compileHullCtty(ctty);
      pty = ((await import('node-pty')) as unknown as { native: typeof pty }).native;
    });

    after(() => {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    /** hull-ctty run as the agent runs it: as /proc/self/fd/3, the pty's slave as stdio, fd 4 its status channel. */
    function runCtty(
      args: string[],
      input: string,
      onOutput: (text: string, master: number) => void,
    ): Promise<{ code: number | null; output: string; status: string }> {
      const { master, slave } = pty.open(80, 24);
      const self = fs.openSync(ctty, 'r');
      const child = spawn('/proc/self/fd/3', args, { stdio: [slave, slave, slave, self, 'pipe'] });
      fs.closeSync(self);
      fs.closeSync(slave);
      fs.writeSync(master, input);
      let status = '';
      child.stdio[4]!.on('data', (d: Buffer) => (status += d.toString()));
      const ended = Promise.all([once(child, 'exit'), once(child.stdio[4]!, 'close')]);
      return new Promise((resolve) => {
        let output = '';
        const buf = Buffer.alloc(65536);
        const poll = (): void => {
          for (;;) {
            try {
              const n = fs.readSync(master, buf, 0, buf.length, null);
              if (n === 0) break;
              output += buf.toString('utf8', 0, n);
              onOutput(output, master);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return void setTimeout(poll, 5);
              break; // EIO: no slave left
            }
          }
          fs.closeSync(master);
          void ended.then(() => resolve({ code: child.exitCode, output, status }));
        };
        poll();
      });
    }

    it('makes the pty the controlling terminal of the program it runs, in the foreground: SIGWINCH comes from the kernel', async () => {
      let resized = false;
      const script =
        'read -r line < /dev/tty; echo "got $line"; trap "echo winch; exit 7" WINCH; echo ready; while :; do sleep 0.05; done';
      const r = await runCtty(['sh', '-c', script], 'hello\n', (out, master) => {
        if (out.includes('ready') && !resized) {
          resized = true;
          pty.resize(master, 100, 30);
        }
      });
      assert.equal(r.code, 7, r.output);
      assert.match(r.output, /got hello/);
      assert.match(r.output, /winch/);
      assert.equal(r.status, '', 'end of file on the status channel: the program was executed');
    }).timeout(30_000);

    it('reports a program it cannot run on fd 4 and exits 127', async () => {
      const r = await runCtty(['no-such-program'], '', () => undefined);
      assert.equal(r.code, 127);
      assert.equal(r.status, 'exec no-such-program: No such file or directory');
      assert.match(r.output, /hull-ctty: exec no-such-program: No such file or directory/);
    });
  });
});
