/** virtiofsd argv, start/stop and the sandbox probe, against small fake daemons. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, UnavailableError } from '../../errors';
import { pidExists } from '../util';
import { Virtiofsd, probeSandboxMode, resetSandboxProbeCache, virtiofsdArgs } from '../virtiofsd';

/**
 * A fake virtiofsd: listens on --socket-path; on a connection it either fails the way the real one does when
 * namespaces are not permitted (sandbox=namespace with 'fail-namespace') or answers GET_FEATURES.
 */
function writeFakeVirtiofsd(dir: string, name: string, behaviour: 'ok' | 'fail-namespace' | 'exit-at-once'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(
    file,
    `#!${process.execPath}
'use strict';
const net = require('net');
const args = process.argv.slice(2);
const sock = args.find((a) => a.startsWith('--socket-path=')).slice('--socket-path='.length);
const sandbox = (args.find((a) => a.startsWith('sandbox=')) || '').slice('sandbox='.length);
const behaviour = ${JSON.stringify(behaviour)};
if (behaviour === 'exit-at-once') { process.stderr.write('fuse: bad mount point: No such file or directory\\n'); process.exit(1); }
process.stderr.write('virtio_session_mount: Waiting for vhost-user socket connection...\\n');
const server = net.createServer((c) => {
  server.close();
  if (behaviour === 'fail-namespace' && sandbox === 'namespace') {
    process.stderr.write('unshare(CLONE_NEWPID | CLONE_NEWNS): Operation not permitted\\n');
    process.exit(1);
  }
  c.on('data', (d) => {
    if (d.length >= 12 && d.readUInt32LE(0) === 1) {
      const r = Buffer.alloc(20); r.writeUInt32LE(1, 0); r.writeUInt32LE(5, 4); r.writeUInt32LE(8, 8); r.writeBigUInt64LE(1n << 32n, 12);
      c.write(r);
    }
  });
  c.on('close', () => process.exit(0));
});
server.listen(sock);
`,
    { mode: 0o755 },
  );
  return file;
}

describe('hypervisor/virtiofsd', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-vfsd-'));
    resetSandboxProbeCache();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('argv (golden): socket, source, cache=auto, sandbox, submounts; no --syslog', () => {
    assert.deepEqual(
      virtiofsdArgs({
        binary: '/v',
        socketPath: '/run/x/virtiofsd.sock',
        sharedDir: '/run/x/shared',
        sandbox: 'namespace',
      }),
      [
        '--socket-path=/run/x/virtiofsd.sock',
        '-o',
        'source=/run/x/shared',
        '-o',
        'cache=auto',
        '-o',
        'sandbox=namespace',
        '-o',
        'announce_submounts',
      ],
    );
    assert.deepEqual(
      virtiofsdArgs({ binary: '/v', socketPath: '/s', sharedDir: '/d', sandbox: 'chroot', debug: true }).slice(-4),
      ['-o', 'announce_submounts', '-o', 'log_level=debug'],
    );
    assert.throws(
      () => virtiofsdArgs({ binary: '/v', socketPath: '/s', sharedDir: '/d,allow_root', sandbox: 'chroot' }),
      InvalidArgumentError,
    );
  });

  it('probe: namespace when the daemon answers GET_FEATURES after connecting; cleans up after itself', async () => {
    const bin = writeFakeVirtiofsd(dir, 'vfsd-ok', 'ok');
    const choice = await probeSandboxMode(bin, dir);
    assert.equal(choice.value, 'namespace');
    assert.equal(await probeSandboxMode(bin, dir), choice, 'cached per binary');
    assert.deepEqual(fs.readdirSync(dir), ['vfsd-ok']);
  });

  it('probe: falls back to chroot, saying why, when namespace setup fails', async () => {
    const bin = writeFakeVirtiofsd(dir, 'vfsd-nons', 'fail-namespace');
    const choice = await probeSandboxMode(bin, dir);
    assert.equal(choice.value, 'chroot');
    assert.match(choice.reason, /Operation not permitted/);
    assert.doesNotMatch(choice.reason, /Waiting for vhost-user/);
    // ...and chroot mode really starts.
    const share = path.join(dir, 'share');
    fs.mkdirSync(share);
    const d = await Virtiofsd.start(
      { binary: bin, socketPath: path.join(dir, 'v.sock'), sharedDir: share, sandbox: 'chroot' },
      AbortSignal.timeout(5000),
    );
    const pid = d.pid!;
    assert.ok(pidExists(pid));
    await d.stop(0);
    assert.equal(d.pid, undefined);
    assert.equal(pidExists(pid), false);
    assert.equal(fs.existsSync(path.join(dir, 'v.sock')), false);
  });

  it('start: a daemon that exits before listening is an UnavailableError with its stderr', async () => {
    const bin = writeFakeVirtiofsd(dir, 'vfsd-bad', 'exit-at-once');
    await assert.rejects(
      Virtiofsd.start(
        { binary: bin, socketPath: path.join(dir, 'v.sock'), sharedDir: dir, sandbox: 'namespace' },
        AbortSignal.timeout(5000),
      ),
      (e: Error) => e instanceof UnavailableError && /exit code 1/.test(e.message) && /bad mount point/.test(e.message),
    );
  });
});
