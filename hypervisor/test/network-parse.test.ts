// Pure tests of hypervisor/network's parsers, validators and error classification (no root, no namespaces).
import assert from 'node:assert/strict';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from '../../errors';
import { classifyNetnsToolError } from '../network/exec';
import { buildScan, parseLinks, parseNeighbors, parseRoutes } from '../network/parse';
import {
  checkNetnsPathShape,
  checkTapName,
  ipFamily,
  isLinkLocalV6,
  isMulticastV6,
  isValidIfName,
  normalizeMac,
} from '../network/validate';

const NS = '/var/run/netns/cni-test';

const link = (over: Record<string, unknown>) => ({
  ifindex: 2,
  ifname: 'eth0',
  flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
  mtu: 1450,
  link_type: 'ether',
  address: '0A:58:0A:F4:00:05',
  linkinfo: { info_kind: 'veth' },
  addr_info: [],
  ...over,
});

const LO = {
  ifindex: 1,
  ifname: 'lo',
  flags: ['LOOPBACK', 'UP'],
  mtu: 65536,
  link_type: 'loopback',
  address: '00:00:00:00:00:00',
  addr_info: [],
};

describe('hypervisor/network parsing', () => {
  it('validates names, MACs and addresses', () => {
    for (const ok of ['eth0', 'net1', 'veth_a.b', 'a@b', 'x'.repeat(15)]) assert.ok(isValidIfName(ok), ok);
    for (const bad of ['', '-eth0', '.', '..', 'a/b', 'a b', 'a:b', 'x'.repeat(16), 'é', 3])
      assert.ok(!isValidIfName(bad), String(bad));
    assert.equal(normalizeMac('0A:58:0A:F4:00:05'), '0a:58:0a:f4:00:05');
    for (const bad of ['0a:58:0a:f4:00', '0a-58-0a-f4-00-05', '0a:58:0a:f4:00:05:06', 7])
      assert.equal(normalizeMac(bad), undefined);
    assert.equal(ipFamily('10.0.0.1'), 4);
    assert.equal(ipFamily('fd00::1'), 6);
    for (const bad of ['10.0.0.1/24', 'fe80::1%eth0', '10.0.0', 'x', undefined]) assert.equal(ipFamily(bad), undefined);
    assert.ok(isLinkLocalV6('fe80::1') && isLinkLocalV6('FEBF::1') && isLinkLocalV6('fe80::/64'));
    assert.ok(!isLinkLocalV6('fec0::1') && !isLinkLocalV6('::1') && !isLinkLocalV6('fd00::1'));
    assert.ok(isMulticastV6('ff02::1') && isMulticastV6('ff00::/8') && !isMulticastV6('fd00::'));
    assert.equal(checkTapName('tap12_hull', 'x'), 'tap12_hull');
    for (const bad of ['tap_hull', 'tap01_hull', 'eth0', 'tap1_hull ', 'tap1234567_hull'])
      assert.throws(() => checkTapName(bad, 'x'), InvalidArgumentError);
  });

  it('checks the shape of netns paths', () => {
    assert.equal(checkNetnsPathShape(NS), NS);
    assert.equal(checkNetnsPathShape('/proc/42/ns/net'), '/proc/42/ns/net');
    for (const bad of [
      undefined,
      '',
      '/',
      'run/netns/x',
      '/run/../x',
      '/run/./x',
      '/run//x',
      '/run/x/',
      '/run/\0x',
      `/${'a'.repeat(4096)}`,
    ]) {
      assert.throws(() => checkNetnsPathShape(bad), InvalidArgumentError, JSON.stringify(bad));
    }
  });

  it('picks Ethernet-like interfaces with a MAC, skipping lo, our taps and MAC-less devices', () => {
    const scan = buildScan(
      {
        addr: [
          LO,
          link({ ifindex: 5, ifname: 'net1', address: '0a:00:00:00:00:01', mtu: 9000 }),
          link({ ifindex: 3 }),
          link({
            ifindex: 4,
            ifname: 'tap0_hull',
            linkinfo: { info_kind: 'tun', info_data: { type: 'tap', multi_queue: false } },
          }),
          link({ ifindex: 6, ifname: 'tun0', link_type: 'none', address: undefined }),
          link({ ifindex: 7, ifname: 'dummy0', address: '00:00:00:00:00:00' }),
        ],
        route4: [],
        route6: [],
        neigh: [],
      },
      NS,
    );
    assert.deepEqual(scan.endpoints, [
      { name: 'eth0', mac: '0a:58:0a:f4:00:05', mtu: 1450, addresses: [], tap: 'tap0_hull' },
      { name: 'net1', mac: '0a:00:00:00:00:01', mtu: 9000, addresses: [], tap: 'tap1_hull' },
    ]);
  });

  it('keeps global addresses, drops link-local IPv6 and host-scope ones', () => {
    const [ep] = buildScan(
      {
        addr: [
          link({
            addr_info: [
              { family: 'inet', local: '10.244.0.5', prefixlen: 24, scope: 'global' },
              { family: 'inet6', local: 'fd00:10:244::5', prefixlen: 64, scope: 'global' },
              { family: 'inet6', local: 'fe80::858:aff:fef4:5', prefixlen: 64, scope: 'link' },
              { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'global' },
              { family: 'inet', local: '127.0.0.2', prefixlen: 8, scope: 'host' },
              { family: 'mpls', local: 'x' },
            ],
          }),
        ],
        route4: [],
        route6: [],
        neigh: [],
      },
      NS,
    ).endpoints;
    assert.deepEqual(ep!.addresses, [
      { family: 4, address: '10.244.0.5', prefixLength: 24 },
      { family: 6, address: 'fd00:10:244::5', prefixLength: 64 },
    ]);
  });

  it('refuses what it would pass on unchecked, naming the netns and the device', () => {
    const scan = (over: Record<string, unknown>) => () =>
      buildScan({ addr: [link(over)], route4: [], route6: [], neigh: [] }, NS);
    const named = (re: RegExp) => (e: Error) =>
      e instanceof InvalidArgumentError && e.message.includes(NS) && re.test(e.message);
    assert.throws(scan({ ifname: '-rf' }), named(/invalid interface name "-rf"/));
    assert.throws(scan({ ifname: 'a b' }), named(/invalid interface name/));
    assert.throws(scan({ address: 'zz:zz:zz:zz:zz:zz' }), named(/device eth0: unusable MAC/));
    assert.throws(scan({ address: '01:00:5e:00:00:01' }), named(/device eth0: unusable MAC/));
    assert.throws(scan({ mtu: 1e9 }), named(/device eth0: unusable MTU/));
    assert.throws(scan({ mtu: '1500' }), named(/unusable MTU/));
    assert.throws(
      scan({ addr_info: [{ family: 'inet', local: '10.0.0.1; rm', prefixlen: 24 }] }),
      named(/device eth0: unusable address/),
    );
    assert.throws(
      scan({ addr_info: [{ family: 'inet', local: '10.0.0.1', prefixlen: 33 }] }),
      named(/unusable address/),
    );
    assert.throws(
      scan({ addr_info: [{ family: 'inet6', local: '10.0.0.1', prefixlen: 64 }] }),
      named(/unusable address/),
    );
    assert.throws(() => parseLinks({ not: 'an array' }, NS), InternalError);
    assert.throws(() => parseLinks([{ ifname: 'eth0' }], NS), InternalError);
    assert.throws(() => parseLinks([null], NS), InternalError);
  });

  it('parses routes: main-table unicast routes on endpoints, host routes with their prefix', () => {
    const devices = new Set(['eth0']);
    const v4 = parseRoutes(
      [
        { dst: 'default', gateway: '10.244.0.1', dev: 'eth0', flags: [] },
        { dst: '10.244.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.244.0.5', flags: [] },
        { dst: '10.96.0.10', gateway: '10.244.0.1', dev: 'eth0', flags: [] },
        { dst: '10.1.0.0/16', dev: 'lo', flags: [] },
        { type: 'blackhole', dst: '10.5.0.0/16', flags: [] },
        { dst: '10.7.0.0/16', nexthops: [{ gateway: '10.244.0.1', dev: 'eth0' }] },
        { dst: '10.8.0.0/16', via: { family: 'inet6', host: 'fe80::1' }, dev: 'eth0' },
        { type: 'unreachable', dst: '10.9.0.0/16', dev: 'eth0' },
      ],
      4,
      devices,
      NS,
    );
    assert.deepEqual(v4, [
      { dest: 'default', gateway: '10.244.0.1', device: 'eth0', scope: 0, family: 4 },
      { dest: '10.244.0.0/24', device: 'eth0', source: '10.244.0.5', scope: 253, family: 4 },
      { dest: '10.96.0.10/32', gateway: '10.244.0.1', device: 'eth0', scope: 0, family: 4 },
    ]);
    const v6 = parseRoutes(
      [
        { dst: 'fd00:10:244::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
        { dst: 'fe80::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
        { dst: 'ff00::/8', dev: 'eth0', table: 'local', type: 'multicast', flags: [] },
        { dst: 'ff02::/16', dev: 'eth0', flags: [] },
        { dst: 'default', gateway: 'fe80::1', dev: 'eth0', protocol: 'ra', metric: 1024, flags: [] },
        { dst: '2001:db8::1', gateway: 'fd00:10:244::1', dev: 'eth0', flags: [] },
      ],
      6,
      devices,
      NS,
    );
    assert.deepEqual(v6, [
      { dest: 'fd00:10:244::/64', device: 'eth0', scope: 0, family: 6 },
      { dest: 'default', gateway: 'fe80::1', device: 'eth0', scope: 0, family: 6 },
      { dest: '2001:db8::1/128', gateway: 'fd00:10:244::1', device: 'eth0', scope: 0, family: 6 },
    ]);
    const bad =
      (r: Record<string, unknown>, family: 4 | 6 = 4) =>
      () =>
        parseRoutes([{ dev: 'eth0', ...r }], family, devices, NS);
    assert.throws(bad({ dst: '10.0.0.0/99' }), /device eth0: route "10.0.0.0\/99": unusable destination/);
    assert.throws(bad({ dst: '10.0.0.0/24/1' }), InvalidArgumentError);
    assert.throws(bad({ dst: 'fd00::/64' }), InvalidArgumentError);
    assert.throws(bad({ dst: 'default', gateway: 'fd00::1' }), /unusable gateway/);
    assert.throws(bad({ dst: 'default', gateway: '10.0.0.1', prefsrc: 'x' }), /unusable source/);
    assert.throws(bad({ dst: 'default', scope: 'galaxy' }), /unknown scope/);
    assert.deepEqual(parseRoutes([{ dst: 'default', dev: 'eth0', scope: 17 }], 4, devices, NS)[0]!.scope, 17);
    assert.throws(() => parseRoutes('[]', 4, devices, NS), InternalError);
  });

  it('parses permanent neighbours on endpoints only', () => {
    const devices = new Set(['eth0']);
    assert.deepEqual(
      parseNeighbors(
        [
          { dst: '10.244.0.1', dev: 'eth0', lladdr: '0A:58:0A:F4:00:01', state: ['PERMANENT'] },
          { dst: 'fd00:10:244::1', dev: 'eth0', lladdr: '0a:58:0a:f4:00:01', state: ['PERMANENT'] },
          { dst: '10.244.0.2', dev: 'eth0', lladdr: '0a:58:0a:f4:00:02', state: ['REACHABLE'] },
          { dst: '10.1.0.1', dev: 'lo', lladdr: '0a:58:0a:f4:00:03', state: ['PERMANENT'] },
          { dst: '10.244.0.3', dev: 'eth0', state: ['PERMANENT'] },
        ],
        devices,
        NS,
      ),
      [
        { address: '10.244.0.1', family: 4, lladdr: '0a:58:0a:f4:00:01', device: 'eth0', state: 0x80 },
        { address: 'fd00:10:244::1', family: 6, lladdr: '0a:58:0a:f4:00:01', device: 'eth0', state: 0x80 },
      ],
    );
    assert.throws(
      () => parseNeighbors([{ dst: 'x', dev: 'eth0', lladdr: '0a:58:0a:f4:00:01', state: ['PERMANENT'] }], devices, NS),
      /device eth0: neighbour "x": unusable address/,
    );
    assert.throws(
      () => parseNeighbors([{ dst: '10.0.0.1', dev: 'eth0', lladdr: 'nope', state: ['PERMANENT'] }], devices, NS),
      /unusable lladdr/,
    );
  });

  it('classifies nsenter, ip and tc failures', () => {
    const c = (stderr: string, cause: unknown = new Error('exit 1')) =>
      classifyNetnsToolError(NS, 'ip link show', stderr, cause);
    assert.ok(c(`nsenter: cannot open ${NS}: No such file or directory`) instanceof NotFoundError);
    const wrong = c("nsenter: reassociate to namespace 'ns/net' failed: Invalid argument");
    assert.ok(
      wrong instanceof InvalidArgumentError &&
        wrong.message ===
          `netns ${NS} is not a network namespace (nsenter: reassociate to namespace 'ns/net' failed: Invalid argument)`,
    );
    assert.ok(c('nsenter: failed to execute ip: No such file or directory') instanceof UnavailableError);
    assert.ok(c('nsenter: cannot open x: Permission denied') instanceof FailedPreconditionError);
    assert.ok(c('Device "eth9" does not exist.') instanceof NotFoundError);
    assert.ok(c('Cannot find device "eth9"') instanceof NotFoundError);
    assert.ok(c('RTNETLINK answers: File exists') instanceof AlreadyExistsError);
    assert.ok(c('RTNETLINK answers: Operation not permitted') instanceof FailedPreconditionError);
    assert.ok(c('Error: something new') instanceof InternalError);
    assert.ok(c('', Object.assign(new Error('spawn nsenter ENOENT'), { code: 'ENOENT' })) instanceof UnavailableError);
    assert.ok(c('', Object.assign(new Error('killed'), { killed: true })) instanceof DeadlineExceededError);
    const err = c('Error: something new');
    assert.ok(err.message.startsWith(`netns ${NS}: ip link show: Error: something new`));
    assert.ok(err.cause instanceof Error);
  });
});
