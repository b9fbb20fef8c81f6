/**
 * The root image through DAX in a real VM, with the shipped configuration (`root_image_dax = true` by default) and
 * hot-plug room as a pod gets it (core's defaults through toVmConfig, an nvdimm; QEMU confined as the shim runs it;
 * the hot-add itself: vm.test.ts): QEMU maps the image read-only and shared,
 * the guest's root is /dev/pmem0 (read-only, a "pfn" device in ram mode) and its page cache stays nearly empty (the
 * files are read through QEMU's mapping of the host's page cache), a container runs, and a privileged container that
 * tries every way to write the device (clearing the region's read-only flag, blockdev --setrw, dd over the PFN block
 * and the filesystem) changes nothing in the host's file. The teardown checks nothing is left.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient, OciSpec } from '../agent-client';
import { defaultConfig, toVmConfig } from '../core/config';
import type { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput } from './lib/containers';
import { guestArtifacts } from './lib/guest';
import { testSpec } from './lib/oci-spec';
import { bootWithShare, shutDownAndCheck } from './lib/shared-vm';
import { splitSmaps } from './lib/smaps';

const SANDBOX = 'daxtest';
const APPLETS = ['sh', 'cat', 'echo', 'dd', 'mknod', 'blockdev', 'sha256sum', 'true', 'sleep'];
const ALL_CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_SYS_ADMIN',
  'CAP_SYS_RAWIO',
  'CAP_SETUID',
  'CAP_SETGID',
];

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** A privileged container: every device, sysfs read-write, the capabilities a write to a block device needs. */
function privileged(args: string[]): OciSpec {
  const spec = testSpec({ args, rootReadonly: true });
  const caps = { bounding: ALL_CAPS, effective: ALL_CAPS, permitted: ALL_CAPS, inheritable: [], ambient: [] };
  return {
    ...spec,
    process: { ...spec.process!, capabilities: caps, noNewPrivileges: false },
    mounts: spec.mounts!.map((m) =>
      m.destination === '/sys' ? { ...m, options: ['nosuid', 'noexec', 'nodev', 'rw'] } : m,
    ),
    linux: {
      ...spec.linux!,
      maskedPaths: [],
      readonlyPaths: [],
      resources: { devices: [{ allow: true, access: 'rwm' }] },
    },
  };
}

