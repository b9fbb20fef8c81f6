import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import { hostname, identifier, mountOptions, pathUnder, plainName, realPathUnder, uint16 } from '../validate';

describe('agent input validation', () => {
  it("takes ids by containerd's identifier rule, the host's too (protos/identifiers.ts)", () => {
    assert.equal(identifier('c1.a_b-c', 'container id'), 'c1.a_b-c');
    for (const bad of ['', '.', '..', 'a/b', '-x', 'x-', 'a..b', 'a b', 'x\0y', 'a'.repeat(77)]) {
      assert.throws(
        () => identifier(bad, 'container id'),
        (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT && /^container id/.test(e.message),
        JSON.stringify(bad),
      );
    }
  });

  it('accepts plain names and refuses path-like ones', () => {
    assert.equal(plainName('kataShared', 'tag'), 'kataShared');
    for (const bad of ['', '.', '..', 'a/b', '../x', '-x', 'a b', 'x\0y', 'a'.repeat(200)])
      assert.throws(() => plainName(bad, 'tag'), /not a plain name/);
  });

  it('takes terminal sizes from 0 to 65535 only', () => {
    assert.equal(uint16(65535, 'row'), 65535);
    assert.equal(uint16(undefined, 'row'), 0);
    for (const bad of [65536, -1, 1.5, NaN, 'x'])
      assert.throws(() => uint16(bad, 'row'), /not an integer from 0 to 65535/);
  });

  it('keeps paths strictly below their root, normalized', () => {
    assert.equal(pathUnder('/run/k', '/run/k/a/b', 'p'), '/run/k/a/b');
    for (const bad of ['/run/k', '/run/k/', '/run/kx/a', 'run/k/a', '/run/k/../x', '/run/k//a', '/run/k/./a', '/etc']) {
      assert.throws(() => pathUnder('/run/k', bad, 'p'), /not/, bad);
    }
  });

  it('refuses a path whose symlinks lead outside its root', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-validate-'));
    try {
      fs.writeFileSync(path.join(root, 'f'), 'x');
      fs.symlinkSync('/etc/passwd', path.join(root, 'escape'));
      fs.symlinkSync('f', path.join(root, 'inside'));
      assert.equal(realPathUnder(root, path.join(root, 'inside'), 'p'), fs.realpathSync(path.join(root, 'f')));
      assert.throws(() => realPathUnder(root, path.join(root, 'escape'), 'p'), /resolves outside/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('checks host names and mount options', () => {
    assert.equal(hostname('pod-1.example'), 'pod-1.example');
    for (const bad of ['-a', 'a_b', 'a'.repeat(65), 'a..b']) assert.throws(() => hostname(bad));
    assert.deepEqual(mountOptions(['ro', 'nodev', 'mode=0755']), ['ro', 'nodev', 'mode=0755']);
    for (const bad of ['ro,exec', 'x-evil', 'mode=07;55', 'context=system_u'])
      assert.throws(() => mountOptions([bad]), /not allowed/);
  });
});
