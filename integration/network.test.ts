/**
 * Pod networking in a real VM: the test makes its own network namespace (standing in for the pod's, made by CNI)
 * with a tap holding the "gateway" address, boots a VM inside it (QEMU through nsenter, a virtio-net NIC on the tap
 * with a chosen MAC), configures the guest through the agent (UpdateInterface, UpdateRoutes, AddARPNeighbors),
 * reads it back (ListInterfaces, ListRoutes), and proves traffic both ways: a container in the guest fetches a
 * page from an HTTP server in the namespace, and a client in the namespace reads from a container listening in
 * the guest. The VM, the servers and the namespace go in `after`, whatever happened.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentClient } from '../agent-client';
import { SandboxVm } from '../core/vm';
import { NotFoundError } from '../errors';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput } from './lib/containers';
import { childProcesses, guestArtifacts, mountsContaining } from './lib/guest';
import { testSpec } from './lib/oci-spec';
import { sharedDirStorage } from '../core/pod';

const SANDBOX = 'nettest';
const APPLETS = ['sh', 'wget', 'nc', 'ip', 'echo', 'cat'];
const TAP = 'tap0_kata';
const HTTP_PORT = 8080;
const GUEST_PORT = 9090;

/** An HTTP server answering every request with argv[3]; says "listening" once it does. Run with node -e. */
const HTTP_SERVER = String.raw`
const [host, port, token] = process.argv.slice(1);
require('http').createServer((req, res) => res.end(token)).listen(Number(port), host, () => console.log('listening'));
`;

/** Connects to argv[1]:argv[2], retrying for a while, prints the first line it reads and closes. Run with node -e. */
const TCP_CLIENT = String.raw`
const [host, port] = process.argv.slice(1);
const deadline = Date.now() + 30000;
const attempt = () => {
  const chunks = [];
  const s = require('net').connect(Number(port), host);
  const done = () => { process.stdout.write(Buffer.concat(chunks)); s.destroy(); process.exit(0); };
  s.on('data', (c) => { chunks.push(c); if (c.includes(10)) done(); });
  s.on('end', done);
  s.on('error', (e) => { if (Date.now() > deadline) { console.error(e.message); process.exit(1); } setTimeout(attempt, 200); });
};
attempt();
`;

