import assert from 'node:assert/strict';
import { HEADER_LENGTH, MAX_MESSAGE_LENGTH } from '../src/frame-codec';
import { FuzzFailure, Prng, decoderCase, fuzzDecoder, referenceFrames } from '../src/fuzz';

describe('fuzzing (short seeded runs; `make fuzz` runs 10^6 inputs per target)', () => {
  it('the PRNG is a function of its seed', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const xs = Array.from({ length: 100 }, () => a.next());
    assert.deepEqual(xs, Array.from({ length: 100 }, () => b.next()));
    assert.notDeepEqual(xs, Array.from({ length: 100 }, () => new Prng(43).next()));
  });

  it('frame decoder: 5000 mutated streams in random pieces decode as the whole-buffer reference does, within the cap', () => {
    const r = fuzzDecoder({ iterations: 5_000, seed: 1 });
    assert.equal(r.cases, 5_000);
  });

  it('frame decoder at the real 4 MiB cap: 50 streams', () => {
    for (let i = 0; i < 50; i++) decoderCase(new Prng(1000 + i), MAX_MESSAGE_LENGTH);
  });

  it('the reference parse skips an oversized frame and holds an incomplete one', () => {
    const big = Buffer.alloc(HEADER_LENGTH + 20);
    big.writeUInt32BE(20, 0);
    const { frames, pending } = referenceFrames(Buffer.concat([big, Buffer.alloc(3)]), 10);
    assert.deepEqual(frames.map((f) => f.kind), ['oversized']);
    assert.equal(pending, 3);
  });

  it('a failure names the seed and case that replay it', () => {
    const f = new FuzzFailure('t', 7, 3, 'boom');
    assert.match(f.message, /seed 7 case 3/);
  });
});
