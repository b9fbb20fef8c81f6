import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from '../../errors';
import { buildQemuArgv, type QemuCmdline } from '../qemu/cmdline';
import { copySparse, plugNics } from '../qemu/template';
import type { QmpClient } from '../qemu/qmp';
import { TEMPLATE_NIC_PORTS } from '../types';

const S = '/run/hull/vm/pod1';
const base: QemuCmdline = {
  id: 'pod1',
  accel: 'tcg',
  vcpus: 1,
  memoryMiB: 512,
  kernel: '/opt/hull/guest/vmlinuz',
  initrd: '/opt/hull/guest/initrd.img',
  image: '/opt/hull/guest/rootfs.img',
  kernelParams: [],
  debug: false,
  agent: { transport: 'serial', socketPath: `${S}/agent.sock` },
  agentLogSocket: `${S}/agent-log.sock`,
  virtiofsSocket: `${S}/virtiofsd.sock`,
  qmpSocket: `${S}/qmp.sock`,
};

/** The argv without the words that differ per VM anyway (name, sockets), to compare layouts. */
const layout = (argv: string[]): string[] =>
  argv.map((w) => w.replace(/\/run\/hull\/[a-z]+\/[a-z0-9]+/g, '<dir>').replace(/hull-[a-z0-9]+/, 'hull-<id>'));

