/**
 * Interop with a real Go ttrpc peer: our client calls containerd.task.v2.Task on Debian's containerd-shim-runc-v2,
 * started through its own `start` subcommand in a temporary bundle with private state paths.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Client, Code, ConnectionClosedError, StatusError, createServiceClient } from 'ttrpc-ts';
import { TaskService } from '../protos/containerd';
import { NAMESPACE_METADATA, isRunning, processCwd, startRuncShim, waitGone, type RuncShim } from './lib/runc-shim';

describe('ttrpc interop with containerd-shim-runc-v2 (Go ttrpc 1.1)', function () {
  this.timeout(30_000);
  let shim: RuncShim | undefined;
  let client: Client | undefined;

  afterEach(async () => {
    client?.close();
    client = undefined;
    await shim?.stop();
    shim = undefined;
  });

  it('Connect returns its pid, State of an unknown id is NOT_FOUND, Shutdown stops it', async () => {
    shim = await startRuncShim();
    const socketPath = shim.address.slice('unix://'.length);
    assert.ok(fs.existsSync(socketPath), 'start printed the address of a listening socket');
    assert.equal(processCwd(shim.pid), shim.bundle);

    client = await Client.connect(shim.address, { metadata: NAMESPACE_METADATA });
    const task = createServiceClient(client, TaskService);

    const connected = await task.Connect({ id: shim.id }, { timeoutMs: 5000 });
    assert.equal(connected.shimPid, shim.pid);

    await assert.rejects(
      task.State({ id: 'no-such-container' }, { timeoutMs: 2000 }),
      (e: StatusError) => e instanceof StatusError && e.code === Code.NOT_FOUND && /not found/.test(e.message),
    );

    // Many calls in flight at once on one connection, answered by Go's concurrent handlers.
    const connects = Array.from({ length: 32 }, () => task.Connect({ id: shim!.id }));
    const states = Array.from({ length: 32 }, (_, i) => task.State({ id: `missing-${i}` }));
    for (const r of await Promise.all(connects)) assert.equal(r.shimPid, shim.pid);
    for (const r of await Promise.allSettled(states)) {
      assert.ok(r.status === 'rejected' && (r.reason as StatusError).code === Code.NOT_FOUND);
    }

    // A method the Go server does not have.
    await assert.rejects(
      client.callRaw('containerd.task.v2.Task', 'NoSuchMethod', Buffer.alloc(0)),
      (e: StatusError) => e.code === Code.UNIMPLEMENTED,
    );

    // Shutdown with no containers makes the shim exit; the reply may be lost with the connection (containerd
    // ignores "ttrpc: closed" here too).
    try {
      await task.Shutdown({ id: shim.id }, { timeoutMs: 3000 });
    } catch (err) {
      if (!(err instanceof ConnectionClosedError)) throw err;
    }
    assert.ok(await waitGone(shim.pid, 5000), 'the shim exited after Shutdown');
    assert.equal(isRunning(shim.pid), false);
    for (let i = 0; i < 50 && fs.existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fs.existsSync(socketPath), false, 'the shim removed its socket');
  });

  it('reports the closing of the connection to pending callers', async () => {
    shim = await startRuncShim();
    client = await Client.connect(shim.address, { metadata: NAMESPACE_METADATA });
    const task = createServiceClient(client, TaskService);
    // Kill the shim with calls in flight: each one either completed first or fails with ConnectionClosedError.
    const calls = Array.from({ length: 20 }, () =>
      task.Connect({ id: shim!.id }).then(
        () => 'ok',
        (e: unknown) => e,
      ),
    );
    process.kill(shim.pid, 'SIGKILL');
    const outcomes = await Promise.all(calls);
    for (const o of outcomes) assert.ok(o === 'ok' || o instanceof ConnectionClosedError, String(o));
    await assert.rejects(task.Connect({ id: shim.id }), ConnectionClosedError);
  });
});
