import assert from 'node:assert/strict';
import { FrameDecoder, FrameType, HEADER_LENGTH, MAX_MESSAGE_LENGTH, encodeFrame } from '../src/frame-codec';
import {
  FuzzFailure,
  Prng,
  caseSeed,
  decoderCase,
  duplexPair,
  fuzzDecoder,
  fuzzServer,
  referenceFrames,
  serverCase,
} from '../src/fuzz';
import { Code } from '../src/status';
import { decodeResponse, encodeRequest } from '../src/wire';
import { echoTarget } from './fuzz-target';

describe('fuzzing (short seeded runs; `make fuzz` runs 10^6 inputs per target)', () => {
  it('the PRNG is a function of its seed', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const xs = Array.from({ length: 100 }, () => a.next());
    assert.deepEqual(
      xs,
      Array.from({ length: 100 }, () => b.next()),
    );
    assert.notDeepEqual(
      xs,
      Array.from({ length: 100 }, () => new Prng(43).next()),
    );
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
    assert.deepEqual(
      frames.map((f) => f.kind),
      ['oversized'],
    );
    assert.equal(pending, 3);
  });

  it('echo server: 5000 frames, each answered with a status its input allows', async () => {
    const target = echoTarget();
    try {
      const r = await fuzzServer(target, { iterations: 5_000, seed: 1 });
      assert.ok(r.inputs >= 5_000);
    } finally {
      await target.server.close();
    }
  });

  it('a failure names the seed and case that replay it', () => {
    const f = new FuzzFailure('t', 7, 3, 'boom');
    assert.match(f.message, /seed 7 case 3/);
  });
});

/** Sends raw request frames to the echo target's server and returns each answer's stream id and status code. */
async function ask(
  requests: { streamId: number; method: string; payload?: Buffer; timeoutNano?: number }[],
  settleMs = 50,
): Promise<{ streamId: number; code: number }[]> {
  const target = echoTarget();
  const [client, serverEnd] = duplexPair();
  target.server.serveStream(serverEnd);
  const answers: { streamId: number; code: number }[] = [];
  const decoder = new FrameDecoder();
  client.on('data', (chunk: Buffer) => {
    for (const f of decoder.write(chunk))
      if (f.kind === 'frame')
        answers.push({ streamId: f.streamId, code: decodeResponse(f.payload).status?.code ?? Code.OK });
  });
  for (const r of requests) {
    client.write(
      encodeFrame(
        r.streamId,
        FrameType.Request,
        0,
        encodeRequest({
          service: 'fuzz.Echo',
          method: r.method,
          payload: r.payload ?? Buffer.from('x'),
          timeoutNano: r.timeoutNano ?? 0,
          metadata: [],
        }),
      ),
    );
  }
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  client.destroy();
  await target.server.close();
  return answers;
}

describe('fuzzing findings (each replays the input that found it)', () => {
  it('a deadline further than 2^31 ms away does not fire at once (seed 1 case 0: timeout_nano 2^62)', async () => {
    assert.deepEqual(await ask([{ streamId: 1, method: 'Wait', timeoutNano: 2 ** 62 }]), [
      { streamId: 1, code: Code.OK },
    ]);
    await serverCase(new Prng(caseSeed(1, 0)), echoTarget());
  });

  it("a stream id not above the last request's is refused with INVALID_ARGUMENT, as ttrpc's Go server does (seed 1 case 2)", async () => {
    const answers = await ask([
      { streamId: 1, method: 'Echo' },
      { streamId: 1, method: 'Echo' }, // reused once answered
      { streamId: 7, method: 'Echo' },
      { streamId: 5, method: 'Echo' }, // below the last
    ]);
    assert.deepEqual(answers, [
      { streamId: 1, code: Code.OK },
      { streamId: 1, code: Code.INVALID_ARGUMENT },
      { streamId: 7, code: Code.OK },
      { streamId: 5, code: Code.INVALID_ARGUMENT },
    ]);
    await serverCase(new Prng(caseSeed(1, 2)), echoTarget());
  });

  it('an error whose message quotes a huge input keeps its code, its message cut (shim seed 2 case 2118: RESOURCE_EXHAUSTED instead)', async () => {
    const answers = await ask([{ streamId: 1, method: 'Fail', payload: Buffer.alloc(1 << 20) }]); // JSON-quoted: 6 MiB
    assert.deepEqual(answers, [{ streamId: 1, code: Code.NOT_FOUND }]);
  });
});
