/**
 * hull-vsock in a real guest kernel. This host has no vsock transport that could reach a guest (no
 * /dev/vhost-vsock), so the VM's agent channel is the virtio-serial port, and the vsock checks run inside the
 * guest over the vsock_loopback transport (CID 1): a container holding the host's node, hull-vsock (its addon as
 * built here) and ttrpc-ts runs in/in-guest/vsock-check.ts. One boot for the suite.
 *
 * The VM boots with `hull.agent=serial,vsock`, so the agent also listens on vsock port 1024 as it would with
 * vhost-vsock; the last check connects to it from the container, which the agent must refuse (not the host).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient } from '../agent-client';
import { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { collectOutput } from './lib/containers';
import { childProcesses, guestArtifacts, mountsContaining } from './lib/guest';
import { nodeRootfs } from './lib/node-rootfs';
import { testSpec } from './lib/oci-spec';
import { sharedDirStorage } from '../core/pod';

const SANDBOX = 'vsocktest';
const SIGKILL = 9;

describe('hull-vsock in a real guest (vsock_loopback, CID 1)', function () {
  this.timeout(300_000);
  let dir: string;
  let share: VirtioFsShare;
  let vm: SandboxVm | undefined;
  let agent: AgentClient;
  let rootfs: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-vsock-test-'));
    rootfs = nodeRootfs(path.join(dir, 'rootfs'), {
      packages: ['hull-vsock', 'ttrpc-ts'],
      appFiles: { 'vsock-check.js': path.join(__dirname, 'in-guest', 'vsock-check.js') },
    });
    share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: SANDBOX });
    await share.prepare();
    const guest = guestArtifacts();
    vm = await SandboxVm.boot(
      new QemuHypervisor({ logger: NOOP_LOGGER }),
      {
        id: SANDBOX,
        stateDir: path.join(dir, 'vm'),
        kernel: guest.kernel,
        initrd: guest.initrd,
        image: guest.image,
        vcpus: 1,
        memoryMiB: 768,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: share.sharedDir(),
        kernelParams: ['hull.agent=serial,vsock'],
      },
      { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
    );
    agent = vm.agent;
    await agent.createSandbox({
      sandboxId: SANDBOX,
      storages: [sharedDirStorage()],
      kernelModules: [{ name: 'vsock_loopback', parameters: [] }],
    });
  });

  after(async () => {
    try {
      if (vm) assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0, 'the guest powered itself off');
    } finally {
      await share?.cleanup();
      assert.deepEqual(
        childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']),
        [],
        'no QEMU or virtiofsd left running',
      );
      assert.deepEqual(mountsContaining(dir), [], 'no mount left');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  /**
   * Runs `node vsock-check.js <check>` as a container and returns its JSON result. The script never calls
   * process.exit, so a vsock handle left open would keep node, and the container, running: after `limitMs` the
   * container is killed and the check fails saying so.
   */
  async function runCheck(check: string, limitMs = 180_000): Promise<Record<string, unknown>> {
    const cid = `c-${check}`;
    await share.shareRootfs(cid, [], rootfs);
    try {
      await agent.createOciContainer(
        cid,
        testSpec({
          args: ['/usr/bin/node', '/app/vsock-check.js', check],
          cwd: '/app',
          rootReadonly: true,
          hostname: cid,
        }),
      );
      await agent.startContainer(cid);
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), limitMs)));
      const outcome = await Promise.race([collectOutput(agent, cid), hung]);
      clearTimeout(timer);
      if (outcome === 'hung') {
        await agent.signalProcess(cid, '', SIGKILL);
        await agent.waitProcess(cid);
        assert.fail(`${check}: node did not exit by itself within ${limitMs} ms (a vsock handle kept it alive?)`);
      }
      assert.equal(outcome.code, 0, `${check} exited with ${outcome.code}: ${outcome.stderr}`);
      const line = JSON.parse(outcome.stdout) as { check: string; result: Record<string, unknown> };
      assert.equal(line.check, check);
      return line.result;
    } finally {
      await agent.removeContainer(cid).catch(() => undefined);
      await share.unshare(cid);
    }
  }

  it('8 MiB each way between a client and a server on CID 1: same sha256, backpressure, EOF, both ends closed, node exits', async () => {
    const r = await runCheck('exchange');
    const up = r.up as { sent: string; received: string; bytes: number };
    const down = r.down as { sent: string; received: string; bytes: number };
    assert.equal(up.received, up.sent);
    assert.equal(up.bytes, 8 << 20);
    assert.equal(down.received, down.sent);
    assert.equal(down.bytes, 8 << 20);
    assert.ok((r.clientWriteWaits as number) > 0, 'the slow reader made the writer wait (backpressure)');
    const client = r.client as {
      local: { cid: number; port: number };
      remote: { cid: number; port: number };
      destroyed: boolean;
    };
    const server = r.server as {
      local: { cid: number; port: number };
      remote: { cid: number; port: number };
      destroyed: boolean;
    };
    const listen = r.listen as { cid: number; port: number };
    assert.deepEqual(client.remote, { cid: 1, port: listen.port });
    assert.deepEqual(
      server.remote,
      { cid: 1, port: client.local.port },
      'the server sees the client as CID 1 and its port',
    );
    assert.equal(client.local.cid, 0xffffffff, 'connect() binds the client to VMADDR_CID_ANY');
    assert.equal(server.local.port, listen.port);
    assert.ok(client.destroyed && server.destroyed, 'both ends closed themselves once both directions ended');
    console.log(
      `      vsock_loopback under TCG: 16 MiB in ${String(r.ms)} ms; local CID in the container: ${String(r.localCid)}`,
    );
  });

  it('ttrpc-ts over vsock: a Server on an accepted socket answers a Client on a connected one (18 calls up to 3 MiB)', async () => {
    assert.deepEqual(await runCheck('ttrpc'), { calls: 18, correct: 18 });
  });

  it('errors from the guest kernel, each with its code: reset, no transport, bad port, port taken, abort, peer gone, server closed', async () => {
    const r = await runCheck('errors');
    const pick = (k: string): { code?: string; syscall?: string; name?: string } =>
      r[k] as { code?: string; syscall?: string; name?: string };
    assert.deepEqual(
      { code: pick('noListener').code, syscall: pick('noListener').syscall },
      { code: 'ECONNRESET', syscall: 'connect' },
    );
    assert.deepEqual(
      { code: pick('toHost').code, syscall: pick('toHost').syscall },
      { code: 'ENODEV', syscall: 'connect' },
    );
    assert.deepEqual(
      { name: pick('badPort').name, code: pick('badPort').code },
      { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
    );
    assert.deepEqual(
      { code: pick('portTaken').code, syscall: pick('portTaken').syscall },
      { code: 'EADDRINUSE', syscall: 'bind' },
    );
    assert.equal(pick('aborted').code, 'ABORT_ERR');
    assert.ok(['EPIPE', 'ECONNRESET'].includes(pick('peerGone').code ?? ''), JSON.stringify(r.peerGone));
    assert.equal(pick('closedWhileWaiting').code, 'ERR_SERVER_CLOSED');
    assert.deepEqual(r.listenAny, { cid: true });
  });

  it('the agent listens on vsock port 1024 and refuses a peer that is not the host', async () => {
    assert.equal((await agent.guestDetails()).transport, 'serial,vsock');
    const r = await runCheck('agent');
    assert.deepEqual(r.connectedTo, { cid: 1, port: 1024 }, 'the agent listens on vsock port 1024');
    assert.equal(r.answered, false, `the agent answered a container: ${JSON.stringify(r)}`);
    assert.equal(r.closedByAgent, true, JSON.stringify(r));
    const consoleLog = (vm!.hypervisor.agentLogTail?.() ?? []).join('\n');
    assert.match(
      consoleLog,
      /hull-agent warn refused a vsock connection that does not come from the host \{"peer":"1:\d+"\}/,
    );
    assert.match(consoleLog, /hull-agent info ready \{"transport":"serial,vsock"/);
    assert.doesNotMatch(consoleLog, /loading kernel modules failed/);
    assert.equal(await agent.check(), 'serving', 'the agent still serves the host');
  });
});
