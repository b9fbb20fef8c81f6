/**
 * GuestNetwork against the real iproute2 and kernel, in a network namespace this test makes (and removes): a tap
 * with a chosen MAC stands for the guest's NIC. Checks that the argv the agent builds is what ip accepts and that
 * the result is what was asked for.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { Code, StatusError } from 'ttrpc-ts';
import { types } from '../../protos/agent';
import { checkArgv, ipFailure, type IpRunner } from '../net-ip';
import { GuestNetwork } from '../network';

describe('agent network (real ip, in a test network namespace)', function () {
  this.timeout(30_000);
  const ns = `hull-t-${crypto.randomBytes(4).toString('hex')}`;
  const MAC = '02:aa:bb:cc:dd:01';
  // ip -n <ns> ... : the agent's argv, run in the namespace.
  // As execIp does: a batch's commands on stdin, ip's stderr kept with its failure.
  const ip: IpRunner = (args, input) => {
    checkArgv(args);
    return new Promise((resolve, reject) => {
      const child = execFile('ip', ['-n', ns, ...args], (err, stdout, stderr) =>
        err ? reject(Object.assign(ipFailure(args, stderr, err), { stderr })) : resolve(stdout),
      );
      child.stdin?.on('error', () => undefined); // ip stopped reading at a failing line: its status tells
      child.stdin?.end(input ?? '');
    });
  };
  let net: GuestNetwork;

  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'tuntap', 'add', 'tap7', 'mode', 'tap']);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'dev', 'tap7', 'address', MAC]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
    net = new GuestNetwork(ip);
  });
  after(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('configures the interface found by MAC: name, MTU, addresses, up', async () => {
    const res = await net.updateInterface({
      interface: {
        name: 'eth0',
        hwAddr: MAC.toUpperCase(),
        mtu: 1400,
        IPAddresses: [
          { family: types.IPFamily.v4, address: '10.231.7.2', mask: '24' },
          { family: types.IPFamily.v6, address: 'fd00:7::2', mask: '64' },
        ],
      },
    });
    assert.equal(res.name, 'eth0');
    assert.equal(res.mtu, 1400);
    assert.equal((res.rawFlags ?? 0) & 1, 1, 'up');
    assert.deepEqual(
      res.IPAddresses?.filter((a) => !a.address?.startsWith('fe80')).map((a) => `${a.address}/${a.mask}`),
      ['10.231.7.2/24', 'fd00:7::2/64'],
    );
    // Again with other addresses: the old ones go.
    const again = await net.updateInterface({
      interface: { name: 'eth0', hwAddr: MAC, mtu: 1500, IPAddresses: [{ address: '10.231.8.2', mask: '24' }] },
    });
    assert.deepEqual(
      again.IPAddresses?.filter((a) => a.family === types.IPFamily.v4).map((a) => a.address),
      ['10.231.8.2'],
    );
  });

  it('replaces the routes, link routes first, and lists them', async () => {
    const first = await net.updateRoutes({
      routes: {
        Routes: [
          { dest: '', gateway: '10.231.8.1', device: 'eth0' },
          { dest: '10.99.0.0/16', device: 'eth0', scope: 253, source: '10.231.8.2', mtu: 1300 },
        ],
      },
    });
    const v4 = (first.Routes ?? []).filter((r) => r.family === types.IPFamily.v4);
    assert.ok(
      v4.some((r) => r.dest === '' && r.gateway === '10.231.8.1' && r.device === 'eth0'),
      JSON.stringify(v4),
    );
    assert.ok(
      v4.some((r) => r.dest === '10.99.0.0/16' && r.scope === 253 && r.source === '10.231.8.2' && r.mtu === 1300),
      JSON.stringify(v4),
    );
    // A new list replaces the old one; the kernel's route for the address stays.
    await net.updateRoutes({ routes: { Routes: [{ dest: '10.98.0.0/16', gateway: '10.231.8.1', device: 'eth0' }] } });
    const now = (await net.listRoutes())
      .Routes!.filter((r) => r.family === types.IPFamily.v4)
      .map((r) => r.dest)
      .sort();
    assert.deepEqual(now, ['10.231.8.0/24', '10.98.0.0/16']);
  });

  it('adds permanent neighbours', async () => {
    await net.addArpNeighbors({
      neighbors: {
        ARPNeighbors: [{ toIPAddress: { address: '10.231.8.1' }, lladdr: '02:aa:bb:cc:dd:99', device: 'eth0' }],
      },
    });
    const shown = JSON.parse(
      execFileSync('ip', ['-n', ns, '-j', 'neigh', 'show', 'dev', 'eth0'], { encoding: 'utf8' }),
    ) as { dst: string; lladdr: string; state: string[] }[];
    assert.deepEqual(
      shown.map((n) => [n.dst, n.lladdr, n.state]),
      [['10.231.8.1', '02:aa:bb:cc:dd:99', ['PERMANENT']]],
    );
  });

  it("answers NOT_FOUND for an unknown MAC, and ip's own refusals with its words", async () => {
    await assert.rejects(
      net.updateInterface({ interface: { name: 'eth1', hwAddr: '02:00:00:00:00:42' } }),
      (e: StatusError) => e.code === Code.NOT_FOUND,
    );
    await assert.rejects(
      net.updateRoutes({ routes: { Routes: [{ dest: '10.97.0.0/16', gateway: '192.0.2.1', device: 'eth0' }] } }),
      (e: StatusError) =>
        e.code === Code.INVALID_ARGUMENT && /ip -4 route replace 10\.97\.0\.0\/16 via 192\.0\.2\.1/.test(e.message),
    );
  });
});
