/** Root filesystem helpers: ext4 images made with mkfs.ext4 -d. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeExt4, stageBase, writeGuestFile } from '../rootfs';

const hasE2fsprogs = spawnSync('mkfs.ext4', ['-V'], { encoding: 'utf8' }).error === undefined;

describe('guest rootfs', () => {
  it('makes an ext4 image of a staging folder, owned by root, with modes and symlinks kept', async function () {
    if (!hasE2fsprogs || process.getuid?.() !== 0) this.skip();
    this.timeout(20000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-rootfs-'));
    try {
      const staging = path.join(dir, 'staging');
      await stageBase(staging);
      await writeGuestFile(staging, '/sbin/init', '#!/bin/sh\n', 0o755);
      await writeGuestFile(staging, '/usr/bin/big', Buffer.alloc(3 * 1024 * 1024, 1), 0o755);
      const image = path.join(dir, 'rootfs.img');
      const result = await makeExt4(staging, image, '01234567-89ab-cdef-0123-456789abcdef');
      assert.equal(fs.statSync(image).size, result.sizeBytes);
      assert.ok(
        result.sizeBytes < result.usedBytes + 16 * 1024 * 1024,
        `image ${result.sizeBytes} is much bigger than content ${result.usedBytes}`,
      );
      const ls = (p: string): string => spawnSync('debugfs', ['-R', `ls -l ${p}`, image], { encoding: 'utf8' }).stdout;
      assert.match(ls('/sbin'), /100755 \(1\)\s+0\s+0\s+\d+ .* init/);
      assert.match(ls('/'), /41777 \(2\)\s+0\s+0 .* tmp/);
      assert.match(ls('/etc'), /120777 \(7\)\s+0\s+0 .* mtab/);
      const fsck = spawnSync('e2fsck', ['-n', '-f', image], { encoding: 'utf8' });
      assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
      const dump = spawnSync('dumpe2fs', ['-h', image], { encoding: 'utf8' }).stdout;
      assert.doesNotMatch(dump, /has_journal/);
      assert.match(dump, /Filesystem UUID:\s+01234567-89ab-cdef-0123-456789abcdef/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
