/**
 * `containerd-shim-hull-v2 -info`, run as containerd runs it (the launcher in bin/, runtime options or nothing on
 * stdin), its stdout decoded as containerd.types.RuntimeInfo and its features as the OCI features document; and the
 * bounded stdin reader (stdin.ts) that `-info` and `start` share.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { containerd, google, runtimeOptions, TypeUrl } from '../../protos/containerd';
import { hullFeatures, type OciFeatures } from '../info';
import { readStdin } from '../stdin';

const REPO = path.resolve(__dirname, '../../..');
const LAUNCHER = path.join(REPO, 'bin', 'containerd-shim-hull-v2');
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

/** Runs `-info` with `input` written on a pipe (and closed), as containerd's exec.Cmd does. */
function info(input?: Uint8Array, args: string[] = ['-info']): Run {
  const t0 = performance.now();
  // spawns: node; bin/containerd-shim-hull-v2 is a node script of this checkout
  const r = spawnSync(LAUNCHER, args, { input: input ?? Buffer.alloc(0), timeout: 20_000, env: {} });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString(), ms: performance.now() - t0 };
}

function decode(stdout: Buffer): { info: containerd.types.RuntimeInfo; features: OciFeatures } {
  const decoded = containerd.types.RuntimeInfo.decode(stdout);
  assert.equal(decoded.features?.type_url, TypeUrl.OciFeatures);
  return {
    info: decoded,
    features: JSON.parse(Buffer.from(decoded.features.value!).toString('utf8')) as OciFeatures,
  };
}

const optionsAny = (typeUrl: string): Uint8Array =>
  google.protobuf.Any.encode({
    type_url: typeUrl,
    value: runtimeOptions.Options.encode({ configPath: '/etc/hull/configuration.toml' }).finish(),
  }).finish();

