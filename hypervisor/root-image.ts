/**
 * How the guest's root image is attached: a read-only virtio-blk disk (the guest copies what it reads into its own
 * page cache), or through DAX on an nvdimm or virtio-pmem device backed by the image file (the guest maps the
 * host's page cache of the file: node and its libraries are in host memory once, shared by every VM). See
 * README.md, "Root image through DAX".
 *
 * The image layout comes from guest/pmem.ts (the builder): the ext4 filesystem at ROOT_IMAGE_DATA_OFFSET, a PFN
 * info block at 4 KiB (what makes the guest's /dev/pmem0 DAX-capable), the file a multiple of 2 MiB. The builder
 * writes the block only when the guest kernel has FS_DAX and the pmem modules, so "the image has a PFN info block"
 * is what says DAX can work; without it the choice falls back to virtio-blk, with the reason logged.
 */
import * as fs from 'node:fs';

/** virtio-blk: /dev/vda; nvdimm: ACPI NFIT (q35 `nvdimm=on`), Kata's default on QEMU; virtio-pmem: a PCI device. */
export type RootImageDevice = 'virtio-blk' | 'nvdimm' | 'virtio-pmem';
export const ROOT_IMAGE_DEVICES: readonly RootImageDevice[] = ['virtio-blk', 'nvdimm', 'virtio-pmem'];

/** Where the filesystem starts in an image made by this builder (guest/pmem.ts ROOT_DATA_OFFSET). */
export const ROOT_IMAGE_DATA_OFFSET = 2 * 1024 * 1024;
/** A DAX image's size is a multiple of this (guest/pmem.ts ROOT_IMAGE_ALIGN). */
export const ROOT_IMAGE_ALIGN = 2 * 1024 * 1024;
/** The PFN info block (guest/pmem.ts): at 4 KiB, starting with this signature. */
export const PFN_INFO_OFFSET = 4096;
export const PFN_SIGNATURE = 'NVDIMM_PFN_INFO\0';
/** ext4's superblock magic (0xEF53, little-endian) is at byte 1080 of the filesystem. */
const EXT4_MAGIC_OFFSET = 1080;

/** What the driver attaches: the device, where the filesystem starts in the file, the file's size. */
export interface RootImage {
  device: RootImageDevice;
  /** Bytes QEMU skips for virtio-blk (the raw driver's offset); 0 for an image without the DAX layout. */
  dataOffset: number;
  /** The file's size: the pmem device's size (DAX only). */
  sizeBytes: number;
}

/** The bytes chooseRootImage looks at (injectable for tests). */
export interface ImageProbe {
  /** `length` bytes at `offset` (fewer at the end of the file); throws when the file cannot be read. */
  read(file: string, offset: number, length: number): Buffer;
  size(file: string): number;
}

export const realImageProbe: ImageProbe = {
  read(file, offset, length) {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(length);
      const n = fs.readSync(fd, buf, 0, length, offset);
      return buf.subarray(0, n);
    } finally {
      fs.closeSync(fd);
    }
  },
  size: (file) => fs.statSync(file).size,
};

function hasExt4At(probe: ImageProbe, image: string, offset: number): boolean {
  const magic = probe.read(image, offset + EXT4_MAGIC_OFFSET, 2);
  return magic.length === 2 && magic.readUInt16LE(0) === 0xef53;
}

/**
 * The root image for `wanted`: DAX when asked and the image has the layout and PFN info block, else virtio-blk
 * (with why). An image whose filesystem starts at 0 (built before the DAX layout) is attached as virtio-blk at
 * offset 0, as before.
 */
export function chooseRootImage(
  wanted: RootImageDevice,
  image: string,
  probe: ImageProbe = realImageProbe,
): { value: RootImage; reason: string } {
  const sizeBytes = probe.size(image);
  const dataOffset =
    sizeBytes > ROOT_IMAGE_DATA_OFFSET && hasExt4At(probe, image, ROOT_IMAGE_DATA_OFFSET) ? ROOT_IMAGE_DATA_OFFSET : 0;
  const blk = (reason: string): { value: RootImage; reason: string } => ({
    value: { device: 'virtio-blk', dataOffset, sizeBytes },
    reason,
  });
  if (wanted === 'virtio-blk') return blk('configured (root_image_dax = false)');
  if (dataOffset === 0)
    return blk(
      `the root image ${image} has no ext4 at ${ROOT_IMAGE_DATA_OFFSET} bytes (built before the DAX layout: run \`make guest\`); using virtio-blk`,
    );
  if (sizeBytes % ROOT_IMAGE_ALIGN !== 0)
    return blk(`the root image's size ${sizeBytes} is not a multiple of ${ROOT_IMAGE_ALIGN} bytes; using virtio-blk`);
  if (probe.read(image, PFN_INFO_OFFSET, PFN_SIGNATURE.length).toString('latin1') !== PFN_SIGNATURE)
    return blk(
      `the root image has no PFN info block (its guest kernel lacks FS_DAX or the nvdimm/pmem modules: see guest/out/manifest.json rootDax.why); using virtio-blk`,
    );
  return { value: { device: wanted, dataOffset, sizeBytes }, reason: `configured; the image has the DAX layout` };
}
