import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { Client, createServiceClient } from '../src/client';
import { FrameDecoder, FrameType, encodeFrame, type DecodedFrame } from '../src/frame-codec';
import { Server } from '../src/server';
import {
  CancelledError,
  Code,
  ConnectionClosedError,
  DeadlineExceededError,
  MessageTooLargeError,
  StatusError,
} from '../src/status';
import { decodeResponse, encodeRequest } from '../src/wire';
import { Echo, duplexPair, sleep, type EchoRequest, type EchoResponse } from './helpers';

function echoServer(log: { aborted: string[]; started: number } = { aborted: [], started: 0 }): Server {
  return new Server().register(Echo, {
    Echo: (req: EchoRequest, ctx) => {
      if (req.fail) throw new StatusError(req.fail.code, req.fail.message);
      return {
        text: req.size ? 'x'.repeat(req.size) : req.text,
        metadata: { ...ctx.metadata },
        timeoutNano: ctx.deadline ? ctx.deadline - Date.now() : 0,
      };
    },
    Sleep: async (req: EchoRequest, ctx) => {
      log.started++;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, req.delayMs ?? 0);
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(t);
          log.aborted.push(req.text);
          reject(ctx.signal.reason as Error);
        });
      });
      return { text: req.text };
    },
  });
}

interface Transport {
  name: string;
  connect(server: Server): Promise<{ client: Client; raw: () => Promise<Duplex>; cleanup(): Promise<void> }>;
}