describe('shim -info (containerd 2.x RuntimeInfo)', function () {
  this.timeout(60_000);

  it('prints a RuntimeInfo: hull, its version, the OCI features hull and its guest support; exit 0, no stderr', () => {
    const r = info();
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    const { info: i, features } = decode(r.stdout);
    assert.equal(i.name, 'io.containerd.hull.v2');
    assert.equal(i.version?.version, VERSION);
    assert.equal(i.options, null, 'no options were given');
    assert.deepEqual(features, JSON.parse(JSON.stringify(hullFeatures(VERSION))));
    // What containerd and CRI read: idmapped mounts are not supported (core/pod.ts says why at Create).
    assert.deepEqual(features.linux.mountExtensions, { idmap: { enabled: false } });
    assert.deepEqual(features.linux.namespaces, ['cgroup', 'ipc', 'mount', 'network', 'pid', 'uts']);
    assert.ok(!features.linux.seccomp.actions.includes('SCMP_ACT_NOTIFY'));
    assert.ok(features.linux.seccomp.enabled);
    assert.ok(features.mountOptions.includes('rbind') && features.mountOptions.includes('nosuid'));
    assert.ok(!features.mountOptions.some((o) => o === 'idmap' || o === 'ridmap' || o === 'rshared'));
    assert.equal(features.linux.capabilities.length, 41);
    assert.deepEqual(features.hooks, []);
    assert.equal(features.linux.apparmor.enabled, false);
    assert.equal(features.linux.selinux.enabled, false);
  });

  it('echoes runtime options of the type hull reads (runtimeoptions.v1.Options); leaves out others and garbage', () => {
    const ours = optionsAny('runtimeoptions.v1.Options');
    const r = info(ours);
    assert.equal(r.status, 0, r.stderr);
    const { info: i } = decode(r.stdout);
    assert.equal(i.options?.type_url, 'runtimeoptions.v1.Options');
    assert.equal(
      runtimeOptions.Options.decode(i.options.value!).configPath,
      '/etc/hull/configuration.toml',
      'as containerd sent them',
    );
    for (const other of [optionsAny('containerd.runc.v1.Options'), Buffer.from('garbage \xff\xff')]) {
      const o = info(other);
      assert.equal(o.status, 0, o.stderr);
      assert.equal(decode(o.stdout).info.options, null);
    }
  });

  it('reads neither the configuration nor the guest: a broken configuration file changes nothing', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-info-'));
    try {
      const conf = path.join(tmp, 'configuration.toml');
      fs.writeFileSync(conf, '[hypervisor\nthis is not toml');
      const t0 = performance.now();
      // spawns: node; bin/containerd-shim-hull-v2 is a node script of this checkout
      const r = spawnSync(LAUNCHER, ['-info'], { input: '', env: { HULL_CONFIG: conf }, timeout: 20_000 });
      const ms = performance.now() - t0;
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal(r.stderr.toString(), '');
      decode(r.stdout);
      assert.ok(ms < 10_000, `${ms} ms`);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('is not held up by a stdin pipe that stays open (deadline), nor by /dev/null', async () => {
    // spawns: node; bin/containerd-shim-hull-v2 is a node script of this checkout
    const child = spawn(LAUNCHER, ['-info'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    const t0 = performance.now();
    const status = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const ms = performance.now() - t0;
    child.stdin.destroy();
    assert.equal(status, 0);
    decode(Buffer.concat(out));
    assert.ok(ms >= 1900 && ms < 15_000, `${ms.toFixed(0)} ms: the 2 s deadline`);

    const fd = fs.openSync('/dev/null', 'r');
    try {
      // spawns: node; bin/containerd-shim-hull-v2 is a node script of this checkout
      const r = spawnSync(LAUNCHER, ['-info'], { stdio: [fd, 'pipe', 'pipe'], timeout: 20_000 });
      assert.equal(r.status, 0);
      decode(r.stdout);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('shim stdin.ts: bounded, deadline-bound reads', function () {
  this.timeout(20_000);
  let tmp: string;
  beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-stdin-'))));
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a file: its bytes; empty: none; over the cap: refused', async () => {
    const f = path.join(tmp, 'in');
    for (const [content, expected] of [
      ['abc', { kind: 'data', data: Buffer.from('abc') }],
      ['', { kind: 'none', why: 'empty' }],
      ['x'.repeat(33), { kind: 'refused', why: 'too-large' }],
    ] as const) {
      fs.writeFileSync(f, content);
      const fd = fs.openSync(f, 'r');
      try {
        assert.deepEqual(await readStdin({ fd, maxBytes: 32 }), expected);
      } finally {
        fs.closeSync(fd);
      }
    }
  });

  it('/dev/null: empty; a closed descriptor: closed', async () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      assert.deepEqual(await readStdin({ fd }), { kind: 'none', why: 'empty' });
    } finally {
      fs.closeSync(fd);
    }
    assert.deepEqual(await readStdin({ fd: 987 }), { kind: 'none', why: 'closed' });
  });

  it('a pipe (as containerd passes): read to its end, capped, or given up at the deadline', async () => {
    /** A FIFO with `data` written on it, closed by the writer unless `keepOpen`. */
    const pipeRead = async (data: string | Buffer, keepOpen: boolean, o: { maxBytes?: number; timeoutMs?: number }) => {
      const fifo = path.join(tmp, `fifo-${Math.random()}`);
      spawnSync('mkfifo', [fifo]);
      const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const writer = fs.openSync(fifo, fs.constants.O_WRONLY);
      fs.writeSync(writer, Buffer.from(data));
      if (!keepOpen) fs.closeSync(writer);
      try {
        return await readStdin({ fd: reader, ...o });
      } finally {
        if (keepOpen) fs.closeSync(writer);
      }
    };
    assert.deepEqual(await pipeRead('hello', false, {}), { kind: 'data', data: Buffer.from('hello') });
    assert.deepEqual(await pipeRead(Buffer.alloc(100), false, { maxBytes: 64 }), { kind: 'refused', why: 'too-large' });
    const t0 = performance.now();
    assert.deepEqual(await pipeRead('partial', true, { timeoutMs: 300 }), { kind: 'refused', why: 'timeout' });
    assert.ok(performance.now() - t0 < 5000);
  });
});
