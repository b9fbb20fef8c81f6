import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import {
  BASE_KERNEL_PARAMS,
  agentArgs,
  buildQemuArgv,
  confinementArgs,
  kernelCommandLine,
  networkArgs,
  rootDiskArgs,
  type QemuCmdline,
} from '../qemu/cmdline';

const S = '/run/hull/vm/pod1';
const base: QemuCmdline = {
  id: 'pod1',
  accel: 'tcg',
  vcpus: 2,
  memoryMiB: 512,
  kernel: '/opt/hull/guest/vmlinuz',
  initrd: '/opt/hull/guest/initrd.img',
  image: '/opt/hull/guest/rootfs.img',
  kernelParams: [],
  debug: false,
  agent: { transport: 'serial', socketPath: `${S}/agent.sock` },
  qmpSocket: `${S}/qmp.sock`,
};

describe('hypervisor/qemu/cmdline', () => {
  it('TCG + serial agent + virtio-fs (golden)', () => {
    const argv = buildQemuArgv({
      ...base,
      virtiofsSocket: `${S}/virtiofsd.sock`,
      agentLogSocket: `${S}/agent-log.sock`,
      kernelParams: ['agent.log=debug'],
      confinement: { seccomp: true, runAs: 'nobody' },
    });
    assert.deepEqual(argv, [
      '-name',
      'hull-pod1',
      '-machine',
      'q35,accel=tcg,memory-backend=mem',
      '-cpu',
      'max',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-no-reboot',
      '-smp',
      '2',
      '-m',
      '512M',
      '-object',
      'memory-backend-memfd,id=mem,size=512M,share=on',
      '-kernel',
      '/opt/hull/guest/vmlinuz',
      '-initrd',
      '/opt/hull/guest/initrd.img',
      '-append',
      'console=ttyS0 panic=-1 quiet reboot=k tsc=reliable no_timer_check rcupdate.rcu_expedited=1 noreplace-smp cryptomgr.notests i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 hull.agent=serial agent.log=debug',
      '-drive',
      'file=/opt/hull/guest/rootfs.img,if=none,id=rootfs,format=raw,readonly=on',
      '-device',
      'virtio-blk-pci,drive=rootfs',
      '-device',
      'virtio-serial-pci',
      '-chardev',
      'socket,id=agent,path=/run/hull/vm/pod1/agent.sock,server=on,wait=off',
      '-device',
      'virtserialport,chardev=agent,name=agent.channel.0',
      '-chardev',
      'socket,id=agentlog,path=/run/hull/vm/pod1/agent-log.sock,server=on,wait=off',
      '-device',
      'virtserialport,chardev=agentlog,name=agent.log.0',
      '-chardev',
      'socket,id=fs,path=/run/hull/vm/pod1/virtiofsd.sock',
      '-device',
      'vhost-user-fs-pci,chardev=fs,tag=kataShared',
      '-chardev',
      'stdio,id=console,signal=off',
      '-serial',
      'chardev:console',
      '-qmp',
      'unix:/run/hull/vm/pod1/qmp.sock,server=on,wait=off',
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny',
      '-runas',
      'nobody',
    ]);
  });

  it('KVM + vsock agent (golden)', () => {
    const argv = buildQemuArgv({
      ...base,
      accel: 'kvm',
      vcpus: 1,
      memoryMiB: 2048,
      agent: { transport: 'vsock', cid: 1234 },
      agentLogSocket: `${S}/agent-log.sock`,
      confinement: { seccomp: true },
    });
    assert.deepEqual(argv, [
      '-name',
      'hull-pod1',
      '-machine',
      'q35,accel=kvm,memory-backend=mem',
      '-cpu',
      'host',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-no-reboot',
      '-smp',
      '1',
      '-m',
      '2048M',
      '-object',
      'memory-backend-memfd,id=mem,size=2048M,share=on',
      '-kernel',
      '/opt/hull/guest/vmlinuz',
      '-initrd',
      '/opt/hull/guest/initrd.img',
      '-append',
      'console=ttyS0 panic=-1 quiet reboot=k tsc=reliable no_timer_check rcupdate.rcu_expedited=1 noreplace-smp cryptomgr.notests i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 hull.agent=vsock',
      '-drive',
      'file=/opt/hull/guest/rootfs.img,if=none,id=rootfs,format=raw,readonly=on',
      '-device',
      'virtio-blk-pci,drive=rootfs',
      '-device',
      'vhost-vsock-pci,guest-cid=1234',
      '-device',
      'virtio-serial-pci',
      '-chardev',
      'socket,id=agentlog,path=/run/hull/vm/pod1/agent-log.sock,server=on,wait=off',
      '-device',
      'virtserialport,chardev=agentlog,name=agent.log.0',
      '-chardev',
      'stdio,id=console,signal=off',
      '-serial',
      'chardev:console',
      '-qmp',
      'unix:/run/hull/vm/pod1/qmp.sock,server=on,wait=off',
      '-sandbox',
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ]);
  });

  describe('confinement', () => {
    it('seccomp without -runas denies set*id; with -runas it must allow them (QEMU 7.2 filters before it drops)', () => {
      assert.deepEqual(confinementArgs({ seccomp: true }), [
        '-sandbox',
        'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
      ]);
      assert.deepEqual(confinementArgs({ seccomp: true, runAs: '200001:200001' }), [
        '-sandbox',
        'on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny',
        '-runas',
        '200001:200001',
      ]);
      assert.deepEqual(confinementArgs({ seccomp: false, runAs: 'hull-qemu' }), ['-runas', 'hull-qemu']);
      assert.deepEqual(confinementArgs({ seccomp: false }), []);
      assert.ok(
        !buildQemuArgv(base).some((w) => w === '-sandbox' || w === '-runas'),
        'no confinement given: none in the argv',
      );
    });

    it('refuses a user that is root, empty, or would break the option syntax', () => {
      for (const runAs of ['root', '0:0', '1000:0', '', 'a,b', 'x y', '-runas', '4294967295:1']) {
        assert.throws(() => confinementArgs({ seccomp: true, runAs }), InvalidArgumentError, runAs);
      }
    });
  });

  describe('hot-plug room', () => {
    const smpToObject = (argv: string[]): string[] => argv.slice(argv.indexOf('-smp'), argv.indexOf('-kernel'));
    const append = (argv: string[]): string => argv[argv.indexOf('-append') + 1] ?? '';

    it('none (absent, or maxima equal to the size): the argv is exactly the one without hot-plug', () => {
      const plain = buildQemuArgv(base);
      assert.deepEqual(buildQemuArgv({ ...base, maxVcpus: 2, memoryRoomMiB: 0 }), plain);
      assert.deepEqual(smpToObject(plain), [
        '-smp',
        '2',
        '-m',
        '512M',
        '-object',
        'memory-backend-memfd,id=mem,size=512M,share=on',
      ]);
    });

    it('CPUs and memory (golden): maxcpus, one DIMM slot per 128 MiB, maxmem; the guest auto-onlines memory', () => {
      const argv = buildQemuArgv({ ...base, vcpus: 1, maxVcpus: 2, memoryRoomMiB: 512, kernelParams: ['x=1'] });
      assert.deepEqual(smpToObject(argv), [
        '-smp',
        '1,maxcpus=2',
        '-m',
        '512M,slots=4,maxmem=1024M',
        '-object',
        'memory-backend-memfd,id=mem,size=512M,share=on',
      ]);
      assert.match(append(argv), / hull\.agent=serial memhp_default_state=online swiotlb=noforce x=1$/);
      assert.deepEqual(smpToObject(buildQemuArgv({ ...base, vcpus: 1, maxVcpus: 4 })).slice(0, 4), [
        '-smp',
        '1,maxcpus=4',
        '-m',
        '512M',
      ]);
      assert.doesNotMatch(append(buildQemuArgv({ ...base, vcpus: 1, maxVcpus: 4 })), /memhp|swiotlb/);
    });

    it('CPU hot-plug room under TCG: one TCG thread for every vCPU (thread=single); KVM and no room keep the default', () => {
      const room = buildQemuArgv({ ...base, vcpus: 1, maxVcpus: 2 });
      assert.deepEqual(room.slice(2, 8), [
        '-machine',
        'q35,memory-backend=mem',
        '-accel',
        'tcg,thread=single',
        '-cpu',
        'max',
      ]);
      const tb = buildQemuArgv({ ...base, vcpus: 1, maxVcpus: 2, tcgTbSizeMiB: 64 });
      assert.equal(tb[tb.indexOf('-accel') + 1], 'tcg,tb-size=64,thread=single');
      const dax = buildQemuArgv({
        ...base,
        vcpus: 1,
        maxVcpus: 2,
        rootImage: { device: 'nvdimm', dataOffset: 2097152, sizeBytes: 150 * 1024 * 1024 },
      });
      assert.deepEqual(dax.slice(2, 6), [
        '-machine',
        'q35,memory-backend=mem,nvdimm=on',
        '-accel',
        'tcg,thread=single',
      ]);
      // Memory room alone adds no vCPU thread: MTTCG stays.
      assert.ok(!buildQemuArgv({ ...base, vcpus: 1, memoryRoomMiB: 256 }).includes('-accel'));
      assert.ok(!buildQemuArgv({ ...base, vcpus: 2 }).includes('-accel'));
      const kvm = buildQemuArgv({ ...base, accel: 'kvm', vcpus: 1, maxVcpus: 2 });
      assert.ok(!kvm.some((w) => w === '-accel' || w.includes('thread=')));
    });

    it('refuses a room that is not whole DIMMs, or fewer max vCPUs than vCPUs', () => {
      assert.throws(() => buildQemuArgv({ ...base, memoryRoomMiB: 100 }), InvalidArgumentError);
      assert.throws(() => buildQemuArgv({ ...base, maxVcpus: 1 }), InvalidArgumentError);
    });
  });

  it('TCG translation cache and free page reporting (golden head and tail); KVM never gets tb-size', () => {
    const argv = buildQemuArgv({ ...base, tcgTbSizeMiB: 64, freePageReporting: true });
    assert.deepEqual(argv.slice(0, 8), [
      '-name',
      'hull-pod1',
      '-machine',
      'q35,memory-backend=mem',
      '-accel',
      'tcg,tb-size=64',
      '-cpu',
      'max',
    ]);
    const at = argv.indexOf('virtio-balloon-pci,id=balloon0,free-page-reporting=on');
    assert.equal(argv[at - 1], '-device');
    assert.ok(at < argv.indexOf('-qmp'));
    const kvm = buildQemuArgv({ ...base, accel: 'kvm', tcgTbSizeMiB: 64 });
    assert.deepEqual(kvm.slice(2, 6), ['-machine', 'q35,accel=kvm,memory-backend=mem', '-cpu', 'host']);
    assert.ok(!kvm.some((w) => w === '-accel' || w.includes('tb-size') || w.includes('balloon')));
    assert.throws(() => buildQemuArgv({ ...base, tcgTbSizeMiB: 1.5 }), InvalidArgumentError);
  });

  it('no share: no vhost-user-fs device and no fs chardev', () => {
    const argv = buildQemuArgv(base);
    assert.ok(!argv.some((w) => w.includes('vhost-user-fs') || w.startsWith('socket,id=fs')));
    assert.equal(argv.filter((w) => w === '-device').length, 3); // blk, virtio-serial, port
  });

  it('the test-only raw port: a virtserialport hull.debug.0 on its own socket, after the log port; none by default', () => {
    const argv = buildQemuArgv({
      ...base,
      agentLogSocket: `${S}/agent-log.sock`,
      debugPortSocket: `${S}/debug.sock`,
    });
    const at = argv.indexOf('socket,id=hulldebug,path=/run/hull/vm/pod1/debug.sock,server=on,wait=off');
    assert.ok(at > argv.indexOf('virtserialport,chardev=agentlog,name=agent.log.0'));
    assert.deepEqual(argv.slice(at + 1, at + 3), ['-device', 'virtserialport,chardev=hulldebug,name=hull.debug.0']);
    assert.ok(!buildQemuArgv({ ...base, agentLogSocket: `${S}/agent-log.sock` }).some((w) => w.includes('hulldebug')));
  });

  it('debug drops quiet; base params come first so extras win', () => {
    assert.equal(
      kernelCommandLine('serial', ['panic=5'], true),
      'console=ttyS0 panic=-1 reboot=k tsc=reliable no_timer_check rcupdate.rcu_expedited=1 noreplace-smp cryptomgr.notests i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 hull.agent=serial panic=5',
    );
    assert.deepEqual(BASE_KERNEL_PARAMS.slice(0, 3), ['console=ttyS0', 'panic=-1', 'quiet']);
    assert.ok(!BASE_KERNEL_PARAMS.includes('mitigations=off'), 'guest CPU mitigations stay on');
    assert.throws(() => kernelCommandLine('serial', ['a b'], false), InvalidArgumentError);
  });

  it('rejects commas and control characters in values that go into option syntax', () => {
    assert.throws(
      () => rootDiskArgs('/img,format=qcow2'),
      (e: Error) => e instanceof InvalidArgumentError && /comma/.test(e.message),
    );
    assert.throws(() => buildQemuArgv({ ...base, qmpSocket: '/tmp/q\nmp' }), InvalidArgumentError);
    assert.throws(() => buildQemuArgv({ ...base, virtiofsSocket: '/x,server=on' }), InvalidArgumentError);
    assert.throws(() => buildQemuArgv({ ...base, kernel: '/k,x' }), InvalidArgumentError);
  });

  it('rejects reserved or out-of-range guest CIDs', () => {
    for (const cid of [0, 1, 2, 0xffffffff, 1.5])
      assert.throws(() => agentArgs({ transport: 'vsock', cid }), InvalidArgumentError);
    assert.deepEqual(agentArgs({ transport: 'vsock', cid: 3 }), ['-device', 'vhost-vsock-pci,guest-cid=3']);
  });

  describe('network devices', () => {
    it('one tap NIC per entry, after virtio-fs and before the console (golden)', () => {
      const argv = buildQemuArgv({
        ...base,
        virtiofsSocket: `${S}/virtiofsd.sock`,
        nics: [
          { tap: 'tap0_kata', mac: '02:42:ac:11:00:02', mtu: 1450 },
          { tap: 'tap1_kata', mac: '0a:58:0a:f4:00:07' },
        ],
      });
      const at = argv.indexOf('vhost-user-fs-pci,chardev=fs,tag=kataShared');
      assert.deepEqual(argv.slice(at + 1, at + 9), [
        '-netdev',
        'tap,id=net0,ifname=tap0_kata,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=net0,mac=02:42:ac:11:00:02,host_mtu=1450',
        '-netdev',
        'tap,id=net1,ifname=tap1_kata,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=net1,mac=0a:58:0a:f4:00:07',
      ]);
      assert.equal(argv[at + 9], '-chardev');
    });

    it('vhost=on only when asked for', () => {
      assert.deepEqual(networkArgs([{ tap: 't0', mac: '02:00:00:00:00:01' }], true), [
        '-netdev',
        'tap,id=net0,ifname=t0,script=no,downscript=no,vhost=on',
        '-device',
        'virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01',
      ]);
      assert.deepEqual(networkArgs([], true), []);
      assert.ok(!buildQemuArgv(base).includes('-netdev'), 'no network: no netdev');
    });

    it('keeps another option out of a tap name or MAC (their meaning is checked by resolveConfig)', () => {
      const ok = { tap: 'tap0', mac: '02:00:00:00:00:01' };
      assert.throws(() => networkArgs([{ ...ok, tap: 'tap0,vhost=on' }], false), InvalidArgumentError);
      assert.throws(() => networkArgs([{ ...ok, mac: '02:00:00:00:00:01,x' }], false), InvalidArgumentError);
    });
  });

  describe('root image', () => {
    const IMG = 150 * 1024 * 1024; // 150 MiB, a multiple of 2 MiB
    const between = (argv: string[], from: string, to: string): string[] =>
      argv.slice(argv.indexOf(from), argv.indexOf(to));
    const append = (argv: string[]): string => argv[argv.indexOf('-append') + 1] ?? '';

    it("virtio-blk skips the DAX layout's header (raw offset); at offset 0 the argv is the old one", () => {
      const blk = buildQemuArgv({ ...base, rootImage: { device: 'virtio-blk', dataOffset: 2097152, sizeBytes: IMG } });
      assert.equal(
        blk[blk.indexOf('-drive') + 1],
        'file=/opt/hull/guest/rootfs.img,if=none,id=rootfs,format=raw,readonly=on,offset=2097152',
      );
      assert.deepEqual(
        buildQemuArgv({ ...base, rootImage: { device: 'virtio-blk', dataOffset: 0, sizeBytes: IMG } }),
        buildQemuArgv(base),
      );
      assert.doesNotMatch(append(blk), /root=|swiotlb/);
      assert.equal(blk[blk.indexOf('-machine') + 1], 'q35,accel=tcg,memory-backend=mem');
    });

    it('nvdimm (golden): nvdimm=on, a slot and the image size in maxmem, a read-only shared file backend, unarmed', () => {
      const argv = buildQemuArgv({ ...base, rootImage: { device: 'nvdimm', dataOffset: 2097152, sizeBytes: IMG } });
      assert.deepEqual(argv.slice(0, 6), [
        '-name',
        'hull-pod1',
        '-machine',
        'q35,accel=tcg,memory-backend=mem,nvdimm=on',
        '-cpu',
        'max',
      ]);
      assert.deepEqual(between(argv, '-smp', '-kernel'), [
        '-smp',
        '2',
        '-m',
        '512M,slots=1,maxmem=662M',
        '-object',
        'memory-backend-memfd,id=mem,size=512M,share=on',
      ]);
      assert.match(append(argv), / hull\.agent=serial root=\/dev\/pmem0 swiotlb=noforce$/);
      const at = argv.indexOf('-append') + 2;
      assert.deepEqual(argv.slice(at, at + 4), [
        '-object',
        `memory-backend-file,id=rootimg,mem-path=/opt/hull/guest/rootfs.img,size=${IMG},share=on,readonly=on`,
        '-device',
        'nvdimm,id=rootnv,memdev=rootimg,unarmed=on',
      ]);
      assert.ok(!argv.includes('virtio-blk-pci,drive=rootfs'));
    });

    it('virtio-pmem: no nvdimm machine option, no slot, the image size in maxmem; with hot-plug room, whole 128 MiB blocks', () => {
      const root = { device: 'virtio-pmem', dataOffset: 2097152, sizeBytes: IMG } as const;
      const argv = buildQemuArgv({ ...base, rootImage: root });
      assert.equal(argv[3], 'q35,accel=tcg,memory-backend=mem');
      assert.equal(argv[argv.indexOf('-m') + 1], '512M,maxmem=662M');
      const at = argv.indexOf('-append') + 2;
      assert.deepEqual(argv.slice(at + 2, at + 4), ['-device', 'virtio-pmem-pci,id=rootpmem,memdev=rootimg']);
      assert.match(append(argv), / root=\/dev\/pmem0 swiotlb=noforce$/);
      const room = buildQemuArgv({ ...base, memoryRoomMiB: 256, rootImage: { ...root, device: 'nvdimm' } });
      // 150 MiB of image counts as 256 (two blocks): the DIMMs go on block boundaries behind it (alignedDimmAddress).
      assert.equal(room[room.indexOf('-m') + 1], '512M,slots=3,maxmem=1024M');
      assert.match(append(room), / root=\/dev\/pmem0 memhp_default_state=online swiotlb=noforce$/);
      // kernelParams come last, so an operator's root= would win
      assert.match(append(buildQemuArgv({ ...base, rootImage: root, kernelParams: ['x=1'] })), /swiotlb=noforce x=1$/);
    });

    it('refuses a pmem image whose size is not whole 2 MiB, and an image path with a comma', () => {
      for (const sizeBytes of [0, IMG + 4096, -IMG])
        assert.throws(
          () => buildQemuArgv({ ...base, rootImage: { device: 'nvdimm', dataOffset: 2097152, sizeBytes } }),
          InvalidArgumentError,
        );
      assert.throws(
        () => rootDiskArgs('/img,share=off', { device: 'nvdimm', dataOffset: 2097152, sizeBytes: IMG }),
        InvalidArgumentError,
      );
      assert.throws(
        () => rootDiskArgs('/img', { device: 'virtio-blk', dataOffset: 7, sizeBytes: IMG }),
        InvalidArgumentError,
      );
    });
  });
});
