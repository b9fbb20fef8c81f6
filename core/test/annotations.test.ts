import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from '../../errors';
import { BASE_KERNEL_PARAMS, MEMORY_AUTO_ONLINE_PARAM } from '../../hypervisor/qemu/cmdline';
import { globMatch, knownAnnotations, podConfig } from '../annotations';
import { parseConfig, toVmConfig, type HullConfig } from '../config';

const cfg = (hypervisor = ''): HullConfig =>
  parseConfig(`[hypervisor]\n${hypervisor}\n`, '/etc/hull/test.toml', '/usr/local/bin', () => false);
const ALL = cfg('enable_annotations = [".*"]');
const H = 'io.hull.config.hypervisor.';
const K = 'io.katacontainers.config.hypervisor.';

function refused(fn: () => unknown, ...fragments: (string | RegExp)[]): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof InvalidArgumentError, `${e.name}: ${e.message}`);
    for (const f of fragments) {
      if (typeof f === 'string') assert.ok(e.message.includes(f), e.message);
      else assert.match(e.message, f);
    }
    return true;
  });
}

describe('core/annotations', () => {
  it('no annotation of ours: the very configuration, whatever else the spec carries', () => {
    const c = cfg();
    const annotations = {
      'io.kubernetes.cri.container-type': 'sandbox',
      'io.hull.failpoint': 'record-written',
      'io.hull.debug.agent-hang-after-ms': '10',
      'io.katacontainers.config_path': '/x', // not under io.katacontainers.config.
    };
    assert.equal(podConfig(c, annotations).config, c);
    assert.deepEqual(podConfig(c, undefined).applied, []);
  });

  it("maps hull's and Kata's names onto a frozen copy; the file's configuration is unchanged", () => {
    const { config, applied } = podConfig(ALL, {
      [`${H}default_vcpus`]: '2',
      [`${K}default_memory`]: '1024',
      [`${K}default_max_vcpus`]: '4',
      [`${H}default_maxmemory`]: '0',
      [`${H}kernel_params`]: ' loglevel=7  mitigations=off ',
      [`${H}accel`]: 'tcg',
      'io.hull.config.agent.boot_timeout': '300',
      'io.hull.config.runtime.debug': 'true',
    });
    assert.equal(config.hypervisor.defaultVcpus, 2);
    assert.equal(config.hypervisor.defaultMemoryMiB, 1024);
    assert.equal(config.hypervisor.maxVcpus, 4);
    assert.equal(config.hypervisor.maxMemoryMiB, 0);
    assert.deepEqual(config.hypervisor.kernelParams, ['loglevel=7', 'mitigations=off']);
    assert.equal(config.hypervisor.accel, 'tcg');
    assert.equal(config.agent.bootTimeoutMs, 300_000);
    assert.equal(config.runtime.debug, true);
    assert.equal(applied.length, 8);
    assert.ok(Object.isFrozen(config.hypervisor) && Object.isFrozen(config.hypervisor.kernelParams));
    assert.equal(ALL.hypervisor.defaultVcpus, 1);
    assert.equal(ALL.runtime.debug, false);
    // What the VM gets.
    const vm = toVmConfig(config, { id: 'p', stateDir: '/run/hull/x' });
    assert.equal(vm.vcpus, 2);
    assert.equal(vm.memoryMiB, 1024);
    assert.equal(vm.debug, true);
  });

  it("a pod's kernel parameters come after the file's", () => {
    const c = cfg('enable_annotations = ["^kernel_params$"]\nkernel_params = ["loglevel=3"]');
    assert.deepEqual(podConfig(c, { [`${K}kernel_params`]: 'loglevel=7' }).config.hypervisor.kernelParams, [
      'loglevel=3',
      'loglevel=7',
    ]);
  });

  describe('the allowlist ([hypervisor] enable_annotations)', () => {
    it('default (empty): every annotation of ours is refused, naming it', () => {
      refused(
        () => podConfig(cfg(), { [`${H}default_vcpus`]: '2' }),
        `annotation "${H}default_vcpus" is not enabled`,
        'empty: none are',
      );
      refused(() => podConfig(cfg(), { 'io.hull.config.runtime.debug': 'true' }), '"io.hull.config.runtime.debug"');
    });

    it("matched against the key after the hypervisor prefix (Kata's meaning: a match anywhere), or <section>.<key>", () => {
      const c = cfg('enable_annotations = ["^default_vcpus$", "boot_timeout"]');
      assert.equal(podConfig(c, { [`${K}default_vcpus`]: '3' }).config.hypervisor.defaultVcpus, 3);
      assert.equal(podConfig(c, { 'io.hull.config.agent.boot_timeout': '9' }).config.agent.bootTimeoutMs, 9000);
      refused(() => podConfig(c, { [`${H}default_maxvcpus`]: '3' }), `"${H}default_maxvcpus" is not enabled`);
      const loose = cfg('enable_annotations = ["vcpus"]');
      assert.equal(podConfig(loose, { [`${H}default_maxvcpus`]: '3' }).config.hypervisor.maxVcpus, 3);
    });

    it('an unknown key under either prefix is refused even when the allowlist matches everything', () => {
      refused(() => podConfig(ALL, { [`${H}path`]: '/bin/sh' }), `"${H}path": hull has no such per-pod setting`);
      refused(() => podConfig(ALL, { [`${K}virtio_fs_daemon`]: '/bin/sh' }), 'no such per-pod setting');
      refused(() => podConfig(ALL, { [`${H}memory_overhead`]: '0' }), 'no such per-pod setting');
      refused(() => podConfig(ALL, { [`${H}seccomp`]: 'false' }), 'no such per-pod setting');
      refused(() => podConfig(ALL, { 'io.katacontainers.config.runtime.disable_guest_seccomp': 'true' }), 'no such');
      refused(() => podConfig(ALL, { 'io.hull.config.runtime.debug_hooks': 'true' }), 'no such per-pod setting');
      refused(() => podConfig(ALL, { 'io.hull.config.': '1' }), 'no such per-pod setting');
    });

    it('the first refused annotation in name order is named, and the known ones are listed', () => {
      refused(
        () => podConfig(cfg('enable_annotations = ["^default_vcpus$"]'), { [`${H}zz`]: '1', [`${H}accel`]: 'tcg' }),
        `"${H}accel" is not enabled`,
      );
      assert.ok(knownAnnotations().includes(`${K}default_max_vcpus`));
    });
  });

  describe('values, with the file rules', () => {
    const BAD: [string, string, string][] = [
      [`${H}default_vcpus`, '0', 'from 1 to 255'],
      [`${H}default_vcpus`, '256', 'from 1 to 255'],
      [`${K}default_vcpus`, '1.5', 'must be an integer'],
      [`${H}default_vcpus`, ' 2', 'must be an integer'],
      [`${H}default_vcpus`, '0x2', 'must be an integer'],
      [`${H}default_memory`, '63', 'from 64 to 4194304 (MiB)'],
      [`${H}default_memory`, '512M', 'must be an integer'],
      [`${H}default_maxmemory`, '-1', 'must be an integer'],
      [`${H}accel`, 'xen', 'must be one of "auto", "kvm", "tcg"'],
      ['io.hull.config.agent.boot_timeout', '0', 'from 1 to 3600 (seconds)'],
      ['io.hull.config.runtime.debug', 'yes', 'must be "true" or "false"'],
      [`${H}kernel_params`, 'a\nb', 'control characters'],
      [`${H}kernel_params`, 'x'.repeat(4097), 'at most 4096 characters'],
    ];
    for (const [key, value, need] of BAD)
      it(`${key}=${JSON.stringify(value.slice(0, 20))} is refused (${need})`, () =>
        refused(() => podConfig(ALL, { [key]: value }), `annotation "${key}"=`, need));

    it('a value that is not a string is refused', () => {
      refused(() => podConfig(ALL, { [`${H}default_vcpus`]: 2 }), 'must be a string');
    });

    it("hull's and Kata's name for one setting: the same value applies once, different values are refused", () => {
      const same = podConfig(ALL, { [`${H}kernel_params`]: 'loglevel=7', [`${K}kernel_params`]: 'loglevel=7' });
      assert.deepEqual(same.config.hypervisor.kernelParams, ['loglevel=7']);
      refused(
        () => podConfig(ALL, { [`${H}default_vcpus`]: '2', [`${K}default_vcpus`]: '3' }),
        'set the same setting (default_vcpus) to different values',
      );
    });

    it('kernel parameters hull sets or relies on are refused, with or without a value', () => {
      const words = [
        'init=/bin/sh',
        'rdinit=/x',
        'console=tty0',
        'panic=0',
        'root=/dev/vda',
        'hull.agent=vsock',
        'hull.debug_hooks=1',
        '--',
        'ro',
        MEMORY_AUTO_ONLINE_PARAM,
        ...BASE_KERNEL_PARAMS.filter((w) => w !== 'quiet'),
      ];
      for (const w of words)
        refused(() => podConfig(ALL, { [`${H}kernel_params`]: `loglevel=7 ${w}` }), `must not set`);
      // quiet only hides messages; debug drops it anyway.
      assert.deepEqual(podConfig(ALL, { [`${H}kernel_params`]: 'quiet' }).config.hypervisor.kernelParams, ['quiet']);
    });
  });

  describe('path-valued keys (kernel, initrd, image)', () => {
    let dir: string;
    before(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-annot-'));
      fs.mkdirSync(path.join(dir, 'ok'));
      fs.mkdirSync(path.join(dir, 'other'));
      fs.writeFileSync(path.join(dir, 'ok', 'vmlinuz-2'), 'k');
      fs.writeFileSync(path.join(dir, 'other', 'evil'), 'k');
      fs.symlinkSync(path.join(dir, 'other', 'evil'), path.join(dir, 'ok', 'escape'));
      fs.symlinkSync(path.join(dir, 'ok', 'vmlinuz-2'), path.join(dir, 'ok', 'alias'));
      fs.mkdirSync(path.join(dir, 'ok', 'folder'));
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const withPaths = (): HullConfig =>
      cfg(
        `enable_annotations = [".*"]\nvalid_kernel_paths = ["${dir}/ok/*"]\nvalid_image_paths = ["${dir}/ok/vmlinuz-?"]`,
      );

    it('a file matching valid_<key>_paths is used (resolved)', () => {
      const c = withPaths();
      assert.equal(
        podConfig(c, { [`${K}kernel`]: `${dir}/ok/vmlinuz-2` }).config.hypervisor.kernel,
        `${dir}/ok/vmlinuz-2`,
      );
      assert.equal(podConfig(c, { [`${H}kernel`]: `${dir}/ok/alias` }).config.hypervisor.kernel, `${dir}/ok/vmlinuz-2`);
      assert.equal(
        podConfig(c, { [`${H}image`]: `${dir}/ok/vmlinuz-2` }).config.hypervisor.image,
        `${dir}/ok/vmlinuz-2`,
      );
    });

    it('refused: no list, outside the list, a symlink out of it, .. segments, relative, missing, a folder', () => {
      const c = withPaths();
      refused(() => podConfig(c, { [`${H}initrd`]: `${dir}/ok/vmlinuz-2` }), 'valid_initrd_paths (empty)');
      refused(
        () => podConfig(c, { [`${H}kernel`]: `${dir}/other/evil` }),
        'matches no entry of [hypervisor] valid_kernel_paths',
      );
      refused(() => podConfig(c, { [`${H}kernel`]: `${dir}/ok/escape` }), 'resolves to', 'matches no entry');
      refused(() => podConfig(c, { [`${H}kernel`]: `${dir}/ok/../other/evil` }), 'absolute, normalised');
      refused(() => podConfig(c, { [`${H}kernel`]: 'ok/vmlinuz-2' }), 'absolute, normalised');
      refused(() => podConfig(c, { [`${H}kernel`]: `${dir}/ok/none` }), 'cannot be resolved (ENOENT)');
      refused(() => podConfig(c, { [`${H}kernel`]: `${dir}/ok/folder` }), 'not a regular file');
      refused(() => podConfig(c, { [`${H}image`]: `${dir}/ok/vmlinuz-22` }), 'matches no entry');
    });

    it('globMatch: * and ? within one segment only', () => {
      assert.ok(globMatch('/a/*', '/a/b'));
      assert.ok(!globMatch('/a/*', '/a/b/c'));
      assert.ok(globMatch('/a/v?.img', '/a/v1.img'));
      assert.ok(!globMatch('/a/v?.img', '/a/v12.img'));
      assert.ok(!globMatch('/a/b.img', '/a/bximg'));
      assert.ok(globMatch('/a/b', '/a/b'));
    });
  });
});
