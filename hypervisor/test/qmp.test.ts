import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  NotFoundError,
  NotImplementedError,
  UnavailableError,
} from '../../errors';
import { LineSplitter, QmpClient, QmpErrorReply, type QmpEvent, type ShutdownEvent } from '../qemu/qmp';

const GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian' }, capabilities: ['oob'] },
};

type Handler = (
  cmd: { execute: string; id?: unknown; arguments?: unknown },
  send: (o: unknown) => void,
  sock: net.Socket,
) => void;

/** A fake QMP server: greets, answers qmp_capabilities, hands everything else to `handler`. */
class FakeQmp {
  readonly server: net.Server;
  readonly received: string[] = [];
  sockets: net.Socket[] = [];
  constructor(
    readonly socketPath: string,
    handler: Handler,
    opts: { greet?: (sock: net.Socket) => void } = {},
  ) {
    this.server = net.createServer((sock) => {
      this.sockets.push(sock);
      (opts.greet ?? ((s) => s.write(`${JSON.stringify(GREETING)}\r\n`)))(sock);
      const lines = new LineSplitter();
      sock.on('data', (chunk: Buffer) => {
        for (const line of lines.push(chunk)) {
          const cmd = JSON.parse(line) as { execute: string; id?: unknown };
          this.received.push(cmd.execute);
          const send = (o: unknown): void => {
            sock.write(`${JSON.stringify(o)}\r\n`);
          };
          if (cmd.execute === 'qmp_capabilities') send({ return: {}, id: cmd.id });
          else handler(cmd, send, sock);
        }
      });
      sock.on('error', () => undefined);
    });
  }
  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.socketPath, resolve));
  }
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('hypervisor/qemu/qmp', () => {
  let dir: string;
  let sock: string;
  let fake: FakeQmp | undefined;
  let client: QmpClient | undefined;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-qmp-'));
    sock = path.join(dir, 'qmp.sock');
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    await fake?.close();
    fake = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('LineSplitter', () => {
    it('joins split chunks, splits several lines in one chunk, trims \\r', () => {
      const s = new LineSplitter();
      assert.deepEqual(s.push(Buffer.from('{"a":')), []);
      assert.deepEqual(s.push(Buffer.from('1}\r\n{"b":2}\n{"c"')), ['{"a":1}', '{"b":2}']);
      assert.deepEqual(s.push(Buffer.from(':3}\n')), ['{"c":3}']);
    });
    it('keeps multi-byte characters split across chunks intact', () => {
      const s = new LineSplitter();
      const bytes = Buffer.from('"é"\n');
      assert.deepEqual([...s.push(bytes.subarray(0, 2)), ...s.push(bytes.subarray(2))], ['"é"']);
    });
    it('throws InternalError over the line-length cap', () => {
      const s = new LineSplitter(16);
      assert.deepEqual(s.push(Buffer.from('0123456789\n')), ['0123456789']);
      s.push(Buffer.from('0123456789'));
      assert.throws(() => s.push(Buffer.from('0123456789')), InternalError);
    });
  });

  it('negotiates capabilities, correlates replies by id, and surfaces events between them', async () => {
    fake = new FakeQmp(sock, (cmd, send) => {
      if (cmd.execute === 'query-status') {
        // An event first, then the reply, split into two writes mid-line.
        send({ event: 'RESUME', data: {}, timestamp: { seconds: 1, microseconds: 2 } });
        send({ return: { status: 'running', singlestep: false, running: true }, id: cmd.id });
      } else if (cmd.execute === 'stop') {
        send({ return: {}, id: cmd.id });
        send({ event: 'STOP', data: {} });
      } else if (cmd.execute === 'quit') {
        send({ return: {}, id: cmd.id });
        send({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } });
      } else {
        send({ return: { echo: cmd.arguments }, id: cmd.id });
      }
    });
    await fake.listen();
    client = await QmpClient.connect(sock);
    assert.equal(client.greeting?.version.qemu.major, 7);

    const events: QmpEvent[] = [];
    const stops: number[] = [];
    const shutdowns: ShutdownEvent[] = [];
    client.onEvent((e) => events.push(e));
    client.onStop(() => stops.push(1));
    client.onShutdown((e) => shutdowns.push(e));

    const [status, echoed] = await Promise.all([client.queryStatus(), client.execute('device_add', { driver: 'x' })]);
    assert.deepEqual(status, { status: 'running', running: true });
    assert.deepEqual(echoed, { echo: { driver: 'x' } });
    await client.stop();
    await client.quit();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      events.map((e) => e.event),
      ['RESUME', 'STOP', 'SHUTDOWN'],
    );
    assert.deepEqual(events[0]!.timestamp, { seconds: 1, microseconds: 2 });
    assert.equal(stops.length, 1);
    assert.deepEqual(shutdowns, [{ guest: false, reason: 'host-qmp-quit' }]);
    assert.deepEqual(fake.received, ['qmp_capabilities', 'query-status', 'device_add', 'stop', 'quit']);
  });

  it('tolerates a reply delivered one byte at a time', async () => {
    fake = new FakeQmp(sock, (cmd, _send, s) => {
      const text = `${JSON.stringify({ return: { status: 'paused', running: false }, id: cmd.id })}\r\n`;
      let i = 0;
      const tick = (): void => {
        if (i < text.length) {
          s.write(text[i++]!);
          setImmediate(tick);
        }
      };
      tick();
    });
    await fake.listen();
    client = await QmpClient.connect(sock);
    assert.deepEqual(await client.queryStatus(), { status: 'paused', running: false });
  });

  it('turns QMP errors into typed errors that keep class and desc', async () => {
    const classes: Record<string, string> = {
      'no-such': 'CommandNotFound',
      device_del: 'DeviceNotFound',
      cont: 'GenericError',
      weird: 'KVMMissingCap',
    };
    fake = new FakeQmp(sock, (cmd, send) =>
      send({ error: { class: classes[cmd.execute], desc: `nope: ${cmd.execute}` }, id: cmd.id }),
    );
    await fake.listen();
    client = await QmpClient.connect(sock);
    await assert.rejects(client.execute('no-such'), NotImplementedError);
    await assert.rejects(client.execute('device_del', { id: 'x' }), NotFoundError);
    await assert.rejects(client.cont(), (e: Error) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.ok(e.cause instanceof QmpErrorReply);
      assert.equal(e.cause.errorClass, 'GenericError');
      assert.equal(e.cause.desc, 'nope: cont');
      return true;
    });
    await assert.rejects(client.execute('weird'), InternalError);
  });

  it('times out a command with DeadlineExceededError and ignores the late reply', async () => {
    let late: (() => void) | undefined;
    fake = new FakeQmp(sock, (cmd, send) => {
      if (cmd.execute === 'slow') late = () => send({ return: 'late', id: cmd.id });
      else send({ return: 'ok', id: cmd.id });
    });
    await fake.listen();
    client = await QmpClient.connect(sock);
    await assert.rejects(client.execute('slow', undefined, { timeoutMs: 50 }), DeadlineExceededError);
    late?.();
    assert.equal(await client.execute('fast'), 'ok');
  });

  it('fails pending commands with UnavailableError when QEMU closes the socket; quit treats that as done', async () => {
    fake = new FakeQmp(sock, (cmd, _send, s) => {
      if (cmd.execute !== 'hang') s.destroy();
    });
    await fake.listen();
    client = await QmpClient.connect(sock);
    const closed = new Promise<Error>((resolve) => client!.onClose(resolve));
    const pending = client.execute('hang');
    await client.quit(); // the server hangs up without replying
    await assert.rejects(pending, UnavailableError);
    assert.ok((await closed) instanceof UnavailableError);
    assert.equal(client.closed, true);
    await assert.rejects(client.queryStatus(), UnavailableError);
  });

  it('closes the connection on a line over the cap or invalid JSON', async () => {
    fake = new FakeQmp(sock, (_cmd, _send, s) => {
      s.write('{"return": ');
      s.write(`"${'x'.repeat(1024 * 1024 + 10)}"`);
    });
    await fake.listen();
    client = await QmpClient.connect(sock);
    await assert.rejects(client.execute('big'), InternalError);

    client.close();
    await fake.close();
    fake = new FakeQmp(sock, (_cmd, _send, s) => {
      s.write('not json\n');
    });
    fs.rmSync(sock, { force: true });
    await fake.listen();
    client = await QmpClient.connect(sock);
    await assert.rejects(
      client.execute('x'),
      (e: Error) => e instanceof InternalError && /invalid JSON/.test(e.message),
    );
  });

  it('retries connecting until the socket appears', async () => {
    fake = new FakeQmp(sock, (cmd, send) => send({ return: { status: 'running', running: true }, id: cmd.id }));
    setTimeout(() => void fake!.listen(), 100);
    client = await QmpClient.connect(sock, { signal: AbortSignal.timeout(5000), retryIntervalMs: 5 });
    assert.equal((await client.queryStatus()).running, true);
  });

  it('gives up on abort: CancelledError, or DeadlineExceededError for a timeout signal', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(QmpClient.connect(sock, { signal: ac.signal }), CancelledError);
    await assert.rejects(QmpClient.connect(sock, { signal: AbortSignal.timeout(50) }), DeadlineExceededError);
  });

  it('bounds the wait for the greeting', async () => {
    fake = new FakeQmp(sock, () => undefined, { greet: () => undefined });
    await fake.listen();
    await assert.rejects(
      QmpClient.connect(sock, { handshakeTimeoutMs: 50 }),
      (e: Error) => e instanceof DeadlineExceededError && /greeting/.test(e.message),
    );
  });
});
