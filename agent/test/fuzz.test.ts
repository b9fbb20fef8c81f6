import assert from 'node:assert/strict';
import { fuzzServer } from 'ttrpc-ts';
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
