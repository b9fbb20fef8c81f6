/** virtiofsd argv, start/stop and the sandbox probe, against small fake daemons. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, UnavailableError } from '../../errors';
import { pidExists } from '../util';
import { Virtiofsd, probeSandboxMode, resetSandboxProbeCache, virtiofsdArgs } from '../virtiofsd';
import { checkVirtiofsCache, checkVirtiofsdExtraArgs } from '../virtiofsd-options';

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

  it('argv per cache mode: auto, always, never (-> cache=none, what QEMU 7.2 virtiofsd takes)', () => {
    const base = { binary: '/v', socketPath: '/s', sharedDir: '/d', sandbox: 'chroot' as const };
    const cacheOf = (argv: string[]): string[] => argv.filter((a) => a.startsWith('cache='));
    assert.deepEqual(cacheOf(virtiofsdArgs(base)), ['cache=auto']);
    assert.deepEqual(cacheOf(virtiofsdArgs({ ...base, cache: 'auto' })), ['cache=auto']);
    assert.deepEqual(cacheOf(virtiofsdArgs({ ...base, cache: 'always' })), ['cache=always']);
    assert.deepEqual(cacheOf(virtiofsdArgs({ ...base, cache: 'never' })), ['cache=none']);
    assert.throws(() => virtiofsdArgs({ ...base, cache: 'metadata' as 'never' }), InvalidArgumentError);
  });

  it('argv: the extra arguments come last, normalised, after debug', () => {
    const argv = virtiofsdArgs({
      binary: '/v',
      socketPath: '/s',
      sharedDir: '/d',
      sandbox: 'namespace',
      debug: true,
      extraArgs: ['--thread-pool-size=4', '-o', 'writeback,timeout=5'],
    });
    assert.deepEqual(argv.slice(-9), [
      '-o',
      'announce_submounts',
      '-o',
      'log_level=debug',
      '--thread-pool-size=4',
      '-o',
      'writeback',
      '-o',
      'timeout=5',
    ]);
    assert.equal(argv.filter((a) => a.startsWith('--socket-path=')).length, 1);
    assert.throws(
      () => virtiofsdArgs({ binary: '/v', socketPath: '/s', sharedDir: '/d', sandbox: 'chroot', extraArgs: ['-f'] }),
      InvalidArgumentError,
    );
  });

  it('cache mode check: "none" is "never", anything else is refused', () => {
    assert.equal(checkVirtiofsCache('k', 'none'), 'never');
    for (const m of ['auto', 'always', 'never']) assert.equal(checkVirtiofsCache('k', m), m);
    for (const bad of ['', 'Auto', 'metadata', 1, undefined, ['auto']])
      assert.throws(() => checkVirtiofsCache('k', bad), /k must be one of "auto", "always", "never"/);
  });

  it('extra arguments: the allow-list passes, normalised', () => {
    assert.deepEqual(checkVirtiofsdExtraArgs('k', []), []);
    assert.deepEqual(
      checkVirtiofsdExtraArgs('k', [
        '-o',
        'flock,no_posix_lock,readdirplus,no_writeback,allow_direct_io,no_xattr,announce_submounts',
        '-o',
        'max_idle_threads=0',
        '-o',
        'log_level=warn',
        '--rlimit-nofile=4096',
        '--thread-pool-size=0',
      ]),
      [
        ...['flock', 'no_posix_lock', 'readdirplus', 'no_writeback', 'allow_direct_io', 'no_xattr'].flatMap((o) => [
          '-o',
          o,
        ]),
        '-o',
        'announce_submounts',
        '-o',
        'max_idle_threads=0',
        '-o',
        'log_level=warn',
        '--rlimit-nofile=4096',
        '--thread-pool-size=0',
      ],
    );
  });

  // [argument list, the refused item the message names, a fragment of the reason]
  const REFUSED: [unknown, string, RegExp][] = [
    [['--socket-path=/tmp/x.sock'], '--socket-path=/tmp/x.sock', /vhost-user socket/],
    [['--socket-group=kvm'], '--socket-group=kvm', /vhost-user socket/],
    [['--fd=3'], '--fd=3', /vhost-user socket/],
    [['-o', 'source=/'], 'source=/', /shared folder/],
    [['-o', 'writeback,source=/etc'], 'source=/etc', /shared folder/],
    [['-o', 'cache=always'], 'cache=always', /virtio_fs_cache/],
    [['-o', 'sandbox=chroot'], 'sandbox=chroot', /sandbox/],
    [['-f'], '-f', /foreground/],
    [['-d'], '-d', /foreground/],
    [['-o', 'debug'], 'debug', /foreground/],
    [['--daemonize'], '--daemonize', /foreground/],
    [['--syslog'], '--syslog', /foreground/],
    [['--print-capabilities'], '--print-capabilities', /foreground/],
    [['-o', 'modcaps=+sys_admin'], 'modcaps=+sys_admin', /capabilities/],
    [['-o', 'allow_root'], 'allow_root', /access/],
    [['-o', 'killpriv_v2'], 'killpriv_v2', /setuid/],
    [['-o', 'xattr'], 'xattr', /extended attributes/],
    [['-o', 'xattrmap=:map::user.virtiofs.:'], 'xattrmap=:map::user.virtiofs.:', /extended attributes/],
    [['-o', 'posix_acl'], 'posix_acl', /extended attributes/],
    [['-o', 'security_label'], 'security_label', /extended attributes/],
    [['-owriteback'], '-owriteback', /two list items/],
    [['-o'], '-o', /must be followed by an option/],
    [['-o', 'writeback\\,source=/'], 'writeback\\,source=/', /backslashes/],
    [['-o', 'write back'], 'write back', /whitespace/],
    [['-o', 'timeout=99999999'], 'timeout=99999999', /integer from 0 to 86400/],
    [['-o', 'timeout'], 'timeout', /integer/],
    [['-o', 'log_level=trace'], 'log_level=trace', /debug, info, warn or err/],
    [['--thread-pool-size=-1'], '--thread-pool-size=-1', /integer from 0 to 1024/],
    [['--thread-pool-size'], '--thread-pool-size', /integer/],
    [['--unknown'], '--unknown', /not an option hull lets through/],
    [['-o', 'inode_file_handles'], 'inode_file_handles', /not an option hull lets through/],
    [['/etc'], '/etc', /not an option hull lets through/],
    [[''], '', /non-empty/],
    [[1], '1', /non-empty string/],
  ];
  for (const [args, item, why] of REFUSED) {
    it(`extra arguments: refuses ${JSON.stringify(args)}, naming ${JSON.stringify(item)}`, () => {
      assert.throws(
        () => checkVirtiofsdExtraArgs('hypervisor.virtio_fs_extra_args', args),
        (e: Error) => {
          assert.ok(e instanceof InvalidArgumentError, e.message);
          assert.ok(e.message.startsWith(`hypervisor.virtio_fs_extra_args may not hold `), e.message);
          assert.ok(e.message.includes(item === '1' ? '1' : JSON.stringify(item)), e.message);
          assert.match(e.message, why);
          return true;
        },
      );
    });
  }

  it('extra arguments: not an array, or too many, is refused', () => {
    assert.throws(() => checkVirtiofsdExtraArgs('k', '-o writeback'), /k must be an array of strings/);
    assert.throws(() => checkVirtiofsdExtraArgs('k', Array(33).fill('--thread-pool-size=1')), /more than 32/);
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
