/**
 * Terminal processes on the host: a real pty from node-pty with a plain child process on its slave (crun and
 * hull-ctty are exercised in the guest image's tests and in integration/). Output drained to end of file before
 * WaitProcess answers, the size, ^D on CloseStdin, the exec status channel; and a master received on a console
 * socket as crun sends it (Terminal.fromConsole).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConsoleSocket } from 'hull-vsock';
import { native as vsockNative } from 'hull-vsock/dist/src/native';
import { Code, StatusError } from 'ttrpc-ts';
import { toOciProcess } from '../oci';
import { ContainerProcess } from '../process';
import { DEFAULT_SIZE, initialSize, Terminal } from '../terminal';

const code = (c: Code) => (e: unknown) => e instanceof StatusError && e.code === c;

/** A child on the terminal's slave, as crun's process would be; fd 3 is /dev/null, fd 4 the status channel. */
function runOn(terminal: Terminal, script: string): { child: ChildProcess; proc: ContainerProcess } {
  const devNull = fs.openSync('/dev/null', 'r');
  let child: ChildProcess;
  try {
    child = spawn('/bin/sh', ['-c', script], { stdio: terminal.stdio(devNull) });
    terminal.attach(child);
  } finally {
    fs.closeSync(devNull);
  }
  terminal.releaseSlave();
  const proc = new ContainerProcess('e1', terminal.input, terminal.output, null, terminal);
  const exit = new Promise<number>((resolve) =>
    child.on('exit', (c, sig) => resolve(c ?? 128 + (sig === 'SIGKILL' ? 9 : 1))),
  );
  proc.started(child.pid!, exit);
  return { child, proc };
}

