import assert from 'node:assert/strict';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import { resolveConfig, type FileProbe } from '../config';
import type { VmConfig } from '../types';

const files = (
  present: Record<string, 'file' | 'dir'>,
  exec: string[] = ['/usr/bin/qemu-system-x86_64', '/usr/lib/qemu/virtiofsd'],
): FileProbe => ({
  kind: (p) => present[p] ?? 'missing',
  executable: (p) => exec.includes(p),
});
const GUEST = { '/g/vmlinuz': 'file', '/g/initrd.img': 'file', '/g/rootfs.img': 'file', '/share': 'dir' } as const;
const cfg: VmConfig = {
  id: 'pod-1',
  stateDir: '/run/hull/pod-1',
  kernel: '/g/vmlinuz',
  initrd: '/g/initrd.img',
  image: '/g/rootfs.img',
  vcpus: 1,
  memoryMiB: 256,
  accel: 'auto',
  agentTransport: 'auto',
};

describe('hypervisor/config', () => {
  it('applies defaults and lays out stateDir', () => {
    const r = resolveConfig(cfg, files(GUEST));
    assert.equal(r.qemuPath, '/usr/bin/qemu-system-x86_64');
    assert.equal(r.virtiofsdPath, '/usr/lib/qemu/virtiofsd');
    assert.deepEqual(r.kernelParams, []);
    assert.equal(r.debug, false);
    assert.equal(r.sharedDir, undefined);
    assert.deepEqual(r.paths, {
      stateDir: '/run/hull/pod-1',
      qmpSocket: '/run/hull/pod-1/qmp.sock',
      agentSocket: '/run/hull/pod-1/agent.sock',
      agentLogSocket: '/run/hull/pod-1/agent-log.sock',
      virtiofsdSocket: '/run/hull/pod-1/virtiofsd.sock',
      debugPortSocket: '/run/hull/pod-1/debug.sock',
    });
    assert.equal(r.debugPort, false);
  });

  it('hot-plug maxima: default to the size; at least the size; the memory room rounded up to whole 128 MiB DIMMs', () => {
    const r = resolveConfig(cfg, files(GUEST));
    assert.deepEqual([r.maxVcpus, r.maxMemoryMiB, r.memoryRoomMiB], [1, 256, 0]);
    const h = resolveConfig({ ...cfg, maxVcpus: 4, maxMemoryMiB: 1000 }, files(GUEST));
    assert.deepEqual([h.maxVcpus, h.maxMemoryMiB, h.memoryRoomMiB], [4, 1000, 768]);
    assert.throws(() => resolveConfig({ ...cfg, vcpus: 2, maxVcpus: 1 }, files(GUEST)), InvalidArgumentError);
    assert.throws(() => resolveConfig({ ...cfg, maxMemoryMiB: 128 }, files(GUEST)), InvalidArgumentError);
    assert.throws(() => resolveConfig({ ...cfg, maxVcpus: 2.5 }, files(GUEST)), InvalidArgumentError);
    assert.throws(() => resolveConfig({ ...cfg, maxVcpus: 256 }, files(GUEST)), InvalidArgumentError);
    // At most 256 DIMM slots (QEMU's limit).
    assert.throws(() => resolveConfig({ ...cfg, maxMemoryMiB: 256 + 257 * 128 }, files(GUEST)), /more than 256 DIMMs/);
    assert.equal(resolveConfig({ ...cfg, maxMemoryMiB: 256 + 256 * 128 }, files(GUEST)).memoryRoomMiB, 256 * 128);
  });

  it('a missing guest file is a FailedPreconditionError naming it and `make guest`', () => {
    for (const missing of ['/g/vmlinuz', '/g/initrd.img', '/g/rootfs.img']) {
      const present: Record<string, 'file' | 'dir'> = { ...GUEST };
      delete present[missing];
      assert.throws(
        () => resolveConfig(cfg, files(present)),
        (e: Error) =>
          e instanceof FailedPreconditionError && e.message.includes(missing) && e.message.includes('make guest'),
      );
    }
  });

  it('missing QEMU, virtiofsd (only with a share) or share folder are FailedPreconditionErrors', () => {
    assert.throws(
      () => resolveConfig(cfg, files(GUEST, [])),
      (e: Error) => e instanceof FailedPreconditionError && /qemu-system-x86_64/.test(e.message),
    );
    assert.doesNotThrow(() => resolveConfig(cfg, files(GUEST, ['/usr/bin/qemu-system-x86_64'])));
    assert.throws(
      () => resolveConfig({ ...cfg, sharedDir: '/share' }, files(GUEST, ['/usr/bin/qemu-system-x86_64'])),
      /virtiofsd/,
    );
    assert.throws(() => resolveConfig({ ...cfg, sharedDir: '/nope' }, files(GUEST)), FailedPreconditionError);
  });

  const bad: Array<[string, Partial<VmConfig>]> = [
    ['id with a slash', { id: 'a/b' }],
    ['id starting with a dot', { id: '.a' }],
    ['id too long', { id: 'a'.repeat(77) }],
    ['relative stateDir', { stateDir: 'run/x' }],
    ['stateDir with a comma', { stateDir: '/run/a,b' }],
    ['stateDir too long for a socket path', { stateDir: `/${'d'.repeat(95)}` }],
    ['relative kernel', { kernel: 'vmlinuz' }],
    ['image with a comma', { image: '/g/root,fs.img' }],
    ['sharedDir with a comma', { sharedDir: '/sh,are' }],
    ['zero vcpus', { vcpus: 0 }],
    ['fractional memory', { memoryMiB: 256.5 }],
    ['too little memory', { memoryMiB: 16 }],
    ['unknown accel', { accel: 'hvf' as 'kvm' }],
    ['unknown transport', { agentTransport: 'tcp' as 'vsock' }],
    ['kernel param with a space', { kernelParams: ['a b'] }],
    ['empty kernel param', { kernelParams: [''] }],
  ];
  for (const [what, patch] of bad) {
    it(`rejects ${what} with InvalidArgumentError`, () => {
      assert.throws(
        () => resolveConfig({ ...cfg, ...patch }, files({ ...GUEST, '/sh,are': 'dir' })),
        InvalidArgumentError,
      );
    });
  }

  describe('network', () => {
    const NETNS = '/run/netns/cni-1';
    const withNet = { ...GUEST, [NETNS]: 'file' } as const;
    const execs = ['/usr/bin/qemu-system-x86_64', '/usr/lib/qemu/virtiofsd', '/usr/bin/nsenter'];
    const net = (network: unknown): VmConfig => ({ ...cfg, network: network as VmConfig['network'] });

    it('is optional, and checked when given (MACs lower-cased)', () => {
      assert.equal(resolveConfig(cfg, files(GUEST)).network, undefined);
      const r = resolveConfig(
        net({ netnsPath: NETNS, nics: [{ tap: 'tap0_kata', mac: '0A:58:0A:F4:00:07', mtu: 1450 }] }),
        files(withNet, execs),
      );
      assert.deepEqual(r.network, {
        netnsPath: NETNS,
        nics: [{ tap: 'tap0_kata', mac: '0a:58:0a:f4:00:07', mtu: 1450 }],
      });
      assert.equal(r.nsenterPath, '/usr/bin/nsenter');
    });

    it('refuses a netns path that is relative or not normalised, and bad or duplicate NICs', () => {
      const nic = { tap: 'tap0', mac: '02:00:00:00:00:01' };
      const bad: unknown[] = [
        null,
        'x',
        { nics: [] },
        { netnsPath: 'run/netns/x', nics: [] },
        { netnsPath: '/run/netns/../x', nics: [] },
        { netnsPath: '/run//netns/x', nics: [] },
        { netnsPath: '/run/netns/x/', nics: [] },
        { netnsPath: '/run/netns/x\n', nics: [] },
        { netnsPath: NETNS },
        { netnsPath: NETNS, nics: [nic, nic] },
        { netnsPath: NETNS, nics: [nic, { ...nic, tap: 'tap1' }] },
        { netnsPath: NETNS, nics: [{ ...nic, mtu: 20 }] },
        { netnsPath: NETNS, nics: [{ ...nic, mtu: 65536 }] },
        { netnsPath: NETNS, nics: [{ ...nic, mtu: 1500.5 }] },
        ...['', 'a'.repeat(16), 'tap,vhost=on', '-tap', '.tap', 'a/b', 'a b', 'ta:p', 'tap\n'].map((tap) => ({
          netnsPath: NETNS,
          nics: [{ ...nic, tap }],
        })),
        ...[
          '',
          '02:00:00:00:00',
          '01:00:5e:00:00:01',
          'ff:ff:ff:ff:ff:ff',
          '00:00:00:00:00:00',
          '02-00-00-00-00-01',
          '02:00:00:00:00:01,x',
        ].map((mac) => ({ netnsPath: NETNS, nics: [{ ...nic, mac }] })),
        {
          netnsPath: NETNS,
          nics: Array.from({ length: 17 }, (_, i) => ({
            tap: `t${i}`,
            mac: `02:00:00:00:00:${(i + 16).toString(16)}`,
          })),
        },
      ];
      for (const network of bad) {
        assert.throws(
          () => resolveConfig(net(network), files(withNet, execs)),
          InvalidArgumentError,
          JSON.stringify(network),
        );
      }
    });

    it('a missing namespace or nsenter is a FailedPreconditionError', () => {
      const network = { netnsPath: NETNS, nics: [] };
      assert.throws(
        () => resolveConfig(net(network), files(GUEST, execs)),
        (e: Error) => e instanceof FailedPreconditionError && e.message.includes(NETNS),
      );
      assert.throws(
        () => resolveConfig(net(network), files(withNet)),
        (e: Error) => e instanceof FailedPreconditionError && /nsenter/.test(e.message),
      );
    });
  });
});
