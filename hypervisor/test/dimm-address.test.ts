/** Where a hot-plugged DIMM goes (qemu.ts alignedDimmAddress) and the reply it is computed from. */
import assert from 'node:assert/strict';
import { InvalidArgumentError, UnavailableError } from '../../errors';
import { alignedDimmAddress, parseMemoryDevices } from '../qemu/qemu';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BLOCK = 128 * MiB;
/** The guest image as built today: 146 MiB, at the start of device memory. */
const IMAGE = 146 * MiB;

describe('hot-plugged DIMM address (alignedDimmAddress)', () => {
  it('no memory device yet: no address (QEMU starts device memory on 1 GiB)', () => {
    assert.equal(alignedDimmAddress([], BLOCK, BLOCK), undefined);
  });

  it('behind a 146 MiB nvdimm: the next 128 MiB boundary, not right behind it (0x109200000, which the guest refuses)', () => {
    const root = { id: 'rootnv', addr: 4 * GiB, size: IMAGE };
    const first = alignedDimmAddress([root], BLOCK, BLOCK);
    assert.equal(first, 4 * GiB + 256 * MiB);
    assert.notEqual(first, 0x109200000);
    assert.equal((first ?? 1) % BLOCK, 0);
    // The next one goes right behind the first (already aligned), and so on.
    const dimm0 = { id: 'dimm0', addr: 4 * GiB + 256 * MiB, size: BLOCK };
    assert.equal(alignedDimmAddress([dimm0, root], BLOCK, BLOCK), 4 * GiB + 384 * MiB);
  });

  it('an image of whole blocks: directly behind it', () => {
    assert.equal(alignedDimmAddress([{ id: 'r', addr: 4 * GiB, size: 256 * MiB }], BLOCK, BLOCK), 4 * GiB + 256 * MiB);
  });

  it('DIMMs only (virtio-blk root): behind the last one, as QEMU would place it', () => {
    const dimms = [0, 1, 2].map((i) => ({ id: `dimm${i}`, addr: 4 * GiB + i * BLOCK, size: BLOCK }));
    assert.equal(alignedDimmAddress(dimms, BLOCK, BLOCK), 4 * GiB + 3 * BLOCK);
  });

  it('the lowest aligned gap that fits, whatever the order of the reply', () => {
    const devices = [
      { id: 'c', addr: 4 * GiB + 512 * MiB, size: BLOCK },
      { id: 'a', addr: 4 * GiB, size: 100 * MiB },
      { id: 'b', addr: 4 * GiB + 300 * MiB, size: 10 * MiB },
    ];
    // [4G+128M, 4G+256M) is free: 128 MiB fits there; 256 MiB does not, nor at 4G+384M (c starts at +512M).
    assert.equal(alignedDimmAddress(devices, BLOCK, BLOCK), 4 * GiB + 128 * MiB);
    assert.equal(alignedDimmAddress(devices, 256 * MiB, BLOCK), 4 * GiB + 640 * MiB);
  });

  it('refuses a size or an alignment that is not a positive integer', () => {
    assert.throws(() => alignedDimmAddress([], 0, BLOCK), InvalidArgumentError);
    assert.throws(() => alignedDimmAddress([], BLOCK, 0.5), InvalidArgumentError);
  });
});

describe('query-memory-devices (parseMemoryDevices)', () => {
  it('reads pc-dimm/nvdimm addr and virtio-pmem memaddr, with sizes', () => {
    const reply = [
      { type: 'nvdimm', data: { id: 'rootnv', addr: 4 * GiB, size: IMAGE, memdev: '/objects/rootimg', slot: 0 } },
      { type: 'dimm', data: { id: 'dimm0', addr: 4 * GiB + 256 * MiB, size: BLOCK } },
      { type: 'virtio-pmem', data: { id: 'rootpmem', memaddr: 5 * GiB, size: IMAGE } },
    ];
    assert.deepEqual(parseMemoryDevices(reply), [
      { id: 'rootnv', addr: 4 * GiB, size: IMAGE },
      { id: 'dimm0', addr: 4 * GiB + 256 * MiB, size: BLOCK },
      { id: 'rootpmem', addr: 5 * GiB, size: IMAGE },
    ]);
    assert.deepEqual(parseMemoryDevices([]), []);
  });

  it('refuses a malformed reply (QEMU is read like any peer)', () => {
    for (const bad of [
      null,
      {},
      [null],
      [{ type: 'dimm' }],
      [{ type: 'dimm', data: { addr: -1, size: BLOCK } }],
      [{ type: 'dimm', data: { addr: '4294967296', size: BLOCK } }],
      [{ type: 'dimm', data: { addr: 4 * GiB, size: 0 } }],
      [{ type: 'dimm', data: { addr: 2 ** 53, size: BLOCK } }],
      [{ type: 'dimm', data: { addr: 2 ** 52, size: 2 ** 52 } }],
      Array.from({ length: 513 }, () => ({ type: 'dimm', data: { addr: 4 * GiB, size: BLOCK } })),
    ])
      assert.throws(() => parseMemoryDevices(bad), UnavailableError, JSON.stringify(bad)?.slice(0, 80));
  });
});
