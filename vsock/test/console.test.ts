/**
 * The console socket (src/console.ts): what an OCI runtime sends on --console-socket, received and checked. The
 * sender is the addon's test-only _sendFds (one byte and SCM_RIGHTS, as crun sends them); the ptys are the host's.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConsoleSocket, setWindowSize, VsockError, windowSize } from '../src';
import { native } from '../src/native';

/** The fds this process has open (fd numbers), except the one readdir itself uses. */
function openFds(): number[] {
  return fs
    .readdirSync('/proc/self/fd')
    .map(Number)
    .filter((fd) => {
      try {
        fs.fstatSync(fd);
        return true;
      } catch {
        return false;
      }
    })
    .sort((a, b) => a - b);
}

const ptmx = (): number => fs.openSync('/dev/ptmx', fs.constants.O_RDWR | fs.constants.O_NOCTTY);
/** A connected AF_UNIX pair: two descriptors that are not terminals. */
function socketPair(): [number, number] {
  const made = native()._socketpair();
  assert.ok(Array.isArray(made), `socketpair: ${String(made)}`);
  return made;
}

describe('ConsoleSocket (--console-socket)', function () {
  let dir: string;
  let n = 0;
  const sockPath = (): string => path.join(dir, `${++n}.sock`);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-console-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('receives one pty master: close-on-exec, non-blocking, its pty number; close() removes the path', () => {
    const p = sockPath();
    const socket = ConsoleSocket.listen(p);
    const master = ptmx();
    try {
      assert.equal(native()._sendFds(p, [master]), 0);
      const got = socket.receive();
      try {
        assert.notEqual(got.fd, master, 'a new descriptor');
        assert.ok(Number.isInteger(got.ptyNumber) && got.ptyNumber >= 0);
        // The same pty: a size set on one is read on the other.
        setWindowSize(got.fd, 37, 101);
        assert.deepEqual(windowSize(master), { rows: 37, cols: 101 });
        const flags = fs.readFileSync(`/proc/self/fdinfo/${got.fd}`, 'utf8');
        const octal = parseInt(/^flags:\s*(\d+)/m.exec(flags)![1]!, 8);
        assert.ok(octal & fs.constants.O_NONBLOCK, 'non-blocking');
        assert.ok(octal & 0o2000000, 'close-on-exec (O_CLOEXEC)');
        // Non-blocking: an empty pty reads EAGAIN at once.
        assert.throws(() => fs.readSync(got.fd, Buffer.alloc(16)), { code: 'EAGAIN' });
      } finally {
        fs.closeSync(got.fd);
      }
    } finally {
      fs.closeSync(master);
      socket.close();
    }
    assert.equal(fs.existsSync(p), false);
    socket.close(); // idempotent
  });

  const refused: [string, () => number[], string][] = [
    ['a socket (not a terminal)', () => [...socketPair()], 'ENOTTY'],
    ['a regular file', () => [fs.openSync('/proc/self/status', 'r')], 'ENOTTY'],
    ['two pty masters', () => [ptmx(), ptmx()], 'EPROTO'],
    ['no descriptor', () => [], 'EPROTO'],
  ];
  for (const [what, make, code] of refused) {
    it(`refuses ${what} (${code}) and leaves no received descriptor open`, () => {
      const p = sockPath();
      const socket = ConsoleSocket.listen(p);
      const sent = make();
      const before = openFds();
      try {
        // A socket pair: send one end (one descriptor), keep both to close.
        const toSend = what.startsWith('a socket') ? [sent[0]!] : sent;
        assert.equal(native()._sendFds(p, toSend), 0);
        assert.throws(
          () => socket.receive(),
          (e: unknown) => e instanceof VsockError && e.code === code,
        );
        assert.deepEqual(openFds(), before, 'what arrived was closed');
      } finally {
        for (const fd of sent) fs.closeSync(fd);
        socket.close();
      }
    });
  }

  it('says EAGAIN when nothing was sent, and nothing is left open', () => {
    const p = sockPath();
    const before = openFds();
    const socket = ConsoleSocket.listen(p);
    assert.throws(
      () => socket.receive(),
      (e: unknown) => e instanceof VsockError && e.code === 'EAGAIN',
    );
    socket.close();
    assert.deepEqual(openFds(), before);
  });

  it('refuses a path that is too long or in use', () => {
    assert.throws(
      () => ConsoleSocket.listen(path.join(dir, 'x'.repeat(120))),
      (e: unknown) => e instanceof VsockError && e.code === 'ENAMETOOLONG',
    );
    const p = sockPath();
    const socket = ConsoleSocket.listen(p);
    try {
      assert.throws(
        () => ConsoleSocket.listen(p),
        (e: unknown) => e instanceof VsockError && e.code === 'EADDRINUSE',
      );
    } finally {
      socket.close();
    }
  });

  it('setWindowSize checks its arguments and says ENOTTY for a non-terminal', () => {
    const [r, w] = socketPair();
    try {
      assert.throws(
        () => setWindowSize(r, 10, 10),
        (e: unknown) => e instanceof VsockError && e.code === 'ENOTTY',
      );
      assert.throws(() => setWindowSize(r, 65536, 10), RangeError);
      assert.throws(() => setWindowSize(-1, 10, 10), RangeError);
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  });
});