async function output(proc: ContainerProcess): Promise<string> {
  const parts: Buffer[] = [];
  for (;;) {
    const chunk = await proc.stdout.read(1 << 16);
    if (!chunk.length) return Buffer.concat(parts).toString();
    parts.push(chunk);
  }
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !check();) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('terminal processes', function () {
  this.timeout(20_000);

  it('gives the process the size asked for, a new size on resize, and drains all output before the exit is reported', async () => {
    const terminal = await Terminal.open({ rows: 30, cols: 90 });
    // 3000 lines after the exit status is decided: all of them must come out before wait() answers.
    const { proc } = runOn(
      terminal,
      'stty size; read line; stty size; i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; exit 3',
    );
    let seen = '';
    const reading = (async () => {
      for (;;) {
        const chunk = await proc.stdout.read(1 << 16);
        if (!chunk.length) return;
        seen += chunk.toString();
      }
    })();
    await until('the first stty size', () => seen.includes('30 90'));
    proc.resize({ rows: 37, cols: 101 });
    assert.equal(await proc.write(Buffer.from('go\n')), 3);
    assert.equal(await proc.wait(), 3);
    await reading;
    assert.match(seen, /30 90\r\n/);
    assert.match(seen, /37 101\r\n/);
    assert.match(
      seen,
      /line2999\r\n$/,
      `the last line came out, with the terminal's CR LF: ${JSON.stringify(seen.slice(-200))} (${seen.length})`,
    );
    assert.equal((await proc.stderr.read(10)).length, 0, 'stderr is at end of file');
    proc.resize({ rows: 1, cols: 1 }); // the process is gone: nothing to do, no error
    await assert.rejects(proc.write(Buffer.from('late\n')), code(Code.FAILED_PRECONDITION));
    proc.close();
  });

  it('sends ^D on CloseStdin: twice after a partial line, so that the reader sees end of file', async () => {
    const terminal = await Terminal.open(DEFAULT_SIZE);
    const { proc } = runOn(terminal, 'cat; echo "cat ended $?"');
    await proc.write(Buffer.from('no newline'));
    proc.closeStdin();
    const [out, status] = await Promise.all([output(proc), proc.wait()]);
    assert.equal(status, 0);
    assert.match(out, /no newlineno newlinecat ended 0/, 'echoed, then written by cat, which got end of file');
    await assert.rejects(proc.write(Buffer.from('x')), code(Code.FAILED_PRECONDITION), 'stdin is closed');
    proc.close();
  });

  it('reports the exec status channel: end of file is success, a line is the reason for a failure', async () => {
    const ok = await Terminal.open(DEFAULT_SIZE);
    const a = runOn(ok, 'exec 4>&-; sleep 0.1; exit 0');
    await ok.execed(5000);
    await a.proc.wait();
    a.proc.close();

    const bad = await Terminal.open(DEFAULT_SIZE);
    const b = runOn(bad, 'echo "exec nosuch: No such file or directory" >&4; exit 127');
    await assert.rejects(
      bad.execed(5000),
      (e: unknown) => code(Code.INTERNAL)(e) && /exec nosuch: No such file/.test((e as Error).message),
    );
    assert.equal(await b.proc.wait(), 127);
    b.proc.close();
  });

  it('closes the master on close(): the process is not left blocked on the terminal', async () => {
    const terminal = await Terminal.open(DEFAULT_SIZE);
    const { child, proc } = runOn(terminal, 'cat');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    await until('cat to start', () => fs.existsSync(`/proc/${child.pid}`));
    proc.close();
    assert.equal(terminal.output.destroyed, true);
    assert.notEqual(await exited, null, 'cat read end of file or an error (hangup) and exited');
  });

  it('takes the console size as the first size, else 24x80', () => {
    const p = toOciProcess({ Terminal: true, ConsoleSize: { Height: 40, Width: 120 }, Args: ['sh', '-l'], Cwd: '/' });
    assert.equal(p.terminal, true);
    assert.deepEqual(p.consoleSize, { height: 40, width: 120 }, 'crun gets the console size as asked');
    assert.deepEqual(initialSize(p), { rows: 40, cols: 120 });
    assert.deepEqual(initialSize(toOciProcess({ Terminal: true, Args: ['sh'] })), DEFAULT_SIZE);
    assert.throws(
      () => toOciProcess({ Terminal: true, ConsoleSize: { Height: 70000, Width: 1 }, Args: ['sh'] }),
      code(Code.INVALID_ARGUMENT),
    );
  });

  it('uses a master received on a console socket (as crun sends it): its size, resize, output to end of file', async () => {
    // The pty crun would open in the container: here node-pty's, its master sent as crun sends it, then closed.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pty = (require('node-pty') as { native: { open(c: number, r: number): { master: number; slave: number } } })
      .native;
    const { master, slave } = pty.open(80, 24);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-console-'));
    const socket = ConsoleSocket.listen(path.join(dir, '1.sock'));
    let terminal: Terminal;
    try {
      assert.equal(vsockNative()._sendFds(socket.path, [master]), 0);
      terminal = Terminal.fromConsole(socket.receive(), { rows: 30, cols: 90 });
    } finally {
      fs.closeSync(master);
      socket.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.match(terminal.name, /^\/dev\/pts\/\d+ \(container\)$/);
    const child = spawn('/bin/sh', ['-c', 'stty size; read line; stty size; echo "got $line"; exit 6'], {
      stdio: [slave, slave, slave],
    });
    fs.closeSync(slave);
    const proc = new ContainerProcess('e1', terminal.input, terminal.output, null, terminal);
    proc.started(child.pid!, new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 128))));
    let seen = '';
    const reading = (async () => {
      for (;;) {
        const chunk = await proc.stdout.read(1 << 16);
        if (!chunk.length) return;
        seen += chunk.toString();
      }
    })();
    await until('the first stty size', () => seen.includes('30 90'));
    proc.resize({ rows: 37, cols: 101 });
    await proc.write(Buffer.from('go\n'));
    assert.equal(await proc.wait(), 6);
    await reading;
    assert.match(seen, /^30 90\r\ngo\r\n37 101\r\ngot go\r\n$/, JSON.stringify(seen));
    await terminal.execed(10); // no exec status channel: crun reported the start itself
    proc.close();
  });

  it('refuses a resize for a process without a terminal', () => {
    const p = new ContainerProcess('e1', null, null, null);
    assert.throws(() => p.resize({ rows: 1, cols: 1 }), code(Code.FAILED_PRECONDITION));
  });
});
