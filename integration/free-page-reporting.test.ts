/**
 * The memory options of the shipped configuration in a real VM (core's defaults through toVmConfig, QEMU confined
 * as the shim runs it): the virtio-balloon device with free page reporting is in QEMU's argv and bound to the
 * guest's virtio_balloon driver with the reporting feature negotiated, the TCG translation cache size is applied
 * under TCG, a container runs, and memory the guest touched and freed goes back to the host (QEMU's guest RAM
 * mapping shrinks again after a container fills and empties a tmpfs).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient } from '../agent-client';
import { defaultConfig, toVmConfig } from '../core/config';
import type { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import type { VmConfig } from '../hypervisor/types';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput } from './lib/containers';
import { testProcess, testSpec } from './lib/oci-spec';
import { guestRamRssKiB } from './lib/smaps';
import { bootWithShare, shutDownAndCheck } from './lib/shared-vm';

const SANDBOX = 'fprtest';
const APPLETS = ['sh', 'cat', 'echo', 'basename', 'readlink', 'dd', 'rm', 'sleep', 'true'];
/** virtio device id of a memory balloon, and VIRTIO_BALLOON_F_REPORTING's bit in the features string. */
const BALLOON_DEVICE_ID = '0x0005';
const F_REPORTING = 5;
const FILL_MIB = 160;

async function until<T>(what: string, ms: number, fn: () => T | undefined): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('free page reporting and the TCG translation cache in a real VM (shipped defaults)', function () {
  this.timeout(300_000);
  let dir: string;
  let share: VirtioFsShare;
  let hv: QemuHypervisor;
  let vm: SandboxVm | undefined;
  let agent: AgentClient;
  let rootfs: string;
  let vmConfig: VmConfig;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-fpr-test-'));
    rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
    share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: SANDBOX });
    await share.prepare();
    const config = defaultConfig(path.resolve(__dirname, '..', '..', 'bin'));
    assert.equal(config.hypervisor.freePageReporting, true);
    vmConfig = toVmConfig(config, {
      id: SANDBOX,
      stateDir: path.join(dir, 'vm'),
      sharedDir: share.sharedDir(),
    });
    hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    vm = await bootWithShare(hv, vmConfig, SANDBOX);
    agent = vm.agent;
  });

  after(async () => {
    await shutDownAndCheck(vm, share, dir);
  });

  it("QEMU's argv has the balloon with free-page-reporting=on, and tb-size only under TCG", () => {
    const argv = fs.readFileSync(`/proc/${hv.pid()}/cmdline`, 'latin1').split('\0');
    assert.ok(argv.includes('virtio-balloon-pci,id=balloon0,free-page-reporting=on'), argv.join(' '));
    // With CPU hot-plug room (the defaults give some), TCG runs on one thread (hypervisor/README.md, DAX and hot-plug).
    const room = (vmConfig.maxVcpus ?? 0) > vmConfig.vcpus;
    if (hv.accel() === 'tcg')
      assert.equal(argv[argv.indexOf('-accel') + 1], `tcg,tb-size=64${room ? ',thread=single' : ''}`);
    else assert.ok(!argv.some((w) => w.includes('tb-size')));
  });

  it('a container runs and sees the balloon bound to virtio_balloon with the reporting feature', async () => {
    const cid = 'c-sysfs';
    await share.shareRootfs(cid, [], rootfs);
    const script =
      'for d in /sys/bus/virtio/devices/*; do ' +
      'echo "$(cat $d/device) $(basename $(readlink $d/driver)) $(cat $d/features)"; done';
    await agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script], rootReadonly: true }));
    await agent.startContainer(cid);
    const out = await collectOutput(agent, cid);
    await agent.removeContainer(cid);
    await share.unshare(cid);
    assert.equal(out.code, 0, out.stderr);
    const balloon = out.stdout.split('\n').find((l) => l.startsWith(`${BALLOON_DEVICE_ID} `));
    assert.ok(balloon, `no balloon device in the guest:\n${out.stdout}`);
    const [, driver, features] = balloon.split(' ');
    assert.equal(driver, 'virtio_balloon');
    assert.equal(features?.[F_REPORTING], '1', `VIRTIO_BALLOON_F_REPORTING not negotiated: ${features}`);
  });

  it('memory a container touched and freed goes back to the host', async () => {
    const cid = 'c-fill';
    const pid = hv.pid()!;
    await share.shareRootfs(cid, [], rootfs);
    const before = guestRamRssKiB(pid);
    await agent.createOciContainer(
      cid,
      testSpec({
        args: ['sh', '-c', `dd if=/dev/zero of=/big/fill bs=1M count=${FILL_MIB} 2>/dev/null && exec sleep 3600`],
        rootReadonly: true,
        mounts: [{ destination: '/big', type: 'tmpfs', source: 'tmpfs', options: [`size=${FILL_MIB + 16}m`] }],
      }),
    );
    await agent.startContainer(cid);
    const filled = await until('the guest RAM to grow by the fill', 120_000, () => {
      const kib = guestRamRssKiB(pid);
      return kib > before + (FILL_MIB - 16) * 1024 ? kib : undefined;
    });
    await agent.execOciProcess(cid, 'rm', testProcess({ args: ['rm', '/big/fill'] }));
    assert.equal((await collectOutput(agent, cid, 'rm')).code, 0);
    // Reported after the kernel's 2 s delay, in 2 MiB blocks: most of the fill comes back.
    const after = await until('the freed memory to go back to the host', 60_000, () => {
      const kib = guestRamRssKiB(pid);
      return kib < filled - (FILL_MIB / 2) * 1024 ? kib : undefined;
    });
    console.log(
      `      guest RAM touched (MiB): before ${Math.round(before / 1024)}, filled ${Math.round(filled / 1024)}, ` +
        `after rm ${Math.round(after / 1024)}`,
    );
    await agent.signalProcess(cid, '', 9);
    await agent.waitProcess(cid);
    await agent.removeContainer(cid);
    await share.unshare(cid);
  });
});
