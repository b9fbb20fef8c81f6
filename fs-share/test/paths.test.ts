import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import { assertNoSymlink, ensureDir, ensureFile, removeMountTargets } from '../paths';

describe('fs-share paths (no-follow)', () => {
  let base: string;
  let outside: string;
  beforeEach(() => {
    const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'hull-paths-')));
    base = path.join(tmp, 'base');
    outside = path.join(tmp, 'outside');
    fs.mkdirSync(base);
    fs.mkdirSync(outside);
  });
  afterEach(() => fs.rmSync(path.dirname(base), { recursive: true, force: true }));

  it('creates folders and files, idempotently', async () => {
    await ensureDir(base, path.join(base, 'a', 'b'));
    await ensureDir(base, path.join(base, 'a', 'b'));
    await ensureFile(base, path.join(base, 'a', 'f'));
    await ensureFile(base, path.join(base, 'a', 'f'));
    assert.ok(fs.statSync(path.join(base, 'a', 'b')).isDirectory());
    assert.equal(fs.statSync(path.join(base, 'a', 'f')).size, 0);
  });

  it('refuses symlinks in any component and targets outside base', async () => {
    fs.symlinkSync(outside, path.join(base, 'link'));
    await assert.rejects(ensureDir(base, path.join(base, 'link', 'x')), FailedPreconditionError);
    await assert.rejects(ensureFile(base, path.join(base, 'link', 'f')), FailedPreconditionError);
    await assert.rejects(ensureFile(base, path.join(base, 'link')), FailedPreconditionError);
    await assert.rejects(assertNoSymlink(base, path.join(base, 'link', 'y')), FailedPreconditionError);
    await assert.rejects(ensureDir(base, path.join(base, '..', 'outside', 'x')), InvalidArgumentError);
    await assertNoSymlink(base, path.join(base, 'missing', 'deeper'));
    assert.deepEqual(fs.readdirSync(outside), []);
  });

  it('removes mount targets and links, never data', async () => {
    await ensureDir(base, path.join(base, 'c', 'rootfs'));
    await ensureFile(base, path.join(base, 'c', 'volumes', 'v'));
    fs.writeFileSync(path.join(outside, 'keep'), 'data');
    fs.symlinkSync(outside, path.join(base, 'c', 'link'));
    await removeMountTargets(base, path.join(base, 'c'));
    assert.equal(fs.existsSync(path.join(base, 'c')), false);
    assert.equal(fs.readFileSync(path.join(outside, 'keep'), 'utf8'), 'data');
    await removeMountTargets(base, path.join(base, 'c'));

    fs.mkdirSync(path.join(base, 'd'));
    fs.writeFileSync(path.join(base, 'd', 'data'), 'not empty');
    await assert.rejects(removeMountTargets(base, path.join(base, 'd')), FailedPreconditionError);
    assert.equal(fs.readFileSync(path.join(base, 'd', 'data'), 'utf8'), 'not empty');
  });
});
