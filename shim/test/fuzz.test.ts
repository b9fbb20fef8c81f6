import assert from 'node:assert/strict';
import { Client, Code, createServiceClient, duplexPair, fuzzServer, type StatusError } from 'ttrpc-ts';
import { TaskService } from '../../protos/containerd';
import { shimTarget } from './fuzz-target';

describe('fuzzing the shim Task server (short seeded run; `make fuzz` runs 10^6 frames)', () => {
  it('3000 random and mutated frames over a real Task service on core fakes: each answered with a status the shim may give', async () => {
    const target = shimTarget({ renewEvery: 200 });
    try {
      const r = await fuzzServer(target, { iterations: 3_000, seed: 1 });
      assert.ok(r.inputs >= 3_000);
      assert.ok(r.codes[0]! > 0, 'some requests succeed');
    } finally {
      await target.cleanup();
    }
  });
});

describe('shim fuzzing findings', () => {
  it('Create with a 1 MiB bundle of NULs answers INVALID_ARGUMENT, not RESOURCE_EXHAUSTED for the error quoting it (found as seed 2 case 2118)', async () => {
    const target = shimTarget();
    const [clientEnd, serverEnd] = duplexPair();
    target.server.serveStream(serverEnd);
    const client = new Client(clientEnd);
    try {
      await assert.rejects(createServiceClient(client, TaskService).Create({ id: 'sb', bundle: '\0'.repeat(1 << 20) }), (err: StatusError) => err.code === Code.INVALID_ARGUMENT);
    } finally {
      client.close();
      await target.cleanup();
    }
  });
});
