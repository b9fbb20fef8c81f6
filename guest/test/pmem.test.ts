/** The root image's DAX layout: the PFN info block (guest/pmem.ts) and an ext4 image at an offset. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fletcher64, isPfnInfoBlock, PFN_INFO_SIZE, pfnInfoBlock, ROOT_DATA_OFFSET, ROOT_IMAGE_ALIGN } from '../pmem';
import { makeExt4, stageBase, writeGuestFile } from '../rootfs';
const MiB = 1024 * 1024;
const hasE2fsprogs = spawnSync('mkfs.ext4', ['-V'], { encoding: 'utf8' }).error === undefined;

describe('guest pmem layout', () => {
  it('fletcher64 is the kernel nd_fletcher64: 32-bit little-endian words, hi accumulates lo', () => {
    const words = Buffer.alloc(12);
    words.writeUInt32LE(1, 0);
    words.writeUInt32LE(2, 4);
    words.writeUInt32LE(0xffffffff, 8);
    // lo: 1, 3, 2 (wrapped); hi: 1, 4, 6
    assert.equal(fletcher64(words), (6n << 32n) | 2n);
    assert.equal(fletcher64(Buffer.alloc(4096)), 0n);
  });

  it('the PFN info block: signature, version 1.2, dataoff, npfns, mode ram, align, zero parent uuid, checksum', () => {
    const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const size = 150 * MiB;
    const b = pfnInfoBlock(size, uuid);
    assert.equal(b.length, PFN_INFO_SIZE);
    assert.equal(b.toString('latin1', 0, 16), 'NVDIMM_PFN_INFO\0');
    assert.deepEqual(b.subarray(16, 32), uuid);
    assert.deepEqual(b.subarray(32, 48), Buffer.alloc(16), 'parent uuid: a label-less namespace has none');
    assert.deepEqual([b.readUInt16LE(52), b.readUInt16LE(54)], [1, 2]);
    assert.equal(b.readBigUInt64LE(56), BigInt(ROOT_DATA_OFFSET));
    assert.equal(b.readBigUInt64LE(64), BigInt((size - ROOT_DATA_OFFSET) / 4096));
    assert.equal(b.readUInt32LE(72), 1, 'PFN_MODE_RAM: struct pages in guest RAM, nothing written to the image');
    assert.equal(b.readUInt32LE(84), ROOT_DATA_OFFSET);
    assert.ok(isPfnInfoBlock(b));
    const bent = Buffer.from(b);
    bent.writeUInt8(bent.readUInt8(100) ^ 1, 100);
    assert.ok(!isPfnInfoBlock(bent), 'a changed byte breaks the checksum');
  });

  it('refuses an image size that is not whole 2 MiB above the header', () => {
    for (const size of [0, ROOT_DATA_OFFSET, 150 * MiB + 4096, 1.5])
      assert.throws(() => pfnInfoBlock(size), /must be a multiple/);
  });

  it('makeExt4 with the layout: ext4 at 2 MiB, the file whole 2 MiB, the header area left for the PFN block', async function () {
    if (!hasE2fsprogs || process.getuid?.() !== 0) this.skip();
    this.timeout(20000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-pmem-'));
    try {
      const staging = path.join(dir, 'staging');
      await stageBase(staging);
      await writeGuestFile(staging, '/sbin/init', '#!/bin/sh\n', 0o755);
      const image = path.join(dir, 'rootfs.img');
      const r = await makeExt4(staging, image, '01234567-89ab-cdef-0123-456789abcdef', {
        offsetBytes: ROOT_DATA_OFFSET,
        alignBytes: ROOT_IMAGE_ALIGN,
      });
      const size = fs.statSync(image).size;
      assert.equal(size, r.sizeBytes);
      assert.equal(size % ROOT_IMAGE_ALIGN, 0);
      const data = fs.readFileSync(image);
      assert.deepEqual(data.subarray(0, ROOT_DATA_OFFSET), Buffer.alloc(ROOT_DATA_OFFSET), 'nothing before 2 MiB');
      assert.equal(data.readUInt16LE(ROOT_DATA_OFFSET + 1080), 0xef53, 'the ext4 superblock at 2 MiB');
      const fsImage = path.join(dir, 'fs.img');
      fs.writeFileSync(fsImage, data.subarray(ROOT_DATA_OFFSET));
      const fsck = spawnSync('e2fsck', ['-n', '-f', fsImage], { encoding: 'utf8' });
      assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
      assert.match(spawnSync('debugfs', ['-R', 'ls -l /sbin', fsImage], { encoding: 'utf8' }).stdout, / init/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