describe('pod networking in a real VM (a NIC on a tap in a test network namespace)', function () {
  this.timeout(240_000);
  const ns = `hull-t-${crypto.randomBytes(4).toString('hex')}`;
  const nsPath = `/run/netns/${ns}`;
  const subnet = `10.231.${crypto.randomInt(1, 255)}`;
  const gatewayIp = `${subnet}.1`;
  const guestIp = `${subnet}.2`;
  const guestMac = `02:${crypto.randomBytes(5).toString('hex').match(/../g)!.join(':')}`;
  const token = crypto.randomBytes(8).toString('hex');
  let dir: string;
  let share: VirtioFsShare | undefined;
  let vm: SandboxVm | undefined;
  let agent: AgentClient;
  let rootfs: string;
  let server: ChildProcess | undefined;
  let tapMac: string;

  const inNs = (args: string[]): string => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-net-test-'));
    execFileSync('ip', ['netns', 'add', ns]);
    inNs(['link', 'set', 'dev', 'lo', 'up']);
    inNs(['tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
    inNs(['addr', 'add', `${gatewayIp}/24`, 'dev', TAP]);
    inNs(['link', 'set', 'dev', TAP, 'up']);
    tapMac = (JSON.parse(inNs(['-j', 'link', 'show', 'dev', TAP])) as { address: string }[])[0]!.address;

    server = spawn(
      'nsenter',
      [`--net=${nsPath}`, '--', process.execPath, '-e', HTTP_SERVER, gatewayIp, String(HTTP_PORT), token],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    await new Promise<void>((resolve, reject) => {
      let err = '';
      server!.stderr!.on('data', (c: Buffer) => {
        err += c.toString();
      });
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (code) => reject(new Error(`the HTTP server in ${ns} exited (${code}): ${err}`)));
    });

    rootfs = busyboxRootfs(path.join(dir, 'rootfs'), APPLETS);
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
        memoryMiB: 512,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: share.sharedDir(),
        network: { netnsPath: nsPath, nics: [{ tap: TAP, mac: guestMac, mtu: 1500 }] },
        // Confined as the shim's defaults do: QEMU opens the root-owned tap before it drops to nobody.
        seccomp: true,
        qemuUser: 'nobody',
      },
      { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
    );
    agent = vm.agent;
    await agent.createSandbox({
      sandboxId: SANDBOX,
      storages: [sharedDirStorage()],
    });
  });

  after(async () => {
    try {
      if (vm) assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0, 'the guest powered itself off');
    } finally {
      if (server && server.exitCode === null && server.signalCode === null) {
        server.kill('SIGKILL');
        await new Promise((r) => server!.once('exit', r));
      }
      await share?.cleanup();
      if (fs.existsSync(nsPath)) execFileSync('ip', ['netns', 'delete', ns]);
      assert.deepEqual(
        childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']),
        [],
        'no QEMU or virtiofsd left running',
      );
      assert.ok(!server || server.exitCode !== null || server.signalCode !== null, 'the HTTP server is gone');
      assert.equal(fs.existsSync(nsPath), false, 'the namespace is gone');
      assert.deepEqual(mountsContaining(dir), [], 'no mount left');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('QEMU runs in the pod namespace, with the NIC on the tap', () => {
    const pid = vm!.hypervisor.pid()!;
    assert.equal(fs.statSync(`/proc/${pid}/ns/net`).ino, fs.statSync(nsPath).ino);
    const tap = (JSON.parse(inNs(['-j', 'link', 'show', 'dev', TAP])) as { flags: string[] }[])[0]!;
    assert.ok(tap.flags.includes('LOWER_UP'), `QEMU holds the tap: ${tap.flags.join(',')}`);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(
      status,
      /^Uid:\s+65534\s+65534\s+65534\s+65534$/m,
      'QEMU runs as nobody, the tap opened before it dropped',
    );
    assert.match(status, /^Seccomp:\s+2$/m, 'under its seccomp filter');
  });

  it('configures the NIC found by its MAC: name, MTU, address, up; lo is up', async () => {
    await assert.rejects(
      agent.updateInterface({ name: 'eth0', mac: '02:00:00:00:00:42', addresses: [] }),
      NotFoundError,
    );
    const nic = await agent.updateInterface({
      name: 'eth0',
      mac: guestMac.toUpperCase(),
      mtu: 1400,
      addresses: [{ address: guestIp, prefixLength: 24 }],
    });
    assert.equal(nic.name, 'eth0');
    assert.equal(nic.mac, guestMac);
    assert.equal(nic.mtu, 1400);
    assert.ok(nic.up);
    assert.deepEqual(
      nic.addresses.filter((a) => a.family === 4),
      [{ family: 4, address: guestIp, prefixLength: 24 }],
    );

    const all = await agent.listInterfaces();
    const lo = all.find((i) => i.name === 'lo');
    assert.ok(lo?.up, 'lo is up');
    assert.ok(lo.addresses.some((a) => a.address === '127.0.0.1'));
    assert.deepEqual(
      all
        .find((i) => i.mac === guestMac)
        ?.addresses.filter((a) => a.family === 4)
        .map((a) => a.address),
      [guestIp],
    );
  });

  it('replaces the routes and adds a permanent neighbour', async () => {
    const routes = await agent.updateRoutes([
      { dest: 'default', gateway: gatewayIp, device: 'eth0' },
      { dest: `${subnet}.0/24`, device: 'eth0', scope: 'link', source: guestIp },
    ]);
    assert.ok(
      routes.some((r) => r.dest === 'default' && r.gateway === gatewayIp && r.device === 'eth0' && r.family === 4),
      JSON.stringify(routes),
    );
    assert.deepEqual(await agent.listRoutes(), routes);
    await agent.addArpNeighbors([{ address: gatewayIp, mac: tapMac, device: 'eth0' }]);

    await share!.shareRootfs('c-neigh', [], rootfs);
    await agent.createOciContainer(
      'c-neigh',
      testSpec({ args: ['ip', 'neigh', 'show', gatewayIp], rootReadonly: true }),
    );
    await agent.startContainer('c-neigh');
    const out = await collectOutput(agent, 'c-neigh');
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, new RegExp(`^${gatewayIp.replace(/\./g, '\\.')} dev eth0 lladdr ${tapMac} .*PERMANENT`));
    await agent.removeContainer('c-neigh');
    await share!.unshare('c-neigh');
  });

  it('carries traffic: a container fetches from the namespace, and the namespace reads from a container', async () => {
    await share!.shareRootfs('c-wget', [], rootfs);
    // (No -T: Debian's static busybox 1.35 wget crashes with it.)
    await agent.createOciContainer(
      'c-wget',
      testSpec({ args: ['wget', '-q', '-O', '-', `http://${gatewayIp}:${HTTP_PORT}/`], rootReadonly: true }),
    );
    await agent.startContainer('c-wget');
    assert.deepEqual(await collectOutput(agent, 'c-wget'), { stdout: token, stderr: '', code: 0 });
    await agent.removeContainer('c-wget');
    await share!.unshare('c-wget');

    // The other way: busybox nc listens in the guest, node in the namespace connects (retrying until it listens).
    await share!.shareRootfs('c-listen', [], rootfs);
    await agent.createOciContainer(
      'c-listen',
      testSpec({ args: ['sh', '-c', `echo pong-${token} | nc -l -p ${GUEST_PORT}`], rootReadonly: true }),
    );
    await agent.startContainer('c-listen');
    const got = await new Promise<string>((resolve, reject) => {
      execFile(
        'nsenter',
        [`--net=${nsPath}`, '--', process.execPath, '-e', TCP_CLIENT, guestIp, String(GUEST_PORT)],
        { timeout: 60_000 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`client in ${ns}: ${stderr || err.message}`));
          else resolve(stdout);
        },
      );
    });
    assert.equal(got, `pong-${token}\n`);
    assert.equal((await collectOutput(agent, 'c-listen')).code, 0);
    await agent.removeContainer('c-listen');
    await share!.unshare('c-listen');
  });
});
