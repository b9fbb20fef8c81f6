import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import { resolveConfig, type FileProbe } from '../../hypervisor/config';
import {
  CONFIG_KEYS,
  CONFIG_PATH_ENV,
  DEFAULT_CONFIG_PATH,
  defaultConfig,
  fileValues,
  guestArtifactDir,
  loadConfig,
  parseConfig,
  toVmConfig,
  type HullConfig,
} from '../config';

const REPO = path.resolve(__dirname, '..', '..', '..');
const SHIPPED = path.join(REPO, 'config', 'configuration.toml');
const FILE = '/etc/hull/test.toml';
/** An installed layout: nothing in /usr/local looks like a checkout. */
const INSTALLED_BIN = '/usr/local/bin';
const noCheckout = (): boolean => false;
const parse = (text: string): HullConfig => parseConfig(text, FILE, INSTALLED_BIN, noCheckout);

describe('core/config', () => {
  describe('the shipped config/configuration.toml', () => {
    const text = fs.readFileSync(SHIPPED, 'utf8');

    it('yields exactly the built-in defaults, run in place and installed', () => {
      const checkoutBin = path.join(REPO, 'bin');
      assert.deepEqual(parseConfig(text, SHIPPED, checkoutBin), defaultConfig(checkoutBin));
      assert.deepEqual(parse(text), defaultConfig(INSTALLED_BIN, noCheckout));
    });

    it('documents every key; its commented-out guest paths are the defaults for prefix /usr/local', () => {
      const commented = text.split('\n').filter((l) => /^# [a-z_]+ = /.test(l));
      assert.equal(commented.length, 3);
      const uncommented = text
        .split('\n')
        .map((l) => (commented.includes(l) ? l.slice(2) : l))
        .join('\n');
      assert.deepEqual(parse(uncommented), defaultConfig(INSTALLED_BIN, noCheckout));
      // With the guest paths uncommented every known key is set; smol-toml keeps document order.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const doc = (require('smol-toml') as { parse(t: string): Record<string, Record<string, unknown>> }).parse(
        uncommented,
      );
      assert.deepEqual(Object.keys(doc), Object.keys(CONFIG_KEYS));
      for (const [section, keys] of Object.entries(CONFIG_KEYS))
        assert.deepEqual(Object.keys(doc[section]!), keys, section);
    });
  });

  describe('fileValues (what `hull env` prints)', () => {
    it('gives every key of CONFIG_KEYS, in order, with the value the shipped file writes for the defaults', () => {
      const text = fs.readFileSync(SHIPPED, 'utf8');
      const uncommented = text.replace(/^# ([a-z_]+ = )/gm, '$1');
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const doc = (require('smol-toml') as { parse(t: string): Record<string, Record<string, unknown>> }).parse(
        uncommented,
      );
      const values = fileValues(defaultConfig(INSTALLED_BIN, noCheckout));
      assert.deepEqual(Object.keys(values), Object.keys(CONFIG_KEYS));
      for (const [section, keys] of Object.entries(CONFIG_KEYS)) {
        const got = values[section as keyof typeof values] as Record<string, unknown>;
        assert.deepEqual(Object.keys(got), keys, section);
        assert.deepEqual(got, { ...doc[section] }, section);
      }
    });

    it('is the inverse of parseConfig: a file written from it parses back to the same configuration', () => {
      const c = parse(
        '[hypervisor]\ndefault_vcpus = 2\nkernel_params = ["a=1"]\n[agent]\nboot_timeout = 7\n[runtime]\ntracing_sampling_ratio = 0.5\n',
      );
      const lines: string[] = [];
      for (const [section, keys] of Object.entries(fileValues(c))) {
        lines.push(`[${section}]`);
        for (const [k, v] of Object.entries(keys)) lines.push(`${k} = ${JSON.stringify(v)}`);
      }
      assert.deepEqual(parse(lines.join('\n')), c);
    });
  });

  describe('defaults', () => {
    it('are the documented values, deeply frozen', () => {
      const d = defaultConfig(INSTALLED_BIN, noCheckout);
      assert.deepEqual(d, {
        hypervisor: {
          path: '/usr/bin/qemu-system-x86_64',
          kernel: '/usr/local/share/hull/guest/vmlinuz',
          initrd: '/usr/local/share/hull/guest/initrd.img',
          image: '/usr/local/share/hull/guest/rootfs.img',
          kernelParams: [],
          defaultVcpus: 1,
          defaultMemoryMiB: 512,
          maxVcpus: 255,
          maxMemoryMiB: 32768,
          accel: 'auto',
          sharedFs: 'virtio-fs',
          virtioFsDaemon: '/usr/lib/qemu/virtiofsd',
          virtioFsCache: 'auto',
          virtioFsExtraArgs: [],
          memoryOverheadMiB: 256,
          seccomp: true,
          qemuUser: 'nobody',
          freePageReporting: true,
          rootImageDax: true,
          tcgTbSizeMiB: 64,
          enableTemplate: false,
          enableAnnotations: [],
          validKernelPaths: [],
          validInitrdPaths: [],
          validImagePaths: [],
        },
        agent: {
          transport: 'auto',
          bootTimeoutMs: 60_000,
          healthIntervalMs: 10_000,
          healthTimeoutMs: 60_000,
          debugConsoleEnabled: false,
        },
        runtime: {
          debug: false,
          stateDir: '/run/hull',
          debugHooks: false,
          enableFailpoints: false,
          enableTracing: false,
          tracingEndpoint: '',
          tracingSamplingRatio: 1,
        },
      });
      for (const o of [d, d.hypervisor, d.hypervisor.kernelParams, d.agent, d.runtime]) assert.ok(Object.isFrozen(o));
      assert.throws(() => ((d.runtime as { debug: boolean }).debug = true), TypeError);
    });

    it('an empty file means the defaults', () => {
      assert.deepEqual(parse(''), defaultConfig(INSTALLED_BIN, noCheckout));
      assert.deepEqual(parse('[hypervisor]\n[agent]\n[runtime]\n'), defaultConfig(INSTALLED_BIN, noCheckout));
    });
  });

  describe('guestArtifactDir (install root)', () => {
    it('a checkout (<root>/guest/build.ts exists) uses <root>/guest/out', () => {
      const asked: string[] = [];
      const exists = (p: string): boolean => (asked.push(p), p === '/src/hull/guest/build.ts');
      assert.equal(guestArtifactDir('/src/hull/bin', exists), '/src/hull/guest/out');
      assert.deepEqual(asked, ['/src/hull/guest/build.ts']);
      assert.equal(guestArtifactDir('/src/hull/bin/', exists), '/src/hull/guest/out');
    });

    it('an installed binary uses <prefix>/share/hull/guest', () => {
      assert.equal(guestArtifactDir('/usr/local/bin', noCheckout), '/usr/local/share/hull/guest');
      assert.equal(guestArtifactDir('/usr/bin', noCheckout), '/usr/share/hull/guest');
      assert.equal(guestArtifactDir('/opt/hull/bin', noCheckout), '/opt/hull/share/hull/guest');
    });

    it('the real checkout is recognised, and a relative binDir is refused', () => {
      assert.equal(guestArtifactDir(path.join(REPO, 'bin')), path.join(REPO, 'guest', 'out'));
      assert.throws(
        () => guestArtifactDir('bin', noCheckout),
        (e: Error) => e instanceof InvalidArgumentError && /binDir/.test(e.message),
      );
    });

    it('keys in the file win over the install root', () => {
      const c = parse('[hypervisor]\nkernel = "/opt/k/vmlinuz"\n');
      assert.equal(c.hypervisor.kernel, '/opt/k/vmlinuz');
      assert.equal(c.hypervisor.initrd, '/usr/local/share/hull/guest/initrd.img');
    });
  });

  describe('values', () => {
    it('reads every key', () => {
      const c = parse(`
        [hypervisor]
        path = "/opt/qemu/bin/qemu-system-x86_64"
        kernel = "/g/vmlinuz"
        initrd = "/g/initrd.img"
        image = "/g//x/../rootfs.img"
        kernel_params = ["loglevel=7", "hull.debug"]
        default_vcpus = 4
        default_memory = 2048
        default_maxvcpus = 8
        default_maxmemory = 8192
        accel = "tcg"
        shared_fs = "virtio-fs"
        virtio_fs_daemon = "/usr/libexec/virtiofsd"
        virtio_fs_cache = "always"
        virtio_fs_extra_args = ["--thread-pool-size=4", "-o", "writeback,no_readdirplus"]
        memory_overhead = 200
        seccomp = false
        qemu_user = "1001:1001"
        free_page_reporting = false
        root_image_dax = false
        tcg_tb_size_mib = 128
        enable_template = true
        enable_annotations = ["^default_vcpus$", "kernel_params"]
        valid_kernel_paths = ["/opt/k/*"]
        valid_initrd_paths = ["/opt/k/initrd-?.img"]
        valid_image_paths = ["/opt/k/rootfs.img"]
        [agent]
        transport = "serial"
        boot_timeout = 120
        health_check_interval = 0
        health_check_timeout = 5
        debug_console_enabled = true
        [runtime]
        debug = true
        state_dir = "/var/run/hull"
        debug_hooks = true
        enable_failpoints = true
        enable_tracing = true
        tracing_endpoint = "collector.example:4317"
        tracing_sampling_ratio = 0.25
      `);
      assert.deepEqual(c, {
        hypervisor: {
          path: '/opt/qemu/bin/qemu-system-x86_64',
          kernel: '/g/vmlinuz',
          initrd: '/g/initrd.img',
          image: '/g/rootfs.img',
          kernelParams: ['loglevel=7', 'hull.debug'],
          defaultVcpus: 4,
          defaultMemoryMiB: 2048,
          maxVcpus: 8,
          maxMemoryMiB: 8192,
          accel: 'tcg',
          sharedFs: 'virtio-fs',
          virtioFsDaemon: '/usr/libexec/virtiofsd',
          virtioFsCache: 'always',
          virtioFsExtraArgs: ['--thread-pool-size=4', '-o', 'writeback', '-o', 'no_readdirplus'],
          memoryOverheadMiB: 200,
          seccomp: false,
          qemuUser: '1001:1001',
          freePageReporting: false,
          rootImageDax: false,
          tcgTbSizeMiB: 128,
          enableTemplate: true,
          enableAnnotations: ['^default_vcpus$', 'kernel_params'],
          validKernelPaths: ['/opt/k/*'],
          validInitrdPaths: ['/opt/k/initrd-?.img'],
          validImagePaths: ['/opt/k/rootfs.img'],
        },
        agent: {
          transport: 'serial',
          bootTimeoutMs: 120_000,
          healthIntervalMs: 0,
          healthTimeoutMs: 5_000,
          debugConsoleEnabled: true,
        },
        runtime: {
          debug: true,
          stateDir: '/var/run/hull',
          debugHooks: true,
          enableFailpoints: true,
          enableTracing: true,
          tracingEndpoint: 'http://collector.example:4317',
          tracingSamplingRatio: 0.25,
        },
      });
      assert.ok(Object.isFrozen(c.hypervisor.kernelParams));
    });

    // [TOML, the dotted key, a fragment the message must hold (the allowed values)]
    const BAD: [string, string, string][] = [
      [
        '[hypervisor]\npath = "qemu-system-x86_64"',
        'hypervisor.path',
        'must be an absolute path, got "qemu-system-x86_64"',
      ],
      ['[hypervisor]\npath = 1', 'hypervisor.path', 'must be an absolute path, got 1'],
      ['[hypervisor]\nkernel = "vmlinuz"', 'hypervisor.kernel', 'absolute path'],
      ['[hypervisor]\nkernel = "/g/a,b"', 'hypervisor.kernel', 'contains a comma'],
      ['[hypervisor]\ninitrd = ""', 'hypervisor.initrd', 'absolute path'],
      ['[hypervisor]\nimage = ["/g/rootfs.img"]', 'hypervisor.image', 'got an array ["/g/rootfs.img"]'],
      ['[hypervisor]\nkernel_params = "quiet"', 'hypervisor.kernel_params', 'must be an array of words'],
      ['[hypervisor]\nkernel_params = ["a b"]', 'hypervisor.kernel_params', 'got "a b"'],
      ['[hypervisor]\nkernel_params = [""]', 'hypervisor.kernel_params', 'got ""'],
      ['[hypervisor]\nkernel_params = [1]', 'hypervisor.kernel_params', 'got 1'],
      ['[hypervisor]\ndefault_vcpus = 0', 'hypervisor.default_vcpus', 'must be an integer from 1 to 255, got 0'],
      ['[hypervisor]\ndefault_vcpus = 256', 'hypervisor.default_vcpus', 'from 1 to 255'],
      ['[hypervisor]\ndefault_vcpus = 1.5', 'hypervisor.default_vcpus', 'got 1.5'],
      ['[hypervisor]\ndefault_vcpus = "2"', 'hypervisor.default_vcpus', 'got "2"'],
      [
        '[hypervisor]\ndefault_memory = 63',
        'hypervisor.default_memory',
        'must be an integer from 64 to 4194304 (MiB), got 63',
      ],
      ['[hypervisor]\ndefault_memory = 4194305', 'hypervisor.default_memory', 'from 64 to 4194304'],
      ['[hypervisor]\ndefault_memory = "512M"', 'hypervisor.default_memory', 'got "512M"'],
      [
        '[hypervisor]\nmemory_overhead = -1',
        'hypervisor.memory_overhead',
        'must be an integer from 0 to 65536 (MiB), got -1',
      ],
      ['[hypervisor]\naccel = "xen"', 'hypervisor.accel', 'must be one of "auto", "kvm", "tcg", got "xen"'],
      ['[hypervisor]\naccel = "KVM"', 'hypervisor.accel', 'got "KVM"'],
      [
        '[hypervisor]\nshared_fs = "virtio-9p"',
        'hypervisor.shared_fs',
        'must be "virtio-fs" (the only value implemented), got "virtio-9p"',
      ],
      ['[hypervisor]\nvirtio_fs_daemon = "virtiofsd"', 'hypervisor.virtio_fs_daemon', 'absolute path'],
      ['[hypervisor]\nseccomp = "on"', 'hypervisor.seccomp', 'must be true or false, got "on"'],
      ['[hypervisor]\nqemu_user = "root"', 'hypervisor.qemu_user', 'must not be root'],
      ['[hypervisor]\nqemu_user = "0:0"', 'hypervisor.qemu_user', 'not root'],
      ['[hypervisor]\nqemu_user = "a,b"', 'hypervisor.qemu_user', 'must be "", a user name or "uid:gid"'],
      ['[hypervisor]\nqemu_user = 65534', 'hypervisor.qemu_user', 'must be a string, got 65534'],
      ['[hypervisor]\nenable_annotations = "vcpus"', 'hypervisor.enable_annotations', 'array of regular expressions'],
      ['[hypervisor]\nenable_annotations = ["("]', 'hypervisor.enable_annotations', 'invalid regular expression'],
      ['[hypervisor]\nenable_annotations = [""]', 'hypervisor.enable_annotations', 'got ""'],
      ['[hypervisor]\nvalid_kernel_paths = ["k/*"]', 'hypervisor.valid_kernel_paths', 'array of absolute paths'],
      ['[hypervisor]\nvalid_kernel_paths = ["/k/../x"]', 'hypervisor.valid_kernel_paths', 'got "/k/../x"'],
      ['[hypervisor]\nvalid_image_paths = ["/"]', 'hypervisor.valid_image_paths', 'got "/"'],
      ['[hypervisor]\nvalid_initrd_paths = ["/a,b"]', 'hypervisor.valid_initrd_paths', 'contains a comma'],
      ['[agent]\ntransport = "tcp"', 'agent.transport', 'must be one of "auto", "vsock", "serial", got "tcp"'],
      ['[agent]\nboot_timeout = 0', 'agent.boot_timeout', 'must be an integer from 1 to 3600 (seconds), got 0'],
      ['[agent]\nboot_timeout = 3601', 'agent.boot_timeout', 'from 1 to 3600'],
      ['[agent]\nboot_timeout = "60s"', 'agent.boot_timeout', 'got "60s"'],
      ['[agent]\nboot_timeout = 1979-05-27', 'agent.boot_timeout', 'got a date'],
      [
        '[agent]\nhealth_check_interval = -1',
        'agent.health_check_interval',
        'must be an integer from 0 to 3600 (seconds; 0 = off), got -1',
      ],
      [
        '[agent]\nhealth_check_timeout = 0',
        'agent.health_check_timeout',
        'must be an integer from 1 to 3600 (seconds), got 0',
      ],
      ['[runtime]\ndebug_hooks = "yes"', 'runtime.debug_hooks', 'must be true or false'],
      ['[runtime]\ndebug = "yes"', 'runtime.debug', 'must be true or false, got "yes"'],
      ['[runtime]\ndebug = 1', 'runtime.debug', 'got 1'],
      ['[runtime]\nenable_failpoints = "yes"', 'runtime.enable_failpoints', 'must be true or false, got "yes"'],
      ['[runtime]\nenable_tracing = 1', 'runtime.enable_tracing', 'must be true or false, got 1'],
      ['[runtime]\ntracing_sampling_ratio = 1.5', 'runtime.tracing_sampling_ratio', 'from 0 to 1, got 1.5'],
      ['[runtime]\ntracing_sampling_ratio = "all"', 'runtime.tracing_sampling_ratio', 'got "all"'],
      ['[runtime]\ntracing_endpoint = "ftp://c:21"', 'runtime.tracing_endpoint', 'https://host:port'],
      ['[runtime]\ntracing_endpoint = "http://u:p@c:4317"', 'runtime.tracing_endpoint', 'got "http://u:p@c:4317"'],
      ['[runtime]\ntracing_endpoint = 4317', 'runtime.tracing_endpoint', 'got 4317'],
      ['[hypervisor]\nvirtio_fs_cache = "metadata"', 'hypervisor.virtio_fs_cache', '"auto", "always", "never"'],
      ['[hypervisor]\nvirtio_fs_cache = true', 'hypervisor.virtio_fs_cache', 'got true'],
      ['[hypervisor]\nvirtio_fs_extra_args = "-o writeback"', 'hypervisor.virtio_fs_extra_args', 'an array'],
      [
        '[hypervisor]\nvirtio_fs_extra_args = ["-o", "sandbox=none"]',
        'hypervisor.virtio_fs_extra_args',
        'may not hold "sandbox=none": hull chooses the sandbox',
      ],
      [
        '[hypervisor]\nvirtio_fs_extra_args = ["--socket-path=/tmp/x"]',
        'hypervisor.virtio_fs_extra_args',
        'may not hold "--socket-path=/tmp/x": hull sets the vhost-user socket',
      ],
      [
        '[hypervisor]\nvirtio_fs_extra_args = ["-o", "xattrmap=:map::user.virtiofs.:"]',
        'hypervisor.virtio_fs_extra_args',
        'may not hold "xattrmap=:map::user.virtiofs.:": extended attributes',
      ],
      ['[runtime]\nstate_dir = "run/hull"', 'runtime.state_dir', 'must be an absolute path, got "run/hull"'],
      ['[runtime]\nstate_dir = { path = "/run/hull" }', 'runtime.state_dir', 'got a table'],
    ];
    for (const [toml, key, fragment] of BAD) {
      it(`refuses ${toml.replace('\n', ' ')}`, () => {
        assert.throws(
          () => parse(toml),
          (e: Error) => {
            assert.ok(e instanceof InvalidArgumentError, e.message);
            assert.ok(e.message.startsWith(`${FILE}: ${key} `), e.message);
            assert.ok(e.message.includes(fragment), e.message);
            return true;
          },
        );
      });
    }

    it('virtio_fs_cache = "none" is the same as "never" (QEMU 7.2 virtiofsd calls it none)', () => {
      assert.equal(parse('[hypervisor]\nvirtio_fs_cache = "none"').hypervisor.virtioFsCache, 'never');
      assert.equal(parse('[hypervisor]\nvirtio_fs_cache = "never"').hypervisor.virtioFsCache, 'never');
    });

    it('agent.transport = "vsock" is accepted (whether the host can do it is checked when the VM starts)', () => {
      assert.equal(parse('[agent]\ntransport = "vsock"').agent.transport, 'vsock');
    });
  });

  describe('unknown keys and syntax errors', () => {
    const refuses = (toml: string, message: string): void => {
      assert.throws(
        () => parse(toml),
        (e: Error) => {
          assert.ok(e instanceof InvalidArgumentError, e.message);
          assert.ok(e.message.startsWith(`${FILE}: ${message}`), e.message);
          return true;
        },
      );
    };

    it('an unknown key names the file and the dotted key, and lists the known ones', () => {
      refuses(
        '[hypervisor]\ndefault_memry = 1024',
        'hypervisor.default_memry: unknown key (known: path, kernel, initrd, image, kernel_params,',
      );
      refuses(
        '[agent]\ndial_timeout = 30',
        'agent.dial_timeout: unknown key (known: transport, boot_timeout, health_check_interval, health_check_timeout, debug_console_enabled)',
      );
      refuses('[runtime]\n__proto__ = 1', 'runtime.__proto__: unknown key');
      refuses('[hypervisor.qemu]\npath = "/q"', 'hypervisor.qemu: unknown key');
    });

    it('an unknown section, a key outside any section, and a section that is not a table', () => {
      refuses('[hypervisr]\npath = "/q"', 'hypervisr: unknown section');
      refuses('debug = true', 'debug: unknown key (keys belong in a section: [hypervisor], [agent], [runtime])');
      refuses('agent = "serial"', 'agent must be a section ([agent]), got "serial"');
    });

    it('the first problem in file order is the one reported', () => {
      refuses('[runtime]\nbogus = 1\n[hypervisor]\nalso_bogus = 2', 'runtime.bogus: unknown key');
    });

    it('a syntax error names the file, line and column, and quotes the line', () => {
      assert.throws(
        () => parse('[hypervisor]\n# memory\ndefault_memory = = 512\n'),
        (e: Error) => {
          assert.ok(e instanceof InvalidArgumentError);
          assert.equal(e.message, `${FILE}:3:18: TOML syntax error: invalid value (in "default_memory = = 512")`);
          return true;
        },
      );
      assert.throws(
        () => parse('[agent]\nboot_timeout = 10\nboot_timeout = 20\n'),
        (e: Error) =>
          e instanceof InvalidArgumentError &&
          e.message.startsWith(`${FILE}:3:`) &&
          /TOML syntax error/.test(e.message),
      );
      assert.throws(
        () => parse('[agent\n'),
        (e: Error) => e instanceof InvalidArgumentError && e.message.startsWith(`${FILE}:1:`),
      );
    });
  });

  describe('loadConfig (which file)', () => {
    let dir: string;
    let files: Record<'fromOption' | 'fromEnv' | 'atDefault', string>;
    const timeout = (seconds: number): string => `[agent]\nboot_timeout = ${seconds}\n`;

    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-config-'));
      files = {
        fromOption: path.join(dir, 'option.toml'),
        fromEnv: path.join(dir, 'env.toml'),
        atDefault: path.join(dir, 'default.toml'),
      };
      fs.writeFileSync(files.fromOption, timeout(1));
      fs.writeFileSync(files.fromEnv, timeout(2));
      fs.writeFileSync(files.atDefault, timeout(3));
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    const load = (
      configPath: string | undefined,
      env: NodeJS.ProcessEnv,
      defaultPath = files.atDefault,
    ): ReturnType<typeof loadConfig> =>
      loadConfig({ configPath, env, binDir: INSTALLED_BIN, defaultPath, exists: noCheckout });

    it('ConfigPath wins over HULL_CONFIG, which wins over the default file', () => {
      const r1 = load(files.fromOption, { [CONFIG_PATH_ENV]: files.fromEnv });
      assert.deepEqual([r1.source, r1.config.agent.bootTimeoutMs], [files.fromOption, 1000]);
      const r2 = load(undefined, { [CONFIG_PATH_ENV]: files.fromEnv });
      assert.deepEqual([r2.source, r2.config.agent.bootTimeoutMs], [files.fromEnv, 2000]);
      const r3 = load(undefined, {});
      assert.deepEqual([r3.source, r3.config.agent.bootTimeoutMs], [files.atDefault, 3000]);
      const r4 = load('', { [CONFIG_PATH_ENV]: '' }); // empty = not set
      assert.equal(r4.source, files.atDefault);
      assert.ok(Object.isFrozen(r1));
    });

    it('no default file means the built-in defaults', () => {
      const r = load(undefined, {}, path.join(dir, 'absent.toml'));
      assert.equal(r.source, 'defaults');
      assert.deepEqual(r.config, defaultConfig(INSTALLED_BIN, noCheckout));
      assert.equal(DEFAULT_CONFIG_PATH, '/etc/hull/configuration.toml');
    });

    it('a named file that is missing is a FailedPreconditionError naming it and where it came from', () => {
      const absent = path.join(dir, 'absent.toml');
      assert.throws(
        () => load(absent, {}),
        (e: Error) =>
          e instanceof FailedPreconditionError &&
          e.message === `configuration file ${absent} (from the runtime option ConfigPath) does not exist`,
      );
      assert.throws(
        () => load(undefined, { [CONFIG_PATH_ENV]: absent }),
        (e: Error) =>
          e instanceof FailedPreconditionError &&
          e.message === `configuration file ${absent} (from HULL_CONFIG) does not exist`,
      );
      assert.throws(() => load(path.join(files.fromOption, 'x.toml'), {}), FailedPreconditionError); // ENOTDIR
    });

    it('a named path must be absolute; an unreadable default file is an error, not the defaults', () => {
      assert.throws(
        () => load('hull.toml', {}),
        (e: Error) =>
          e instanceof InvalidArgumentError && /ConfigPath must be an absolute path, got "hull.toml"/.test(e.message),
      );
      assert.throws(
        () => load(undefined, { [CONFIG_PATH_ENV]: './x' }),
        (e: Error) => e instanceof InvalidArgumentError && /HULL_CONFIG must be/.test(e.message),
      );
      assert.throws(
        () => load(undefined, {}, dir),
        (e: Error) =>
          e instanceof FailedPreconditionError && e.message === `configuration file ${dir} cannot be read (EISDIR)`,
      );
    });

    it('errors in the chosen file name that file', () => {
      fs.writeFileSync(files.fromEnv, '[agent]\nboot_timout = 5\n');
      assert.throws(
        () => load(undefined, { [CONFIG_PATH_ENV]: files.fromEnv }),
        (e: Error) =>
          e instanceof InvalidArgumentError && e.message.startsWith(`${files.fromEnv}: agent.boot_timout: unknown key`),
      );
    });
  });

  describe('toVmConfig', () => {
    const config = parse(
      '[hypervisor]\nkernel_params = ["loglevel=7"]\ndefault_vcpus = 2\naccel = "tcg"\n[agent]\ntransport = "serial"\n[runtime]\ndebug = true\n',
    );

    it('maps the configuration and the sandbox onto the hypervisor VmConfig', () => {
      const vm = toVmConfig(config, {
        id: 'pod-1',
        stateDir: '/run/hull/pod-1/vm',
        sharedDir: '/run/hull/pod-1/shared',
      });
      assert.deepEqual(vm, {
        id: 'pod-1',
        stateDir: '/run/hull/pod-1/vm',
        kernel: '/usr/local/share/hull/guest/vmlinuz',
        initrd: '/usr/local/share/hull/guest/initrd.img',
        image: '/usr/local/share/hull/guest/rootfs.img',
        vcpus: 2,
        memoryMiB: 512,
        accel: 'tcg',
        agentTransport: 'serial',
        sharedDir: '/run/hull/pod-1/shared',
        kernelParams: ['loglevel=7'],
        qemuPath: '/usr/bin/qemu-system-x86_64',
        virtiofsdPath: '/usr/lib/qemu/virtiofsd',
        virtiofsCache: 'auto',
        virtiofsdExtraArgs: [],
        seccomp: true,
        qemuUser: 'nobody',
        freePageReporting: true,
        rootImageDevice: 'nvdimm',
        tcgTbSizeMiB: 64,
        maxVcpus: 255,
        maxMemoryMiB: 32768,
        debug: true,
      });
      vm.kernelParams.push('mutable'); // a copy: the frozen configuration is untouched
      assert.deepEqual(config.hypervisor.kernelParams, ['loglevel=7']);
      // root_image_dax = false: the read-only virtio-blk disk
      const blk = toVmConfig(parse('[hypervisor]\nroot_image_dax = false\n'), { id: 'p', stateDir: '/s' });
      assert.equal(blk.rootImageDevice, 'virtio-blk');
    });

    it('passes the hot-plug maxima on only when they are set (0 = no hot-plug: no maxVcpus/maxMemoryMiB at all)', () => {
      const off = toVmConfig(parse('[hypervisor]\ndefault_maxvcpus = 0\ndefault_maxmemory = 0\n'), {
        id: 'p',
        stateDir: '/s',
      });
      assert.ok(!('maxVcpus' in off) && !('maxMemoryMiB' in off));
      const on = toVmConfig(parse('[hypervisor]\ndefault_maxvcpus = 4\ndefault_maxmemory = 4096\n'), {
        id: 'p',
        stateDir: '/s',
      });
      assert.equal(on.maxVcpus, 4);
      assert.equal(on.maxMemoryMiB, 4096);
      const cpuOnly = toVmConfig(parse('[hypervisor]\ndefault_maxvcpus = 2\ndefault_maxmemory = 0\n'), {
        id: 'p',
        stateDir: '/s',
      });
      assert.equal(cpuOnly.maxVcpus, 2);
      assert.ok(!('maxMemoryMiB' in cpuOnly));
      assert.throws(() => parse('[hypervisor]\ndefault_maxvcpus = 256\n'), /hypervisor\.default_maxvcpus/);
      assert.throws(() => parse('[hypervisor]\ndefault_maxmemory = -1\n'), /hypervisor\.default_maxmemory/);
    });

    it('tells the guest to honour its test-only fault hooks only when debug_hooks is on', () => {
      const on = parse('[hypervisor]\nkernel_params = ["loglevel=7"]\n[runtime]\ndebug_hooks = true\n');
      assert.deepEqual(toVmConfig(on, { id: 'p', stateDir: '/s' }).kernelParams, ['loglevel=7', 'hull.debug_hooks=1']);
      assert.deepEqual(toVmConfig(config, { id: 'p', stateDir: '/s' }).kernelParams, ['loglevel=7']);
      // and gets the raw port the floor hook writes to (bench/datapath.ts) only then
      assert.equal(toVmConfig(on, { id: 'p', stateDir: '/s' }).debugPort, true);
      assert.equal(toVmConfig(config, { id: 'p', stateDir: '/s' }).debugPort, undefined);
    });

    it('leaves sharedDir out when there is none, and the result passes the hypervisor own validation', () => {
      const vm = toVmConfig(defaultConfig(INSTALLED_BIN, noCheckout), { id: 'pod-2', stateDir: '/run/hull/pod-2' });
      assert.ok(!('sharedDir' in vm));
      const present = new Set([vm.kernel, vm.initrd, vm.image]);
      const probe: FileProbe = {
        kind: (p) => (present.has(p) ? 'file' : 'missing'),
        executable: (p) => p === vm.qemuPath,
      };
      const resolved = resolveConfig(vm, probe);
      assert.deepEqual(
        [resolved.vcpus, resolved.memoryMiB, resolved.accel, resolved.agentTransport, resolved.debug],
        [1, 512, 'auto', 'auto', false],
      );
    });
  });
});
