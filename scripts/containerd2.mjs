#!/usr/bin/env node
// containerd 2.x beside Debian bookworm's containerd 1.6, for the tests that run against both generations
// (integration/lib/containerd.ts, `generation: 2`). `make deps` runs it (target containerd2).
//
// Debian's own build of containerd 2.x, from sid: the InRelease file is verified with gpgv against Debian's archive
// keyring, Packages.xz against the SHA256 InRelease gives it (fetched by hash, so that a mirror update between the two
// downloads cannot mix them), the .deb against the SHA256 Packages gives it. The .deb is unpacked with dpkg-deb -x,
// never installed: containerd, ctr and containerd-shim-runc-v2 go to <cache>/containerd-<upstream version>/bin, which
// appears at once (a rename of a complete folder, a stamp inside), and <cache>/containerd-2 is a symlink to it (the
// harness's default, CONTAINERD2_BIN_DIR). A second run finds the stamp and does nothing (no network).
//
// Which version: upstream PIN (any Debian revision); if sid no longer has it, the newest 2.1.x there; else it fails,
// naming what sid has. Why not `go install` from the Go module proxy: see the README (no Go module proxy here, and
// Debian's build runs on bookworm's libc: Depends libc6 >= 2.34, runc).
//
// Usage: node scripts/containerd2.mjs [--cache-dir DIR] (default $HULL_CACHE_DIR or /var/cache/hull)
//        [--mirror URL] (default $HULL_DEBIAN_MIRROR or https://deb.debian.org/debian)
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export const PIN = '2.1.9';
/** The series taken when sid no longer has PIN. */
export const SERIES = '2.1';
export const SUITE = 'sid';
export const ARCH = 'amd64';
export const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
export const BINARIES = ['containerd', 'ctr', 'containerd-shim-runc-v2'];
const PACKAGES_PATH = `main/binary-${ARCH}/Packages.xz`;
const STAMP = '.hull-stamp.json';
/** Caps on what is downloaded (sid's InRelease is ~200 KB, Packages.xz ~11 MB, containerd's .deb ~30 MB). */
const MAX_INRELEASE = 4 << 20;
const MAX_PACKAGES_XZ = 64 << 20;
const MAX_PACKAGES = 512 << 20;
const MAX_DEB = 256 << 20;

export class Containerd2Error extends Error {
  name = 'Containerd2Error';
}

// ---- parsing and verification (no network, unit-tested: scripts/test/containerd2.test.ts)

/**
 * The paragraphs of a Debian control file (Release, Packages): field name -> value, a multi-line value's lines joined
 * with '\n' (the first line may be empty, as in Release's SHA256).
 * @param {string} text
 * @returns {Map<string, string>[]}
 */
