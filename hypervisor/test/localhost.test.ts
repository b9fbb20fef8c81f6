// A real network namespace of the test's own (`hull-lh-<random>`, needs root, iptables, nsenter): the listener
// LocalhostRedirect makes in it, its nat rule, what a client inside sees, and the rule's removal.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import type net from 'node:net';
import { InvalidArgumentError, NotFoundError } from '../../errors';
import { LocalhostRedirect, removeLocalhostRedirects, REDIRECT_COMMENT } from '../network';
import { parseRedirectPorts } from '../network/localhost';

/** A client inside the namespace: connects to 127.0.0.1:port, sends `send`, ends, prints what came back (or the error code). */
function clientInNs(nsPath: string, port: number, send: string): Promise<string> {
  const script = `const s = require('node:net').connect(${port}, '127.0.0.1'); const out = [];
    s.on('data', (d) => out.push(d)); s.on('end', () => process.stdout.write(Buffer.concat(out)));
    s.on('error', (e) => process.stdout.write('error ' + e.code)); s.end(${JSON.stringify(send)});`;
  return new Promise((resolve, reject) => {
    execFile(
      'nsenter',
      [`--net=${nsPath}`, '--', process.execPath, '-e', script],
      { timeout: 15_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`client: ${String(stderr) || err.message}`));
        else resolve(String(stdout));
      },
    );
  });
}

const natRules = (nsPath: string): string =>
  execFileSync('nsenter', [`--net=${nsPath}`, '--', 'iptables', '-w', '10', '-t', 'nat', '-S', 'OUTPUT']).toString();

describe('hypervisor/network LocalhostRedirect on a real namespace', function () {
  this.timeout(30_000);
  const name = `hull-lh-${crypto.randomBytes(3).toString('hex')}`;
  const nsPath = `/var/run/netns/${name}`;

  before(() => {
    execFileSync('ip', ['netns', 'add', name]);
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  });
  after(() => execFileSync('ip', ['netns', 'del', name]));

  it('every connection to 127.0.0.1 in the namespace reaches the callback with the port the client dialled', async () => {
    const seen: number[] = [];
    const redirect = await LocalhostRedirect.start(nsPath, (socket: net.Socket, port: number) => {
      seen.push(port);
      socket.resume();
      socket.on('end', () => socket.end(`port ${port}`));
    });
    try {
      assert.ok(natRules(nsPath).includes(REDIRECT_COMMENT), 'the rule is in the nat OUTPUT chain');
      assert.deepEqual(parseRedirectPorts(natRules(nsPath)), [redirect.port]);
      assert.equal(await clientInNs(nsPath, 8080, 'x'), 'port 8080');
      assert.equal(await clientInNs(nsPath, 1, 'y'), 'port 1');
      assert.deepEqual(seen, [8080, 1]);
    } finally {
      await redirect.stop();
    }
    assert.deepEqual(parseRedirectPorts(natRules(nsPath)), [], 'stop removes the rule');
    assert.equal(
      await clientInNs(nsPath, 8080, 'x'),
      'error ECONNREFUSED',
      "afterwards localhost is the namespace's own again",
    );
    await redirect.stop(); // twice is fine
  });

  it('removeLocalhostRedirects removes rules a dead shim left and keeps foreign ones; a missing namespace is fine', async () => {
    const inNs = (args: string[]): Buffer =>
      execFileSync('nsenter', [`--net=${nsPath}`, '--', 'iptables', '-w', '10', '-t', 'nat', ...args]);
    inNs([
      '-A',
      'OUTPUT',
      '-d',
      '127.0.0.1/32',
      '-o',
      'lo',
      '-p',
      'tcp',
      '-m',
      'comment',
      '--comment',
      REDIRECT_COMMENT,
      '-j',
      'REDIRECT',
      '--to-ports',
      '40001',
    ]);
    inNs(['-A', 'OUTPUT', '-d', '127.0.0.1/32', '-p', 'udp', '-j', 'ACCEPT']);
    await removeLocalhostRedirects(nsPath);
    const left = natRules(nsPath);
    assert.ok(!left.includes(REDIRECT_COMMENT), left);
    assert.match(left, /-p udp -j ACCEPT/, 'a rule not ours stays');
    inNs(['-D', 'OUTPUT', '-d', '127.0.0.1/32', '-p', 'udp', '-j', 'ACCEPT']);
    await removeLocalhostRedirects('/var/run/netns/hull-lh-no-such-namespace');
  });

  it('a missing namespace or a file that is not one is a clear error, and nothing is left', async () => {
    await assert.rejects(
      LocalhostRedirect.start('/var/run/netns/hull-lh-no-such-namespace', () => undefined),
      NotFoundError,
    );
    await assert.rejects(
      LocalhostRedirect.start('/etc/hostname', () => undefined),
      InvalidArgumentError,
    );
  });

  it("refuses the host's own network namespace (by any path): no rule, no listener there", async () => {
    const before = execFileSync('iptables', ['-w', '10', '-t', 'nat', '-S', 'OUTPUT']).toString();
    for (const p of ['/proc/self/ns/net', `/proc/${process.pid}/ns/net`]) {
      await assert.rejects(
        LocalhostRedirect.start(p, () => undefined),
        (e: Error) => e instanceof InvalidArgumentError && /host's own network namespace/.test(e.message),
        p,
      );
    }
    assert.equal(execFileSync('iptables', ['-w', '10', '-t', 'nat', '-S', 'OUTPUT']).toString(), before);
  });

  it('parseRedirectPorts reads only rules of exactly our form', () => {
    const listing = [
      '-P OUTPUT ACCEPT',
      `-A OUTPUT -d 127.0.0.1/32 -o lo -p tcp -m comment --comment ${REDIRECT_COMMENT} -j REDIRECT --to-ports 41000`,
      `-A OUTPUT -d 127.0.0.1/32 -o lo -p tcp -m comment --comment "${REDIRECT_COMMENT}" -j REDIRECT --to-ports 42000`,
      `-A OUTPUT -d 10.0.0.1/32 -o lo -p tcp -m comment --comment ${REDIRECT_COMMENT} -j REDIRECT --to-ports 43000`,
      `-A OUTPUT -d 127.0.0.1/32 -o lo -p tcp -m comment --comment ${REDIRECT_COMMENT} -j REDIRECT --to-ports 99999`,
      '-A OUTPUT -d 127.0.0.1/32 -o lo -p tcp -j REDIRECT --to-ports 44000',
    ].join('\n');
    assert.deepEqual(parseRedirectPorts(listing), [41000, 42000]);
  });
});
