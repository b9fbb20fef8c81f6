import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../../errors';
import {
  classifyToolError,
  decodeOctal,
  deepestFirst,
  isUnder,
  mountOverlay,
  mountsUnder,
  parseMountInfo,
} from '../mount';

const SAMPLE = [
  '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard',
  '40 27 0:50 / /run/a\\040b rw,relatime shared:5 master:2 - tmpfs tmp\\011fs rw,size=4k',
  '41 40 0:51 / /run/a\\040b/c\\134d ro,nosuid - overlay overlay ro,lowerdir=/l',
  '42 27 0:52 / /run/ab rw - tmpfs tmpfs rw',
  '',
].join('\n');

describe('fs-share mount', () => {
  it('decodes octal escapes', () => {
    assert.equal(decodeOctal('a\\040b\\011c\\012d\\134e'), 'a b\tc\nd\\e');
    assert.equal(decodeOctal('plain'), 'plain');
  });

  it('parses mountinfo, optional fields included', () => {
    const list = parseMountInfo(SAMPLE);
    assert.equal(list.length, 4);
    assert.deepEqual(list[1], {
      id: 40,
      parentId: 27,
      root: '/',
      mountPoint: '/run/a b',
      options: ['rw', 'relatime'],
      optional: ['shared:5', 'master:2'],
      fsType: 'tmpfs',
      source: 'tmp\tfs',
      superOptions: ['rw', 'size=4k'],
    });
    assert.equal(list[2]!.mountPoint, '/run/a b/c\\d');
    assert.deepEqual(list[2]!.options, ['ro', 'nosuid']);
    assert.throws(() => parseMountInfo('1 2 3\n'), InternalError);
  });

  it('selects mounts under a folder by whole path components', async () => {
    assert.equal(isUnder('/run/ab', '/run/a'), false);
    assert.equal(isUnder('/run/a/b', '/run/a'), true);
    assert.equal(isUnder('/run/a', '/run/a/'), true);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-mi-'));
    try {
      fs.writeFileSync(path.join(tmp, 'mountinfo'), SAMPLE);
      const under = await mountsUnder('/run/a b', path.join(tmp, 'mountinfo'));
      assert.deepEqual(
        under.map((m) => m.id),
        [40, 41],
      );
      await assert.rejects(mountsUnder('/x', path.join(tmp, 'missing')), UnavailableError);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    assert.ok((await mountsUnder('/')).some((m) => m.mountPoint === '/'));
  });

  it('orders unmounts deepest first, later mounts first at the same depth', () => {
    const list = parseMountInfo(
      [
        '1 0 0:1 / /b rw - x x rw',
        '2 1 0:2 / /b/c/d rw - x x rw',
        '3 1 0:3 / /b/c rw - x x rw',
        '4 1 0:4 / /b/c rw - x x rw',
      ].join('\n'),
    );
    assert.deepEqual(
      deepestFirst(list).map((m) => m.id),
      [2, 4, 3, 1],
    );
  });

  it('classifies tool failures', () => {
    const c = (stderr: string, cause: unknown = new Error('exit 32')) => classifyToolError('umount /x', stderr, cause);
    assert.ok(c('umount: /x: target is busy.') instanceof FailedPreconditionError);
    assert.ok(c('umount: /x: not mounted.') instanceof NotFoundError);
    assert.ok(c('mount: /x: special device /y does not exist.') instanceof NotFoundError);
    assert.ok(c('mount: /x: must be superuser to use mount.') instanceof FailedPreconditionError);
    assert.ok(c("mount: /x: unknown filesystem type 'foo'.") instanceof InvalidArgumentError);
    assert.ok(c('something else') instanceof InternalError);
    assert.ok(c('', Object.assign(new Error('spawn mount ENOENT'), { code: 'ENOENT' })) instanceof UnavailableError);
    assert.ok(c('', Object.assign(new Error('killed'), { killed: true })) instanceof UnavailableError);
    const err = c('umount: /x: target is busy.');
    assert.match(err.message, /target is busy/);
    assert.ok(err.cause instanceof Error);
  });

  it('refuses comma tricks before running anything', () => {
    assert.throws(() => mountOverlay(['lowerdir=/a,upperdir=/b'], '/t'), InvalidArgumentError);
  });
});
