/**
 * `[hypervisor] virtio_fs_cache` and `virtio_fs_extra_args` in a real VM, for "never" and "always": the file is
 * parsed by core's loader and goes through toVmConfig into the QEMU driver; virtiofsd's /proc/<pid>/cmdline carries
 * `cache=none` / `cache=always` and the extra argument, and a container writes a file into its (shared, writable)
 * rootfs, reads it back, and the host sees it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, toVmConfig } from '../core/config';
import type { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput } from './lib/containers';
import { testSpec } from './lib/oci-spec';
import { bootWithShare, shutDownAndCheck } from './lib/shared-vm';

const APPLETS = ['sh', 'cat', 'echo', 'mkdir', 'sync'];

for (const [mode, virtiofsdWord] of [
  ['never', 'cache=none'],
  ['always', 'cache=always'],
] as const) {
  describe(`virtio_fs_cache = "${mode}" in a real VM`, function () {
    this.timeout(300_000);
    const sandbox = `vfscache${mode}`;
    let dir: string;
    let share: VirtioFsShare;
    let hv: QemuHypervisor;
    let vm: SandboxVm | undefined;
    let rootfs: string;

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-vfscache-'));
      rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
      share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: sandbox });
      await share.prepare();
      const config = parseConfig(
        `[hypervisor]\nvirtio_fs_cache = "${mode}"\nvirtio_fs_extra_args = ["--thread-pool-size=2", "-o", "no_xattr"]\n`,
        'test.toml',
        path.resolve(__dirname, '..', '..', 'bin'),
      );
      const vmConfig = toVmConfig(config, {
        id: sandbox,
        stateDir: path.join(dir, 'vm'),
        sharedDir: share.sharedDir(),
      });
      hv = new QemuHypervisor({ logger: NOOP_LOGGER });
      vm = await bootWithShare(hv, vmConfig, sandbox);
    });

    after(async () => {
      await shutDownAndCheck(vm, share, dir);
    });

    it(`virtiofsd's cmdline carries ${virtiofsdWord} and the extra arguments, once`, () => {
      const pid = hv.virtiofsdPid();
      assert.ok(pid !== undefined, 'virtiofsd runs');
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      assert.deepEqual(
        argv.filter((w) => w.startsWith('cache=')),
        [virtiofsdWord],
        argv.join(' '),
      );
      assert.ok(argv.includes('--thread-pool-size=2'), argv.join(' '));
      assert.equal(argv[argv.indexOf('no_xattr') - 1], '-o', argv.join(' '));
    });

    it('a container writes a file into its rootfs and reads it back; the host sees it', async () => {
      const cid = `c-${mode}`;
      await share.shareRootfs(cid, [], rootfs);
      const script = `mkdir -p /data && echo "hello ${mode}" > /data/f && sync && cat /data/f`;
      await vm!.agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script] }));
      await vm!.agent.startContainer(cid);
      const out = await collectOutput(vm!.agent, cid);
      await vm!.agent.removeContainer(cid);
      await share.unshare(cid);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout, `hello ${mode}\n`);
      assert.equal(fs.readFileSync(path.join(rootfs, 'data', 'f'), 'utf8'), `hello ${mode}\n`);
    });
  });
}
