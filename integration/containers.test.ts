/**
 * Containers in a real VM: a busybox rootfs shared from the host with fs-share (virtio-fs), run by the agent with
 * the guest's crun; output, exit codes, signals, exec, volumes, OOM events, resource updates, process lists, and
 * seccomp profiles applied by crun in the guest, and the errors for duplicates, unknown processes and escaping
 * volumes. One boot for the whole suite (a boot is
 * seconds under TCG).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient, OciSeccomp, OciSpec } from '../agent-client';
import type { SandboxVm } from '../core/vm';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
} from '../errors';
import { GUEST_SHARED_DIR as SHARED_MOUNT, shareVolumes, VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput as collect, drainStream } from './lib/containers';
import { guestArtifacts, mountsContaining } from './lib/guest';
import { testSpec, testProcess, type TestContainer } from './lib/oci-spec';
import { bootWithShare, shutDownAndCheck } from './lib/shared-vm';

const SANDBOX = 'ctrtest';
const APPLETS = ['sh', 'echo', 'cat', 'sleep', 'true', 'dd', 'stty', 'mkdir'];
const MiB = 2 ** 20;

describe('containers in a real VM (crun in the guest, rootfs over virtio-fs)', function () {
  this.timeout(200_000);
  let dir: string;
  let share: VirtioFsShare;
  let vm: SandboxVm | undefined;
  let agent: AgentClient;
  let rootfs: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-ctr-test-'));
    rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
    share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: SANDBOX });
    await share.prepare();
    const guest = guestArtifacts();
    vm = await bootWithShare(
      new QemuHypervisor({ logger: NOOP_LOGGER }),
      {
        id: SANDBOX,
        stateDir: path.join(dir, 'vm'),
        kernel: guest.kernel,
        initrd: guest.initrd,
        image: guest.image,
        vcpus: 1,
        memoryMiB: 512,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: share.sharedDir(),
      },
      SANDBOX,
    );
    agent = vm.agent;
  });

  after(async () => {
    await shutDownAndCheck(vm, share, dir);
  });

  async function run(cid: string, args: string[]): Promise<void> {
    await share.shareRootfs(cid, [], rootfs);
    await agent.createOciContainer(cid, testSpec({ args, rootReadonly: true, hostname: cid }));
    await agent.startContainer(cid);
  }

  async function remove(cid: string): Promise<void> {
    await agent.removeContainer(cid);
    await share.unshare(cid);
  }

  it('runs a container: its stdout, stderr and exit code', async () => {
    await run('c-hello', ['sh', '-c', 'echo hello; echo err >&2']);
    assert.deepEqual(await collect(agent, 'c-hello'), { stdout: 'hello\n', stderr: 'err\n', code: 0 });
    await remove('c-hello');
    await assert.rejects(agent.waitProcess('c-hello'), NotFoundError, 'a removed container is forgotten');
  });

  it('reports a non-zero exit code', async () => {
    await run('c-exit', ['sh', '-c', 'exit 42']);
    assert.equal((await collect(agent, 'c-exit')).code, 42);
    await remove('c-exit');
  });

  it('signals every process of a container: SIGTERM ends `sleep` with 143', async () => {
    // The container's init is PID 1 of its PID namespace, which ignores SIGTERM without a handler (as under runc):
    // the shell stays, `sleep` (signalled too: exec id '' is every process) dies, and the shell exits with its status.
    await run('c-sleep', ['sh', '-c', 'sleep 100; exit $?']);
    await assert.rejects(agent.signalProcess('c-sleep', '', 0), InvalidArgumentError, 'signal 0 is refused');
    await assert.rejects(agent.signalProcess('no-such', '', 15), NotFoundError);
    await agent.signalProcess('c-sleep', '', 15);
    assert.equal(await agent.waitProcess('c-sleep'), 143);
    await remove('c-sleep');
  });

  it('execs a process in a running container, refuses duplicates and unknown processes', async () => {
    await run('c-exec', ['sleep', '100']);
    await agent.execOciProcess('c-exec', 'e1', testProcess({ args: ['echo', 'from-exec'] }));
    assert.deepEqual(await collect(agent, 'c-exec', 'e1'), { stdout: 'from-exec\n', stderr: '', code: 0 });
    await assert.rejects(
      agent.execOciProcess('c-exec', 'e1', testProcess({ args: ['true'] })),
      AlreadyExistsError,
      'duplicate exec id',
    );
    await assert.rejects(agent.waitProcess('c-exec', 'no-such-exec'), NotFoundError, 'unknown exec id');
    await assert.rejects(agent.readStdout('c-exec', 'no-such-exec'), NotFoundError);
    await assert.rejects(
      agent.createOciContainer('c-exec', testSpec({ args: ['true'] })),
      AlreadyExistsError,
      'duplicate container id',
    );

    // stdin: cat echoes what it is given and ends at CloseStdin.
    await agent.execOciProcess('c-exec', 'e2', testProcess({ args: ['cat'] }));
    assert.equal(await agent.writeStdin('c-exec', 'e2', Buffer.from('through stdin\n')), 14);
    await agent.closeStdin('c-exec', 'e2');
    assert.deepEqual(await collect(agent, 'c-exec', 'e2'), { stdout: 'through stdin\n', stderr: '', code: 0 });

    await agent.signalProcess('c-exec', '', 9);
    assert.equal(await agent.waitProcess('c-exec'), 137);
    await remove('c-exec');
    await assert.rejects(agent.removeContainer('c-exec'), NotFoundError);
  });

  it('delivers 50 MiB of stdout intact (same length and sha256)', async () => {
    // Random bytes written on the host into the rootfs, read by `cat` in the guest over virtio-fs and sent back
    // through stdout: a lost, repeated or reordered chunk changes the hash.
    const data = crypto.randomBytes(50 * 2 ** 20);
    fs.writeFileSync(path.join(rootfs, 'tmp', 'payload.bin'), data);
    try {
      await run('c-stream', ['cat', '/tmp/payload.bin']);
      const got = crypto.createHash('sha256');
      let bytes = 0;
      const [, , code] = await Promise.all([
        drainStream(
          () => agent.readStdout('c-stream', ''),
          (c) => {
            got.update(c);
            bytes += c.length;
          },
        ),
        drainStream(
          () => agent.readStderr('c-stream', ''),
          () => undefined,
        ),
        agent.waitProcess('c-stream'),
      ]);
      assert.equal(code, 0);
      assert.equal(bytes, data.length);
      assert.equal(got.digest('hex'), crypto.createHash('sha256').update(data).digest('hex'));
      await remove('c-stream');
    } finally {
      fs.rmSync(path.join(rootfs, 'tmp', 'payload.bin'), { force: true });
    }
  });

  it('reports stats, pauses (its output stops, exec is refused) and resumes a container', async () => {
    await run('c-pause', ['sh', '-c', 'while :; do echo tick; sleep 0.1; done']);
    const stats = await agent.statsContainer('c-pause');
    assert.ok(stats.memoryUsageBytes > 0, `memory use ${stats.memoryUsageBytes}`);
    assert.ok(stats.pids >= 1, `pids ${stats.pids}`);
    assert.ok(stats.cpuUsageNs > 0, `cpu ${stats.cpuUsageNs}`);
    assert.equal(stats.memoryLimitBytes, undefined, 'no memory limit was set');
    await assert.rejects(agent.statsContainer('no-such'), NotFoundError);
    await agent.pauseContainer('c-pause');
    await assert.rejects(agent.pauseContainer('c-pause'), FailedPreconditionError, 'pause twice');
    await assert.rejects(
      agent.execOciProcess('c-pause', 'e1', testProcess({ args: ['true'] })),
      FailedPreconditionError,
      'no exec while paused',
    );
    // Output already buffered comes out; then a read stays unanswered: the processes are frozen.
    let pending = agent.readStdout('c-pause', '');
    let frozen = false;
    for (const until = Date.now() + 20_000; Date.now() < until;) {
      const outcome = await Promise.race([
        pending.then(() => 'data'),
        new Promise((r) => setTimeout(() => r('quiet'), 1500)),
      ]);
      if (outcome === 'quiet') {
        frozen = true;
        break;
      }
      pending = agent.readStdout('c-pause', '');
    }
    assert.ok(frozen, 'output stopped while paused');
    await agent.resumeContainer('c-pause');
    await assert.rejects(agent.resumeContainer('c-pause'), FailedPreconditionError, 'resume twice');
    assert.ok((await pending).length > 0, 'output goes on after resume');
    await agent.signalProcess('c-pause', '', 9);
    assert.equal((await collect(agent, 'c-pause')).code, 137);
    await remove('c-pause');
  });

  /** Shares the rootfs, then creates and starts container `cid` from `spec`. */
  async function runSpec(cid: string, spec: TestContainer): Promise<void> {
    await share.shareRootfs(cid, [], rootfs);
    await agent.createOciContainer(cid, testSpec({ rootReadonly: true, hostname: cid, ...spec }));
    await agent.startContainer(cid);
  }

  it('mounts volumes: read-only ones refuse writes (host unchanged), read-write ones reach the host', async () => {
    const cid = 'c-vol';
    const [roDir, rwDir, guestRoDir] = ['vol-ro', 'vol-rw', 'vol-guest-ro'].map((n) => path.join(dir, n)) as [
      string,
      string,
      string,
    ];
    for (const d of [roDir, rwDir, guestRoDir]) fs.mkdirSync(d);
    fs.writeFileSync(path.join(roDir, 'f'), 'host\n');
    fs.writeFileSync(path.join(guestRoDir, 'f'), 'host\n');
    const greeting = path.join(dir, 'greeting.txt');
    fs.writeFileSync(greeting, 'hello\n');
    await share.shareRootfs(cid, [], rootfs);
    const mounts = await shareVolumes(share, cid, [
      { destination: '/ro', type: 'bind', source: roDir, options: ['rbind', 'ro'] },
      { destination: '/rw', type: 'bind', source: rwDir, options: ['rbind', 'rw'] },
      { destination: '/etc/greeting', type: 'bind', source: greeting, options: ['rbind', 'ro'] },
    ]);
    // Shared read-write on the host, mounted read-only in the container: the guest's own ro must hold.
    const guestRo = await share.shareVolume(cid, { source: guestRoDir, destination: '/guest-ro', readOnly: false });
    mounts.push({ destination: '/guest-ro', type: 'bind', source: guestRo.guestPath, options: ['rbind', 'ro'] });
    const script = [
      'echo x > /ro/f; echo ro=$?',
      'echo x > /guest-ro/f; echo guest-ro=$?',
      'echo x > /etc/greeting; echo file=$?',
      'cat /ro/f /guest-ro/f /etc/greeting',
      'echo from-guest > /rw/new; echo rw=$?',
    ].join('; ');
    await agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script], rootReadonly: true, mounts }));
    await agent.startContainer(cid);
    const out = await collect(agent, cid);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^ro=[1-9]\d*\nguest-ro=[1-9]\d*\nfile=[1-9]\d*\nhost\nhost\nhello\nrw=0\n$/, out.stdout);
    assert.match(out.stderr, /Read-only file system/);
    assert.equal(fs.readFileSync(path.join(roDir, 'f'), 'utf8'), 'host\n');
    assert.equal(fs.readFileSync(path.join(guestRoDir, 'f'), 'utf8'), 'host\n');
    assert.equal(fs.readFileSync(greeting, 'utf8'), 'hello\n');
    assert.equal(
      fs.readFileSync(path.join(rwDir, 'new'), 'utf8'),
      'from-guest\n',
      'the host sees what the container wrote',
    );
    await remove(cid);
    assert.deepEqual(
      mountsContaining(dir).filter((m) => m.includes(`/${cid}/`)),
      [],
      'unshare left no volume mounted',
    );
  });

  it('refuses volumes from outside the share, through .., or through a symlink leading out (INVALID_ARGUMENT)', async () => {
    const cid = 'c-escape';
    const volDir = path.join(dir, 'vol-escape');
    fs.mkdirSync(volDir);
    fs.symlinkSync('/etc', path.join(volDir, 'abs'));
    fs.symlinkSync('../../../../../../../../../etc', path.join(volDir, 'rel'));
    await share.shareRootfs(cid, [], rootfs);
    const vol = await share.shareVolume(cid, { source: volDir, destination: '/v', readOnly: false });
    const bind = (destination: string, source: string): TestContainer => ({
      args: ['true'],
      mounts: [{ destination, type: 'bind', source, options: ['rbind'] }],
    });
    for (const source of [
      '/etc',
      `${SHARED_MOUNT}/../../../etc`,
      `${vol.guestPath}/../../../../../etc`,
      `${vol.guestPath}/abs`,
      `${vol.guestPath}/rel`,
      SHARED_MOUNT,
    ]) {
      await assert.rejects(
        agent.createOciContainer(cid, testSpec(bind('/v', source))),
        (e: Error) => e instanceof InvalidArgumentError && /volume "\/v"/.test(e.message),
        source,
      );
    }
    await assert.rejects(
      agent.createOciContainer(cid, testSpec(bind('/v/../etc', vol.guestPath))),
      InvalidArgumentError,
      'destination not normalized',
    );
    await assert.rejects(
      agent.createOciContainer(cid, testSpec(bind('v', vol.guestPath))),
      InvalidArgumentError,
      'relative destination',
    );
    await assert.rejects(agent.waitProcess(cid), NotFoundError, 'nothing was created');
    await share.unshare(cid);
  });

  it('confines a volume destination that goes through a symlink to the rootfs (crun resolves it in the rootfs)', async () => {
    // /escape -> ../../../../../../../../../target: from the rootfs's place in the guest that climbs to the guest's
    // root, unless it is resolved inside the rootfs, where it is the rootfs's /target.
    const cid = 'c-dest';
    fs.mkdirSync(path.join(rootfs, 'target'), { recursive: true });
    fs.symlinkSync('../../../../../../../../../target', path.join(rootfs, 'escape'));
    const volDir = path.join(dir, 'vol-dest');
    fs.mkdirSync(volDir);
    fs.writeFileSync(path.join(volDir, 'f'), 'inside\n');
    try {
      await share.shareRootfs(cid, [], rootfs);
      const mounts = await shareVolumes(share, cid, [
        { destination: '/escape', type: 'bind', source: volDir, options: ['rbind', 'ro'] },
      ]);
      await agent.createOciContainer(cid, testSpec({ args: ['cat', '/target/f'], rootReadonly: true, mounts }));
      await agent.startContainer(cid);
      assert.deepEqual(await collect(agent, cid), { stdout: 'inside\n', stderr: '', code: 0 });
      assert.ok(!fs.existsSync(path.join(rootfs, 'target', 'f')), 'the mount stayed in the container');
      await remove(cid);
    } finally {
      fs.rmSync(path.join(rootfs, 'escape'), { force: true });
      fs.rmSync(path.join(rootfs, 'target'), { recursive: true, force: true });
    }
  });

  it('reports an OOM kill with GetOOMEvent, and the container exits with 137', async () => {
    const cid = 'c-oom';
    const controller = new AbortController();
    const oom = agent.getOOMEvent(controller.signal);
    oom.catch(() => undefined); // awaited below; a failure before that must not be an unhandled rejection
    try {
      // dd's 64 MiB buffer is touched as it reads: far beyond the 16 MiB limit, and the guest has no swap.
      await runSpec(cid, {
        args: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1'],
        resources: { memory: { limit: 16 * MiB } },
      });
      assert.equal((await collect(agent, cid)).code, 137);
      assert.equal(await oom, cid);
      await remove(cid);
    } finally {
      controller.abort();
    }
  });

  it("updates a running container's limits, and lists its processes with a running exec", async () => {
    const cid = 'c-update';
    await runSpec(cid, { args: ['sleep', '100'] });
    assert.equal((await agent.statsContainer(cid)).memoryLimitBytes, undefined);
    await agent.updateContainer(cid, {
      memoryLimitBytes: 48 * MiB,
      pidsLimit: 50,
      cpuQuotaUs: 50_000,
      cpuPeriodUs: 100_000,
      cpuShares: 512,
    });
    const stats = await agent.statsContainer(cid);
    assert.equal(stats.memoryLimitBytes, 48 * MiB, "memory.max of the container's cgroup");
    assert.equal(stats.pidsLimit, 50, 'pids.max');
    await agent.updateContainer(cid, { memoryLimitBytes: -1 });
    assert.equal((await agent.statsContainer(cid)).memoryLimitBytes, undefined, 'limit lifted');
    await assert.rejects(agent.updateContainer(cid, { cpuShares: 1 }), InvalidArgumentError);
    await assert.rejects(
      agent.updateContainer(cid, { cpus: '63' }),
      InvalidArgumentError,
      'a CPU the guest does not have',
    );
    await assert.rejects(agent.updateContainer('no-such', { pidsLimit: 5 }), NotFoundError);

    await agent.execOciProcess(cid, 'e1', testProcess({ args: ['sleep', '4242'] }));
    const pids = await agent.listProcesses(cid);
    assert.equal(pids.length, 2, `init and exec: ${JSON.stringify(pids)}`);
    const table = await agent.processTable(cid);
    const pidOf = (cmd: string): number =>
      Number(
        table
          .split('\n')
          .find((l) => l.endsWith(cmd))
          ?.trim()
          .split(/\s+/)[1],
      );
    assert.deepEqual(
      [pidOf('sleep 100'), pidOf('sleep 4242')].sort((a, b) => a - b),
      pids,
      table,
    );
    await agent.signalProcess(cid, 'e1', 9);
    assert.equal(await agent.waitProcess(cid, 'e1'), 137);
    assert.deepEqual(await agent.listProcesses(cid), [pidOf('sleep 100')], 'the exec has gone');
    await assert.rejects(agent.listProcesses('no-such'), NotFoundError);

    await agent.signalProcess(cid, '', 9);
    assert.equal((await collect(agent, cid)).code, 137);
    await remove(cid);
  });

  it('runs a container whose init has a terminal: resized before start, all output on stdout, exact exit code', async () => {
    await share.shareRootfs('c-tty', [], rootfs);
    // 2000 lines written just before the exit: all of them must be read before WaitProcess answers. `tty` (ttyname)
    // names the pty: it is the container's own, from its /dev/pts.
    const script = 'read -r line; tty; stty size; i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; exit 5';
    await agent.createOciContainer(
      'c-tty',
      testSpec({ args: ['sh', '-c', script], terminal: true, rootReadonly: true }),
    );
    await agent.ttyWinResize('c-tty', '', 37, 101);
    await agent.startContainer('c-tty');
    await agent.writeStdin('c-tty', '', Buffer.from('go\n'));
    const r = await collect(agent, 'c-tty');
    const lines = Array.from({ length: 2000 }, (_, i) => `line${i}\r\n`).join('');
    const pts = /^go\r\n(\/dev\/pts\/\d+)\r\n/.exec(r.stdout)?.[1];
    assert.ok(pts, `tty names the container's pty: ${JSON.stringify(r.stdout.slice(0, 100))}`);
    assert.deepEqual(
      r,
      { stdout: `go\r\n${pts}\r\n37 101\r\n${lines}`, stderr: '', code: 5 },
      'the terminal echoes input and ends lines with CR LF; stderr ends at once',
    );
    await remove('c-tty');

    // A program that cannot be run fails CreateContainer, as without a terminal: crun checks it.
    await share.shareRootfs('c-tty-bad', [], rootfs);
    await assert.rejects(
      agent.createOciContainer('c-tty-bad', testSpec({ args: ['no-such-program'], terminal: true })),
      (e: Error) => e instanceof InternalError && /no-such-program/.test(e.message),
    );
    await share.unshare('c-tty-bad');
  });

  it('execs processes with a terminal: the controlling terminal, its size, exit codes, ^D and ^C, errors', async () => {
    await run('c-tty-exec', ['sleep', '100']);
    await assert.rejects(
      agent.ttyWinResize('c-tty-exec', '', 10, 10),
      FailedPreconditionError,
      'the init has no terminal',
    );
    await assert.rejects(agent.ttyWinResize('c-tty-exec', 'no-such-exec', 10, 10), NotFoundError);
    await assert.rejects(agent.ttyWinResize('no-such', '', 10, 10), NotFoundError);
    await assert.rejects(agent.ttyWinResize('c-tty-exec', '', 65536, 10), InvalidArgumentError);

    // /dev/tty opens only for a process with a controlling terminal.
    await agent.execOciProcess(
      'c-tty-exec',
      'e1',
      testProcess({ args: ['sh', '-c', 'read -r line; tty; stty size; echo ctty > /dev/tty; exit 3'], terminal: true }),
    );
    await agent.ttyWinResize('c-tty-exec', 'e1', 37, 101);
    await agent.writeStdin('c-tty-exec', 'e1', Buffer.from('go\n'));
    const e1 = await collect(agent, 'c-tty-exec', 'e1');
    assert.match(e1.stdout, /^go\r\n\/dev\/pts\/\d+\r\n37 101\r\nctty\r\n$/, JSON.stringify(e1.stdout));
    assert.deepEqual({ stderr: e1.stderr, code: e1.code }, { stderr: '', code: 3 });

    // CloseStdin after a partial line: cat gets the line, then end of file.
    await agent.execOciProcess('c-tty-exec', 'e2', testProcess({ args: ['cat'], terminal: true }));
    await agent.writeStdin('c-tty-exec', 'e2', Buffer.from('partial'));
    await agent.closeStdin('c-tty-exec', 'e2');
    assert.deepEqual(await collect(agent, 'c-tty-exec', 'e2'), { stdout: 'partialpartial', stderr: '', code: 0 });

    // ^C is SIGINT for the terminal's foreground process group: the shell and its sleep.
    await agent.execOciProcess(
      'c-tty-exec',
      'e3',
      testProcess({ args: ['sh', '-c', 'echo ready; sleep 100; echo not interrupted'], terminal: true }),
    );
    let seen = '';
    while (!seen.includes('ready')) seen += (await agent.readStdout('c-tty-exec', 'e3')).toString();
    await agent.writeStdin('c-tty-exec', 'e3', Buffer.from('\x03'));
    const e3 = await collect(agent, 'c-tty-exec', 'e3');
    assert.equal(e3.code, 130, `output: ${seen}${e3.stdout}`);
    assert.doesNotMatch(e3.stdout, /not interrupted/);

    await assert.rejects(
      agent.execOciProcess('c-tty-exec', 'e4', testProcess({ args: ['no-such-program'], terminal: true })),
      (e: Error) => e instanceof InternalError && /no-such-program/.test(e.message),
    );
    await agent.signalProcess('c-tty-exec', '', 9);
    assert.equal(await agent.waitProcess('c-tty-exec'), 137);
    await remove('c-tty-exec');
  });

  /** containerd's OCI spec for a busybox container (the shape CRI and ctr write), with a writable /tmp and `seccomp`. */
  function ociSpec(cid: string, args: string[], seccomp?: OciSeccomp): OciSpec {
    const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID'];
    return {
      ociVersion: '1.0.2',
      process: {
        args,
        env: ['PATH=/bin'],
        cwd: '/',
        user: { uid: 0, gid: 0 },
        capabilities: { bounding: caps, effective: caps, permitted: caps },
        noNewPrivileges: true,
      },
      root: { path: 'rootfs', readonly: true },
      hostname: cid,
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
        {
          destination: '/dev',
          type: 'tmpfs',
          source: 'tmpfs',
          options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
        },
        { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=1m'] },
      ],
      linux: {
        namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
        ...(seccomp ? { seccomp } : {}),
      },
    };
  }

  async function runOci(cid: string, args: string[], seccomp?: OciSeccomp): Promise<void> {
    await share.shareRootfs(cid, [], rootfs);
    await agent.createOciContainer(cid, ociSpec(cid, args, seccomp));
    await agent.startContainer(cid);
  }

  it('applies a seccomp profile: mkdir gets EPERM from an ERRNO rule, in the init and in an exec; other calls work', async () => {
    const script = 'mkdir /tmp/x; echo "mkdir $?"; true && echo ok; exec sleep 100';
    const denyMkdir: OciSeccomp = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    };
    await runOci('c-sc-none', ['sh', '-c', 'mkdir /tmp/x; echo "mkdir $?"']);
    assert.deepEqual(
      await collect(agent, 'c-sc-none'),
      { stdout: 'mkdir 0\n', stderr: '', code: 0 },
      'without a profile mkdir works (/tmp is writable)',
    );
    await remove('c-sc-none');

    await runOci('c-sc-mkdir', ['sh', '-c', script], denyMkdir);
    let out = '';
    while (!out.includes('ok\n')) out += (await agent.readStdout('c-sc-mkdir', '')).toString();
    assert.equal(out, 'mkdir 1\nok\n');
    assert.match(
      (await agent.readStderr('c-sc-mkdir', '')).toString(),
      /can't create directory '\/tmp\/x': Operation not permitted/,
    );
    // An exec joins the container's profile (crun exec applies the container's seccomp).
    await agent.execOciProcess('c-sc-mkdir', 'e1', testProcess({ args: ['sh', '-c', 'mkdir /tmp/y || exit 7'] }));
    const e1 = await collect(agent, 'c-sc-mkdir', 'e1');
    assert.equal(e1.code, 7);
    assert.match(e1.stderr, /Operation not permitted/);
    await agent.execOciProcess('c-sc-mkdir', 'e2', testProcess({ args: ['echo', 'exec ok'] }));
    assert.deepEqual(await collect(agent, 'c-sc-mkdir', 'e2'), { stdout: 'exec ok\n', stderr: '', code: 0 });
    await agent.signalProcess('c-sc-mkdir', '', 9);
    assert.equal(await agent.waitProcess('c-sc-mkdir'), 137);
    await remove('c-sc-mkdir');
  });

  it("applies a default-deny seccomp profile shaped like containerd's default to busybox sh, and refuses what the guest cannot apply", async () => {
    // containerd's default profile: SCMP_ACT_ERRNO by default, one long allow list (with names the guest's
    // libseccomp does not know, which crun skips), personality and clone allowed for some arguments only, clone3
    // answering ENOSYS. A shorter allow list here: what busybox sh, crun's last steps and hull-init need, and no mkdir.
    const allowed = [
      'access',
      'arch_prctl',
      'brk',
      'capget',
      'capset',
      'chdir',
      'close',
      'close_range',
      'dup',
      'dup2',
      'dup3',
      'execve',
      'execveat',
      'exit',
      'exit_group',
      'faccessat',
      'faccessat2',
      'fcntl',
      'fcntl64',
      'fstat',
      'fstat64',
      'fstatfs',
      'futex',
      'getcwd',
      'getdents64',
      'getegid',
      'geteuid',
      'getgid',
      'getgroups',
      'getpgrp',
      'getpid',
      'getppid',
      'getrandom',
      'getrlimit',
      'gettid',
      'getuid',
      'ioctl',
      'lseek',
      '_llseek',
      'lstat',
      'madvise',
      'mmap',
      'mmap2',
      'mprotect',
      'munmap',
      'nanosleep',
      'newfstatat',
      'open',
      'openat',
      'openat2',
      'pipe',
      'pipe2',
      'poll',
      'ppoll',
      'prctl',
      'pread64',
      'prlimit64',
      'read',
      'readlink',
      'readlinkat',
      'readv',
      'rseq',
      'rt_sigaction',
      'rt_sigprocmask',
      'rt_sigreturn',
      'rt_sigsuspend',
      'sched_getaffinity',
      'sched_yield',
      'set_robust_list',
      'set_tid_address',
      'setgid',
      'setgroups',
      'setpgid',
      'setresgid',
      'setresuid',
      'setsid',
      'setuid',
      'sigaltstack',
      'stat',
      'stat64',
      'statfs',
      'statx',
      'sysinfo',
      'tgkill',
      'time',
      'umask',
      'uname',
      'utimensat_time64',
      'vfork',
      'wait4',
      'waitid',
      'write',
      'writev',
    ];
    const cloneNamespaceFlags = 0x7e020000; // CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP
    const defaultLike: OciSeccomp = {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [
        { names: allowed, action: 'SCMP_ACT_ALLOW' },
        ...[0, 8, 0x20000, 0x20008, 0xffffffff].map((value) => ({
          names: ['personality'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }],
        })),
        { names: ['arch_prctl', 'modify_ldt'], action: 'SCMP_ACT_ALLOW' },
        {
          names: ['clone'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: cloneNamespaceFlags, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
        },
        { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
      ],
    };
    // `/bin/echo` forks (clone without namespace flags) and execs; mkdir is not on the list: the default errno, EPERM.
    await runOci('c-sc-default', ['sh', '-c', 'echo ok; /bin/echo forked; mkdir /tmp/x || echo denied'], defaultLike);
    const r = await collect(agent, 'c-sc-default');
    assert.deepEqual(
      { stdout: r.stdout, code: r.code },
      { stdout: 'ok\nforked\ndenied\n', code: 0 },
      `stderr: ${r.stderr}`,
    );
    assert.match(r.stderr, /Operation not permitted/);
    await remove('c-sc-default');

    // The agent's checks reach the host as INVALID_ARGUMENT, before anything runs; so do the host's own.
    await share.shareRootfs('c-sc-bad', [], rootfs);
    const bad = (seccomp: OciSeccomp): Promise<void> =>
      agent.createOciContainer('c-sc-bad', ociSpec('c-sc-bad', ['true'], seccomp));
    await assert.rejects(
      bad({ defaultAction: 'SCMP_ACT_NOTIFY' }),
      (e: Error) => e instanceof InvalidArgumentError && /SCMP_ACT_NOTIFY/.test(e.message),
    );
    await assert.rejects(
      bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir; reboot'], action: 'SCMP_ACT_ERRNO' }] }),
      InvalidArgumentError,
    );
    await assert.rejects(
      bad({ defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_PDP11'] }),
      InvalidArgumentError,
    );
    await assert.rejects(bad({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38 }), /defaultErrnoRet/);
    await share.unshare('c-sc-bad');
  });

  it('answers WaitProcess for an exec whose background child holds its stdout; the child goes on', async () => {
    await run('c-bg', ['sleep', '600']);
    await agent.execOciProcess('c-bg', 'e1', testProcess({ args: ['sh', '-c', 'sleep 300 & echo started'] }));
    assert.equal(await agent.waitProcess('c-bg', 'e1'), 0, 'answered although the pipe is still open');
    assert.equal((await agent.readStdout('c-bg', 'e1')).toString(), 'started\n');
    const table = await agent.processTable('c-bg');
    assert.match(table, /sleep 300/, `the background child still runs:\n${table}`);
    await agent.signalProcess('c-bg', '', 9);
    assert.equal(await agent.waitProcess('c-bg'), 137);
    await remove('c-bg');
  });

  it("kills what is left of a container sharing the pod's pid namespace when its init exits (runc's kill-all)", async () => {
    // The pod's first container (its own pid namespace); then one that joins it, whose init backgrounds a child.
    await runOci('c-pidpod', ['sleep', '600']);
    await share.shareRootfs('c-pidapp', [], rootfs);
    const spec = ociSpec('c-pidapp', ['sh', '-c', 'sleep 300 & echo "up $$"']);
    spec.linux = {
      namespaces: [
        { type: 'pid', path: '/proc/1/ns/pid' },
        ...['ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
      ],
    };
    await agent.createOciContainer('c-pidapp', spec);
    await agent.startContainer('c-pidapp');
    // End of file on stdout comes only if the child was killed.
    const r = await collect(agent, 'c-pidapp');
    assert.deepEqual({ ...r, stdout: '' }, { stdout: '', stderr: '', code: 0 });
    const pid = Number(/^up (\d+)\n$/.exec(r.stdout)?.[1]);
    assert.ok(pid > 1, `the init is not its pid namespace's init (the pod's namespace is shared): ${r.stdout}`);
    await remove('c-pidapp');
    await agent.signalProcess('c-pidpod', '', 9);
    assert.equal(await agent.waitProcess('c-pidpod'), 137);
    await remove('c-pidpod');
  });

  it('refuses a container whose rootfs is not shared, and bad ids', async () => {
    await assert.rejects(
      agent.createOciContainer('c-missing', testSpec({ args: ['true'] })),
      (e: Error) => e instanceof NotFoundError && /not in the shared folder/.test(e.message),
    );
    await assert.rejects(agent.createOciContainer('../escape', testSpec({ args: ['true'] })), InvalidArgumentError);
  });
});