const transports: Transport[] = [
  {
    name: 'in-memory duplex',
    async connect(server) {
      const [a, b] = duplexPair();
      server.serveStream(b);
      return {
        client: new Client(a),
        raw: async () => {
          const [c, d] = duplexPair();
          server.serveStream(d);
          return c;
        },
        cleanup: () => server.close(),
      };
    },
  },
  {
    name: 'unix socket',
    async connect(server) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
      const sock = path.join(dir, 'ttrpc.sock');
      await server.listen(`unix://${sock}`);
      assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
      return {
        client: await Client.connect(sock),
        raw: () =>
          new Promise((resolve) => {
            const s = net.connect(sock, () => resolve(s));
          }),
        cleanup: async () => {
          await server.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'abstract unix socket',
    async connect(server) {
      const name = `@ttrpc-ts-test-${process.pid}-${Math.random().toString(36).slice(2)}`;
      await server.listen(name);
      return {
        client: await Client.connect(name),
        raw: () =>
          new Promise((resolve) => {
            const s = net.connect(`\0${name.slice(1)}`, () => resolve(s));
          }),
        cleanup: () => server.close(),
      };
    },
  },
];

/** Sends raw frames on a fresh connection and collects the responses. */
async function rawExchange(raw: Duplex, frames: Buffer[], expect: number): Promise<DecodedFrame[]> {
  const decoder = new FrameDecoder();
  const got: DecodedFrame[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${expect} responses`)), 5000);
    raw.on('data', (chunk: Buffer) => {
      got.push(...decoder.write(chunk));
      if (got.length >= expect) {
        clearTimeout(timer);
        raw.destroy();
        resolve(got);
      }
    });
    for (const f of frames) raw.write(f);
  });
}

const requestFrame = (streamId: number, service: string, method: string, payload: Buffer | object = {}): Buffer =>
  encodeFrame(
    streamId,
    FrameType.Request,
    0,
    encodeRequest({
      service,
      method,
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload)),
      timeoutNano: 0,
      metadata: [],
    }),
  );

for (const transport of transports) {
  describe(`ttrpc client and server over ${transport.name}`, () => {
    let server: Server;
    let client: Client;
    let raw: () => Promise<Duplex>;
    let cleanup: () => Promise<void>;
    const log = { aborted: [] as string[], started: 0 };

    beforeEach(async () => {
      log.aborted = [];
      log.started = 0;
      server = echoServer(log);
      ({ client, raw, cleanup } = await transport.connect(server));
    });
    afterEach(async () => {
      client.close();
      await cleanup();
    });

    it('makes a unary call with metadata and a typed stub', async () => {
      const echo = createServiceClient(client, Echo);
      const res = await echo.Echo(
        { text: 'hello' },
        { metadata: { 'containerd-namespace-ttrpc': 'default', multi: ['a', 'b'] } },
      );
      assert.equal(res.text, 'hello');
      assert.deepEqual(res.metadata, { 'containerd-namespace-ttrpc': ['default'], multi: ['a', 'b'] });
    });

    it('answers concurrent calls in completion order on one connection', async () => {
      const order: string[] = [];
      const calls = [300, 10, 150, 60].map((delayMs, i) =>
        client.call(Echo.Sleep, { text: `c${i}`, delayMs }).then((r: EchoResponse) => order.push(r.text)),
      );
      const many = Array.from({ length: 200 }, (_, i) => client.call(Echo.Echo, { text: `m${i}` }));
      const results = await Promise.all(many);
      results.forEach((r, i) => assert.equal(r.text, `m${i}`));
      await Promise.all(calls);
      assert.deepEqual(order, ['c1', 'c3', 'c2', 'c0']);
    });

    it('sends the deadline as timeout_nano and fails the call with DeadlineExceededError', async () => {
      const res = await client.call(Echo.Echo, { text: 'x' }, { timeoutMs: 2000 });
      assert.ok(
        res.timeoutNano! > 1500 && res.timeoutNano! <= 2000,
        `server saw a deadline ${res.timeoutNano} ms away`,
      );
      const started = Date.now();
      await assert.rejects(
        client.call(Echo.Sleep, { text: 'slow', delayMs: 5000 }, { timeoutMs: 100 }),
        DeadlineExceededError,
      );
      assert.ok(Date.now() - started < 1000);
      await sleep(50);
      assert.deepEqual(log.aborted, ['slow'], 'the handler saw its signal abort at the deadline');
      assert.equal(client.pendingCalls, 0);
      assert.equal((await client.call(Echo.Echo, { text: 'still usable' })).text, 'still usable');
    });

    it('cancels a call through its AbortSignal', async () => {
      const controller = new AbortController();
      const call = client.call(Echo.Sleep, { text: 'c', delayMs: 5000 }, { signal: controller.signal });
      setTimeout(() => controller.abort(), 30);
      await assert.rejects(call, CancelledError);
      await assert.rejects(client.call(Echo.Echo, { text: 'x' }, { signal: AbortSignal.abort() }), CancelledError);
      assert.equal(client.pendingCalls, 0);
    });

    it('fails every pending call with ConnectionClosedError when the connection closes', async () => {
      const calls = [1, 2, 3].map((i) => client.call(Echo.Sleep, { text: `p${i}`, delayMs: 5000 }));
      while (log.started < 3) await sleep(5);
      const closed = new Promise<void>((resolve) => client.onClose(() => resolve()));
      await server.close();
      for (const c of calls) await assert.rejects(c, ConnectionClosedError);
      await closed;
      await assert.rejects(client.call(Echo.Echo, { text: 'after' }), ConnectionClosedError);
      await sleep(20);
      assert.equal(log.aborted.length, 3, 'the server aborted its handlers');
    });

    it('answers UNIMPLEMENTED for an unknown service or method', async () => {
      await assert.rejects(
        client.call(Echo.Missing, { text: '' }),
        (e: StatusError) => e.code === Code.UNIMPLEMENTED && /Missing/.test(e.message),
      );
      await assert.rejects(
        client.callRaw('no.Such', 'Thing', Buffer.alloc(0)),
        (e: StatusError) => e.code === Code.UNIMPLEMENTED && /no\.Such/.test(e.message),
      );
    });

    it('carries a handler status code and message, with an empty payload', async () => {
      await assert.rejects(
        client.call(Echo.Echo, { text: '', fail: { code: Code.NOT_FOUND, message: 'container c1: not found' } }),
        (e: StatusError) => e.code === Code.NOT_FOUND && e.message === 'container c1: not found',
      );
      const conn = await raw();
      const [frame] = await rawExchange(
        conn,
        [requestFrame(1, 'test.Echo', 'Echo', { fail: { code: 6, message: 'dup' } })],
        1,
      );
      assert.equal(frame!.kind, 'frame');
      if (frame!.kind !== 'frame') return;
      const res = decodeResponse(frame!.payload);
      assert.equal(res.status!.code, Code.ALREADY_EXISTS);
      assert.equal(res.payload.length, 0);
    });

    it('maps a plain thrown error to UNKNOWN', async () => {
      server.registerRaw('test.Raw', 'Throw', () => {
        throw new Error('boom');
      });
      await assert.rejects(
        client.callRaw('test.Raw', 'Throw', Buffer.alloc(0)),
        (e: StatusError) => e.code === Code.UNKNOWN && e.message === 'boom',
      );
    });

    it('answers RESOURCE_EXHAUSTED for an oversized frame and keeps the connection', async () => {
      const conn = await raw();
      const big = Buffer.alloc((4 << 20) + 100, 1);
      const got = await rawExchange(
        conn,
        [requestFrame(1, 'test.Echo', 'Echo', big), requestFrame(3, 'test.Echo', 'Echo', { text: 'after' })],
        2,
      );
      const byId = new Map(got.map((f) => [f.streamId, f]));
      const first = byId.get(1)!;
      assert.equal(first.kind, 'frame');
      if (first.kind === 'frame') assert.equal(decodeResponse(first.payload).status!.code, Code.RESOURCE_EXHAUSTED);
      const second = byId.get(3)!;
      if (second.kind === 'frame') assert.equal(decodeResponse(second.payload).status, undefined);
    });

    it('refuses a request over the limit before sending, and an oversized response', async () => {
      await assert.rejects(client.callRaw('test.Echo', 'Echo', Buffer.alloc(5 << 20)), MessageTooLargeError);
      await assert.rejects(
        client.call(Echo.Echo, { text: '', size: 5 << 20 }),
        (e: StatusError) => e.code === Code.RESOURCE_EXHAUSTED,
      );
      assert.equal((await client.call(Echo.Echo, { text: 'ok' })).text, 'ok');
    });

    it('answers INVALID_ARGUMENT for an even stream id, ignores unknown frame types, and numbers its own streams oddly', async () => {
      const conn = await raw();
      const got = await rawExchange(
        conn,
        [
          encodeFrame(7, 0x09, 0, Buffer.from('ignored')),
          requestFrame(2, 'test.Echo', 'Echo', { text: 'even' }),
          requestFrame(5, 'test.Echo', 'Echo', { text: 'odd' }),
        ],
        2,
      );
      const byId = new Map(got.map((f) => [f.streamId, f]));
      const even = byId.get(2)!;
      if (even.kind === 'frame') assert.equal(decodeResponse(even.payload).status!.code, Code.INVALID_ARGUMENT);
      const odd = byId.get(5)!;
      if (odd.kind === 'frame') assert.equal(decodeResponse(odd.payload).status, undefined);
      assert.equal(byId.has(7), false);
    });

    it('shuts down gracefully: in-flight calls finish, new ones are refused, and the wait is bounded', async () => {
      const slow = client.call(Echo.Sleep, { text: 'in-flight', delayMs: 200 });
      while (log.started < 1) await sleep(5);
      const t0 = Date.now();
      const shutdown = server.shutdown({ timeoutMs: 5000 });
      assert.equal((await slow).text, 'in-flight');
      await shutdown;
      assert.ok(Date.now() - t0 < 2000);
      await assert.rejects(client.call(Echo.Echo, { text: 'late' }), ConnectionClosedError);
    });

    it('bounds a graceful shutdown that handlers do not finish', async () => {
      const stuck = client.call(Echo.Sleep, { text: 'stuck', delayMs: 60_000 });
      while (log.started < 1) await sleep(5);
      const t0 = Date.now();
      await server.shutdown({ timeoutMs: 150 });
      assert.ok(Date.now() - t0 < 1000);
      await assert.rejects(stuck, ConnectionClosedError);
    });
  });
}

describe('ttrpc unix transport', () => {
  it('reports EADDRINUSE for a live socket and leaves it alone', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    const sock = path.join(dir, 's.sock');
    const a = new Server();
    const b = new Server();
    try {
      await a.listen(sock);
      await assert.rejects(b.listen(sock), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
      assert.ok(fs.existsSync(sock));
    } finally {
      await a.close();
      await b.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(fs.existsSync(sock), false);
  });

  it('fails to connect to a missing socket with the OS error', async () => {
    await assert.rejects(Client.connect('/nonexistent/ttrpc.sock'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  });
});
