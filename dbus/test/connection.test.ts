import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  DBusConnection,
  DBusConnectionError,
  DBusError,
  MessageDecoder,
  MessageType,
  encodeMessage,
  type Message,
} from '..';

/**
 * A peer-to-peer D-Bus server (as systemd's /run/systemd/private is): the server side of SASL EXTERNAL, then
 * messages to `onMessage`. `refuse`: answer the AUTH with REJECTED.
 */
class PeerServer {
  readonly server: net.Server;
  readonly authLines: string[] = [];
  readonly sockets: net.Socket[] = [];
  refuse = false;
  onMessage: (m: Message, reply: (r: Omit<Message, 'serial'>) => void, raw: net.Socket) => void = () => undefined;
  private serial = 100;

  constructor(readonly socketPath: string) {
    this.server = net.createServer((sock) => {
      this.sockets.push(sock);
      let buf = Buffer.alloc(0);
      let authed = false;
      const decoder = new MessageDecoder(1 << 20);
      sock.on('error', () => undefined);
      const reply = (r: Omit<Message, 'serial'>): void =>
        void sock.write(encodeMessage({ ...r, serial: ++this.serial }));
      sock.on('data', (d: Buffer) => {
        if (authed) {
          for (const m of decoder.push(d)) this.onMessage(m, reply, sock);
          return;
        }
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const eol = buf.indexOf('\r\n');
          if (eol < 0) return;
          const line = buf.subarray(0, eol).toString('latin1');
          buf = buf.subarray(eol + 2);
          this.authLines.push(line);
          if (line.startsWith('\0AUTH')) {
            sock.write(this.refuse ? 'REJECTED EXTERNAL\r\n' : `OK ${'0123456789abcdef'.repeat(2)}\r\n`);
          } else if (line === 'BEGIN') {
            authed = true;
            if (buf.length) for (const m of decoder.push(buf)) this.onMessage(m, reply, sock);
            return;
          }
        }
      });
    });
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.socketPath, r));
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe('dbus connection (peer to peer, a fake server)', () => {
  let tmp: string;
  let server: PeerServer;
  beforeEach(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-dbus-'));
    server = new PeerServer(path.join(tmp, 'private'));
    await server.listen();
  });
  afterEach(async () => {
    await server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('authenticates with SASL EXTERNAL (the uid in hex of its decimal digits), then calls, errors and signals flow', async () => {
    server.onMessage = (m, reply) => {
      if (m.member === 'Echo')
        reply({ type: MessageType.MethodReturn, replySerial: m.serial, signature: m.signature, body: m.body });
      else if (m.member === 'Fail')
        reply({
          type: MessageType.Error,
          replySerial: m.serial,
          errorName: 'org.freedesktop.systemd1.NoSuchUnit',
          signature: 's',
          body: ['Unit x.scope not loaded.'],
        });
      else if (m.member === 'Ping') {
        reply({ type: MessageType.Signal, path: '/a', interface: 'a.b', member: 'Pinged', signature: 'u', body: [3] });
        reply({ type: MessageType.MethodReturn, replySerial: m.serial });
      }
    };
    const c = await DBusConnection.connect(server.socketPath, { bus: false, uid: 1000 });
    try {
      assert.equal(c.uniqueName, undefined, 'no Hello peer to peer');
      assert.deepEqual(await c.call({ path: '/x', member: 'Echo', signature: 'sau', body: ['a', [1, 2]] }), [
        'a',
        [1, 2],
      ]);
      assert.deepEqual(server.authLines, ['\0AUTH EXTERNAL 31303030', 'BEGIN']);
      await assert.rejects(
        c.call({ path: '/x', member: 'Fail' }),
        (err: unknown) =>
          err instanceof DBusError &&
          err.errorName === 'org.freedesktop.systemd1.NoSuchUnit' &&
          /not loaded/.test(err.message),
      );
      const signals: Message[] = [];
      const stop = c.onSignal((m) => signals.push(m));
      await c.call({ path: '/x', member: 'Ping' });
      stop();
      assert.deepEqual(
        signals.map((s) => [s.member, s.body]),
        [['Pinged', [3]]],
      );
    } finally {
      c.close();
    }
    const root = await DBusConnection.connect(server.socketPath, { bus: false, uid: 0 });
    root.close();
    assert.equal(server.authLines.at(-1), '\0AUTH EXTERNAL 30');
  });

  it('a refused authentication, a missing socket and a silent server are DBusConnectionErrors', async () => {
    server.refuse = true;
    await assert.rejects(
      DBusConnection.connect(server.socketPath, { bus: false }),
      (err: unknown) => err instanceof DBusConnectionError && err.code === 'EACCES' && /REJECTED/.test(err.message),
    );
    await assert.rejects(
      DBusConnection.connect(path.join(tmp, 'none'), { bus: false }),
      (err: unknown) => err instanceof DBusConnectionError && err.code === 'ENOENT',
    );
    const silent = net.createServer(() => undefined);
    const silentPath = path.join(tmp, 'silent');
    await new Promise<void>((r) => silent.listen(silentPath, r));
    try {
      await assert.rejects(
        DBusConnection.connect(silentPath, { bus: false, timeoutMs: 200 }),
        (err: unknown) => err instanceof DBusConnectionError && err.code === 'ETIMEDOUT',
      );
    } finally {
      silent.close();
    }
  });

  it('a call past its deadline is refused; a message above the size cap closes the connection and fails what waits', async () => {
    let raw: net.Socket | undefined;
    server.onMessage = (_m, _reply, sock) => (raw = sock);
    const c = await DBusConnection.connect(server.socketPath, { bus: false, maxMessageBytes: 4096 });
    await assert.rejects(
      c.call({ path: '/x', member: 'Slow', timeoutMs: 100 }),
      (err: unknown) => err instanceof DBusConnectionError && err.code === 'ETIMEDOUT',
    );
    const waiting = c.call({ path: '/x', member: 'Never' });
    const closedWith: Error[] = [];
    c.onClose((e) => closedWith.push(e));
    await new Promise((r) => setTimeout(r, 50));
    const big = encodeMessage({
      type: MessageType.Signal,
      serial: 9,
      path: '/a',
      interface: 'a.b',
      member: 'Big',
      signature: 's',
      body: ['x'.repeat(8192)],
    });
    raw!.write(big.subarray(0, 64)); // the header is enough to refuse it
    await assert.rejects(
      waiting,
      (err: unknown) => err instanceof DBusConnectionError && /larger than the cap of 4096/.test(err.message),
    );
    assert.equal(c.closed, true);
    assert.match(closedWith[0]?.message ?? '', /larger than the cap/, 'onClose told, once');
    assert.equal(closedWith.length, 1);
    await assert.rejects(c.call({ path: '/x', member: 'After' }), DBusConnectionError);
  });

  it('a method call to this connection without a handler gets UnknownMethod', async () => {
    const answers: Message[] = [];
    server.onMessage = (m) => answers.push(m);
    const c = await DBusConnection.connect(server.socketPath, { bus: false });
    try {
      server.sockets[0]!.write(
        encodeMessage({ type: MessageType.MethodCall, serial: 5, path: '/x', interface: 'a.b', member: 'Do' }),
      );
      const end = Date.now() + 2000;
      while (answers.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      assert.equal(answers[0]?.type, MessageType.Error);
      assert.equal(answers[0]?.errorName, 'org.freedesktop.DBus.Error.UnknownMethod');
      assert.equal(answers[0]?.replySerial, 5);
    } finally {
      c.close();
    }
  });
});
