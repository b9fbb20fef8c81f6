import assert from 'node:assert/strict';
import { AgentService, grpc } from '../../protos/agent';
import { PortForwardService, diagnostics } from '../../protos/hull';
import { gathered, gatheredParts } from '../gathered';

describe('answers encoded from buffered chunks (gathered.ts)', () => {
  const chunks = (...sizes: number[]): Buffer[] => sizes.map((n, i) => Buffer.alloc(n, i + 1));

  it("equals protobufjs's encoding of ReadStreamResponse, for every length's varint", () => {
    for (const sizes of [[], [1], [127], [128], [100, 28], [16_383, 1], [65_536, 65_536, 3], [1 << 20]]) {
      const data = chunks(...sizes);
      const ours = Buffer.concat(gatheredParts({ data }));
      const theirs = Buffer.from(grpc.ReadStreamResponse.encode({ data: Buffer.concat(data) }).finish());
      assert.ok(ours.equals(theirs), `sizes ${sizes.join(',')}`);
    }
  });

  it("equals protobufjs's encoding of ReadConnectionResponse, with and without end of file", () => {
    const M = diagnostics.ReadConnectionResponse;
    for (const [data, eof] of [
      [chunks(3, 300), false],
      [[], true],
    ] as const) {
      const ours = Buffer.concat(gatheredParts({ data, eof }));
      const theirs = Buffer.from(M.encode({ data: Buffer.concat(data), eof }).finish());
      assert.ok(ours.equals(theirs));
    }
  });

  it('keeps the descriptors, and decodes back into one chunk', () => {
    const d = gathered(AgentService.ReadStdout);
    assert.equal(d.service, AgentService.ReadStdout.service);
    assert.equal(d.method, 'ReadStdout');
    const bytes = d.response.encode({ data: chunks(5, 6) });
    assert.deepEqual(d.response.decode(bytes).data, [Buffer.concat(chunks(5, 6))]);
    assert.ok(Buffer.from(d.response.encodeParts!({ data: chunks(5, 6) }).flatMap((p) => [...p])).equals(bytes));
    const p = gathered(PortForwardService.ReadConnection);
    assert.deepEqual(p.response.decode(p.response.encode({ data: [], eof: true })), { data: [], eof: true });
  });
});
