/** The up-to-date fingerprint. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { canonicalJson, inputIdentities, outputsIntact, stampKey } from '../stamp';

describe('guest build stamp', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-stamp-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('canonical JSON ignores key order and flattens maps', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [2, 1], c: null } }),
      canonicalJson({ a: { c: null, d: [2, 1] }, b: 1 }),
    );
    assert.equal(
      canonicalJson(
        new Map([
          ['y', 1],
          ['x', 2],
        ]),
      ),
      '{"x":2,"y":1}',
    );
  });

  it('changes when an input file or a setting changes, not otherwise', async () => {
    const file = path.join(dir, 'input');
    fs.writeFileSync(file, 'one');
    const key = async (settings: unknown): Promise<string> =>
      stampKey(settings, await inputIdentities([file, path.join(dir, 'absent')]));
    const first = await key({ a: 1 });
    assert.equal(await key({ a: 1 }), first);
    assert.notEqual(await key({ a: 2 }), first);
    fs.writeFileSync(file, 'two!');
    assert.notEqual(await key({ a: 1 }), first);
  });

  it('notices a missing or resized output', async () => {
    fs.writeFileSync(path.join(dir, 'a.img'), 'abc');
    const stamp = { key: 'k', inputs: [], outputs: { 'a.img': 3 } };
    assert.equal(await outputsIntact(dir, stamp), true);
    fs.writeFileSync(path.join(dir, 'a.img'), 'ab');
    assert.equal(await outputsIntact(dir, stamp), false);
    fs.rmSync(path.join(dir, 'a.img'));
    assert.equal(await outputsIntact(dir, stamp), false);
  });
});
