import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { PipeReader, pipe, setPipeSize } from '../src';

describe('PipeReader: a pipe read all at once', () => {
  it("takes a bulk writer's output in reads of up to 1 MiB, to the last byte, then ends", async () => {
    const [r, w] = pipe();
    assert.equal(setPipeSize(r, 1 << 20), 1 << 20);
    // spawns: sh; busybox-like coreutils on the host
    const child = spawn('sh', ['-c', 'head -c 20000000 /dev/zero; echo; echo tail'], {
      stdio: ['ignore', w, 'inherit'],
    });
    fs.closeSync(w);
    const reader = new PipeReader(r);
    const chunks: Buffer[] = [];
    reader.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((resolve) => reader.once('end', resolve));
    await new Promise((resolve) => child.once('close', resolve));
    const all = Buffer.concat(chunks);
    assert.equal(all.length, 20_000_006);
    assert.equal(all.subarray(-6).toString(), '\ntail\n');
    assert.ok(chunks.length < 20_000_000 / (64 * 1024), `${chunks.length} chunks: fewer than node's 64 KiB reads`);
  });

  it('hands a line out in a buffer of its size, and follows backpressure (pause, resume)', async () => {
    const [r, w] = pipe();
    const reader = new PipeReader(r);
    const got: Buffer[] = [];
    reader.on('data', (c: Buffer) => got.push(c));
    fs.writeSync(w, 'a line\n');
    while (got.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(got[0]!.toString(), 'a line\n');
    assert.equal(got[0]!.buffer.byteLength < 64 * 1024, true, 'not a view into the 1 MiB read buffer');
    reader.pause();
    fs.writeSync(w, 'more\n');
    await new Promise((resolve) => setTimeout(resolve, 50));
    reader.resume();
    fs.closeSync(w);
    await new Promise((resolve) => reader.once('end', resolve));
    assert.equal(Buffer.concat(got).toString(), 'a line\nmore\n');
  });

  it('closes its fd when destroyed', () => {
    const [r, w] = pipe();
    const reader = new PipeReader(r);
    reader.destroy();
    assert.throws(() => fs.fstatSync(r), { code: 'EBADF' });
    fs.closeSync(w);
  });
});