export function parseControl(text) {
  const paragraphs = [];
  let cur = new Map();
  let last;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur.size) paragraphs.push(cur);
      cur = new Map();
      last = undefined;
      continue;
    }
    if (line[0] === ' ' || line[0] === '\t') {
      if (last === undefined) throw new Containerd2Error(`control file: continuation line without a field: ${line}`);
      cur.set(last, `${cur.get(last)}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Containerd2Error(`control file: not a field: ${line.slice(0, 80)}`);
    last = line.slice(0, colon);
    cur.set(last, line.slice(colon + 1).trim());
  }
  if (cur.size) paragraphs.push(cur);
  return paragraphs;
}

/**
 * A Release file's SHA256 list: path -> { sha256, size }.
 * @param {string} text the signed content of InRelease
 * @returns {{ suite: string | undefined, codename: string | undefined, date: Date | undefined, validUntil: Date | undefined, sha256: Map<string, { sha256: string, size: number }> }}
 */
export function parseRelease(text) {
  const [release] = parseControl(text);
  if (!release) throw new Containerd2Error('Release: empty');
  const list = release.get('SHA256');
  if (list === undefined) throw new Containerd2Error('Release: no SHA256 field');
  const sha256 = new Map();
  for (const line of list.split('\n')) {
    if (line === '') continue;
    const m = /^([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(line);
    if (!m) throw new Containerd2Error(`Release: bad SHA256 line: ${line.slice(0, 120)}`);
    sha256.set(m[3], { sha256: m[1], size: Number(m[2]) });
  }
  const date = (f) => {
    const v = release.get(f);
    if (v === undefined) return undefined;
    // RFC 2822 as Debian writes it (Date's own parser takes almost anything).
    const d = /^(?:[A-Z][a-z]{2}, )?\d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} (?:UTC|GMT|[+-]\d{4})$/.test(v)
      ? new Date(v)
      : new Date(NaN);
    if (Number.isNaN(d.getTime())) throw new Containerd2Error(`Release: bad ${f}: ${v}`);
    return d;
  };
  return {
    suite: release.get('Suite'),
    codename: release.get('Codename'),
    date: date('Date'),
    validUntil: date('Valid-Until'),
    sha256,
  };
}

/**
 * The upstream part of a Debian version: no epoch, no Debian revision, no repack suffix (`+ds1`, `~ds1`, `+dfsg`).
 * @param {string} version e.g. 2.1.9+ds1-5
 * @returns {string | undefined} e.g. 2.1.9, or undefined when it does not start with three numbers
 */
export function upstreamVersion(version) {
  const noEpoch = version.replace(/^\d+:/, '');
  const m = /^(\d+)\.(\d+)\.(\d+)(?=$|[+~-])/.exec(noEpoch);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : undefined;
}

/** @param {string} a @param {string} b numeric x.y.z comparison */
function compareUpstream(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

/**
 * The containerd entry to take from a Packages file: PIN with any Debian revision, else the newest SERIES.x; throws
 * naming what there is otherwise.
 * @param {string} packagesText
 * @returns {{ version: string, upstream: string, filename: string, sha256: string, size: number }}
 */
export function selectContainerd(packagesText, pin = PIN, series = SERIES) {
  // Only the containerd paragraphs are parsed: the file has ~77000.
  const entries = [];
  for (const chunk of packagesText.split(/\n\n+/)) {
    if (!/^Package: containerd\n/.test(chunk.replace(/^\n+/, ''))) continue;
    const [p] = parseControl(chunk);
    if (!p || p.get('Package') !== 'containerd' || p.get('Architecture') !== ARCH) continue;
    const version = p.get('Version') ?? '';
    const upstream = upstreamVersion(version);
    const filename = p.get('Filename') ?? '';
    const sha256 = p.get('SHA256') ?? '';
    const size = Number(p.get('Size'));
    if (!upstream) continue;
    if (
      !/^pool\/main\/c\/containerd\/containerd_[A-Za-z0-9.+~-]+_amd64\.deb$/.test(filename) ||
      filename.includes('..')
    ) {
      throw new Containerd2Error(`Packages: containerd ${version}: unexpected Filename ${filename.slice(0, 200)}`);
    }
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Containerd2Error(`Packages: containerd ${version}: no SHA256`);
    if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_DEB) {
      throw new Containerd2Error(`Packages: containerd ${version}: bad Size ${p.get('Size')}`);
    }
    entries.push({ version, upstream, filename, sha256, size });
  }
  const pinned = entries.filter((e) => e.upstream === pin);
  if (pinned.length) return pinned[pinned.length - 1];
  const inSeries = entries
    .filter((e) => e.upstream.startsWith(`${series}.`))
    .sort((a, b) => compareUpstream(a.upstream, b.upstream));
  if (inSeries.length) return inSeries[inSeries.length - 1];
  const has = entries.length ? entries.map((e) => e.version).join(', ') : 'no containerd for amd64';
  throw new Containerd2Error(
    `Debian ${SUITE} has neither containerd ${pin} nor any ${series}.x (it has: ${has}): update PIN/SERIES in scripts/containerd2.mjs`,
  );
}

/**
 * Refuses data whose size or SHA256 is not the expected one.
 * @param {Buffer} data @param {{ sha256: string, size: number }} want @param {string} what
 */
export function verifyHash(data, want, what) {
  if (data.length !== want.size) {
    throw new Containerd2Error(`${what}: ${data.length} bytes, expected ${want.size}`);
  }
  const got = crypto.createHash('sha256').update(data).digest('hex');
  if (got !== want.sha256) throw new Containerd2Error(`${what}: SHA256 ${got}, expected ${want.sha256}`);
}

/**
 * What a complete install's stamp says, or undefined when `dir` is not one (missing, no stamp, a binary missing).
 * @param {string} dir
 */
export function readStamp(dir) {
  try {
    const stamp = JSON.parse(fs.readFileSync(path.join(dir, STAMP), 'utf8'));
    for (const b of BINARIES) fs.accessSync(path.join(dir, 'bin', b), fs.constants.X_OK);
    return stamp;
  } catch {
    return undefined;
  }
}

// ---- the steps that touch the network and the disk

/** @param {string} url @param {number} max */
async function download(url, max) {
  const res = await fetch(url, { signal: AbortSignal.timeout(300_000), redirect: 'error' });
  if (!res.ok) throw new Containerd2Error(`GET ${url}: HTTP ${res.status}`);
  const length = Number(res.headers.get('content-length') ?? 0);
  if (length > max) throw new Containerd2Error(`GET ${url}: ${length} bytes, more than ${max}`);
  const chunks = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += chunk.length;
    if (total > max) throw new Containerd2Error(`GET ${url}: more than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** @param {string} program @param {string[]} args @param {object} [opts] */
function run(program, args, opts = {}) {
  // spawns: wrapper; the callers name gpgv, xz, dpkg-deb and the unpacked containerd
  const r = spawnSync(program, args, { maxBuffer: 1 << 20, ...opts });
  if (r.error) throw new Containerd2Error(`${program}: ${r.error.message}`);
  if (r.status !== 0) {
    const err = r.stderr ? r.stderr.toString().trim().slice(-2000) : '';
    throw new Containerd2Error(`${program} ${args.join(' ')}: exit ${r.status ?? r.signal}: ${err}`);
  }
  return r;
}

/**
 * gpgv's check of an InRelease file against `keyring`; returns what the signatures cover (written to `out` by gpgv):
 * that, not the file as downloaded, is what gets parsed.
 * @param {string} inRelease @param {string} out @returns {string}
 */
export function verifyInRelease(inRelease, out, keyring = KEYRING) {
  try {
    run('gpgv', ['--quiet', '--keyring', keyring, '--output', out, inRelease]);
  } catch (err) {
    // gpgv writes the text before it finds a signature bad.
    fs.rmSync(out, { force: true });
    throw err;
  }
  return fs.readFileSync(out, 'utf8');
}

/** @param {string} link @param {string} target a symlink made or replaced atomically */
function symlinkAtomic(link, target) {
  const tmp = `${link}.tmp-${process.pid}`;
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, link);
}

/**
 * @param {{ cacheDir: string, mirror: string, log?: (s: string) => void }} opts
 * @returns {Promise<string>} the bin folder
 */
export async function ensureContainerd2({ cacheDir, mirror, log = (s) => console.log(`containerd2: ${s}`) }) {
  const link = path.join(cacheDir, 'containerd-2');
  // Done already for this PIN and SERIES: nothing to do, no network.
  const current = readStamp(link);
  if (current && current.pin === PIN && current.series === SERIES) return path.join(link, 'bin');

  fs.mkdirSync(cacheDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(cacheDir, '.containerd2-'));
  try {
    const base = mirror.replace(/\/+$/, '');
    const dists = `${base}/dists/${SUITE}`;
    log(`fetching ${dists}/InRelease`);
    const inRelease = path.join(work, 'InRelease');
    fs.writeFileSync(inRelease, await download(`${dists}/InRelease`, MAX_INRELEASE));
    const release = parseRelease(verifyInRelease(inRelease, path.join(work, 'Release')));
    if (release.codename !== SUITE) throw new Containerd2Error(`InRelease: Codename ${release.codename}, not ${SUITE}`);
    if (release.validUntil && release.validUntil.getTime() < Date.now()) {
      // apt would refuse it; a stale mirror still serves signed, hashed files, and the version is pinned.
      log(`warning: ${SUITE}'s Release expired ${release.validUntil.toISOString()} (a stale mirror?)`);
    }
    const want = release.sha256.get(PACKAGES_PATH);
    if (!want) throw new Containerd2Error(`InRelease lists no ${PACKAGES_PATH}`);
    if (want.size > MAX_PACKAGES_XZ) throw new Containerd2Error(`${PACKAGES_PATH}: ${want.size} bytes, too big`);
    const byHash = `${dists}/${path.posix.dirname(PACKAGES_PATH)}/by-hash/SHA256/${want.sha256}`;
    log(`fetching ${byHash}`);
    const packagesXz = await download(byHash, MAX_PACKAGES_XZ);
    verifyHash(packagesXz, want, PACKAGES_PATH);
    const packages = run('xz', ['--decompress', '--stdout'], { input: packagesXz, maxBuffer: MAX_PACKAGES }).stdout;
    const entry = selectContainerd(packages.toString('utf8'));
    log(`containerd ${entry.version} (${entry.filename}, ${entry.size} bytes)`);
    const deb = await download(`${base}/${entry.filename}`, MAX_DEB);
    verifyHash(deb, entry, entry.filename);
    const debFile = path.join(work, 'containerd.deb');
    fs.writeFileSync(debFile, deb);
    const unpacked = path.join(work, 'unpacked');
    run('dpkg-deb', ['-x', debFile, unpacked]);

    const name = `containerd-${entry.upstream}`;
    const staged = path.join(work, name);
    fs.mkdirSync(path.join(staged, 'bin'), { recursive: true });
    for (const b of BINARIES) {
      const from = ['usr/bin', 'usr/sbin', 'bin', 'sbin'].map((d) => path.join(unpacked, d, b)).find(isFile);
      if (!from) throw new Containerd2Error(`${entry.filename} has no ${b}`);
      fs.copyFileSync(from, path.join(staged, 'bin', b));
      fs.chmodSync(path.join(staged, 'bin', b), 0o755);
    }
    // It must run here (bookworm's libc) and be the version Packages named.
    // spawns: containerd; the unpacked 2.x
    const v = run(path.join(staged, 'bin', 'containerd'), ['--version']).stdout.toString();
    if (!v.includes(` ${entry.upstream}`)) throw new Containerd2Error(`containerd --version: ${v.trim()}`);
    fs.writeFileSync(
      path.join(staged, STAMP),
      `${JSON.stringify({ pin: PIN, series: SERIES, version: entry.version, upstream: entry.upstream, sha256: entry.sha256, from: `${base}/${entry.filename}` }, null, 2)}\n`,
    );

    // Into place. A folder of the same name without a stamp (a copy made by hand): if its binaries are these, it
    // gets the stamp (whoever runs them now is not disturbed); otherwise it is moved aside first.
    const final = path.join(cacheDir, name);
    if (fs.existsSync(final) && !readStamp(final)) {
      if (BINARIES.every((b) => sameFile(path.join(final, 'bin', b), path.join(staged, 'bin', b)))) {
        fs.copyFileSync(path.join(staged, STAMP), path.join(final, `${STAMP}.tmp`));
        fs.renameSync(path.join(final, `${STAMP}.tmp`), path.join(final, STAMP));
      } else {
        fs.renameSync(final, path.join(work, 'previous'));
      }
    }
    if (!fs.existsSync(final)) fs.renameSync(staged, final);
    symlinkAtomic(link, name);
    log(`installed ${path.join(final, 'bin')} (${BINARIES.join(', ')}), ${link} -> ${name}`);
    return path.join(link, 'bin');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** @param {string} a @param {string} b same contents */
function sameFile(a, b) {
  try {
    return fs.readFileSync(a).equals(fs.readFileSync(b));
  } catch {
    return false;
  }
}

/** @param {string} p */
function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** @param {string[]} argv */
function parseArgs(argv) {
  const opts = {
    cacheDir: process.env.HULL_CACHE_DIR || '/var/cache/hull',
    mirror: process.env.HULL_DEBIAN_MIRROR || 'https://deb.debian.org/debian',
  };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === '--cache-dir' && v) opts.cacheDir = path.resolve(v);
    else if (argv[i] === '--mirror' && v) opts.mirror = v;
    else throw new Containerd2Error(`usage: containerd2.mjs [--cache-dir DIR] [--mirror URL] (at ${argv[i]})`);
    i++;
  }
  return opts;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  ensureContainerd2(parseArgs(process.argv.slice(2))).catch((err) => {
    console.error(`containerd2: ${err instanceof Containerd2Error ? err.message : err.stack}`);
    process.exit(1);
  });
}
