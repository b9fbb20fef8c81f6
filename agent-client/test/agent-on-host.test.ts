/**
 * The real agent (dist/agent/main.js) run on the host in its test mode (HULL_AGENT_SOCKET: a unix socket instead of
 * the serial port, no changes to the system), driven through the real agent client. Boot, the serial port and
 * virtio-fs mounts are covered by the VM integration test.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { VsockError, localCid } from 'hull-vsock';
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  NotImplementedError,
  UnavailableError,
} from '../../errors';
import { AgentService } from '../../protos/agent';
import { parseAgentEndpoint, type VsockConnector } from '../channel';
import { KataAgentClient } from '../client';
import { classifyAgentError } from '../errors';
import type { OciProcess, OciSpec } from '../oci';

const AGENT = path.resolve(__dirname, '..', '..', 'agent', 'main.js');

/** A container spec as containerd writes one, reduced to what these checks need. */
const spec = (process: OciProcess, more: Partial<OciSpec> = {}): OciSpec => ({
  ociVersion: '1.0.2',
  process: { user: { uid: 0, gid: 0 }, env: ['PATH=/bin'], ...process },
  root: { path: 'rootfs' },
  linux: { namespaces: [{ type: 'pid' }, { type: 'mount' }] },
  ...more,
});

describe('agent client against the real agent (host test mode)', function () {
  this.timeout(20_000);
  let dir: string;
  let agentProcess: ChildProcess;
  let client: KataAgentClient;
  let socket: string;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-agent-test-'));
    socket = path.join(dir, 'agent.sock');
    agentProcess = spawn(process.execPath, [AGENT], {
      env: { ...process.env, HULL_AGENT_SOCKET: socket },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    // The agent is started and dialled at once: dial retries until the socket answers.
    client = await KataAgentClient.dial({ transport: 'unix', path: socket }, { deadline: Date.now() + 10_000 });
  });

  afterEach(async () => {
    await client.close();
    if (agentProcess.exitCode === null) {
      agentProcess.kill('SIGKILL');
      await new Promise((r) => agentProcess.once('exit', r));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("dials over a vsock stream (here a fake connector to the agent's socket) after the guest first resets", async () => {
    const seen: Array<{ cid: number; port: number; timeoutMs: number }> = [];
    const vsockConnector: VsockConnector = async (address, options) => {
      seen.push({ ...address, timeoutMs: options.timeoutMs });
      if (seen.length < 3) throw new VsockError('connect ECONNRESET', { code: 'ECONNRESET', syscall: 'connect' });
      const s = net.connect(socket);
      await new Promise((r) => s.once('connect', r));
      return s;
    };
    const viaVsock = await KataAgentClient.dial('vsock://42:1024', { deadline: Date.now() + 10_000, vsockConnector });
    try {
      assert.equal(await viaVsock.check(), 'serving');
      assert.equal(seen.length, 3);
      assert.ok(seen.every((a) => a.cid === 42 && a.port === 1024 && a.timeoutMs > 0 && a.timeoutMs <= 1000));
    } finally {
      await viaVsock.close();
    }
  });

  it('answers Health.Check, Version and guest details', async () => {
    assert.equal(await client.check(), 'serving');
    assert.equal((await client.version()).agentVersion, '0.1.0');
    const details = await client.guestDetails();
    assert.equal(details.kernelRelease, os.release());
    assert.equal(details.initDaemon, false);
    assert.deepEqual(details.storageHandlers, ['virtio-fs', 'ephemeral']);
    assert.equal(details.transport, 'unix');
    assert.ok(details.agentReadyMs >= details.agentStartedMs);
    // Boot figures: no initramfs on the host; the agent's code ran between its start and serving; its footprint.
    assert.ok(Number.isNaN(details.initStartedMs));
    assert.ok(details.agentMainMs >= details.agentStartedMs && details.agentMainMs <= details.agentReadyMs);
    assert.ok(details.uptimeMs >= details.agentReadyMs);
    assert.ok(details.agentRssKiB > 10_000 && details.agentPssKiB > 1000);
  });

  it('refuses bad sandbox input with INVALID_ARGUMENT, before mounting anything', async () => {
    const base = { sandboxId: 'sb1', storages: [] };
    const bad = [
      { ...base, sandboxId: '../etc' },
      { ...base, hostname: 'bad_host!' },
      {
        ...base,
        storages: [{ driver: 'virtio-fs', source: 'kataShared', fstype: 'virtiofs', options: [], mountPoint: '/etc' }],
      },
      {
        ...base,
        storages: [
          {
            driver: 'virtio-fs',
            source: 'kataShared',
            fstype: 'virtiofs',
            options: [],
            mountPoint: '/run/kata-containers/../../etc',
          },
        ],
      },
      {
        ...base,
        storages: [
          {
            driver: 'virtio-fs',
            source: 'a/b',
            fstype: 'virtiofs',
            options: [],
            mountPoint: '/run/kata-containers/shared/containers',
          },
        ],
      },
      {
        ...base,
        storages: [
          {
            driver: 'virtio-fs',
            source: 'kataShared',
            fstype: 'virtiofs',
            options: ['ro,exec'],
            mountPoint: '/run/kata-containers/shared/containers',
          },
        ],
      },
      {
        ...base,
        storages: [{ driver: 'nfs', source: 'x', fstype: 'nfs', options: [], mountPoint: '/run/kata-containers/x' }],
      },
      { ...base, kernelModules: [{ name: 'evil; rm -rf /', parameters: [] }] },
    ];
    for (const spec of bad)
      await assert.rejects(client.createSandbox(spec), InvalidArgumentError, JSON.stringify(spec));
  });

  it('network requests: checked (INVALID_ARGUMENT), then refused outside the guest without touching the host', async () => {
    const nic = { name: 'eth0', mac: '02:42:ac:11:00:02', addresses: [{ address: '10.0.0.2', prefixLength: 24 }] };
    await assert.rejects(client.updateInterface({ ...nic, name: '-x' }), InvalidArgumentError);
    await assert.rejects(client.updateInterface({ ...nic, mtu: 20 }), InvalidArgumentError);
    await assert.rejects(
      client.updateRoutes([{ dest: '10.0.0.1/24', device: 'eth0' }]),
      (e: Error) => e instanceof InvalidArgumentError && /host bits/.test(e.message),
    );
    await assert.rejects(
      client.addArpNeighbors([{ address: '10.0.0.1', mac: 'nope', device: 'eth0' }]),
      InvalidArgumentError,
    );
    await assert.rejects(
      client.updateInterface(nic),
      (e: Error) => e instanceof FailedPreconditionError && /only inside the guest/.test(e.message),
    );
    await assert.rejects(client.listInterfaces(), FailedPreconditionError);
    await assert.rejects(client.listRoutes(), FailedPreconditionError);
  });

  it("OnlineCPUMem: nbCpus checked on both sides, then refused outside the guest: the host's CPUs are never touched", async () => {
    for (const nbCpus of [-1, 1.5, 289])
      await assert.rejects(client.onlineCpuMem({ nbCpus, cpuOnly: false, wait: true }), InvalidArgumentError);
    await assert.rejects(
      client.onlineCpuMem({ nbCpus: 1, cpuOnly: false, wait: true }),
      (e: Error) => e instanceof FailedPreconditionError && /only inside the guest/.test(e.message),
    );
  });

  it('GuestInfo reports the online CPUs and MemTotal', async () => {
    const details = await client.guestDetails();
    assert.equal(details.onlineCpus, os.cpus().length);
    assert.equal(details.memTotalMiB, Math.floor(os.totalmem() / (1024 * 1024)));
  });

  it("SetGuestDateTime is refused outside the guest: the host's clock is never set", async () => {
    await assert.rejects(
      client.setGuestDateTime(new Date(1_700_000_000_000)),
      (e: Error) => e instanceof FailedPreconditionError && /only inside the guest/.test(e.message),
    );
  });

  it('creates one sandbox: a second CreateSandbox is ALREADY_EXISTS', async () => {
    await client.createSandbox({ sandboxId: 'sb1', storages: [] });
    await assert.rejects(client.createSandbox({ sandboxId: 'sb2', storages: [] }), AlreadyExistsError);
  });

  describe('the debug console (hull.agent.v1.DebugConsole)', () => {
    const start = { execId: 'd1', args: ['true'], env: [], terminal: false, rows: 0, columns: 0 };
    const refused = (re: RegExp) => (e: unknown) => e instanceof FailedPreconditionError && re.test(e.message);

    it('is refused before CreateSandbox, and after one that did not enable it', async () => {
      const dc = client.debugConsole();
      await assert.rejects(dc.start(start), refused(/before CreateSandbox/));
      await client.createSandbox({ sandboxId: 'sb1', storages: [] });
      await assert.rejects(dc.start(start), refused(/disabled for this sandbox/));
      await assert.rejects(dc.wait('d1'), refused(/disabled for this sandbox/));
    });

    it("is enabled by CreateSandbox's metadata, and still runs nothing outside the guest", async () => {
      await client.createSandbox({ sandboxId: 'sb1', storages: [], debugConsole: true });
      await assert.rejects(client.debugConsole().start(start), refused(/only inside the guest/));
    });
  });

  it('reads only regular files below the shared folder', async () => {
    await assert.rejects(client.readSharedFile('/etc/passwd'), InvalidArgumentError);
    await assert.rejects(
      client.readSharedFile('/run/kata-containers/shared/../../../etc/passwd'),
      InvalidArgumentError,
    );
  });

  it('answers UNIMPLEMENTED for what later issues add', async () => {
    const raw = (client as unknown as { client: { call: (d: unknown, r: unknown) => Promise<unknown> } }).client;
    await assert.rejects(
      raw.call(AgentService.AddSwap, {}).catch((e: unknown) => Promise.reject(classifyAgentError(e, 'AddSwap'))),
      NotImplementedError,
    );
  });

  it('checks container requests, and needs hull-init to run containers', async () => {
    await assert.rejects(client.createOciContainer('../x', spec({ args: ['true'] })), InvalidArgumentError);
    await assert.rejects(client.createOciContainer('c1', spec({ args: [] })), InvalidArgumentError);
    await assert.rejects(client.createOciContainer('c1', spec({ args: ['a\0b'] })), InvalidArgumentError);
    await assert.rejects(
      client.createOciContainer('c1', spec({ args: ['true'], cwd: '/a/../b' })),
      InvalidArgumentError,
    );
    await assert.rejects(
      client.createOciContainer('c1', spec({ args: ['true'] })),
      (e: Error) => e instanceof FailedPreconditionError && /hull-init/.test(e.message),
    );
    await assert.rejects(client.waitProcess('c1'), NotFoundError);
    await assert.rejects(client.readStdout('c1', ''), NotFoundError);
    await assert.rejects(client.signalProcess('c1', '', 15), NotFoundError);
    await assert.rejects(client.signalProcess('c1', '', 99), InvalidArgumentError);
    await assert.rejects(client.removeContainer('c1'), NotFoundError);
  });

  it('checks volumes and resources before anything else, and knows no container to update or list', async () => {
    const volume = (source: string): OciSpec =>
      spec({ args: ['true'] }, { mounts: [{ destination: '/data', type: 'bind', source, options: ['rbind'] }] });
    await assert.rejects(
      client.createOciContainer('c1', volume('/etc')),
      (e: Error) => e instanceof InvalidArgumentError && /volume "\/data"/.test(e.message),
    );
    await assert.rejects(
      client.createOciContainer('c1', volume('/run/kata-containers/shared/containers/../../../etc')),
      InvalidArgumentError,
    );
    await assert.rejects(
      client.createOciContainer('c1', spec({ args: ['true'] }, { linux: { resources: { cpu: { shares: 1 } } } })),
      InvalidArgumentError,
    );
    await assert.rejects(
      client.updateContainer('c1', { memoryLimitBytes: 0 }),
      InvalidArgumentError,
      'refused by the client',
    );
    await assert.rejects(client.updateContainer('c1', { memoryLimitBytes: 64 << 20 }), NotFoundError);
    await assert.rejects(client.listProcesses('c1'), NotFoundError);
    await assert.rejects(client.processTable('c1'), NotFoundError);
  });

  it('GetOOMEvent waits without a deadline until cancelled', async () => {
    const controller = new AbortController();
    const poll = client.getOOMEvent(controller.signal);
    const outcome = await Promise.race([
      poll.then(
        () => 'answered',
        () => 'failed',
      ),
      new Promise((r) => setTimeout(() => r('waiting'), 300)),
    ]);
    assert.equal(outcome, 'waiting');
    controller.abort();
    await assert.rejects(poll, CancelledError);
    assert.equal(await client.check(), 'serving', 'the connection is still usable');
  });

  it('DestroySandbox ends the agent (in the guest: a power-off)', async () => {
    await client.createSandbox({ sandboxId: 'sb1', storages: [] });
    const exited = new Promise<number | null>((r) => agentProcess.once('exit', (code) => r(code)));
    await client.destroySandbox();
    assert.equal(await exited, 0);
    await assert.rejects(client.check(), UnavailableError);
  });
  describe("port forwarding (hull.agent.v1.PortForward): the agent on the host reaches the host's loopback", () => {
    let server: net.Server;
    let port: number;
    /** Answers "<what it read, upper-cased>" once the client has ended its side. */
    beforeEach(async () => {
      server = net.createServer({ allowHalfOpen: true }, (s) => {
        const got: Buffer[] = [];
        s.on('data', (d: Buffer) => got.push(d));
        s.on('end', () => s.end(Buffer.concat(got).toString().toUpperCase()));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as net.AddressInfo).port;
    });
    afterEach(() => void server.close());

    async function readAll(id: number): Promise<string> {
      const parts: Buffer[] = [];
      for (;;) {
        const d = await client.readConnection(id, 3);
        assert.ok(d.length <= 3, 'never more than asked for');
        if (d.length === 0) return Buffer.concat(parts).toString();
        parts.push(d);
      }
    }

    it('opens, writes, half-closes, reads the answer to end of file, closes', async () => {
      const { id, address } = await client.openConnection(port);
      assert.equal(address, '127.0.0.1');
      await client.writeConnection(id, Buffer.from('hello '));
      await client.writeConnection(id, Buffer.from('guest'));
      await client.endConnection(id);
      assert.equal(await readAll(id), 'HELLO GUEST');
      await client.closeConnection(id);
      await assert.rejects(client.readConnection(id), NotFoundError);
      await assert.rejects(client.closeConnection(id), NotFoundError);
    });

    it('a port nothing listens on is UnavailableError naming both loopback addresses; bad ports fail before the call', async () => {
      await new Promise((r) => server.close(r));
      await assert.rejects(
        client.openConnection(port),
        (e: Error) =>
          e instanceof UnavailableError && e.message.includes('127.0.0.1: ECONNREFUSED') && e.message.includes('[::1]'),
      );
      for (const bad of [0, 65536, 1.5, -1])
        await assert.rejects(client.openConnection(bad), InvalidArgumentError, String(bad));
      await assert.rejects(client.writeConnection(12345, Buffer.from('x')), NotFoundError);
    });

    it('closing a connection ends a read waiting on it', async () => {
      const { id } = await client.openConnection(port);
      const waiting = client.readConnection(id);
      await new Promise((r) => setTimeout(r, 100));
      await client.closeConnection(id);
      assert.equal((await waiting).length, 0);
    });
  });
});

describe('agent client dialling', function () {
  this.timeout(10_000);
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-dial-test-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('gives up at the boot deadline when nothing listens', async () => {
    const t0 = Date.now();
    await assert.rejects(
      KataAgentClient.dial(
        { transport: 'serial', path: path.join(dir, 'missing.sock') },
        { deadline: Date.now() + 300 },
      ),
      DeadlineExceededError,
    );
    assert.ok(Date.now() - t0 < 2000);
  });

  it('gives up at the boot deadline when the channel accepts but no agent answers (a guest that never boots)', async () => {
    const sock = path.join(dir, 'silent.sock');
    const held: net.Socket[] = [];
    const server = net.createServer((s) => held.push(s)).listen(sock);
    await new Promise((r) => server.once('listening', r));
    try {
      await assert.rejects(
        KataAgentClient.dial({ transport: 'serial', path: sock }, { deadline: Date.now() + 500, probeIntervalMs: 100 }),
        DeadlineExceededError,
      );
    } finally {
      held.forEach((s) => s.destroy());
      server.close();
    }
  });

  it('stops at once with the abort reason (the VM exited)', async () => {
    const controller = new AbortController();
    const dial = KataAgentClient.dial(
      { transport: 'serial', path: path.join(dir, 'missing.sock') },
      { deadline: Date.now() + 60_000, signal: controller.signal },
    );
    setTimeout(() => controller.abort(new UnavailableError('qemu exited with code 1')), 100);
    await assert.rejects(dial, (e: Error) => e instanceof UnavailableError && /qemu exited/.test(e.message));
    const c2 = new AbortController();
    c2.abort();
    await assert.rejects(
      KataAgentClient.dial(
        { transport: 'serial', path: path.join(dir, 'missing.sock') },
        { deadline: Date.now() + 1000, signal: c2.signal },
      ),
      CancelledError,
    );
  });

  it('parses agent addresses: vsock://cid:port, unix:// and absolute paths', () => {
    assert.deepEqual(parseAgentEndpoint('vsock://3:1024'), { transport: 'vsock', cid: 3, port: 1024 });
    assert.deepEqual(parseAgentEndpoint('unix:///run/a.sock'), { transport: 'unix', path: '/run/a.sock' });
    assert.deepEqual(parseAgentEndpoint('/run/a.sock'), { transport: 'unix', path: '/run/a.sock' });
    for (const bad of ['vsock://3', 'vsock://x:1', 'vsock://3:99999999999', 'relative.sock', 'tcp://1.2.3.4:5']) {
      assert.throws(() => parseAgentEndpoint(bad), InvalidArgumentError, bad);
    }
  });

  it('vsock: retries while the guest resets or does not answer, until the boot deadline', async () => {
    let attempts = 0;
    const vsockConnector: VsockConnector = async () => {
      attempts++;
      throw new VsockError('connect ECONNRESET vsock://3:1024', {
        code: attempts % 2 ? 'ECONNRESET' : 'ETIMEDOUT',
        syscall: 'connect',
      });
    };
    await assert.rejects(
      KataAgentClient.dial('vsock://3:1024', { deadline: Date.now() + 300, vsockConnector }),
      DeadlineExceededError,
    );
    assert.ok(attempts > 3, `${attempts} attempts`);
  });

  it('vsock: a CID no transport reaches (ENODEV) is UnavailableError at once, not retried', async () => {
    let cid = 2; // without /dev/vsock: the host's CID, which no transport serves then
    try {
      cid = localCid(); // this machine's own CID: the connect fails without a packet leaving the machine
    } catch {
      // keep 2
    }
    const t0 = Date.now();
    await assert.rejects(
      KataAgentClient.dial({ transport: 'vsock', cid, port: 1024 }, { deadline: Date.now() + 10_000 }),
      (e: Error) =>
        e instanceof UnavailableError && e.message.includes(`vsock://${cid}:1024`) && e.cause instanceof VsockError,
    );
    assert.ok(Date.now() - t0 < 3000);
  });

  it('vsock: stops with the abort reason while retrying', async () => {
    const controller = new AbortController();
    const vsockConnector: VsockConnector = async (_a, o) => {
      await new Promise((r) => setTimeout(r, 10));
      throw new VsockError(o.signal?.aborted ? 'aborted' : 'reset', {
        code: o.signal?.aborted ? 'ABORT_ERR' : 'ECONNRESET',
      });
    };
    const dial = KataAgentClient.dial('vsock://3:1024', {
      deadline: Date.now() + 60_000,
      signal: controller.signal,
      vsockConnector,
    });
    setTimeout(() => controller.abort(new UnavailableError('qemu exited with code 1')), 100);
    await assert.rejects(dial, (e: Error) => e instanceof UnavailableError && /qemu exited/.test(e.message));
  });
});
