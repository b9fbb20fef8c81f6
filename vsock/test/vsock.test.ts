/**
 * Real AF_VSOCK sockets on this host: creation, bind/listen/accept, close and abort, argument and connect errors,
 * and that neither a waiting accept() nor a forgotten handle outlives its use. What needs a transport that
 * connects (data over vsock) runs inside a real guest over vsock_loopback: integration/vsock-guest.test.ts.
 *
 * Connects here only ever target this machine's own CID (or, without /dev/vsock, a CID no transport serves), so
 * no packet leaves the machine: where this host is itself a guest, any other CID would reach its hypervisor.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import {
  VMADDR_CID_ANY,
  VMADDR_CID_HOST,
  VMADDR_PORT_ANY,
  VsockError,
  VsockServer,
  connect,
  isAvailable,
  localCid,
  parseVsockUri,
  vsockUri,
} from '../src';
import { native } from '../src/native';

const SRC = path.join(__dirname, '..', 'src');

/** Runs a script in a fresh node; whether it ended by itself within `ms`, and its stdout. */
function runNode(
  code: string,
  ms: number,
  args: string[] = [],
): Promise<{ exited: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...args, '-e', code], { timeout: ms }, (err, stdout, stderr) =>
      resolve({ exited: !err, stdout, stderr }),
    );
  });
}

/** A CID that no transport serves from here: our own (where /dev/vsock tells it), else the host's with no transport. */
function unreachableCid(): number {
  try {
    return localCid();
  } catch {
    return VMADDR_CID_HOST;
  }
}

