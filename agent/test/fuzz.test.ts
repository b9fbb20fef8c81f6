import assert from 'node:assert/strict';
import {
  Code,
  FrameDecoder,
  FrameType,
  decodeResponse,
  duplexPair,
  encodeFrame,
  encodeRequest,
  fuzzServer,
} from 'ttrpc-ts';
import { AgentService } from '../../protos/agent';
import { agentTarget } from './fuzz-target';

describe('fuzzing the agent server (short seeded run; `make fuzz` runs 10^6 frames)', () => {
  it('3000 random and mutated frames over the real services with safe fakes: each answered with a status the agent may give', async () => {
    const target = agentTarget();
    try {
      const r = await fuzzServer(target, { iterations: 3_000, seed: 1 });
      assert.ok(r.inputs >= 3_000);
      assert.ok(r.codes[0]! > 0, 'some requests succeed');
    } finally {
      await target.cleanup();
    }
  });
});

describe('agent fuzzing findings', () => {
  it('GetOOMEvent at its deadline answers DEADLINE_EXCEEDED, not CANCELLED (found as seed 1 case 85)', async () => {
    const target = agentTarget();
    const [client, serverEnd] = duplexPair();
    target.server.serveStream(serverEnd);
    try {
      // A raw request with a 20 ms timeout (a Client would give up at its own deadline and never see the answer).
      const answer = new Promise<Buffer>((resolve) => {
        const decoder = new FrameDecoder();
        client.on('data', (chunk: Buffer) => {
          for (const f of decoder.write(chunk)) if (f.kind === 'frame') resolve(f.payload);
        });
      });
      const request = encodeRequest({
        service: AgentService.GetOOMEvent.service,
        method: 'GetOOMEvent',
        payload: Buffer.alloc(0),
        timeoutNano: 20e6,
        metadata: [],
      });
      client.write(encodeFrame(1, FrameType.Request, 0, request));
      assert.equal(decodeResponse(await answer).status?.code, Code.DEADLINE_EXCEEDED);
    } finally {
      client.destroy();
      await target.cleanup();
    }
  });
});
