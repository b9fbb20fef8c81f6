/**
 * The WebSocket client of lib/k8s-stream.ts on its own: the frame codec (lengths, masking, fragments, limits) and a
 * session against a loopback HTTP server that upgrades the way containerd's streaming server does. The real
 * streaming server is exercised in cri.test.ts.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  Channel,
  CloseCode,
  encodeFrame,
  exitCodeOf,
  FrameDecoder,
  K8sStream,
  Opcode,
  V4_CHANNEL_PROTOCOL,
  WsProtocolError,
} from './lib/k8s-stream';

/** A server-side frame (unmasked), optionally without FIN. */
function serverFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const f = encodeFrame(opcode, payload, false);
  if (!fin) f[0] = f[0]! & 0x7f;
  return f;
}

describe('k8s-stream: WebSocket frames', function () {
  it('a masked client frame decodes to its payload at every length encoding, even one byte at a time', function () {
    for (const len of [0, 1, 125, 126, 65535, 65536, 70000]) {
      const payload = crypto.randomBytes(len);
      const frame = encodeFrame(Opcode.binary, payload);
      assert.equal((frame[1]! & 0x80) !== 0, true, 'masked');
      if (len > 0) assert.notDeepEqual(frame.subarray(frame.length - len), payload, 'the payload is not sent in clear');
      const d = new FrameDecoder(1 << 20, true);
      const got = len < 200 ? [...frame].flatMap((b) => d.write(Buffer.from([b]))) : d.write(frame);
      assert.equal(got.length, 1);
      assert.equal(got[0]!.opcode, Opcode.binary);
      assert.deepEqual(got[0]!.payload, payload, `length ${len}`);
    }
  });

  it('fragments are joined, with a ping between them delivered first', function () {
    const d = new FrameDecoder();
    const bytes = Buffer.concat([
      serverFrame(Opcode.binary, Buffer.from([1, 0x61])),
      serverFrame(Opcode.binary, Buffer.from([1, 0x62]), false),
      serverFrame(Opcode.ping, Buffer.from('p')),
      serverFrame(Opcode.continuation, Buffer.from('cd'), false),
      serverFrame(Opcode.continuation, Buffer.from('e')),
    ]);
    const got = d.write(bytes).map((m) => [m.opcode, m.payload.toString('latin1')]);
    assert.deepEqual(got, [
      [Opcode.binary, '\x01a'],
      [Opcode.ping, 'p'],
      [Opcode.binary, '\x01bcde'],
    ]);
  });

  it('refuses what a server must not send, and messages over the limit', function () {
    const refuses = (bytes: Buffer, code: number = CloseCode.protocolError, max?: number): void =>
      assert.throws(
        () => new FrameDecoder(max).write(bytes),
        (e: WsProtocolError) => e instanceof WsProtocolError && e.closeCode === code,
      );
    refuses(encodeFrame(Opcode.binary, Buffer.from('x'), true)); // masked by the server
    refuses(serverFrame(Opcode.continuation, Buffer.from('x'))); // nothing to continue
    refuses(
      Buffer.concat([
        serverFrame(Opcode.binary, Buffer.from('a'), false),
        serverFrame(Opcode.binary, Buffer.from('b')),
      ]),
    ); // interleaved
    refuses(serverFrame(Opcode.ping, Buffer.alloc(126))); // control frame too long
    refuses(serverFrame(0x3, Buffer.from('x'))); // reserved opcode
    refuses(Buffer.from([0xc2, 0x00])); // RSV1 without an extension
    refuses(serverFrame(Opcode.binary, Buffer.alloc(1025)), CloseCode.tooBig, 1024);
    refuses(
      Buffer.concat([
        serverFrame(Opcode.binary, Buffer.alloc(600), false),
        serverFrame(Opcode.continuation, Buffer.alloc(600)),
      ]),
      CloseCode.tooBig,
      1024,
    );
    // A 64-bit length over the limit is refused from its header alone.
    const huge = Buffer.alloc(10);
    huge[0] = 0x82;
    huge[1] = 127;
    huge.writeBigUInt64BE(1n << 40n, 2);
    refuses(huge, CloseCode.tooBig);
  });

  it('exitCodeOf reads v4 statuses', function () {
    assert.equal(exitCodeOf({ status: 'Success' }), 0);
    assert.equal(
      exitCodeOf({
        status: 'Failure',
        reason: 'NonZeroExitCode',
        details: { causes: [{ reason: 'ExitCode', message: '3' }] },
      }),
      3,
    );
    assert.equal(exitCodeOf({ status: 'Failure', reason: 'InternalError' }), undefined);
    assert.equal(exitCodeOf(undefined), undefined);
  });
});

