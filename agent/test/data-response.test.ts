import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { grpc } from '../../protos/agent';
import { diagnostics } from '../../protos/hull';
import { encodeDataChunks } from '../data-response';

describe('agent data answers encoded from the buffered chunks', () => {
  it('decode as ReadStreamResponse and ReadConnectionResponse to the chunks joined, at every length size', () => {
    for (const sizes of [[], [0], [1], [127], [128], [5, 200, 16_000], [65_536, 65_536, 3], [1 << 20], [1 << 21, 1]]) {
      const chunks = sizes.map((n) => crypto.randomBytes(n));
      const joined = Buffer.concat(chunks);
      const stream = grpc.ReadStreamResponse.decode(encodeDataChunks({ chunks }));
      assert.ok(Buffer.from(stream.data).equals(joined), `ReadStreamResponse of ${sizes.join(',')}`);
      for (const eof of [false, true]) {
        const conn = diagnostics.ReadConnectionResponse.decode(encodeDataChunks({ chunks, eof }));
        assert.ok(Buffer.from(conn.data).equals(joined));
        assert.equal(Boolean(conn.eof), eof);
      }
    }
  });

  it('is byte for byte what protobufjs encodes for data', () => {
    const chunks = [crypto.randomBytes(300), crypto.randomBytes(70_000)];
    assert.deepEqual(
      Buffer.from(encodeDataChunks({ chunks })),
      Buffer.from(grpc.ReadStreamResponse.encode({ data: Buffer.concat(chunks) }).finish()),
    );
  });
});