describe('hypervisor/qemu/template', () => {
  describe('argv', () => {
    it('the template: RAM in the file (share=on), a spare root port, no virtio-fs device', () => {
      const argv = buildQemuArgv({ ...base, template: { role: 'make', memoryFile: '/run/hull/_t/k/memory' } });
      assert.ok(argv.includes('memory-backend-file,id=mem,size=512M,mem-path=/run/hull/_t/k/memory,share=on'));
      assert.ok(!argv.some((w) => w.startsWith('memory-backend-memfd')));
      assert.ok(argv.includes('pcie-root-port,id=hullfsport,bus=pcie.0,chassis=1'));
      assert.equal(TEMPLATE_NIC_PORTS, 2);
      assert.ok(argv.includes('pcie-root-port,id=hullnetport0,bus=pcie.0,chassis=2'));
      assert.ok(argv.includes('pcie-root-port,id=hullnetport1,bus=pcie.0,chassis=3'));
      assert.ok(!argv.some((w) => w.includes('vhost-user-fs')));
      assert.ok(!argv.includes('-incoming'));
    });

    it("a clone has the template's layout plus the virtio-fs chardev and -incoming defer", () => {
      const make = buildQemuArgv({ ...base, template: { role: 'make', memoryFile: '/run/hull/tt/k1/memory' } });
      const clone = buildQemuArgv({ ...base, template: { role: 'clone', memoryFile: `${S}/memory` } });
      assert.deepEqual(clone.slice(-4), ['-chardev', `socket,id=fs,path=${S}/virtiofsd.sock`, '-incoming', 'defer']);
      assert.deepEqual(layout(clone.slice(0, -4)), layout(make));
    });

    const NICS = [
      { tap: 'tap0_hull', mac: '02:42:0a:00:00:05', mtu: 1450 },
      { tap: 'tap1_hull', mac: '02:42:0a:00:00:06' },
    ];

    it("a clone with NICs: the template's layout, each tap as a netdev only (no device), then -incoming defer", () => {
      const make = buildQemuArgv({ ...base, template: { role: 'make', memoryFile: '/run/hull/tt/k1/memory' } });
      const clone = buildQemuArgv({ ...base, nics: NICS, template: { role: 'clone', memoryFile: `${S}/memory` } });
      assert.deepEqual(clone.slice(-8), [
        '-chardev',
        `socket,id=fs,path=${S}/virtiofsd.sock`,
        '-netdev',
        'tap,id=net0,ifname=tap0_hull,script=no,downscript=no',
        '-netdev',
        'tap,id=net1,ifname=tap1_hull,script=no,downscript=no',
        '-incoming',
        'defer',
      ]);
      assert.deepEqual(layout(clone.slice(0, -8)), layout(make), 'no virtio-net device on the command line');
      assert.throws(
        () =>
          buildQemuArgv({
            ...base,
            nics: [...NICS, { tap: 'tap2_hull', mac: '02:42:0a:00:00:07' }],
            template: { role: 'clone', memoryFile: `${S}/memory` },
          }),
        /room for 2 NICs, not 3/,
      );
    });

    it('a cold boot with NICs is as before: netdev and virtio-net device per tap, no root port', () => {
      const argv = buildQemuArgv({ ...base, nics: NICS });
      const at = argv.indexOf('tap,id=net0,ifname=tap0_hull,script=no,downscript=no');
      assert.deepEqual(argv.slice(at - 1, at + 7), [
        '-netdev',
        'tap,id=net0,ifname=tap0_hull,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=net0,mac=02:42:0a:00:00:05,host_mtu=1450',
        '-netdev',
        'tap,id=net1,ifname=tap1_hull,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=net1,mac=02:42:0a:00:00:06',
      ]);
      assert.ok(!argv.some((w) => w.startsWith('pcie-root-port')));
    });

    it("plugNics: device_add of a virtio-net-pci per NIC on its netdev and spare port, with the pod's MAC and MTU", async () => {
      const sent: unknown[] = [];
      const qmp = { execute: async (cmd: string, args: unknown) => void sent.push([cmd, args]) };
      await plugNics(qmp as unknown as QmpClient, NICS);
      assert.deepEqual(sent, [
        [
          'device_add',
          {
            driver: 'virtio-net-pci',
            id: 'hullnet0',
            bus: 'hullnetport0',
            netdev: 'net0',
            mac: '02:42:0a:00:00:05',
            host_mtu: 1450,
          },
        ],
        [
          'device_add',
          { driver: 'virtio-net-pci', id: 'hullnet1', bus: 'hullnetport1', netdev: 'net1', mac: '02:42:0a:00:00:06' },
        ],
      ]);
    });

    it('without a template the argv is as before (memfd RAM, the virtio-fs device, no root port)', () => {
      const argv = buildQemuArgv(base);
      assert.ok(argv.includes('memory-backend-memfd,id=mem,size=512M,share=on'));
      assert.ok(argv.includes('vhost-user-fs-pci,chardev=fs,tag=kataShared'));
      assert.ok(!argv.some((w) => w.startsWith('pcie-root-port')));
    });

    it('refuses a memory file with a comma', () => {
      assert.throws(
        () => buildQemuArgv({ ...base, template: { role: 'make', memoryFile: '/run/a,share=off' } }),
        InvalidArgumentError,
      );
    });
  });

  describe('copySparse', () => {
    let dir: string;
    beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-sparse-'))));
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('copies the bytes, writes only non-zero pages, keeps the size', () => {
      const src = path.join(dir, 'src');
      const size = 8 * 1024 * 1024 + 4096 * 3 + 100; // not a multiple of the chunk or the page
      const fd = fs.openSync(src, 'w');
      fs.ftruncateSync(fd, size);
      const pieces = [0, 4096 * 5 + 7, 2 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 4096 * 3];
      for (const at of pieces) fs.writeSync(fd, crypto.randomBytes(50), 0, 50, at);
      fs.closeSync(fd);
      const written = copySparse(src, path.join(dir, 'dst'));
      assert.deepEqual(fs.readFileSync(path.join(dir, 'dst')), fs.readFileSync(src));
      // Five pages hold data (one piece straddles two); each page is written whole.
      assert.equal(written, 4096 * 4 + (size - 8 * 1024 * 1024 - 4096 * 3));
      assert.equal(fs.statSync(path.join(dir, 'dst')).mode & 0o777, 0o600);
    });

    it('refuses to overwrite, and a symlink as the source', () => {
      fs.writeFileSync(path.join(dir, 'src'), 'x');
      fs.writeFileSync(path.join(dir, 'dst'), 'y');
      assert.throws(() => copySparse(path.join(dir, 'src'), path.join(dir, 'dst')), /EEXIST/);
      fs.symlinkSync(path.join(dir, 'src'), path.join(dir, 'link'));
      assert.throws(() => copySparse(path.join(dir, 'link'), path.join(dir, 'dst2')), /ELOOP/);
    });
  });
});
