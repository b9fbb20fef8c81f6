/** The initramfs archive and its /init script. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { S_IFCHR, S_IFLNK, S_IFMT } from '../cpio';
import { readNewc } from './lib/newc-reader';
import { buildInitramfs, initScript, INIT_UPTIME_ENV, INITRD_APPLETS } from '../initramfs';

const OPTIONS = {
  modules: ['virtio_ring', 'virtio', 'virtio_blk'],
  rootDevice: '/dev/vda',
  rootWaitSeconds: 20,
  init: '/sbin/init',
  comment: 'test',
};

describe('guest initramfs', () => {
  it('contains busybox, its applet links, /dev/console, the modules in order, and /init', () => {
    const moduleFiles = new Map(OPTIONS.modules.map((m) => [m, Buffer.from(`ko:${m}`)]));
    const { cpio, image } = buildInitramfs({ ...OPTIONS, busybox: Buffer.from('busybox'), moduleFiles });
    assert.deepEqual(gunzipSync(image), cpio);
    const entries = new Map(readNewc(cpio).map((e) => [e.name, e]));
    assert.equal(entries.get('bin/busybox')!.data.toString(), 'busybox');
    for (const applet of INITRD_APPLETS) {
      assert.equal(entries.get(`bin/${applet}`)!.mode & S_IFMT, S_IFLNK);
      assert.equal(entries.get(`bin/${applet}`)!.data.toString(), 'busybox');
    }
    const console = entries.get('dev/console')!;
    assert.equal(console.mode & S_IFMT, S_IFCHR);
    assert.deepEqual([console.rdevMajor, console.rdevMinor], [5, 1]);
    for (const m of OPTIONS.modules) assert.equal(entries.get(`lib/modules/${m}.ko`)!.data.toString(), `ko:${m}`);
    assert.equal(entries.get('init')!.mode & 0o777, 0o755);
    for (const dir of ['proc', 'sys', 'newroot']) assert.ok(entries.has(dir), dir);
  });

  it('fails when a module file is missing', () => {
    assert.throws(
      () => buildInitramfs({ ...OPTIONS, busybox: Buffer.alloc(1), moduleFiles: new Map() }),
      /no file for module virtio_ring/,
    );
  });

  it('/init loads modules in the given order, waits for the root disk and switches root', () => {
    const script = initScript(OPTIONS);
    assert.match(script, /^#!\/bin\/sh\n/);
    assert.match(script, /for m in virtio_ring virtio virtio_blk; do/);
    assert.match(script, /^root=\/dev\/vda$/m);
    assert.match(script, /mount -t ext4 -o ro "\$root" \/newroot/);
    assert.match(script, /exec switch_root \/newroot \/sbin\/init\n$/);
    assert.match(script, /reboot -f/);
  });

  it('/init hands its start (the uptime) to the agent in HULL_INIT_UPTIME, the name agent/system.ts reads', () => {
    assert.equal(INIT_UPTIME_ENV, 'HULL_INIT_UPTIME');
    const script = initScript(OPTIONS);
    const at = script.indexOf('read -r HULL_INIT_UPTIME _ </proc/uptime\nexport HULL_INIT_UPTIME\n');
    assert.ok(at > script.indexOf('mount -t proc'), 'after /proc is mounted');
    assert.ok(at < script.indexOf('for m in'), 'before the modules load');
  });

  it('/init is valid sh (busybox sh -n)', function () {
    const r = spawnSync('busybox', ['sh', '-n', '-c', initScript(OPTIONS)], { encoding: 'utf8' });
    if (r.error) this.skip();
    assert.equal(r.status, 0, r.stderr);
  });

  it('refuses values that would break the script', () => {
    assert.throws(() => initScript({ ...OPTIONS, modules: ['x; reboot'] }), /bad module name/);
    assert.throws(() => initScript({ ...OPTIONS, rootDevice: '/dev/vda $(x)' }), /bad root device/);
    assert.throws(() => initScript({ ...OPTIONS, init: 'sbin/init' }), /bad init path/);
  });

  describe('a pmem root (the root image through DAX)', () => {
    const PMEM = { ...OPTIONS, pmemModules: ['libnvdimm', 'nd_btt', 'nd_pmem', 'nfit'] };

    it('ships the pmem modules and loads them only for root=/dev/pmem*, after the others', () => {
      const moduleFiles = new Map([...OPTIONS.modules, ...PMEM.pmemModules].map((m) => [m, Buffer.from(`ko:${m}`)]));
      const entries = new Map(
        readNewc(buildInitramfs({ ...PMEM, busybox: Buffer.from('busybox'), moduleFiles }).cpio).map((e) => [
          e.name,
          e,
        ]),
      );
      for (const m of PMEM.pmemModules) assert.equal(entries.get(`lib/modules/${m}.ko`)!.data.toString(), `ko:${m}`);
      const script = initScript(PMEM);
      const pmemCase = script.indexOf('/dev/pmem*)');
      assert.ok(pmemCase > script.indexOf('for m in virtio_ring virtio virtio_blk; do'), 'after the base modules');
      assert.match(script, /pmem_modules="libnvdimm nd_btt nd_pmem nfit"/);
      assert.match(script, /mount -t ext4 -o ro,dax=always "\$root" \/newroot/);
      assert.match(script, /mount -t ext4 -o ro "\$root" \/newroot/, 'virtio-blk mounts as before');
    });

    it('without pmem modules (a kernel that lacks them) a pmem root fails with a message saying so', () => {
      const script = initScript(OPTIONS);
      assert.match(script, /pmem_modules=""/);
      assert.match(script, /needs the nvdimm\/pmem drivers, which this kernel lacks/);
    });

    it('/init is valid sh with pmem modules (busybox sh -n)', function () {
      const r = spawnSync('busybox', ['sh', '-n', '-c', initScript(PMEM)], { encoding: 'utf8' });
      if (r.error) this.skip();
      assert.equal(r.status, 0, r.stderr);
    });

    it('refuses a pmem module name that would break the script', () => {
      assert.throws(() => initScript({ ...OPTIONS, pmemModules: ['nfit"; reboot'] }), /bad module name/);
    });
  });
});
