/**
 * The host programs hull runs, against scripts/host-programs.mjs and the Makefile's APT_PACKAGES: every program
 * spawned anywhere in the tree is on the list (scripts/spawn-scan.ts), and every program on the list is installed by
 * the Debian package the list names, which `make deps` installs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { scanTree, type SpawnSite } from '../spawn-scan';

const ROOT = path.resolve(__dirname, '..', '..', '..');

interface HostProgram {
  name: string;
  path: string;
  package: string;
  why: string;
  guest?: string;
  runtime?: boolean;
}
interface HostPrograms {
  PROGRAMS: readonly HostProgram[];
  APT_PACKAGES: readonly string[];
}

const load = async (): Promise<HostPrograms> =>
  (await import(pathToFileURL(path.join(ROOT, 'scripts', 'host-programs.mjs')).href)) as HostPrograms;

/** /usr-merge: Debian's packages still own /bin, /sbin and /lib paths that are /usr/... on the disk, and the reverse. */
function aliases(p: string): string[] {
  const m = /^\/usr(\/(?:bin|sbin|lib)\/.*)$/.exec(p);
  if (m) return [p, m[1]!];
  return /^\/(?:bin|sbin|lib)\//.test(p) ? [p, `/usr${p}`] : [p];
}

/** The path and each symlink on the way to the file it leads to (an alternatives link such as iptables included). */
function symlinkChain(p: string): string[] {
  const chain = [p];
  for (let cur = p; chain.length < 16;) {
    let target: string;
    try {
      target = fs.readlinkSync(cur);
    } catch {
      break; // not a symlink, or not there
    }
    cur = path.resolve(path.dirname(cur), target);
    chain.push(cur);
  }
  return chain;
}

