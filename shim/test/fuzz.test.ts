import assert from 'node:assert/strict';
import {
  Client,
  Code,
  createServiceClient,
  duplexPair,
  fuzzServer,
  type ServiceClient,
  type StatusError,
} from 'ttrpc-ts';
import { TaskService } from '../../protos/containerd';
import { shimTarget, type ShimTarget } from './fuzz-target';

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

/** Runs `fn` with a Task client of a fresh shim target. */
async function withTask(
  fn: (task: ServiceClient<typeof TaskService>, target: ShimTarget) => Promise<void>,
): Promise<void> {
  const target = shimTarget();
  const [clientEnd, serverEnd] = duplexPair();
  target.server.serveStream(serverEnd);
  const client = new Client(clientEnd);
  try {
    await fn(createServiceClient(client, TaskService), target);
  } finally {
    client.close();
    await target.cleanup();
  }
}

const code = (c: Code) => (err: StatusError) => err.code === c;

describe('shim fuzzing findings', () => {
  it('Create with a 1 MiB bundle of NULs answers INVALID_ARGUMENT, not RESOURCE_EXHAUSTED for the error quoting it (found as seed 2 case 2118)', async () => {
    await withTask(async (task) => {
      await assert.rejects(task.Create({ id: 'sb', bundle: '\0'.repeat(1 << 20) }), code(Code.INVALID_ARGUMENT));
    });
  });

  it('Create with a stdio path that does not exist answers INVALID_ARGUMENT, not UNKNOWN (found as seed 1 case 25059)', async () => {
    // A sandbox whose first Create failed is shut down: one shim per case.
    for (const stdio of [
      { stdout: '/nonexistent/out' },
      { stderr: 'file:///nonexistent/dir/log' },
      { stdin: '/nonexistent/in' },
    ]) {
      await withTask(async (task, target) => {
        await assert.rejects(
          task.Create({ id: 'sb', bundle: target.bundle, ...stdio }),
          code(Code.INVALID_ARGUMENT),
          JSON.stringify(stdio),
        );
      });
    }
  });
});
