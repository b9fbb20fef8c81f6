import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { isAvailable, listenInNetns, NetnsError, originalDestination } from '../src';

/** Connects to host:port from inside the namespace (a node child entered with nsenter), sends `send`, returns what came back. */
function clientInNetns(nsPath: string, host: string, port: number, send: string): Promise<string> {
  const script = `const s = require('node:net').connect(${port}, ${JSON.stringify(host)}); const out = [];
    s.on('data', (d) => out.push(d)); s.on('end', () => process.stdout.write(Buffer.concat(out)));
    s.on('error', (e) => { process.stderr.write(e.code); process.exit(3); }); s.end(${JSON.stringify(send)});`;
  return new Promise((resolve, reject) => {
    const p = spawn('nsenter', [`--net=${nsPath}`, '--', process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => err.push(d));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(out).toString())
        : reject(new Error(`client exited ${code}: ${Buffer.concat(err).toString()}`)),
    );
  });
}

/** An echo server that answers "<original destination> <what it read>". */
function destinationEcho(socket: net.Socket): void {
  const dst = originalDestination(socket);
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('end', () => socket.end(`${dst.family} ${dst.address}:${dst.port} ${Buffer.concat(got).toString()}`));
}

describe('hull-netns', function () {
  this.timeout(30_000);
  const name = `hullnetns${crypto.randomBytes(3).toString('hex')}`;
  const nsPath = `/var/run/netns/${name}`;
  const servers: net.Server[] = [];

  before(function () {
    assert.ok(isAvailable(), 'the addon loads');
    execFileSync('ip', ['netns', 'add', name]);
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  });

  after(function () {
    for (const s of servers) s.close();
    execFileSync('ip', ['netns', 'del', name]);
  });

  it('listens inside the namespace: a client there connects, the same port here is refused', async function () {
    const server = await listenInNetns(nsPath, { host: '127.0.0.1', port: 0 }, (s) => s.pipe(s));
    servers.push(server);
    const { port } = server.address() as net.AddressInfo;
    assert.ok(port > 0);
    assert.equal(await clientInNetns(nsPath, '127.0.0.1', port, 'ping'), 'ping');
    await assert.rejects(
      new Promise((resolve, reject) => net.connect(port, '127.0.0.1').on('connect', resolve).on('error', reject)),
      (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED',
    );
  });

  it('originalDestination: the port a REDIRECT rule took the connection from, and its own for a direct one', async function () {
    const server = await listenInNetns(nsPath, { host: '127.0.0.1', port: 0 }, destinationEcho);
    servers.push(server);
    const { port } = server.address() as net.AddressInfo;
    execFileSync('nsenter', [
      `--net=${nsPath}`,
      '--',
      'iptables',
      '-w',
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-o',
      'lo',
      '-p',
      'tcp',
      '-d',
      '127.0.0.1/32',
      '-j',
      'REDIRECT',
      '--to-ports',
      String(port),
    ]);
    assert.equal(await clientInNetns(nsPath, '127.0.0.1', 4321, 'a'), '4 127.0.0.1:4321 a');
    assert.equal(await clientInNetns(nsPath, '127.0.0.1', 80, 'b'), '4 127.0.0.1:80 b');
    assert.equal(await clientInNetns(nsPath, '127.0.0.1', port, 'c'), `4 127.0.0.1:${port} c`);
  });

  it('IPv6: a listener on ::1', async function () {
    const server = await listenInNetns(nsPath, { host: '::1', port: 0 }, (s) => s.pipe(s));
    servers.push(server);
    const addr = server.address() as net.AddressInfo;
    assert.equal(addr.family, 'IPv6');
    assert.equal(await clientInNetns(nsPath, '::1', addr.port, 'six'), 'six');
  });

  it('errors are named: a missing namespace, a file that is not one, a port in use, bad arguments', async function () {
    await assert.rejects(
      listenInNetns('/var/run/netns/no-such-namespace-here', { host: '127.0.0.1', port: 0 }),
      (e: NetnsError) => e.code === 'ENOENT',
    );
    await assert.rejects(
      listenInNetns('/etc/hostname', { host: '127.0.0.1', port: 0 }),
      (e: NetnsError) => e.code === 'EINVAL',
    );
    const taken = (servers[0]!.address() as net.AddressInfo).port;
    await assert.rejects(
      listenInNetns(nsPath, { host: '127.0.0.1', port: taken }),
      (e: NetnsError) => e.code === 'EADDRINUSE' && /127\.0\.0\.1:\d+ in/.test(e.message),
    );
    await assert.rejects(listenInNetns(nsPath, { host: 'localhost', port: 0 }), TypeError);
    await assert.rejects(listenInNetns('relative/path', { host: '127.0.0.1', port: 0 }), TypeError);
    await assert.rejects(listenInNetns(nsPath, { host: '127.0.0.1', port: 70000 }), RangeError);
  });

  it('the calling thread stays in its own namespace', async function () {
    const before = execFileSync('readlink', [`/proc/${process.pid}/task/${process.pid}/ns/net`]).toString();
    servers.push(await listenInNetns(nsPath, { host: '127.0.0.1', port: 0 }));
    assert.equal(execFileSync('readlink', [`/proc/${process.pid}/task/${process.pid}/ns/net`]).toString(), before);
  });
});
