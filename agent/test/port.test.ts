import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PORT_WRITE_SLICE, portSlices, writeToPort } from '../port';

describe('agent port writes (virtio-serial takes 32 KiB per write)', () => {
  it('cuts buffers into slices of at most 32 KiB, in order, from any offset', () => {
    const a = crypto.randomBytes(100_000);
    const b = crypto.randomBytes(5);
    const c = crypto.randomBytes(70_000);
    for (const skip of [0, 1, 32_768, 99_999, 100_000, 100_004, 170_004]) {
      const slices = portSlices([a, b, c], skip);
      assert.ok(slices.every((s) => s.length > 0 && s.length <= PORT_WRITE_SLICE));
      assert.ok(Buffer.concat(slices).equals(Buffer.concat([a, b, c]).subarray(skip)));
    }
    assert.equal(portSlices([Buffer.alloc(64 << 20)]).length, 512, 'bounded per writev (IOV_MAX)');
  });

  it('writes every byte, in order, across several writev calls', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-port-'));
    try {
      const file = path.join(dir, 'out');
      const fd = fs.openSync(file, 'w');
      const bufs = [crypto.randomBytes(20 << 20), crypto.randomBytes(3), new Uint8Array(crypto.randomBytes(1 << 20))];
      await new Promise<void>((resolve, reject) => writeToPort(fd, bufs, (err) => (err ? reject(err) : resolve())));
      fs.closeSync(fd);
      assert.ok(fs.readFileSync(file).equals(Buffer.concat(bufs)));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
