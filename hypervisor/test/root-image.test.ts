/** How the root image is attached: chooseRootImage against fake and real images. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  chooseRootImage,
  PFN_INFO_OFFSET,
  PFN_SIGNATURE,
  realImageProbe,
  ROOT_IMAGE_DATA_OFFSET,
  type ImageProbe,
} from '../root-image';

const MiB = 1024 * 1024;

/** An image in memory: ext4's magic at `fsAt` (or none), a PFN signature (or not), `size` bytes. */
function fakeImage(o: { size: number; fsAt?: number; pfn?: boolean }): ImageProbe {
  const head = Buffer.alloc(ROOT_IMAGE_DATA_OFFSET + 4096);
  if (o.fsAt !== undefined) head.writeUInt16LE(0xef53, o.fsAt + 1080);
  if (o.pfn) head.write(PFN_SIGNATURE, PFN_INFO_OFFSET, 'latin1');
  return {
    size: () => o.size,
    read: (_file, offset, length) => head.subarray(offset, Math.min(offset + length, o.size)),
  };
}

describe('hypervisor/root-image', () => {
  it('DAX when asked and the image has the layout and the PFN info block', () => {
    const probe = fakeImage({ size: 150 * MiB, fsAt: ROOT_IMAGE_DATA_OFFSET, pfn: true });
    for (const device of ['nvdimm', 'virtio-pmem'] as const) {
      const c = chooseRootImage(device, '/img', probe);
      assert.deepEqual(c.value, { device, dataOffset: ROOT_IMAGE_DATA_OFFSET, sizeBytes: 150 * MiB });
    }
    const blk = chooseRootImage('virtio-blk', '/img', probe);
    assert.deepEqual(blk.value, { device: 'virtio-blk', dataOffset: ROOT_IMAGE_DATA_OFFSET, sizeBytes: 150 * MiB });
  });

  it('falls back to virtio-blk, saying why: no PFN block (kernel without DAX), an odd size, an old image', () => {
    const noPfn = chooseRootImage('nvdimm', '/img', fakeImage({ size: 150 * MiB, fsAt: ROOT_IMAGE_DATA_OFFSET }));
    assert.equal(noPfn.value.device, 'virtio-blk');
    assert.equal(noPfn.value.dataOffset, ROOT_IMAGE_DATA_OFFSET);
    assert.match(noPfn.reason, /no PFN info block .*FS_DAX.*using virtio-blk/);
    const odd = chooseRootImage(
      'nvdimm',
      '/img',
      fakeImage({ size: 150 * MiB + 4096, fsAt: ROOT_IMAGE_DATA_OFFSET, pfn: true }),
    );
    assert.equal(odd.value.device, 'virtio-blk');
    assert.match(odd.reason, /not a multiple of 2097152/);
    const old = chooseRootImage('virtio-pmem', '/img', fakeImage({ size: 150 * MiB, fsAt: 0 }));
    assert.deepEqual(old.value, { device: 'virtio-blk', dataOffset: 0, sizeBytes: 150 * MiB });
    assert.match(old.reason, /make guest/);
    const tiny = chooseRootImage('nvdimm', '/img', fakeImage({ size: MiB }));
    assert.deepEqual(tiny.value, { device: 'virtio-blk', dataOffset: 0, sizeBytes: MiB });
  });

  it('the image `make guest` built has the DAX layout, when there is one', function () {
    const image = path.resolve(__dirname, '..', '..', '..', 'guest', 'out', 'rootfs.img');
    const manifest = path.join(path.dirname(image), 'manifest.json');
    if (!fs.existsSync(image) || !fs.existsSync(manifest)) this.skip();
    const m = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { rootDax?: { pfnInfo: boolean } };
    if (m.rootDax === undefined) this.skip(); // built before the DAX layout
    const c = chooseRootImage('nvdimm', image);
    assert.equal(c.value.device, m.rootDax.pfnInfo ? 'nvdimm' : 'virtio-blk', c.reason);
    assert.equal(c.value.dataOffset, ROOT_IMAGE_DATA_OFFSET);
  });

  it('realImageProbe reads short at the end of a file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-rootimg-'));
    try {
      const f = path.join(dir, 'img');
      fs.writeFileSync(f, Buffer.from('abcdef'));
      assert.equal(realImageProbe.size(f), 6);
      assert.equal(realImageProbe.read(f, 4, 10).toString(), 'ef');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