/** `dpkg -S` of many paths at once: path -> the packages owning it (diversion lines skipped). */
function dpkgOwners(paths: readonly string[]): Map<string, string[]> {
  const r = spawnSync('dpkg', ['-S', ...paths], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  if (r.error) throw r.error;
  const owners = new Map<string, string[]>();
  for (const line of r.stdout.split('\n')) {
    if (line === '' || line.startsWith('diversion by ')) continue;
    const at = line.lastIndexOf(': ');
    if (at < 0) continue;
    owners.set(line.slice(at + 2), line.slice(0, at).split(', '));
  }
  return owners;
}

/** The package owning the first path of the symlink chain that dpkg knows; undefined when none (not installed). */
function owningPackages(
  programs: readonly HostProgram[],
): Map<HostProgram, { owner: string | undefined; chain: string[] }> {
  const chains = new Map(programs.map((p) => [p, symlinkChain(p.path)]));
  const owners = dpkgOwners([...new Set([...chains.values()].flat().flatMap(aliases))]);
  return new Map(
    programs.map((p) => {
      const chain = chains.get(p)!;
      const owner = chain
        .flatMap(aliases)
        .map((c) => owners.get(c))
        .find((o) => o !== undefined);
      return [p, { owner: owner?.join(', '), chain }];
    }),
  );
}

/** The list entry a program named at a spawn site is, or undefined. */
function entryFor(list: readonly HostProgram[], name: string, guest: boolean): HostProgram | undefined {
  if (guest) return list.find((p) => p.guest !== undefined && (name === p.guest || name === p.name));
  return list.find((p) => name === p.name || name === p.path || (p.guest !== undefined && name === p.guest));
}

function unlisted(list: readonly HostProgram[], sites: readonly SpawnSite[]): string[] {
  return sites.flatMap((s) =>
    s.programs
      .filter((n) => !entryFor(list, n, s.guest))
      .map((n) => `${s.where}: ${n}${s.guest ? ' (in the guest)' : ''}`),
  );
}

describe('host programs: every program hull runs comes from a Debian package that make deps installs', function () {
  this.timeout(60_000);
  let list: HostPrograms;
  before(async () => {
    list = await load();
  });

  it("the Makefile's APT_PACKAGES is what host-programs.mjs derives", function () {
    const r = spawnSync('make', ['-s', '--no-print-directory', '-C', ROOT, 'apt-packages'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(/\s+/), [...list.APT_PACKAGES]);
  });

  it('every program on the list is installed from the package it names, and that package is in APT_PACKAGES', function () {
    const problems: string[] = [];
    const programs = list.PROGRAMS.filter((p) => !p.runtime);
    for (const p of programs) {
      if (!list.APT_PACKAGES.includes(p.package))
        problems.push(`${p.name}: its package ${p.package} is not in APT_PACKAGES`);
    }
    for (const [p, { owner, chain }] of owningPackages(programs)) {
      if (owner === undefined)
        problems.push(`${p.name}: ${p.path} is not installed: Debian package ${p.package} (run make deps)`);
      else if (!owner.split(', ').includes(p.package))
        problems.push(`${p.name}: ${chain.join(' -> ')} belongs to Debian package ${owner}, not ${p.package}`);
    }
    assert.deepEqual(problems, []);
  });

  it("every program spawned anywhere in the tree is on the list (the guest's among those the guest image carries)", function () {
    const { sites, problems, files } = scanTree(ROOT);
    assert.ok(files > 100 && sites.length > 50, `scanned ${files} files, ${sites.length} spawn sites`);
    assert.deepEqual(problems, []);
    assert.deepEqual(unlisted(list.PROGRAMS, sites), [], 'programs spawned but not in scripts/host-programs.mjs');
  });

  it("the default paths of the configurable programs (hypervisor/types.ts, config/configuration.toml) are the list's", function () {
    const types = fs.readFileSync(path.join(ROOT, 'hypervisor', 'types.ts'), 'utf8');
    const defaults = [...types.matchAll(/export const DEFAULT_(\w+)_PATH = '([^']+)'/g)].map((m) => m[2]!);
    assert.ok(defaults.length >= 3, 'DEFAULT_QEMU_PATH, DEFAULT_VIRTIOFSD_PATH, DEFAULT_NSENTER_PATH');
    const toml = fs.readFileSync(path.join(ROOT, 'config', 'configuration.toml'), 'utf8');
    const configured = [...toml.matchAll(/^#?\s*\w*path = "(\/usr\/(?:s?bin|lib)\/[^"]+)"/gm)].map((m) => m[1]!);
    const paths = new Set(list.PROGRAMS.map((p) => p.path));
    assert.deepEqual(
      [...defaults, ...configured].filter((p) => !paths.has(p)),
      [],
    );
  });

  it('the list has each program once, with an absolute path and a reason', function () {
    const names = list.PROGRAMS.map((p) => p.name);
    assert.deepEqual(
      names.filter((n, i) => names.indexOf(n) !== i),
      [],
    );
    for (const p of list.PROGRAMS) {
      assert.ok(path.isAbsolute(p.path) && p.why !== '' && p.package !== '', p.name);
      if (p.guest !== undefined) assert.ok(path.isAbsolute(p.guest), p.name);
    }
  });
});

describe('spawn-scan: the convention it relies on', function () {
  let dir: string;
  const scan = (files: Record<string, string>): ReturnType<typeof scanTree> => {
    for (const [name, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), text);
    }
    return scanTree(dir);
  };
  const programs = (r: ReturnType<typeof scanTree>): string[] => r.sites.flatMap((s) => s.programs).sort();
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-spawn-scan-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('sees literals, consts (also imported, also OBJ.key), process.execPath, promisify, require and node-pty', function () {
    const r = scan({
      'a/paths.ts': "export const NFT = '/usr/sbin/nft';\nexport const P = { crun: '/usr/bin/crun' } as const;\n",
      'a/x.ts': [
        "import { execFile, spawn as sp } from 'node:child_process';",
        "import * as cp from 'child_process';",
        "import { promisify } from 'node:util';",
        "import * as pty from 'node-pty';",
        "import { NFT, P } from './paths';",
        "const TC = 'tc';",
        'const run = promisify(execFile);',
        "execFile('ip', []); sp(TC, []); cp.spawnSync(NFT, []); run(P.crun, []); sp(process.execPath, []); pty.spawn('ctr', [], {});",
      ].join('\n'),
      'b/y.js': "const { execFileSync } = require('node:child_process');\nexecFileSync('tar', []);\n",
    });
    assert.deepEqual(r.problems, []);
    assert.deepEqual(programs(r), ['/usr/bin/crun', '/usr/sbin/nft', 'ctr', 'ip', 'node', 'tar', 'tc']);
  });

  it('follows nsenter and unshare to the program they run', function () {
    const r = scan({
      'x.ts':
        "import { execFile } from 'node:child_process';\nexecFile('nsenter', ['--net=/x', '--', 'iptables', '-S']);\nexecFile('unshare', ['-n', 'nft']);\n",
    });
    assert.deepEqual(programs(r), ['iptables', 'nft', 'nsenter', 'unshare']);
  });

  it('refuses a program it cannot see unless a // spawns: comment names it', function () {
    const r = scan({
      'x.ts':
        "import { execFile } from 'node:child_process';\nexport function f(bin: string) {\n  execFile(bin, []);\n  // spawns: qemu-system-x86_64; configured\n  execFile(bin, []);\n}\n",
    });
    assert.equal(r.problems.length, 1);
    assert.match(r.problems[0]!, /^x\.ts:3: cannot see which program/);
    assert.deepEqual(programs(r), ['qemu-system-x86_64']);
  });

  it('checks the callers of a wrapper, across files, with the parameter default when the argument is left out', function () {
    const r = scan({
      'w.ts':
        "import { execFile } from 'node:child_process';\nexport function run(tool: string, args: string[]) {\n  // spawns: wrapper\n  execFile(tool, args);\n}\nexport class P { static spawn(argv: string[]) { return execFile(argv[0]!, argv.slice(1)); } // spawns: wrapper\n}\nexport function ip(bin = '/usr/sbin/ip') { return () => execFile(bin, []); } // spawns: wrapper\n",
      'c.ts':
        "import { run, P, ip } from './w';\nrun('nft', []);\nP.spawn(['mkfs.ext4']);\nip();\nfunction g(t: string) { run(t, []); }\n",
    });
    assert.deepEqual(
      r.problems.map((p) => p.slice(0, 7)),
      ['c.ts:5:'],
    );
    assert.deepEqual(programs(r), ['/usr/sbin/ip', 'mkfs.ext4', 'nft']);
  });

  it('refuses a shell: exec, execSync and a shell option', function () {
    const r = scan({
      'x.ts': "import { exec, spawn } from 'node:child_process';\nexec('ls');\nspawn('ls', [], { shell: true });\n",
    });
    assert.equal(r.problems.length, 2);
  });

  it("takes code under agent/ (not agent/test/) as the guest's", function () {
    const r = scan({
      'agent/a.ts': "import { execFile } from 'node:child_process';\nexecFile('/bin/busybox', []);\n",
      'agent/test/b.ts': "import { execFile } from 'node:child_process';\nexecFile('ip', []);\n",
    });
    assert.deepEqual(r.sites.map((s) => [s.programs[0], s.guest]).sort(), [
      ['/bin/busybox', true],
      ['ip', false],
    ]);
  });
});