describe('the root image through DAX in a real VM (root_image_dax = true)', function () {
  this.timeout(300_000);
  let dir: string;
  let share: VirtioFsShare;
  let hv: QemuHypervisor;
  let vm: SandboxVm | undefined;
  let agent: AgentClient;
  let rootfs: string;
  const image = guestArtifacts().image;
  let imageHash: string;

  before(async () => {
    imageHash = sha256(image);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-dax-test-'));
    rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
    share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: SANDBOX });
    await share.prepare();
    const config = defaultConfig(path.resolve(__dirname, '..', '..', 'bin'));
    assert.equal(config.hypervisor.rootImageDax, true, 'on by default');
    const vmConfig = toVmConfig(config, { id: SANDBOX, stateDir: path.join(dir, 'vm'), sharedDir: share.sharedDir() });
    assert.equal(vmConfig.rootImageDevice, 'nvdimm');
    // Hot-plug room as a CRI pod gets it (core/vm-size.ts hotplugLimits caps the defaults at this host's size).
    vmConfig.maxVcpus = 2;
    vmConfig.maxMemoryMiB = 1024;
    vmConfig.image = image;
    vmConfig.kernel = guestArtifacts().kernel;
    vmConfig.initrd = guestArtifacts().initrd;
    hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    vm = await bootWithShare(hv, vmConfig, SANDBOX);
    agent = vm.agent;
  });

  after(async () => {
    await shutDownAndCheck(vm, share, dir);
    assert.equal(sha256(image), imageHash, "the host's image file is unchanged");
  });

  it('QEMU attaches the image as an unarmed nvdimm on a read-only shared mapping of the file, no virtio-blk', () => {
    assert.equal(hv.rootImage().device, 'nvdimm');
    const pid = hv.pid()!;
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    const backend = argv.find((w) => w.startsWith('memory-backend-file,'));
    assert.ok(backend?.includes(`mem-path=${image},`) && /,share=on,readonly=on$/.test(backend), backend);
    assert.ok(argv.includes('nvdimm,id=rootnv,memdev=rootimg,unarmed=on'), argv.join(' '));
    assert.ok(!argv.some((w) => w.startsWith('virtio-blk')), 'no virtio-blk disk');
    // The mapping: read-only and shared (r--s); the file opened read-only.
    const maps = fs
      .readFileSync(`/proc/${pid}/maps`, 'utf8')
      .split('\n')
      .filter((l) => l.endsWith(` ${image}`));
    assert.ok(maps.length > 0, 'the image is mapped');
    for (const l of maps) assert.equal(l.split(' ')[1], 'r--s', l);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === image;
      } catch {
        return false;
      }
    });
    for (const fd of fds) {
      const flags = parseInt(/^flags:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]!, 8);
      assert.equal(flags & 3, 0, `fd ${fd} is O_RDONLY`);
    }
  });

  it("the guest reads its files through QEMU's mapping: its page cache holds almost nothing", async () => {
    const g = await agent.guestMetrics!();
    const cacheMiB = ((g.guest_memory_cached_bytes ?? 0) + (g.guest_memory_buffers_bytes ?? 0)) / 2 ** 20;
    const split = splitSmaps(fs.readFileSync(`/proc/${hv.pid()}/smaps`, 'utf8'), image);
    console.log(
      `      guest page cache ${cacheMiB.toFixed(1)} MiB; image pages QEMU maps ${(split.imageRss / 1024).toFixed(1)} MiB`,
    );
    assert.ok(cacheMiB < 16, `guest page cache ${cacheMiB} MiB (virtio-blk: about 48)`);
    assert.ok(split.imageRss > 20 * 1024, `the guest read node through the mapping (${split.imageRss} KiB)`);
  });

  it('a container runs; the guest sees /dev/pmem0 read-only, a pfn device in ram mode', async () => {
    const cid = 'c-look';
    await share.shareRootfs(cid, [], rootfs);
    const script =
      'echo "ro=$(cat /sys/block/pmem0/ro)"; for p in /sys/bus/nd/devices/pfn*; do ' +
      '[ -e $p/mode ] && echo "mode=$(cat $p/mode 2>/dev/null)"; done; echo up';
    await agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script], rootReadonly: true }));
    await agent.startContainer(cid);
    const out = await collectOutput(agent, cid);
    await agent.removeContainer(cid);
    await share.unshare(cid);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^ro=1$/m);
    assert.match(out.stdout, /^mode=ram$/m);
    assert.match(out.stdout, /^up$/m);
  });

  it('with a container running, the guest page cache still holds almost nothing', async () => {
    const cid = 'c-run';
    await share.shareRootfs(cid, [], rootfs);
    await agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', 'sleep 100; exit $?'], rootReadonly: true }));
    await agent.startContainer(cid);
    let cacheMiB: number;
    try {
      await new Promise((r) => setTimeout(r, 2000));
      const g = await agent.guestMetrics!();
      cacheMiB = ((g.guest_memory_cached_bytes ?? 0) + (g.guest_memory_buffers_bytes ?? 0)) / 2 ** 20;
      console.log(`      guest page cache with a container running ${cacheMiB.toFixed(1)} MiB`);
    } finally {
      await agent.signalProcess(cid, '', 15);
      await collectOutput(agent, cid);
      await agent.removeContainer(cid);
      await share.unshare(cid);
    }
    // The container's files are on virtio-fs (cached in the guest by its cache mode), the guest's own from the image.
    assert.ok(cacheMiB < 16, `guest page cache ${cacheMiB} MiB with a container (virtio-blk: about 48)`);
  });

  it("a privileged container cannot change the host's image, whatever it tries", async () => {
    const cid = 'c-write';
    await share.shareRootfs(cid, [], rootfs);
    // 1 MiB at 10 MiB into /dev/pmem0 (the filesystem's data, 12 MiB into the image file), written with O_DIRECT so
    // the guest's own page cache does not hide what the device did: read back the same way, it must be unchanged.
    const range = 'bs=4096 skip=2560 count=256 iflag=direct';
    const script = [
      'set +e',
      'dev=$(cat /sys/block/pmem0/dev); mknod /dev/pm b ${dev%:*} ${dev#*:}; echo "mknod $?"',
      'echo "before $(dd if=/dev/pm ' + range + ' 2>/dev/null | sha256sum)"',
      'for r in /sys/bus/nd/devices/region*/read_only; do echo 0 > $r; echo "region rw $?"; done',
      'blockdev --setrw /dev/pm; echo "setrw $?"; echo "ro $(cat /sys/block/pmem0/ro)"',
      'dd if=/dev/zero of=/dev/pm bs=4096 seek=2560 count=256 oflag=direct conv=notrunc 2>&1; echo "dd $?"',
      'echo "after $(dd if=/dev/pm ' + range + ' 2>/dev/null | sha256sum)"',
    ].join('\n');
    await agent.createOciContainer(cid, privileged(['sh', '-c', script]));
    await agent.startContainer(cid);
    const out = await collectOutput(agent, cid).catch((err: Error) => {
      throw new Error(`${err.message}; guest console:\n${hv.consoleTail(30).join('\n')}`, { cause: err });
    });
    await agent.removeContainer(cid);
    await share.unshare(cid);
    console.log(`      ${out.stdout.trim().split('\n').join('\n      ')}`);
    assert.match(out.stdout, /^mknod 0$/m, 'the container could reach the device');
    const original = createHash('sha256')
      .update(fs.readFileSync(image).subarray(12 * 2 ** 20, 13 * 2 ** 20))
      .digest('hex');
    assert.match(out.stdout, new RegExp(`^before ${original} `, 'm'), 'the guest reads the image as it is');
    assert.match(out.stdout, new RegExp(`^after ${original} `, 'm'), 'the write changed nothing the guest reads');
    assert.equal(sha256(image), imageHash, "the host's image file is unchanged");
    assert.ok(hv.pid() !== undefined, 'QEMU still runs');
  });
});
