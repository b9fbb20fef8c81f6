/**
 * Runs inside a container in a real guest (integration/vsock-guest.test.ts), with the host's node, hull-vsock and
 * ttrpc-ts copied into its root filesystem: hull-vsock against the guest kernel's AF_VSOCK over the vsock_loopback
 * transport (CID 1). `node vsock-check.js <check>` prints one JSON line with what it saw.
 *
 * It never calls process.exit(): node has to end by itself once everything is closed, so a socket or server
 * that kept node's event loop alive would show up as a container that never exits.
 */
import crypto from 'node:crypto';
import {
  VMADDR_CID_ANY,
  VMADDR_CID_HOST,
  VMADDR_CID_LOCAL,
  VMADDR_PORT_ANY,
  VsockError,
  VsockServer,
  connect,
  localCid,
  type VsockSocket,
} from 'hull-vsock';
import { Client, ConnectionClosedError, Server, method, type Codec } from 'ttrpc-ts';

const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Reads until the peer's EOF, without destroying the stream (a for-await loop would). */
function readAll(s: VsockSocket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.resume(); // a stream paused on purpose stays paused when a 'data' listener is added
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/** Writes all of `data` honouring backpressure, then ends the write side; how often write() said "wait". */
async function writeAll(s: VsockSocket, data: Buffer, chunk = 256 << 10): Promise<number> {
  let failed: Error | undefined;
  let wake: (() => void) | undefined;
  const onError = (e: Error): void => {
    failed = e;
    wake?.();
  };
  const check = (): void => {
    if (failed) throw failed;
  };
  s.on('error', onError);
  try {
    let waits = 0;
    for (let off = 0; off < data.length; off += chunk) {
      check();
      if (!s.write(data.subarray(off, off + chunk))) {
        waits++;
        await new Promise<void>((resolve) => {
          wake = resolve;
          s.once('drain', resolve);
        });
      }
    }
    check();
    await new Promise<void>((resolve, reject) => s.end((e?: Error | null) => (e ? reject(e) : resolve())));
    check();
    return waits;
  } finally {
    s.off('error', onError);
    s.on('error', () => undefined); // a late error after we gave up on the stream
  }
}

const errorOf = async (
  p: Promise<unknown>,
): Promise<{ name: string; code?: string; syscall?: string; message: string } | 'no error'> => {
  try {
    await p;
    return 'no error';
  } catch (e) {
    const err = e as VsockError;
    return { name: err.name, code: err.code, syscall: err.syscall, message: err.message };
  }
};

/** 8 MiB each way between a client and a server on CID 1, the server reading slowly at first (backpressure). */
async function exchange(): Promise<unknown> {
  const server = VsockServer.listen({ port: VMADDR_PORT_ANY, allowHalfOpen: true });
  const up = crypto.randomBytes(8 << 20);
  const down = crypto.randomBytes(8 << 20);
  const [serverSide, clientSide] = await Promise.all([
    server.accept(),
    connect({ cid: VMADDR_CID_LOCAL, port: server.address.port, allowHalfOpen: true, timeoutMs: 10_000 }),
  ]);
  server.close();
  const t0 = Date.now();
  const serverDone = (async () => {
    serverSide.pause();
    await sleep(300); // the client's writes fill the socket's buffer and must wait
    const received = await readAll(serverSide);
    const waits = await writeAll(serverSide, down);
    return { received, waits };
  })();
  const clientDone = (async () => {
    const received = readAll(clientSide);
    const waits = await writeAll(clientSide, up);
    return { received: await received, waits };
  })();
  const [s, c] = await Promise.all([serverDone, clientDone]);
  await sleep(50); // both ends closed themselves once both directions ended
  return {
    up: { sent: sha256(up), received: sha256(s.received), bytes: s.received.length },
    down: { sent: sha256(down), received: sha256(c.received), bytes: c.received.length },
    clientWriteWaits: c.waits,
    serverWriteWaits: s.waits,
    ms: Date.now() - t0,
    client: { local: clientSide.localAddress, remote: clientSide.remoteAddress, destroyed: clientSide.destroyed },
    server: { local: serverSide.localAddress, remote: serverSide.remoteAddress, destroyed: serverSide.destroyed },
    listen: server.address,
    localCid: (() => {
      try {
        return localCid();
      } catch (e) {
        return (e as VsockError).code;
      }
    })(),
  };
}

const bytes: Codec<Uint8Array> = { encode: (v) => v, decode: (b) => b };
const Echo = { Echo: method('hull.test.Echo', 'Echo', bytes, bytes) };

/** ttrpc over vsock: a ttrpc-ts Server serving an accepted socket, a ttrpc-ts Client over a connected one. */
async function ttrpc(): Promise<unknown> {
  const listener = VsockServer.listen({ port: VMADDR_PORT_ANY });
  const server = new Server().register(Echo, { Echo: (req) => Buffer.concat([Buffer.from('echo:'), req]) });
  const accepted = listener.accept().then((s) => server.serveStream(s));
  const client = new Client(await connect({ cid: VMADDR_CID_LOCAL, port: listener.address.port, timeoutMs: 10_000 }));
  await accepted;
  listener.close();
  const sizes = [0, 1, 1000, 64 << 10, 1 << 20, 3 << 20];
  const answers = await Promise.all(
    sizes.flatMap((n) =>
      [0, 1, 2].map(async () => {
        const req = crypto.randomBytes(n);
        const res = Buffer.from(await client.call(Echo.Echo, req, { timeoutMs: 60_000 }));
        return res.equals(Buffer.concat([Buffer.from('echo:'), req]));
      }),
    ),
  );
  client.close();
  await server.close();
  return { calls: answers.length, correct: answers.filter(Boolean).length };
}

/** What fails, and how. */
async function errors(): Promise<unknown> {
  const server = VsockServer.listen({ port: VMADDR_PORT_ANY });
  const port = server.address.port;
  const out: Record<string, unknown> = {};
  out.noListener = await errorOf(
    connect({ cid: VMADDR_CID_LOCAL, port: port === 5000 ? 5001 : 5000, timeoutMs: 10_000 }),
  );
  out.toHost = await errorOf(connect({ cid: VMADDR_CID_HOST, port: 1024, timeoutMs: 10_000 }));
  out.badPort = await errorOf(connect({ cid: VMADDR_CID_LOCAL, port: 2 ** 32 }));
  out.portTaken = await errorOf(Promise.resolve().then(() => VsockServer.listen({ port })));
  // A connect aborted before the kernel's answer is handled (a non-blocking vsock connect always answers later).
  // Against a server of its own, whose backlog then holds a dead connection until it closes.
  const other = VsockServer.listen({ port: VMADDR_PORT_ANY });
  const ac = new AbortController();
  const pending = connect({ cid: VMADDR_CID_LOCAL, port: other.address.port, signal: ac.signal });
  ac.abort(new Error('changed my mind'));
  out.aborted = await errorOf(pending);
  other.close();

  // The peer goes away while we write: the writer's error, not a hang.
  const [victim, writer] = await Promise.all([
    server.accept(),
    connect({ cid: VMADDR_CID_LOCAL, port, timeoutMs: 10_000 }),
  ]);
  victim.destroy();
  out.peerGone = await errorOf(writeAll(writer, crypto.randomBytes(8 << 20)));
  writer.destroy();

  // Closing the server ends a waiting accept().
  const waiting = server.accept();
  setTimeout(() => server.close(), 50);
  out.closedWhileWaiting = await errorOf(waiting);
  out.listenAny = { cid: server.address.cid === VMADDR_CID_ANY };
  return out;
}

/** The agent listens on vsock port 1024 (hull.agent=serial,vsock) and must refuse any peer but the host. */
async function agent(): Promise<unknown> {
  const socket = await connect({ cid: VMADDR_CID_LOCAL, port: 1024, timeoutMs: 10_000 });
  const connectedTo = socket.remoteAddress;
  const client = new Client(socket);
  const health = method('grpc.Health', 'Check', bytes, bytes);
  try {
    await client.call(health, new Uint8Array(0), { timeoutMs: 20_000 });
    return { connectedTo, answered: true };
  } catch (err) {
    return {
      connectedTo,
      answered: false,
      closedByAgent: err instanceof ConnectionClosedError,
      error: (err as Error).message,
    };
  } finally {
    client.close();
  }
}

const checks: Record<string, () => Promise<unknown>> = { exchange, ttrpc, errors, agent };
const name = process.argv[2] ?? '';
const check = checks[name];
if (!check) {
  process.stderr.write(`usage: vsock-check.js ${Object.keys(checks).join('|')}\n`);
  process.exitCode = 2;
} else {
  check().then(
    (result) => process.stdout.write(`${JSON.stringify({ check: name, result })}\n`),
    (err: unknown) => {
      process.stderr.write(`${name} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
