import assert from 'node:assert/strict';
import { FrameDecoder, HEADER_LENGTH, MAX_MESSAGE_LENGTH, encodeFrame, type DecodedFrame } from '../src/frame-codec';

function seededRandom(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

function frames(count: number, rnd: () => number): { id: number; payload: Buffer }[] {
  return Array.from({ length: count }, (_, i) => {
    const size = rnd() < 0.2 ? 0 : Math.floor(rnd() * 3000);
    return { id: 2 * i + 1, payload: Buffer.from(Array.from({ length: size }, () => Math.floor(rnd() * 256))) };
  });
}

describe('ttrpc frame codec', () => {
  it('encodes the 10-byte big-endian header', () => {
    const f = encodeFrame(0x01020304, 1, 0, Buffer.from('hi'));
    assert.deepEqual([...f], [0, 0, 0, 2, 1, 2, 3, 4, 1, 0, 0x68, 0x69]);
  });

  it('decodes any split of a stream of frames, including one byte at a time', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rnd = seededRandom(seed);
      const sent = frames(20, rnd);
      const stream = Buffer.concat(sent.map((f) => encodeFrame(f.id, 2, 0, f.payload)));
      const decoder = new FrameDecoder();
      const got: DecodedFrame[] = [];
      let pos = 0;
      while (pos < stream.length) {
        const n = seed === 1 ? 1 : 1 + Math.floor(rnd() * 700);
        got.push(...decoder.write(stream.subarray(pos, pos + n)));
        pos += n;
      }
      assert.equal(decoder.pendingBytes, 0);
      assert.equal(got.length, sent.length, `seed ${seed}`);
      got.forEach((f, i) => {
        assert.equal(f.kind, 'frame');
        assert.equal(f.streamId, sent[i]!.id);
        assert.equal(f.type, 2);
        if (f.kind === 'frame') assert.ok(f.payload.equals(sent[i]!.payload), `seed ${seed} frame ${i}`);
      });
    }
  });

  it('holds a truncated frame without emitting it', () => {
    const decoder = new FrameDecoder();
    const whole = encodeFrame(7, 1, 0, Buffer.alloc(100, 1));
    assert.deepEqual(decoder.write(whole.subarray(0, 5)), []);
    assert.equal(decoder.pendingBytes, 5);
    assert.deepEqual(decoder.write(whole.subarray(5, 60)), []);
    assert.equal(decoder.pendingBytes, 60);
    const out = decoder.write(whole.subarray(60));
    assert.equal(out.length, 1);
    assert.equal(decoder.pendingBytes, 0);
  });

  it('skips an oversized frame without buffering it, reports it, and decodes the next one', () => {
    const decoder = new FrameDecoder(1024);
    const header = Buffer.alloc(HEADER_LENGTH);
    header.writeUInt32BE(5000, 0);
    header.writeUInt32BE(9, 4);
    header[8] = 1;
    const out: DecodedFrame[] = [];
    out.push(...decoder.write(header));
    for (let i = 0; i < 5; i++) out.push(...decoder.write(Buffer.alloc(1000, 0xaa)));
    out.push(...decoder.write(encodeFrame(11, 1, 0, Buffer.from('next'))));
    assert.equal(out.length, 2);
    assert.deepEqual(out[0], { kind: 'oversized', length: 5000, streamId: 9, type: 1, flags: 0 });
    assert.equal(out[1]!.kind, 'frame');
    assert.equal(out[1]!.streamId, 11);
  });

  it('accepts exactly the 4 MiB limit and refuses one byte more', () => {
    const decoder = new FrameDecoder();
    const atLimit = decoder.write(encodeFrame(1, 1, 0, Buffer.alloc(MAX_MESSAGE_LENGTH)));
    assert.equal(atLimit[0]!.kind, 'frame');
    const over = decoder.write(encodeFrame(3, 1, 0, Buffer.alloc(MAX_MESSAGE_LENGTH + 1)));
    assert.equal(over[0]!.kind, 'oversized');
  });

  it('keeps flags and unknown types for the layer above to judge', () => {
    const [f] = new FrameDecoder().write(encodeFrame(5, 3, 0x05, Buffer.alloc(0)));
    assert.equal(f!.type, 3);
    assert.equal(f!.flags, 5);
  });
});
