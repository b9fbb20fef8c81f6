/** Bundling the agent with esbuild: one file, native packages left external and copied next to it. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleAgent, keepNativeFile } from '../agent-bundle';

describe('guest agent bundle', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bundle-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (rel: string, text: string): string => {
    const file = path.join(dir, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    return file;
  };

  it('bundles the entry and what it requires into one runnable file, and lists the inputs', async () => {
    const entry = write(
      'app/main.js',
      "const { greet } = require('./lib'); const lib = require('dep'); process.stdout.write(greet(lib.name));\n",
    );
    write('app/lib.js', "exports.greet = (n) => 'hello ' + n;\n");
    write('app/node_modules/dep/package.json', '{"name":"dep","main":"index.js"}');
    write('app/node_modules/dep/index.js', "exports.name = 'dep';\n");
    const out = path.join(dir, 'out');
    const bundle = await bundleAgent(entry, out, ['node-pty']);
    assert.deepEqual(fs.readdirSync(out), ['main.js']);
    assert.equal(execFileSync(process.execPath, [path.join(out, 'main.js')], { encoding: 'utf8' }), 'hello dep');
    assert.deepEqual(bundle.natives, []);
    assert.ok(bundle.inputs.includes(path.join(dir, 'app/lib.js')));
    assert.ok(bundle.inputs.includes(path.join(dir, 'app/node_modules/dep/index.js')));
    assert.equal(bundle.bytes, fs.statSync(path.join(out, 'main.js')).size);
  });

  it('keeps a native package external and copies it next to the bundle', async () => {
    const entry = write('app/main.js', "const pty = require('node-pty'); process.stdout.write(pty.kind);\n");
    write('app/node_modules/node-pty/package.json', '{"name":"node-pty","main":"lib/index.js"}');
    write('app/node_modules/node-pty/lib/index.js', "exports.kind = require('../build/Release/marker.js');\n");
    write('app/node_modules/node-pty/build/Release/marker.js', "module.exports = 'native';\n");
    write('app/node_modules/node-pty/build/Release/pty.node', 'not really ELF');
    const out = path.join(dir, 'out');
    const bundle = await bundleAgent(entry, out, ['node-pty']);
    assert.deepEqual(bundle.natives, ['node-pty']);
    assert.deepEqual(bundle.nativeObjects, [path.join(out, 'node_modules/node-pty/build/Release/pty.node')]);
    assert.match(fs.readFileSync(path.join(out, 'main.js'), 'utf8'), /require\("node-pty"\)/);
    assert.equal(execFileSync(process.execPath, [path.join(out, 'main.js')], { encoding: 'utf8' }), 'native');
  });

  it('copies only package.json and what its "files" list names, and refuses a list it cannot read plainly', async () => {
    const entry = write('app/main.js', "process.stdout.write(require('hull-vsock').kind);\n");
    write(
      'app/node_modules/hull-vsock/package.json',
      '{"name":"hull-vsock","main":"dist/index.js","files":["dist","build/Release/x.node"]}',
    );
    write('app/node_modules/hull-vsock/dist/index.js', "exports.kind = 'vsock';\n");
    write('app/node_modules/hull-vsock/build/Release/x.node', 'not really ELF');
    write('app/node_modules/hull-vsock/build/Release/obj.target/x.o', 'object');
    write('app/node_modules/hull-vsock/src/x.c', 'source');
    const out = path.join(dir, 'out');
    const bundle = await bundleAgent(entry, out, ['hull-vsock']);
    const copied = path.join(out, 'node_modules/hull-vsock');
    assert.deepEqual(fs.readdirSync(copied, { recursive: true }).map(String).sort(), [
      'build',
      'build/Release',
      'build/Release/x.node',
      'dist',
      'dist/index.js',
      'package.json',
    ]);
    assert.deepEqual(bundle.nativeObjects, [path.join(copied, 'build/Release/x.node')]);
    assert.equal(execFileSync(process.execPath, [path.join(out, 'main.js')], { encoding: 'utf8' }), 'vsock');

    write(
      'app/node_modules/hull-vsock/package.json',
      '{"name":"hull-vsock","main":"dist/index.js","files":["dist/*.js"]}',
    );
    await assert.rejects(bundleAgent(entry, path.join(dir, 'out2'), ['hull-vsock']), /not a plain relative path/);
  });

  it('copies only what a native package needs at run time on this platform', async () => {
    const entry = write('app/main.js', "require('node-pty');\n");
    const files = [
      'package.json',
      'LICENSE',
      'lib/index.js',
      'lib/index.js.map',
      'lib/index.test.js',
      'build/Release/pty.node',
      'build/Release/obj.target/pty.o',
      'build/Makefile',
      'src/pty.cc',
      'typings/node-pty.d.ts',
      'prebuilds/win32-x64/pty.node',
    ];
    for (const f of files)
      write(`app/node_modules/node-pty/${f}`, f === 'package.json' ? '{"name":"node-pty","main":"lib/index.js"}' : 'x');
    const out = path.join(dir, 'out');
    const bundle = await bundleAgent(entry, out, ['node-pty']);
    const copied = (d: string): string[] =>
      fs
        .readdirSync(d, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => path.relative(path.join(out, 'node_modules/node-pty'), path.join(e.parentPath, e.name)))
        .sort();
    assert.deepEqual(copied(path.join(out, 'node_modules/node-pty')), [
      'LICENSE',
      'build/Release/pty.node',
      'lib/index.js',
      'package.json',
    ]);
    assert.ok(!bundle.inputs.some((f) => f.endsWith('pty.cc')), 'files left out are not inputs either');
  });

  it('keeps the prebuilt binaries of the platform asked for only', () => {
    assert.equal(keepNativeFile('prebuilds/linux-x64/pty.node', 'linux-x64'), true);
    assert.equal(keepNativeFile('prebuilds/darwin-arm64/pty.node', 'linux-x64'), false);
    assert.equal(keepNativeFile('build/Release/.deps/x.d', 'linux-x64'), false);
    assert.equal(keepNativeFile('lib/shared/conout.js', 'linux-x64'), true);
  });

  it('says how to fix a missing entry point', async () => {
    await assert.rejects(bundleAgent(path.join(dir, 'nope.js'), dir, []), /not found: build the agent first/);
  });
});
