/**
 * The root image's layout for DAX (hypervisor/README.md, "Root image through DAX"): the ext4 filesystem starts at
 * ROOT_DATA_OFFSET, and the first 2 MiB hold, at 4 KiB, a PFN info block (Linux's `struct nd_pfn_sb`,
 * drivers/nvdimm/pfn.h) as Kata's image builder writes one (its nsdax tool). On an nvdimm or virtio-pmem device
 * backed by the image, the guest's nd_pmem driver finds that block and makes /dev/pmem0 a "pfn" device: the data
 * from ROOT_DATA_OFFSET on, with struct pages (kept in guest RAM: mode "ram", since the device is read-only), which
 * is what ext4's `-o dax` needs. Without it the namespace is "raw" and the kernel refuses DAX. With virtio-blk QEMU
 * skips the same 2 MiB (the raw driver's `offset`), so one file serves both.
 *
 * Pure: the block is a Buffer; the builder writes it.
 */
import { randomBytes } from 'node:crypto';

/** Where the filesystem starts in the image file, and the PFN block's alignment: 2 MiB (a huge page). */
export const ROOT_DATA_OFFSET = 2 * 1024 * 1024;
/** The image's total size is a multiple of this (a memory section's sub-section, what the guest can map). */
export const ROOT_IMAGE_ALIGN = 2 * 1024 * 1024;
/** Where the PFN info block sits in the image (the kernel reads it at SZ_4K of the namespace). */
export const PFN_INFO_OFFSET = 4096;
export const PFN_INFO_SIZE = 4096;
/** `PFN_SIG`: the block's signature (a "pfn" device; "NVDIMM_DAX_INFO" would be device-dax, no block device). */
export const PFN_SIGNATURE = 'NVDIMM_PFN_INFO\0';
/** `PFN_MODE_RAM`: the struct pages live in guest RAM (PFN_MODE_PMEM would have the guest write them into the image). */
export const PFN_MODE_RAM = 1;

const PAGE = 4096;

/** The kernel's nd_fletcher64 over little-endian 32-bit words, as nd_sb_checksum computes it. */
export function fletcher64(data: Buffer): bigint {
  if (data.length % 4 !== 0) throw new Error('fletcher64: length must be a multiple of 4');
  let lo = 0n;
  let hi = 0n;
  const mask32 = 0xffffffffn;
  for (let i = 0; i < data.length; i += 4) {
    lo = (lo + BigInt(data.readUInt32LE(i))) & mask32;
    hi = (hi + lo) & mask32; // only hi's low 32 bits survive the shift into the result
  }
  return (hi << 32n) | lo;
}

/**
 * The PFN info block for an image of `imageBytes` whose data starts at ROOT_DATA_OFFSET. version 1.2 (start_pad,
 * end_trunc and align known; the 6.1 kernel fills page_size and page_struct_size itself for minor < 4).
 * parent_uuid is zero: a label-less namespace (QEMU's nvdimm without label-size, virtio-pmem) has a null uuid, and the
 * kernel matches the two.
 */
export function pfnInfoBlock(imageBytes: number, uuid: Buffer = randomBytes(16)): Buffer {
  if (!Number.isSafeInteger(imageBytes) || imageBytes % ROOT_IMAGE_ALIGN !== 0 || imageBytes <= ROOT_DATA_OFFSET)
    throw new Error(`image size ${imageBytes} must be a multiple of ${ROOT_IMAGE_ALIGN} above ${ROOT_DATA_OFFSET}`);
  if (uuid.length !== 16) throw new Error('uuid must be 16 bytes');
  const b = Buffer.alloc(PFN_INFO_SIZE);
  b.write(PFN_SIGNATURE, 0, 'latin1'); // signature[16]
  uuid.copy(b, 16); // uuid[16]; parent_uuid[16] at 32 stays zero
  b.writeUInt32LE(0, 48); // flags
  b.writeUInt16LE(1, 52); // version_major
  b.writeUInt16LE(2, 54); // version_minor
  b.writeBigUInt64LE(BigInt(ROOT_DATA_OFFSET), 56); // dataoff
  b.writeBigUInt64LE(BigInt((imageBytes - ROOT_DATA_OFFSET) / PAGE), 64); // npfns
  b.writeUInt32LE(PFN_MODE_RAM, 72); // mode
  b.writeUInt32LE(0, 76); // start_pad
  b.writeUInt32LE(0, 80); // end_trunc
  b.writeUInt32LE(ROOT_DATA_OFFSET, 84); // align
  b.writeBigUInt64LE(fletcher64(b), PFN_INFO_SIZE - 8); // checksum (computed with the field zero)
  return b;
}

/** Whether `block` (the 4 KiB at PFN_INFO_OFFSET) is a PFN info block with a valid checksum. */
export function isPfnInfoBlock(block: Buffer): boolean {
  if (block.length !== PFN_INFO_SIZE) return false;
  if (block.toString('latin1', 0, 16) !== PFN_SIGNATURE) return false;
  const copy = Buffer.from(block);
  const sum = copy.readBigUInt64LE(PFN_INFO_SIZE - 8);
  copy.writeBigUInt64LE(0n, PFN_INFO_SIZE - 8);
  return fletcher64(copy) === sum;
}
