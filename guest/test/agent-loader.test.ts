/** The guest agent's loader: runs the bundle with its V8 code cache, and makes that cache without starting the agent. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUNDLE_FILE, CODE_CACHE_FILE, LOAD_ONLY_ENV } from '../agent-loader';

const LOADER = path.join(__dirname, '..', 'agent-loader.js');

/** A bundle that requires a package from its own node_modules (as the agent does its native ones) and reports. */
const BUNDLE = `
const pkg = require('native-ish');
const cache = globalThis[Symbol.for('hull.agent.codeCache')];
function start() { process.stdout.write(JSON.stringify({ pkg: pkg.kind, cache, dirname: __dirname, isModule: typeof module.exports })); }
if (process.env.${LOAD_ONLY_ENV}) process.stdout.write('load-only');
else start();
`;

describe('guest agent loader', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-loader-'));
    fs.copyFileSync(LOADER, path.join(dir, 'main.js'));
    fs.writeFileSync(path.join(dir, BUNDLE_FILE), BUNDLE);
    fs.mkdirSync(path.join(dir, 'node_modules', 'native-ish'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'node_modules', 'native-ish', 'index.js'), "exports.kind = 'external';\n");
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const node = (...args: string[]): string =>
    execFileSync(process.execPath, [path.join(dir, 'main.js'), ...args], { encoding: 'utf8' });
  const cacheFile = (): string => path.join(dir, CODE_CACHE_FILE);

  it('runs the bundle without a cache, with require resolving from its folder', () => {
    assert.deepEqual(JSON.parse(node()), { pkg: 'external', cache: 'absent', dirname: dir, isModule: 'object' });
  });

  it('writes the cache after loading the bundle in load-only mode, and V8 accepts it', () => {
    assert.equal(node('--write-code-cache', cacheFile()), 'load-only');
    assert.ok(fs.statSync(cacheFile()).size > 0);
    assert.equal(JSON.parse(node()).cache, 'accepted');
  });

  it('still runs the bundle when V8 rejects the cache', () => {
    node('--write-code-cache', cacheFile());
    // Another source of the same name: the cache no longer matches it (V8 checks the source's length).
    fs.appendFileSync(path.join(dir, BUNDLE_FILE), '\n// changed\n');
    assert.deepEqual(JSON.parse(node()), { pkg: 'external', cache: 'rejected', dirname: dir, isModule: 'object' });
    fs.writeFileSync(cacheFile(), 'not a code cache');
    assert.equal(JSON.parse(node()).cache, 'rejected');
  });

  it('refuses other arguments', () => {
    assert.throws(
      () => execFileSync(process.execPath, [path.join(dir, 'main.js'), '--bogus'], { stdio: 'pipe' }),
      /usage/,
    );
  });
});
