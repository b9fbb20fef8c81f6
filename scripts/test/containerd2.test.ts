/**
 * scripts/containerd2.mjs without the network: Release and Packages parsing, which containerd entry is taken, hash
 * and size mismatches refused, an unsigned InRelease refused by gpgv, and a stamped cache that costs nothing.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = path.resolve(__dirname, '..', '..', '..');

interface Entry {
  version: string;
  upstream: string;
  filename: string;
  sha256: string;
  size: number;
}
interface Release {
  suite?: string;
  codename?: string;
  date?: Date;
  validUntil?: Date;
  sha256: Map<string, { sha256: string; size: number }>;
}
interface Containerd2 {
  PIN: string;
  BINARIES: readonly string[];
  Containerd2Error: new (m: string) => Error;
  parseControl(text: string): Map<string, string>[];
  parseRelease(text: string): Release;
  upstreamVersion(v: string): string | undefined;
  selectContainerd(text: string, pin?: string, series?: string): Entry;
  verifyHash(data: Buffer, want: { sha256: string; size: number }, what: string): void;
  verifyInRelease(inRelease: string, out: string, keyring?: string): string;
  ensureContainerd2(o: { cacheDir: string; mirror: string; log?: (s: string) => void }): Promise<string>;
}

const load = async (): Promise<Containerd2> =>
  (await import(pathToFileURL(path.join(ROOT, 'scripts', 'containerd2.mjs')).href)) as Containerd2;

const hex = (s: string): string => crypto.createHash('sha256').update(s).digest('hex');

const RELEASE = `Origin: Debian
Label: Debian
Suite: unstable
Codename: sid
Date: Fri, 30 Oct 2026 08:08:01 UTC
Valid-Until: Fri, 06 Nov 2026 08:08:01 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib non-free-firmware non-free
Description: Debian x.y Unstable - Not Released
MD5Sum:
 d70654e4ff73403c5076a564041f1484 10824484 main/binary-amd64/Packages.xz
SHA256:
 ${hex('packages')} 65000000 main/binary-amd64/Packages
 28476c952cd0732e0ba28e3c14fbb9a8beb412eb2b3cb96bf9d067d54caacf1b 10824484 main/binary-amd64/Packages.xz
 ${hex('arm')} 10000 main/binary-arm64/Packages.xz
`;

function paragraph(
  pkg: string,
  version: string,
  opts: { arch?: string; filename?: string; sha?: string } = {},
): string {
  const file = opts.filename ?? `pool/main/c/${pkg}/${pkg}_${version.replace(/^\d+:/, '')}_amd64.deb`;
  return [
    `Package: ${pkg}`,
    `Version: ${version}`,
    `Architecture: ${opts.arch ?? 'amd64'}`,
    'Depends: runc (>= 0.1.0~), libc6 (>= 2.34)',
    'Description: open and reliable container runtime',
    'Tag: admin::virtualization, implemented-in::TODO,',
    ' role::program, suite::openstack',
    `Filename: ${file}`,
    'Size: 29547080',
    `SHA256: ${opts.sha ?? hex(version)}`,
    '',
  ].join('\n');
}

describe('scripts/containerd2.mjs', () => {
  let c: Containerd2;
  before(async () => {
    c = await load();
  });

  it('parses control paragraphs, continuation lines included', () => {
    const ps = c.parseControl(`A: 1\nB:\n x\n y\n\n\nC: 3\n`);
    assert.equal(ps.length, 2);
    assert.equal(ps[0]!.get('B'), '\nx\ny');
    assert.equal(ps[1]!.get('C'), '3');
    assert.throws(() => c.parseControl(' orphan\n'), c.Containerd2Error);
    assert.throws(() => c.parseControl('no colon here\n'), c.Containerd2Error);
  });

  it("reads Release's SHA256 list and dates", () => {
    const r = c.parseRelease(RELEASE);
    assert.equal(r.codename, 'sid');
    assert.deepEqual(r.sha256.get('main/binary-amd64/Packages.xz'), {
      sha256: '28476c952cd0732e0ba28e3c14fbb9a8beb412eb2b3cb96bf9d067d54caacf1b',
      size: 10824484,
    });
    assert.equal(r.sha256.size, 3);
    assert.equal(r.validUntil?.toISOString(), '2026-11-06T08:08:01.000Z');
    assert.throws(() => c.parseRelease('Codename: sid\n'), /no SHA256/);
    assert.throws(() => c.parseRelease('SHA256:\n abc 12 main/x\n'), /bad SHA256 line/);
    assert.throws(() => c.parseRelease(RELEASE.replace('Fri, 06 Nov', 'Someday')), /bad Valid-Until/);
  });

  it('takes the upstream part of Debian versions', () => {
    assert.equal(c.upstreamVersion('2.1.9+ds1-5'), '2.1.9');
    assert.equal(c.upstreamVersion('1:2.1.10~ds1-1'), '2.1.10');
    assert.equal(c.upstreamVersion('1.6.20~ds1-1+deb12u1'), '1.6.20');
    assert.equal(c.upstreamVersion('2.1.9'), '2.1.9');
    assert.equal(c.upstreamVersion('2.1.90x-1'), undefined);
    assert.equal(c.upstreamVersion('git20200101'), undefined);
  });

  it('prefers the pinned upstream version with any Debian revision', () => {
    const text = [
      paragraph('golang-github-containerd-containerd-dev', '2.1.9+ds1-5', { arch: 'all' }),
      paragraph('containerd', '2.1.10+ds1-1'),
      paragraph('containerd', '2.1.9+ds1-7'),
      paragraph('containerd', '2.1.9+ds1-5', { arch: 'arm64' }),
      paragraph('docker.io', '26.1.5+dfsg1-9'),
    ].join('\n');
    const e = c.selectContainerd(text, '2.1.9', '2.1');
    assert.equal(e.version, '2.1.9+ds1-7');
    assert.equal(e.upstream, '2.1.9');
    assert.equal(e.filename, 'pool/main/c/containerd/containerd_2.1.9+ds1-7_amd64.deb');
    assert.equal(e.sha256, hex('2.1.9+ds1-7'));
    assert.equal(e.size, 29547080);
  });

  it('falls back to the newest of the series, and fails naming what there is otherwise', () => {
    const text = ['2.1.8+ds1-1', '2.1.12+ds1-1', '2.1.10+ds1-2', '2.2.0+ds1-1'].map((v) => paragraph('containerd', v));
    assert.equal(c.selectContainerd(text.join('\n'), '2.1.9', '2.1').version, '2.1.12+ds1-1');
    assert.throws(
      () => c.selectContainerd([paragraph('containerd', '2.2.0+ds1-1'), paragraph('runc', '1.3.0')].join('\n')),
      (err: Error) =>
        err instanceof c.Containerd2Error &&
        /neither containerd 2\.1\.9 nor any 2\.1\.x/.test(err.message) &&
        /it has: 2\.2\.0\+ds1-1\)/.test(err.message),
    );
    assert.throws(() => c.selectContainerd(paragraph('runc', '1.3.0')), /it has: no containerd for amd64/);
  });

  it('refuses an entry whose Filename leaves the pool or that has no SHA256', () => {
    for (const filename of ['pool/main/c/containerd/../../../x_2.1.9_amd64.deb', '/etc/passwd', 'http://x/y.deb']) {
      assert.throws(() => c.selectContainerd(paragraph('containerd', '2.1.9+ds1-5', { filename })), /Filename/);
    }
    assert.throws(() => c.selectContainerd(paragraph('containerd', '2.1.9+ds1-5', { sha: 'abc' })), /SHA256/);
  });

  it('refuses data whose size or SHA256 does not match', () => {
    const data = Buffer.from('the .deb');
    const want = { sha256: hex('the .deb'), size: data.length };
    c.verifyHash(data, want, 'x.deb');
    assert.throws(() => c.verifyHash(Buffer.from('the .dec'), want, 'x.deb'), /x\.deb: SHA256 [0-9a-f]{64}, expected/);
    assert.throws(() => c.verifyHash(Buffer.from('the .deb!'), want, 'x.deb'), /9 bytes, expected 8/);
  });

  it('refuses an InRelease gpgv cannot verify against the keyring', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'c2-gpgv-'));
    try {
      const unsigned = path.join(dir, 'unsigned');
      fs.writeFileSync(unsigned, RELEASE);
      assert.throws(() => c.verifyInRelease(unsigned, path.join(dir, 'out1')), /gpgv .*exit/);
      // A clearsigned text with a made-up signature.
      const forged = path.join(dir, 'forged');
      const sig = Buffer.from(crypto.randomBytes(300))
        .toString('base64')
        .replace(/(.{64})/g, '$1\n');
      fs.writeFileSync(
        forged,
        `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n${RELEASE}-----BEGIN PGP SIGNATURE-----\n\n${sig}\n-----END PGP SIGNATURE-----\n`,
      );
      // gpgv writes the text out before it finds the signature bad: none of it may be left.
      assert.throws(() => c.verifyInRelease(forged, path.join(dir, 'out2')), /gpgv .*exit/);
      assert.ok(!fs.existsSync(path.join(dir, 'out2')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does nothing (no network) when the cache holds a stamped install of this pin', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'c2-cache-'));
    try {
      const name = `containerd-${c.PIN}`;
      fs.mkdirSync(path.join(cache, name, 'bin'), { recursive: true });
      for (const b of c.BINARIES) fs.writeFileSync(path.join(cache, name, 'bin', b), '#!/bin/true\n', { mode: 0o755 });
      fs.writeFileSync(
        path.join(cache, name, '.hull-stamp.json'),
        JSON.stringify({ pin: c.PIN, series: c.PIN.split('.').slice(0, 2).join('.'), upstream: c.PIN }),
      );
      fs.symlinkSync(name, path.join(cache, 'containerd-2'));
      const logs: string[] = [];
      // A mirror nothing listens on: any download would fail.
      const bin = await c.ensureContainerd2({
        cacheDir: cache,
        mirror: 'http://127.0.0.1:9',
        log: (s) => logs.push(s),
      });
      assert.equal(bin, path.join(cache, 'containerd-2', 'bin'));
      assert.equal(logs.length, 0, logs.join('\n'));
      // A stamp of another pin (or a binary missing) means work to do: here, a download that fails.
      fs.rmSync(path.join(cache, name, 'bin', 'ctr'));
      await assert.rejects(
        c.ensureContainerd2({ cacheDir: cache, mirror: 'http://127.0.0.1:9', log: (s) => logs.push(s) }),
        /fetch failed|ECONNREFUSED/,
      );
      assert.deepEqual(
        fs.readdirSync(cache).sort(),
        ['containerd-2', name],
        'a failed run leaves no work folder behind',
      );
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});
