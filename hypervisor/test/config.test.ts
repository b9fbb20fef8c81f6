import assert from 'node:assert/strict';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import { resolveConfig, type FileProbe } from '../config';
import type { VmConfig } from '../types';

const files = (present: Record<string, 'file' | 'dir'>, exec: string[] = ['/usr/bin/qemu-system-x86_64', '/usr/lib/qemu/virtiofsd']): FileProbe => ({
  kind: (p) => present[p] ?? 'missing',
  executable: (p) => exec.includes(p),
});
const GUEST = { '/g/vmlinuz': 'file', '/g/initrd.img': 'file', '/g/rootfs.img': 'file', '/share': 'dir' } as const;
const cfg: VmConfig = {
  id: 'pod-1', stateDir: '/run/hull/pod-1', kernel: '/g/vmlinuz', initrd: '/g/initrd.img', image: '/g/rootfs.img',
  vcpus: 1, memoryMiB: 256, accel: 'auto', agentTransport: 'auto',
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
      virtiofsdSocket: '/run/hull/pod-1/virtiofsd.sock',
      consoleLog: '/run/hull/pod-1/console.log',
      qemuPidFile: '/run/hull/pod-1/qemu.pid',
      virtiofsdPidFile: '/run/hull/pod-1/virtiofsd.pid',
    });
  });

  it('a missing guest file is a FailedPreconditionError naming it and `make guest`', () => {
    for (const missing of ['/g/vmlinuz', '/g/initrd.img', '/g/rootfs.img']) {
      const present: Record<string, 'file' | 'dir'> = { ...GUEST };
      delete present[missing];
      assert.throws(() => resolveConfig(cfg, files(present)), (e: Error) =>
        e instanceof FailedPreconditionError && e.message.includes(missing) && e.message.includes('make guest'));
    }
  });

  it('missing QEMU, virtiofsd (only with a share) or share folder are FailedPreconditionErrors', () => {
    assert.throws(() => resolveConfig(cfg, files(GUEST, [])), (e: Error) => e instanceof FailedPreconditionError && /qemu-system-x86_64/.test(e.message));
    assert.doesNotThrow(() => resolveConfig(cfg, files(GUEST, ['/usr/bin/qemu-system-x86_64'])));
    assert.throws(() => resolveConfig({ ...cfg, sharedDir: '/share' }, files(GUEST, ['/usr/bin/qemu-system-x86_64'])), /virtiofsd/);
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
      assert.throws(() => resolveConfig({ ...cfg, ...patch }, files({ ...GUEST, '/sh,are': 'dir' })), InvalidArgumentError);
    });
  }
});
