/**
 * The Duplex over the addon's non-blocking socket calls and poll handle. This host has no vsock transport that
 * connects two local sockets (the real AF_VSOCK exchange runs inside a guest: integration/vsock-guest.test.ts),
 * so these tests run the same code over a connected AF_UNIX pair, which the addon's calls treat alike.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { VsockError, VsockSocket } from '../src';
import { native } from '../src/native';

/** A connected pair; `fds` (optional) receives their fd numbers. */
function pair(options: { allowHalfOpen?: boolean } = {}, fds: number[] = []): [VsockSocket, VsockSocket] {
  const n = native();
  const made = n._socketpair();
  assert.ok(Array.isArray(made), `socketpair failed: ${String(made)}`);
  fds.push(...made);
  return [new VsockSocket(new n.Handle(made[0]), options), new VsockSocket(new n.Handle(made[1]), options)];
}

/** Reads a stream to its end; its bytes' sha256 and count. */
async function drain(s: VsockSocket): Promise<{ sha256: string; bytes: number }> {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  for await (const chunk of s) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** Reads until 'end' without destroying the stream (a for-await loop would destroy it when done). */
function readToEnd(s: VsockSocket): Promise<string> {
  let text = '';
  s.on('data', (c: Buffer) => (text += String(c)));
  return once(s, 'end').then(() => text);
}

const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
/** What an fd of this process refers to ("socket:[inode]"), or undefined once it is closed. */
function fdTarget(fd: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

describe('hull-vsock: VsockSocket as a Duplex (over a socket pair)', () => {
  it('carries 8 MiB each way at once, intact, and each side sees EOF after the other ends', async () => {
    const [a, b] = pair({ allowHalfOpen: true });
    const fromA = crypto.randomBytes(8 << 20);
    const fromB = crypto.randomBytes(8 << 20);
    const received = Promise.all([drain(b), drain(a)]);
    a.end(fromA);
    b.end(fromB);
    const [gotByB, gotByA] = await received;
    assert.deepEqual(gotByB, { sha256: sha(fromA), bytes: fromA.length });
    assert.deepEqual(gotByA, { sha256: sha(fromB), bytes: fromB.length });
    await new Promise((r) => setImmediate(r));
    assert.ok(a.destroyed && b.destroyed, 'both ends closed themselves once both directions ended');
  });

  it('half-close: the reader sees EOF, then still answers on its open write side', async () => {
    const [a, b] = pair({ allowHalfOpen: true });
    a.end('question');
    const asked = await readToEnd(b);
    assert.equal(b.writable, true, 'the write side stays open after EOF');
    b.end(`answer to ${asked}`);
    assert.equal(await readToEnd(a), 'answer to question');
  });

  it('backpressure: write() says stop while the peer does not read, and drains once it does; nothing is lost', async () => {
    const [a, b] = pair();
    b.pause();
    const block = crypto.randomBytes(256 << 10);
    let writes = 0;
    while (a.write(block)) writes++;
    assert.ok(writes < 64, `write() kept accepting (${writes} blocks) with nobody reading`);
    const queued = writes + 1;
    // Nobody reads: no drain for a while.
    const early = await Promise.race([
      once(a, 'drain').then(() => 'drained'),
      new Promise((r) => setTimeout(() => r('waiting'), 200)),
    ]);
    assert.equal(early, 'waiting');
    const received = drain(b);
    await once(a, 'drain');
    a.end();
    assert.equal((await received).bytes, queued * block.length);
  });

  it('the reader stops reading from the kernel while its consumer is paused', async () => {
    const [a, b] = pair();
    const got: Buffer[] = [];
    b.on('data', (c: Buffer) => got.push(c));
    b.pause();
    a.write(crypto.randomBytes(4 << 20));
    await new Promise((r) => setTimeout(r, 200));
    // Only about a highWaterMark's worth (plus one read) has left the kernel's buffer.
    assert.ok(b.readableLength <= 16 * 1024 + 64 * 1024, `buffered ${b.readableLength} bytes while paused`);
    assert.equal(got.length, 0);
    a.destroy();
    b.destroy();
  });

  it('a peer that goes away: the writer gets a VsockError (EPIPE or ECONNRESET), the reader EOF', async () => {
    const [a, b] = pair();
    b.destroy();
    const err = await new Promise<Error>((resolve) => {
      a.on('error', resolve);
      const big = Buffer.alloc(1 << 20);
      const pump = (): void => {
        while (a.write(big));
        a.once('drain', pump);
      };
      pump();
    });
    assert.ok(err instanceof VsockError, String(err));
    assert.ok(['EPIPE', 'ECONNRESET'].includes(err.code), err.code);
    assert.equal(err.syscall, 'write');

    const [c, d] = pair();
    c.destroy();
    const ended = once(d, 'end');
    d.resume();
    await ended;
  });

  it('destroy() with a write waiting for buffer space fails that write and closes the fd at once', async () => {
    const fds: number[] = [];
    const [a, b] = pair({}, fds);
    // Checked by what each fd refers to, not by counting the process's fds: other tests' handles close on their own time.
    const sockets = fds.map((fd) => ({ fd, target: fdTarget(fd) }));
    assert.ok(
      sockets.every((x) => x.target?.startsWith('socket:')),
      JSON.stringify(sockets),
    );
    b.pause();
    const results: Array<Error | null | undefined> = [];
    const block = Buffer.alloc(1 << 20);
    for (let i = 0; i < 4; i++) a.write(block, (e) => results.push(e));
    await new Promise((r) => setTimeout(r, 50));
    a.on('error', () => undefined);
    a.destroy();
    b.destroy();
    await Promise.all([once(a, 'close'), once(b, 'close')]);
    await new Promise((r) => setImmediate(r));
    assert.ok(
      results.some((e) => e instanceof Error),
      'the waiting write was failed',
    );
    for (const x of sockets) assert.notEqual(fdTarget(x.fd), x.target, `fd ${x.fd} (${x.target}) is closed`);
  });

  it('a socket waiting for data does not keep node alive once unref()ed, and keeps it alive otherwise', async function () {
    this.timeout(20_000);
    const script = (unref: boolean): string => `
      const { VsockSocket } = require(${JSON.stringify(path.join(__dirname, '..', 'src'))});
      const { native } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'native'))});
      const n = native(); const [x, y] = n._socketpair();
      const a = new VsockSocket(new n.Handle(x)); const b = new VsockSocket(new n.Handle(y));
      a.on('data', () => {}); ${unref ? 'a.unref();' : ''} b.unref();
      setTimeout(() => { process.stdout.write('timer'); }, 10);`;
    const run = (code: string): Promise<{ exited: boolean; stdout: string }> =>
      new Promise((resolve) => {
        const child = execFile(process.execPath, ['-e', code], { timeout: 1500 }, (err, stdout) =>
          resolve({ exited: !err, stdout }),
        );
        void child;
      });
    assert.deepEqual(await run(script(true)), { exited: true, stdout: 'timer' });
    assert.equal(
      (await run(script(false))).exited,
      false,
      'a reading socket that is ref()ed keeps node running (killed by the timeout)',
    );
  });
});
