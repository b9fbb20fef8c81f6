import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ContainerAgentClient } from '../../agent-client';
import { NOOP_LOGGER } from '../../log';
import { ProcessIo } from '../stdio';

/** An agent whose stdout is `chunks` then end of stream; counts reads in flight (the agent's order needs one). */
function fakeAgent(chunks: Buffer[]): ContainerAgentClient & { maxInFlight: number; reads: number } {
  let next = 0;
  let inFlight = 0;
  const agent = {
    maxInFlight: 0,
    reads: 0,
    readStdout: async (_c: string, _e: string, maxBytes = 1 << 20): Promise<Buffer> => {
      inFlight++;
      agent.maxInFlight = Math.max(agent.maxInFlight, inFlight);
      agent.reads++;
      await new Promise((r) => setImmediate(r));
      inFlight--;
      const chunk = chunks[next++] ?? Buffer.alloc(0);
      assert.ok(chunk.length <= maxBytes);
      return chunk;
    },
    readStderr: async (): Promise<Buffer> => Buffer.alloc(0),
  };
  return agent as unknown as ContainerAgentClient & { maxInFlight: number; reads: number };
}

describe('core/stdio output copy', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-stdio-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a large output arrives complete and in order, one read in flight at a time', async () => {
    const chunks = Array.from({ length: 40 }, (_, i) => crypto.randomBytes(i % 3 === 0 ? 1 << 20 : 4096 + i));
    const agent = fakeAgent(chunks);
    const out = path.join(dir, 'out');
    const io = await ProcessIo.open({
      agent,
      containerId: 'c',
      execId: '',
      stdio: { stdin: '', stdout: `file://${out}`, stderr: '', terminal: false },
      logger: NOOP_LOGGER,
    });
    io.start();
    await io.outputDone;
    io.close();
    assert.ok(fs.readFileSync(out).equals(Buffer.concat(chunks)));
    assert.equal(agent.maxInFlight, 1);
  });

  it('a FIFO nobody reads stops the reads (backpressure into the guest): no read while a chunk waits', async () => {
    const fifo = path.join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', ['-m', '0600', fifo]).status, 0);
    const chunks = Array.from({ length: 64 }, () => Buffer.alloc(1 << 20, 7));
    const agent = fakeAgent(chunks);
    const io = await ProcessIo.open({
      agent,
      containerId: 'c',
      execId: '',
      stdio: { stdin: '', stdout: fifo, stderr: '', terminal: false },
      logger: NOOP_LOGGER,
    });
    io.start();
    await new Promise((r) => setTimeout(r, 300));
    // The pipe takes 64 KiB of the first chunk; the pump waits on it and asks the agent for nothing more.
    assert.equal(agent.reads, 1, 'no read while the first chunk waits for the FIFO');
    // A reader drains the FIFO: everything arrives, in order.
    const reader = fs.createReadStream(fifo);
    let got = 0;
    let bad = false;
    reader.on('data', (c: Buffer | string) => {
      const b = Buffer.from(c);
      got += b.length;
      if (b.some((x) => x !== 7)) bad = true;
    });
    const ended = new Promise<void>((r) => reader.once('end', () => r()));
    await io.outputDone;
    io.close();
    await ended;
    assert.equal(got, 64 << 20);
    assert.equal(bad, false);
  });

  it("an exit's output still crossing a slow channel is drained, not taken for an idle agent", async () => {
    // The agent holds 3 MiB after the exit and answers at 5 MB/s (a loaded TCG guest's virtio-serial): a 1 MiB
    // answer is 200 ms in transit. Then a background child keeps the pipe open: the next read waits for ever.
    const held = crypto.randomBytes(3 << 20);
    let offset = 0;
    let reads = 0;
    const sizes: number[] = [];
    const agent = {
      readStdout: async (_c: string, _e: string, maxBytes = 1 << 20): Promise<Buffer> => {
        reads++;
        sizes.push(maxBytes);
        if (offset >= held.length) return new Promise<Buffer>(() => undefined);
        const chunk = held.subarray(offset, offset + maxBytes);
        offset += chunk.length;
        await new Promise((r) => setTimeout(r, (chunk.length / 5e6) * 1000));
        return chunk;
      },
      readStderr: async (): Promise<Buffer> => new Promise<Buffer>(() => undefined),
    } as unknown as ContainerAgentClient;
    const out = path.join(dir, 'out');
    const io = await ProcessIo.open({
      agent,
      containerId: 'c',
      execId: '',
      stdio: { stdin: '', stdout: `file://${out}`, stderr: '', terminal: false },
      logger: NOOP_LOGGER,
    });
    io.start();
    await new Promise((r) => setImmediate(r));
    await io.drained(5_000);
    const got = fs.readFileSync(out);
    io.close();
    assert.equal(got.length, held.length, 'every byte the agent held reached the FIFO before the exit');
    assert.ok(got.equals(held));
    assert.ok(reads > 3, 'small reads while draining');
    assert.equal(sizes[0], 1 << 20, 'the read before the drain is a full chunk');
  });
});
