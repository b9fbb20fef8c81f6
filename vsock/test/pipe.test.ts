import assert from 'node:assert/strict';
import fs from 'node:fs';
import { VsockError, pipe, setPipeSize } from '../src';

describe("pipe() and setPipeSize() (the agent's output pipes)", () => {
  it('makes a close-on-exec pipe whose size can be raised to 1 MiB and holds that much unread', () => {
    const [r, w] = pipe();
    try {
      assert.equal(fs.fstatSync(r).isFIFO(), true);
      assert.equal(setPipeSize(r, 1 << 20), 1 << 20);
      // 1 MiB fits without a reader (the default 64 KiB would make this write block forever)
      assert.equal(fs.writeSync(w, Buffer.alloc(1 << 20, 1)), 1 << 20);
      assert.equal(fs.readSync(r, Buffer.alloc(16)), 16);
      const flags = fs.readFileSync(`/proc/self/fdinfo/${w}`, 'utf8');
      assert.match(flags, /^flags:\s+0?2000001$/m, 'write end: O_WRONLY | O_CLOEXEC, blocking');
    } finally {
      fs.closeSync(r);
      fs.closeSync(w);
    }
  });

  it('throws a VsockError for a descriptor that is not a pipe', () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      assert.throws(
        () => setPipeSize(fd, 1 << 20),
        (e: unknown) => e instanceof VsockError && e.code === 'EBADF',
      );
    } finally {
      fs.closeSync(fd);
    }
  });
});
