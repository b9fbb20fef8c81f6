/** Kernel module index parsing and load-order resolution, over text shaped like the cloud kernel's files. */
import assert from 'node:assert/strict';
import {
  canonicalModuleName,
  moduleCompression,
  moduleNameOf,
  modulesUnder,
  parseModulesBuiltin,
  parseModulesDep,
  resolveLoadOrder,
} from '../modules';

const DEP = `kernel/fs/fuse/fuse.ko:
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/crypto/crc32c_intel.ko:
kernel/a/cyc_a.ko: kernel/a/cyc_b.ko
kernel/a/cyc_b.ko: kernel/a/cyc_a.ko
`;
const SOFTDEP = `# comment
softdep virtio_blk pre: crc32c_intel
softdep fuse post: virtio-rng
softdep not_here pre: fuse
`;
const BUILTIN = 'kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n';

describe('guest kernel modules', () => {
  const index = parseModulesDep(DEP, SOFTDEP);
  const builtin = parseModulesBuiltin(BUILTIN);
  const names = (plan: { load: { name: string }[] }): string[] => plan.load.map((m) => m.name);

  it('names modules the way the kernel does', () => {
    assert.equal(moduleNameOf('kernel/drivers/char/hw_random/virtio-rng.ko'), 'virtio_rng');
    assert.equal(moduleNameOf('kernel/drivers/block/virtio_blk.ko.xz'), 'virtio_blk');
    assert.equal(moduleNameOf('x/y.ko.zst'), 'y');
    assert.equal(canonicalModuleName('vmw-vsock'), 'vmw_vsock');
    assert.equal(moduleCompression('a.ko'), undefined);
    assert.equal(moduleCompression('a.ko.xz'), 'xz');
    assert.equal(moduleCompression('a.ko.gz'), 'gz');
    assert.throws(() => moduleNameOf('modules.dep'), /not a kernel module/);
  });

  it('parses modules.dep, softdeps and modules.builtin', () => {
    assert.deepEqual(index.get('virtio_pci'), {
      name: 'virtio_pci',
      path: 'kernel/drivers/virtio/virtio_pci.ko',
      deps: ['virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio', 'virtio_ring'],
      post: [],
    });
    assert.equal(index.get('virtio_rng')?.path, 'kernel/drivers/char/hw_random/virtio-rng.ko');
    assert.deepEqual(index.get('virtio_blk')?.deps, ['virtio', 'virtio_ring', 'crc32c_intel']);
    assert.deepEqual(index.get('fuse')?.post, ['virtio_rng']);
    assert.deepEqual([...builtin], ['ext4', 'crc32c_generic']);
    assert.throws(() => parseModulesDep('no colon here\n'), /line 1/);
  });

  it('orders every module after its dependencies, deterministically and without duplicates', () => {
    const plan = resolveLoadOrder(index, builtin, ['virtio_pci', 'virtio_blk']);
    assert.deepEqual(names(plan), [
      'virtio_pci_legacy_dev',
      'virtio_pci_modern_dev',
      'virtio_ring',
      'virtio',
      'virtio_pci',
      'crc32c_intel',
      'virtio_blk',
    ]);
    assert.deepEqual(plan.builtin, []);
    assert.deepEqual(plan.missing, []);
  });

  it('pulls in transitive dependencies (virtio_net -> net_failover -> failover)', () => {
    const order = names(resolveLoadOrder(index, builtin, ['virtio-net']));
    assert.deepEqual(order, ['failover', 'net_failover', 'virtio_ring', 'virtio', 'virtio_net']);
  });

  it('loads softdep post modules after the module', () => {
    const order = names(resolveLoadOrder(index, builtin, ['fuse']));
    assert.deepEqual(order, ['fuse', 'virtio_ring', 'virtio', 'virtio_rng']);
  });

  it('reports built-in modules instead of loading them', () => {
    const plan = resolveLoadOrder(index, builtin, ['ext4', 'fuse']);
    assert.deepEqual(plan.builtin, ['ext4']);
    assert.ok(!names(plan).includes('ext4'));
  });

  it('skips a missing optional module and fails on a missing required one', () => {
    const plan = resolveLoadOrder(index, builtin, ['fuse', 'act_mirred'], new Set(['act_mirred']));
    assert.deepEqual(plan.missing, ['act_mirred']);
    assert.throws(() => resolveLoadOrder(index, builtin, ['sch_ingress']), /kernel module 'sch_ingress' not found/);
  });

  it('detects dependency cycles', () => {
    assert.throws(() => resolveLoadOrder(index, builtin, ['cyc_a']), /cycle: cyc_a -> cyc_b -> cyc_a/);
  });

  it("skips a softdep that names no module (an alias such as libcrc32c's crc32c), as modprobe does; a hard dependency stays required", () => {
    const idx = parseModulesDep(
      'kernel/lib/libcrc32c.ko:\nkernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\nkernel/x/needs.ko: kernel/x/gone.ko\n',
      'softdep libcrc32c pre: crc32c\n',
    );
    const plan = resolveLoadOrder(idx, new Set(), ['xfs']);
    assert.deepEqual(names(plan), ['libcrc32c', 'xfs']);
    assert.deepEqual(plan.missing, ['crc32c']);
    assert.throws(
      () => resolveLoadOrder(parseModulesDep('kernel/x/needs.ko: kernel/x/gone.ko\n'), new Set(), ['needs']),
      /'gone' not found/,
    );
  });

  it('lists the modules under whole folders of the tree (on-demand modules), a missing folder adding nothing', () => {
    assert.deepEqual(modulesUnder(index, ['drivers/virtio']), [
      'virtio',
      'virtio_ring',
      'virtio_pci_modern_dev',
      'virtio_pci_legacy_dev',
      'virtio_pci',
    ]);
    assert.deepEqual(modulesUnder(index, ['/fs/fuse/', 'net/core', 'net/no-such']), ['fuse', 'virtiofs', 'failover']);
    assert.deepEqual(modulesUnder(index, ['drivers/vir']), [], 'a prefix of a folder name is not the folder');
  });
});
