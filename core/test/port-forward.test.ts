/**
 * PortForwardRelays against the real agent in its host test mode (HULL_AGENT_SOCKET: its "guest loopback" is the
 * host's): a client connection handed to relay() reaches a server on 127.0.0.1 through the agent and back.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { KataAgentClient } from '../../agent-client';
import { NOOP_LOGGER } from '../../log';
import { PortForwardRelays } from '../port-forward';

const AGENT = path.resolve(__dirname, '..', '..', 'agent', 'main.js');

describe('core PortForwardRelays through the real agent', function () {
  this.timeout(30_000);
  let dir: string;
  let agentProcess: ChildProcess;
  let agent: KataAgentClient;
  let relays: PortForwardRelays;
  /** Where relay() is fed from: a local listener whose connections go to relays.relay(socket, target). */
  let front: net.Server;
  let target = 0;
  const servers: net.Server[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-pf-test-'));
    const socket = path.join(dir, 'agent.sock');
    agentProcess = spawn(process.execPath, [AGENT], {
      env: { ...process.env, HULL_AGENT_SOCKET: socket },
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    agent = await KataAgentClient.dial({ transport: 'unix', path: socket }, { deadline: Date.now() + 10_000 });
    relays = new PortForwardRelays(agent, NOOP_LOGGER);
    front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => relays.relay(s, target));
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  });

  after(async () => {
    relays.closeAll();
    front.close();
    for (const s of servers) s.close();
    await agent.close();
    agentProcess.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function serve(handler: (s: net.Socket) => void): Promise<number> {
    const s = net.createServer({ allowHalfOpen: true }, handler);
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as net.AddressInfo).port;
  }

  /** Connects to the front, sends `data`, ends, and collects everything until the end (or the error code). */
  function exchange(data: Buffer): Promise<{ received: Buffer; error?: string }> {
    return new Promise((resolve) => {
      const c = net.connect((front.address() as net.AddressInfo).port, '127.0.0.1');
      const parts: Buffer[] = [];
      c.on('data', (d: Buffer) => parts.push(d));
      c.on('end', () => resolve({ received: Buffer.concat(parts) }));
      c.on('error', (e: NodeJS.ErrnoException) => resolve({ received: Buffer.concat(parts), error: e.code }));
      c.end(data);
    });
  }

  it('8 MiB each way arrive whole and in order (sha256), with half-close passed on', async () => {
    const reply = crypto.randomBytes(8 << 20);
    target = await serve((s) => {
      const hash = crypto.createHash('sha256');
      s.on('data', (d: Buffer) => hash.update(d));
      s.on('end', () => {
        s.write(hash.digest());
        s.end(reply);
      });
    });
    const sent = crypto.randomBytes(8 << 20);
    const { received, error } = await exchange(sent);
    assert.equal(error, undefined);
    assert.equal(received.length, 32 + reply.length);
    assert.deepEqual(
      received.subarray(0, 32),
      crypto.createHash('sha256').update(sent).digest(),
      'the server got every byte sent, in order',
    );
    assert.ok(received.subarray(32).equals(reply), 'the client got every byte of the answer, in order');
  });

  it('a client that does not read holds the guest server back (bounded read-ahead), then gets every byte', async () => {
    const total = 96 << 20;
    let accepted = 0;
    target = await serve((s) => {
      const chunk = Buffer.alloc(1 << 20, 0x5a);
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          sent += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
      const timer = setInterval(() => (accepted = sent - s.writableLength), 20);
      s.on('close', () => clearInterval(timer));
    });
    const c = net.connect((front.address() as net.AddressInfo).port, '127.0.0.1');
    c.pause();
    await new Promise((r) => setTimeout(r, 1_500));
    const held = accepted;
    // The agent's buffer (1 MiB), one read ahead on the host and the sockets' buffers: far from the whole.
    assert.ok(held < total / 2, `${held} bytes left the server while the client read nothing`);
    let got = 0;
    let bad = false;
    c.on('data', (d: Buffer) => {
      got += d.length;
      if (d.some((x) => x !== 0x5a)) bad = true;
    });
    c.resume();
    await new Promise((r) => c.once('end', r));
    c.destroy();
    assert.equal(got, total);
    assert.equal(bad, false);
  });

  it("a port nothing listens on in the guest resets the client's connection", async () => {
    target = await serve(() => undefined);
    await new Promise((r) => servers.pop()!.close(r));
    const { received, error } = await exchange(Buffer.from('x'));
    assert.equal(received.length, 0);
    assert.equal(error, 'ECONNRESET');
  });

  it("the server closing first ends the client's connection, and the guest side is forgotten", async () => {
    target = await serve((s) => s.end('bye'));
    const { received, error } = await exchange(Buffer.alloc(0));
    assert.equal(error, undefined);
    assert.equal(received.toString(), 'bye');
    for (let i = 0; i < 50 && relays.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(relays.size, 0, 'no relay left');
  });

  it('20 connections at once each get their own answer', async () => {
    target = await serve((s) => {
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('end', () => s.end(`re:${Buffer.concat(got).toString()}`));
    });
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => exchange(Buffer.from(`c${i}`))));
    assert.deepEqual(
      answers.map((a) => a.received.toString()),
      Array.from({ length: 20 }, (_, i) => `re:c${i}`),
    );
  });

  it("a client that goes away mid-transfer closes the guest's side: the server sees its connection end", async () => {
    let serverClosed!: () => void;
    const closed = new Promise<void>((r) => (serverClosed = r));
    target = await serve((s) => {
      s.on('error', () => undefined);
      s.on('close', serverClosed);
      const chunk = Buffer.alloc(64 << 10);
      const pump = (): void => {
        while (s.writable && s.write(chunk));
      };
      s.on('drain', pump);
      pump();
    });
    const c = net.connect((front.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise<void>((r) => c.once('data', () => r()));
    c.destroy();
    await closed;
    for (let i = 0; i < 50 && relays.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(relays.size, 0, 'no relay left');
  });
});
