/**
 * Containers in a real VM: a busybox rootfs shared from the host with fs-share (virtio-fs), run by the agent with
 * the guest's crun; output, exit codes, signals, exec, and the errors for duplicates and unknown processes. One boot
 * for the whole suite (a boot is seconds under TCG).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient } from '../agent-client';
import { SandboxVm } from '../core/vm';
import { AlreadyExistsError, FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError } from '../errors';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { GUEST_SHARE_TAG, NOOP_LOGGER } from '../hypervisor/types';
import { busyboxRootfs, collectOutput as collect, drainStream } from './lib/containers';
import { childProcesses, guestArtifacts, mountsContaining } from './lib/guest';

const SHARED_MOUNT = '/run/kata-containers/shared/containers';
const SANDBOX = 'ctrtest';
const APPLETS = ['sh', 'echo', 'cat', 'sleep', 'true', 'stty'];

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
    vm = await SandboxVm.boot(new QemuHypervisor({ logger: NOOP_LOGGER }), {
      id: SANDBOX, stateDir: path.join(dir, 'vm'), kernel: guest.kernel, initrd: guest.initrd, image: guest.image,
      vcpus: 1, memoryMiB: 512, accel: 'auto', agentTransport: 'serial', sharedDir: share.sharedDir(),
    }, { bootTimeoutMs: 120_000, logger: NOOP_LOGGER });
    agent = vm.agent;
    await agent.createSandbox({
      sandboxId: SANDBOX,
      storages: [{ driver: 'virtio-fs', source: GUEST_SHARE_TAG, fstype: 'virtiofs', options: ['nodev'], mountPoint: SHARED_MOUNT }],
    });
  });

  after(async () => {
    try {
      if (vm) assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0, 'the guest powered itself off');
    } finally {
      await share?.cleanup();
      assert.deepEqual(childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']), [], 'no QEMU or virtiofsd left running');
      assert.deepEqual(mountsContaining(dir), [], 'no mount left');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  async function run(cid: string, args: string[]): Promise<void> {
    await share.shareRootfs(cid, [], rootfs);
    await agent.createContainer(cid, { args, rootReadonly: true, hostname: cid }, cid);
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
    await agent.execProcess('c-exec', 'e1', { args: ['echo', 'from-exec'] });
    assert.deepEqual(await collect(agent, 'c-exec', 'e1'), { stdout: 'from-exec\n', stderr: '', code: 0 });
    await assert.rejects(agent.execProcess('c-exec', 'e1', { args: ['true'] }), AlreadyExistsError, 'duplicate exec id');
    await assert.rejects(agent.waitProcess('c-exec', 'no-such-exec'), NotFoundError, 'unknown exec id');
    await assert.rejects(agent.readStdout('c-exec', 'no-such-exec'), NotFoundError);
    await assert.rejects(agent.createContainer('c-exec', { args: ['true'] }), AlreadyExistsError, 'duplicate container id');

    // stdin: cat echoes what it is given and ends at CloseStdin.
    await agent.execProcess('c-exec', 'e2', { args: ['cat'] });
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
        drainStream(() => agent.readStdout('c-stream', ''), (c) => { got.update(c); bytes += c.length; }),
        drainStream(() => agent.readStderr('c-stream', ''), () => undefined),
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
    await assert.rejects(agent.execProcess('c-pause', 'e1', { args: ['true'] }), FailedPreconditionError, 'no exec while paused');
    // Output already buffered comes out; then a read stays unanswered: the processes are frozen.
    let pending = agent.readStdout('c-pause', '');
    let frozen = false;
    for (const until = Date.now() + 20_000; Date.now() < until;) {
      const outcome = await Promise.race([pending.then(() => 'data'), new Promise((r) => setTimeout(() => r('quiet'), 1500))]);
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

  it('runs a container whose init has a terminal: resized before start, all output on stdout, exact exit code', async () => {
    await share.shareRootfs('c-tty', [], rootfs);
    // 2000 lines written just before the exit: all of them must be read before WaitProcess answers.
    const script = 'read -r line; stty size; i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; exit 5';
    await agent.createContainer('c-tty', { args: ['sh', '-c', script], terminal: true, rootReadonly: true }, 'c-tty');
    await agent.ttyWinResize('c-tty', '', 37, 101);
    await agent.startContainer('c-tty');
    await agent.writeStdin('c-tty', '', Buffer.from('go\n'));
    const r = await collect(agent, 'c-tty');
    const lines = Array.from({ length: 2000 }, (_, i) => `line${i}\r\n`).join('');
    assert.deepEqual(r, { stdout: `go\r\n37 101\r\n${lines}`, stderr: '', code: 5 }, 'the terminal echoes input and ends lines with CR LF; stderr ends at once');
    await remove('c-tty');

    // A program that cannot be run fails StartContainer (hull-ctty runs it only then), as crun fails CreateContainer without a terminal.
    await share.shareRootfs('c-tty-bad', [], rootfs);
    await agent.createContainer('c-tty-bad', { args: ['no-such-program'], terminal: true }, 'c-tty-bad');
    await assert.rejects(agent.startContainer('c-tty-bad'), (e: Error) => e instanceof InternalError && /exec no-such-program: No such file/.test(e.message));
    assert.equal(await agent.waitProcess('c-tty-bad'), 127);
    await remove('c-tty-bad');
  });

  it('execs processes with a terminal: the controlling terminal, its size, exit codes, ^D and ^C, errors', async () => {
    await run('c-tty-exec', ['sleep', '100']);
    await assert.rejects(agent.ttyWinResize('c-tty-exec', '', 10, 10), FailedPreconditionError, 'the init has no terminal');
    await assert.rejects(agent.ttyWinResize('c-tty-exec', 'no-such-exec', 10, 10), NotFoundError);
    await assert.rejects(agent.ttyWinResize('no-such', '', 10, 10), NotFoundError);
    await assert.rejects(agent.ttyWinResize('c-tty-exec', '', 65536, 10), InvalidArgumentError);

    // /dev/tty opens only for a process with a controlling terminal.
    await agent.execProcess('c-tty-exec', 'e1', { args: ['sh', '-c', 'read -r line; stty size; echo ctty > /dev/tty; exit 3'], terminal: true });
    await agent.ttyWinResize('c-tty-exec', 'e1', 37, 101);
    await agent.writeStdin('c-tty-exec', 'e1', Buffer.from('go\n'));
    assert.deepEqual(await collect(agent, 'c-tty-exec', 'e1'), { stdout: 'go\r\n37 101\r\nctty\r\n', stderr: '', code: 3 });

    // CloseStdin after a partial line: cat gets the line, then end of file.
    await agent.execProcess('c-tty-exec', 'e2', { args: ['cat'], terminal: true });
    await agent.writeStdin('c-tty-exec', 'e2', Buffer.from('partial'));
    await agent.closeStdin('c-tty-exec', 'e2');
    assert.deepEqual(await collect(agent, 'c-tty-exec', 'e2'), { stdout: 'partialpartial', stderr: '', code: 0 });

    // ^C is SIGINT for the terminal's foreground process group: the shell and its sleep.
    await agent.execProcess('c-tty-exec', 'e3', { args: ['sh', '-c', 'echo ready; sleep 100; echo not interrupted'], terminal: true });
    let seen = '';
    while (!seen.includes('ready')) seen += (await agent.readStdout('c-tty-exec', 'e3')).toString();
    await agent.writeStdin('c-tty-exec', 'e3', Buffer.from('\x03'));
    const e3 = await collect(agent, 'c-tty-exec', 'e3');
    assert.equal(e3.code, 130, `output: ${seen}${e3.stdout}`);
    assert.doesNotMatch(e3.stdout, /not interrupted/);

    await assert.rejects(agent.execProcess('c-tty-exec', 'e4', { args: ['no-such-program'], terminal: true }),
      (e: Error) => e instanceof InternalError && /exec no-such-program: No such file or directory/.test(e.message));
    await agent.signalProcess('c-tty-exec', '', 9);
    assert.equal(await agent.waitProcess('c-tty-exec'), 137);
    await remove('c-tty-exec');
  });

  it('refuses a container whose rootfs is not shared, and bad ids', async () => {
    await assert.rejects(agent.createContainer('c-missing', { args: ['true'] }), (e: Error) => e instanceof NotFoundError && /not in the shared folder/.test(e.message));
    await assert.rejects(agent.createContainer('../escape', { args: ['true'] }), InvalidArgumentError);
  });
});