describe('k8s-stream: a session against a loopback upgrade server', function () {
  let server: http.Server;
  let url: string;
  /** What the server received from the client, decoded. */
  const received: { opcode: number; payload: Buffer }[] = [];
  let behaviour: (socket: Socket, protocol: string) => void;

  before(async function () {
    server = http.createServer((_req, res) => res.writeHead(400).end('not a websocket request'));
    server.on('upgrade', (req, socket: Socket) => {
      const offered = String(req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((p) => p.trim());
      const key = String(req.headers['sec-websocket-key']);
      const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const protocol = offered.includes(V4_CHANNEL_PROTOCOL) ? V4_CHANNEL_PROTOCOL : '';
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
      );
      const d = new FrameDecoder(1 << 20, true);
      socket.on('data', (c: Buffer) => {
        const messages = d.write(c);
        received.push(...messages);
        if (messages.some((m) => m.opcode === Opcode.close)) socket.end(); // as a server answers a close
      });
      socket.on('error', () => undefined);
      behaviour(socket, protocol);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/exec/token`;
  });

  after(() => server.close());
  beforeEach(() => (received.length = 0));

  it('separates the channels, sends stdin and resize masked, and ends with the status and a close', async function () {
    behaviour = (socket) => {
      socket.write(serverFrame(Opcode.binary, Buffer.from([Channel.stdout]))); // "connected"
      socket.write(serverFrame(Opcode.binary, Buffer.from('\x01out\n')));
      socket.write(serverFrame(Opcode.ping, Buffer.from('hi')));
      socket.on('data', () => {
        if (!received.some((m) => m.opcode === Opcode.binary && m.payload[0] === Channel.resize)) return;
        socket.write(serverFrame(Opcode.binary, Buffer.from('\x02err\n')));
        socket.write(
          serverFrame(
            Opcode.binary,
            Buffer.concat([
              Buffer.from([Channel.status]),
              Buffer.from(
                JSON.stringify({
                  metadata: {},
                  status: 'Failure',
                  reason: 'NonZeroExitCode',
                  details: { causes: [{ reason: 'ExitCode', message: '3' }] },
                }),
              ),
            ]),
          ),
        );
        socket.end(serverFrame(Opcode.close, Buffer.from([0x03, 0xe8])));
      });
    };
    const s = await K8sStream.open(url);
    assert.equal(s.protocol, V4_CHANNEL_PROTOCOL);
    assert.equal(await s.waitFor(Channel.stdout, 'out\n', 5_000), '');
    s.stdin('in\n');
    s.resize(100, 30);
    const r = await s.done(5_000);
    assert.deepEqual(
      { ...r, status: undefined },
      { stdout: 'out\n', stderr: 'err\n', status: undefined, exitCode: 3, closeCode: 1000 },
    );
    const got = received.map((m) => [m.opcode, m.payload.toString('latin1')]);
    assert.deepEqual(got, [
      [Opcode.pong, 'hi'],
      [Opcode.binary, '\x00in\n'],
      [Opcode.binary, '\x04{"Width":100,"Height":30}'],
      [Opcode.close, '\x03\xe8'],
    ]);
  });

  it('fails on a message over the limit, telling the server why (1009)', async function () {
    behaviour = (socket) => socket.write(serverFrame(Opcode.binary, Buffer.alloc(2048, 1)));
    const s = await K8sStream.open(url, { maxMessageBytes: 1024 });
    await assert.rejects(s.done(5_000), (e: Error) => e instanceof WsProtocolError && e.closeCode === CloseCode.tooBig);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(
      received.map((m) => [m.opcode, m.payload.readUInt16BE(0)]),
      [[Opcode.close, CloseCode.tooBig]],
    );
  });

  it('rejects an answer that is not an upgrade, or a sub-protocol not offered', async function () {
    const plain = http.createServer((_req, res) => res.writeHead(404).end('unknown token'));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    try {
      await assert.rejects(
        K8sStream.open(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/exec/x`),
        /HTTP 404 instead of an upgrade: unknown token/,
      );
    } finally {
      plain.close();
    }
    behaviour = () => undefined;
    await assert.rejects(K8sStream.open(url, { protocols: ['v5.channel.k8s.io'] }), /sub-protocol "", not one offered/);
  });
});