describe('hull-vsock: AF_VSOCK on the host', () => {
  it('loads the addon', () => {
    assert.equal(isAvailable(), true);
  });

  it('vsock:// addresses', () => {
    assert.deepEqual(parseVsockUri('vsock://3:1024'), { cid: 3, port: 1024 });
    assert.deepEqual(parseVsockUri('vsock://4294967295:0'), { cid: 0xffffffff, port: 0 });
    assert.equal(vsockUri(3, 1024), 'vsock://3:1024');
    for (const bad of [
      'vsock://3',
      'vsock://-1:2',
      'vsock://3:4294967296',
      'unix:///x',
      'vsock://3:1024/x',
      'vsock://0x3:1',
    ]) {
      assert.throws(
        () => parseVsockUri(bad),
        (e: unknown) => e instanceof VsockError && e.code === 'EINVAL',
        bad,
      );
    }
  });

  it('listens on a port the kernel chooses, and refuses the same port twice (EADDRINUSE)', () => {
    const server = VsockServer.listen({ port: VMADDR_PORT_ANY });
    try {
      assert.equal(server.address.cid, VMADDR_CID_ANY);
      assert.ok(server.address.port !== VMADDR_PORT_ANY && server.address.port >= 1024, String(server.address.port));
      assert.throws(
        () => VsockServer.listen({ port: server.address.port }),
        (e: unknown) =>
          e instanceof VsockError &&
          e.code === 'EADDRINUSE' &&
          e.syscall === 'bind' &&
          e.message.includes(`vsock://${VMADDR_CID_ANY}:${server.address.port}`),
      );
    } finally {
      server.close();
    }
  });

  it('close() rejects a waiting accept() with ERR_SERVER_CLOSED at once; accept() after close too', async () => {
    const server = VsockServer.listen({ port: VMADDR_PORT_ANY });
    const waiting = server.accept();
    setTimeout(() => server.close(), 20);
    await assert.rejects(waiting, (e: unknown) => e instanceof VsockError && e.code === 'ERR_SERVER_CLOSED');
    assert.equal(server.closed, true);
    await assert.rejects(server.accept(), (e: unknown) => e instanceof VsockError && e.code === 'ERR_SERVER_CLOSED');
    server.close(); // idempotent
  });

  it('an aborted accept() rejects with ABORT_ERR (the reason as cause) and the server stays usable', async () => {
    const server = VsockServer.listen({ port: VMADDR_PORT_ANY });
    try {
      const ac = new AbortController();
      const waiting = server.accept({ signal: ac.signal });
      ac.abort(new Error('enough'));
      await assert.rejects(
        waiting,
        (e: unknown) => e instanceof VsockError && e.code === 'ABORT_ERR' && (e.cause as Error).message === 'enough',
      );
      await assert.rejects(
        server.accept({ signal: AbortSignal.abort() }),
        (e: unknown) => e instanceof VsockError && e.code === 'ABORT_ERR',
      );
      const again = server.accept();
      server.close();
      await assert.rejects(again, (e: unknown) => e instanceof VsockError && e.code === 'ERR_SERVER_CLOSED');
    } finally {
      server.close();
    }
  });

  it('refuses bad ports and CIDs before any system call', async () => {
    for (const port of [VMADDR_PORT_ANY, -1, 1.5, 2 ** 32, Number.NaN]) {
      await assert.rejects(
        connect({ cid: 3, port }),
        (e: unknown) => e instanceof RangeError && (e as NodeJS.ErrnoException).code === 'ERR_OUT_OF_RANGE',
        String(port),
      );
    }
    for (const cid of [-1, 2 ** 32, 0.5]) {
      await assert.rejects(connect({ cid, port: 1024 }), RangeError, String(cid));
      assert.throws(() => VsockServer.listen({ cid, port: 1024 }), RangeError);
    }
    assert.throws(() => VsockServer.listen({ port: 1024, backlog: -1 }), RangeError);
  });

  it('a connect no transport can carry fails at once with a clear error', async () => {
    const cid = unreachableCid();
    const t0 = Date.now();
    const err = await connect({ cid, port: 1024, timeoutMs: 5000 }).then(
      () => assert.fail(`connected to vsock://${cid}:1024`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof VsockError, String(err));
    assert.match(err.code, /^E[A-Z0-9]+$/);
    assert.equal(err.syscall, 'connect');
    assert.ok(err.message.includes(`vsock://${cid}:1024`) && err.message.includes(err.code), err.message);
    assert.ok(Date.now() - t0 < 3000, 'without waiting for a timeout');
  });

  it('a connect aborted before it starts rejects with ABORT_ERR and opens nothing', async () => {
    const reason = new Error('stop');
    await assert.rejects(
      connect({ cid: unreachableCid(), port: 1024, signal: AbortSignal.abort(reason) }),
      (e: unknown) => e instanceof VsockError && e.code === 'ABORT_ERR' && e.cause === reason,
    );
  });

  it('the addon checks its arguments and answers EBADF after close', () => {
    const n = native();
    assert.throws(() => new n.Handle(-1), RangeError);
    const fd = n.socket();
    assert.ok(fd >= 0, `socket(): ${fd}`);
    const h = new n.Handle(fd);
    assert.equal(h.fd(), fd);
    assert.throws(() => h.read(Buffer.alloc(4), 2, 4), RangeError);
    assert.throws(() => h.write(new Uint16Array(4) as unknown as Uint8Array, 0, 1), TypeError);
    assert.throws(() => h.connect(-1, 1), TypeError);
    assert.throws(() => h.connect(3, 2 ** 32), TypeError);
    assert.deepEqual(h.sockname(), [VMADDR_CID_ANY, VMADDR_PORT_ANY]);
    h.close();
    h.close();
    assert.equal(h.fd(), -1);
    for (const r of [
      h.read(Buffer.alloc(4), 0, 4),
      h.write(Buffer.alloc(4), 0, 4),
      h.accept(),
      h.poll(1),
      h.connect(3, 1),
      h.socketError(),
      h.sockname(),
    ]) {
      assert.equal(r, n.EBADF);
    }
  });

  it('closing a server ends a waiting accept() and lets node exit; so does unref(); a ref()ed one keeps it alive', async function () {
    this.timeout(20_000);
    const prelude = `const { VsockServer, VMADDR_PORT_ANY } = require(${JSON.stringify(SRC)});
      const server = VsockServer.listen({ port: VMADDR_PORT_ANY });`;
    const closed = await runNode(
      `${prelude}
      server.accept().catch((e) => process.stdout.write(e.code));
      setTimeout(() => server.close(), 20);`,
      5000,
    );
    assert.deepEqual({ exited: closed.exited, stdout: closed.stdout }, { exited: true, stdout: 'ERR_SERVER_CLOSED' });
    const unrefed = await runNode(`${prelude} server.unref(); void server.accept();`, 5000);
    assert.equal(unrefed.exited, true, unrefed.stderr);
    const waiting = await runNode(`${prelude} void server.accept();`, 1500);
    assert.equal(waiting.exited, false, 'a waiting accept() keeps node running, as a listening net.Server does');
  });

  it('a handle nobody closed is closed when it is collected', async function () {
    this.timeout(20_000);
    const r = await runNode(
      `
      const fs = require('fs');
      const { native } = require(${JSON.stringify(path.join(SRC, 'native'))});
      const n = native();
      const count = () => fs.readdirSync('/proc/self/fd').length;
      const before = count();
      (() => { for (let i = 0; i < 200; i++) { const h = new n.Handle(n.socket()); h.onready = () => {}; h.poll(1); h.poll(0); } })();
      const opened = count() - before;
      (async () => {
        for (let i = 0; i < 20 && count() > before; i++) { global.gc(); await new Promise((r) => setTimeout(r, 20)); }
        const result = JSON.stringify({ opened, left: count() - before }); // before touching process.stdout, which opens an fd
        process.stdout.write(result);
      })();`,
      10_000,
      ['--expose-gc'],
    );
    assert.deepEqual(JSON.parse(r.stdout || '{}'), { opened: 200, left: 0 }, r.stderr);
  });
});
