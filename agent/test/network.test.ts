import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import { types } from '../../protos/agent';
import {
  addressBits,
  checkInterface,
  checkNeighbors,
  checkRoutes,
  cidr,
  ifName,
  ipAddress,
  macAddress,
  MAX_ROUTES,
  prefixLength,
} from '../net-validate';
import {
  addrAdd,
  batchInput,
  checkArgv,
  linkDown,
  ipFailure,
  linkSettings,
  neighReplace,
  parseLinks,
  parseRoutes,
  rawFlags,
  removableRoutes,
  routeDelete,
  routeOrder,
  routeReplace,
  toInterface,
  toRoute,
  type IpRunner,
} from '../net-ip';
import { GuestNetwork } from '../network';

const code =
  (c: Code) =>
  (err: unknown): boolean =>
    err instanceof StatusError && err.code === c;
const invalidArg = code(Code.INVALID_ARGUMENT);

/** What `ip -j -d addr show` prints in a fresh guest with one NIC (lo already up). */
const GUEST_LINKS = [
  {
    ifindex: 1,
    ifname: 'lo',
    flags: ['LOOPBACK', 'UP', 'LOWER_UP'],
    mtu: 65536,
    link_type: 'loopback',
    address: '00:00:00:00:00:00',
    addr_info: [
      { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' },
      { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' },
    ],
  },
  {
    ifindex: 2,
    ifname: 'eth0',
    flags: ['BROADCAST', 'MULTICAST'],
    mtu: 1500,
    link_type: 'ether',
    address: '02:42:ac:11:00:02',
    addr_info: [],
  },
];

/**
 * A fake ip: show commands answer from `state`, every other command is recorded (and may fail on demand, `fail`
 * giving ip's words on stderr). It understands `ip [-4|-6] -batch -` as ip does: one command per stdin line, in
 * order, stopping at the first that fails with "Command failed -:N". `spawns` counts the ip processes.
 */
function fakeIp(
  state: { links: unknown[]; routes4?: unknown[]; routes6?: unknown[] },
  fail?: (args: readonly string[]) => string | undefined,
) {
  const calls: string[] = [];
  const batches: string[][] = [];
  let spawns = 0;
  const one = (args: readonly string[]): string => {
    checkArgv(args);
    const line = args.join(' ');
    if (line === '-j -d addr show') return JSON.stringify(state.links);
    if (line === '-j -4 route show table main') return JSON.stringify(state.routes4 ?? []);
    if (line === '-j -6 route show table main') return JSON.stringify(state.routes6 ?? []);
    calls.push(line);
    const said = fail?.(args);
    if (said !== undefined) throw Object.assign(ipFailure(args, said), { said });
    return '';
  };
  const ip: IpRunner = async (args, input) => {
    spawns++;
    checkArgv(args);
    if (args.at(-1) !== '-' || args.at(-2) !== '-batch') return one(args);
    assert.equal(typeof input, 'string', 'a batch has its commands on stdin');
    const family = args.length === 3 ? [args[0]!] : [];
    const lines = input!.split('\n');
    assert.equal(lines.pop(), '', 'every line ends with a newline');
    batches.push(lines);
    let out = '';
    for (const [i, line] of lines.entries()) {
      try {
        out += one([...family, ...line.split(' ')]);
      } catch (err) {
        const said = (err as { said: string }).said;
        throw Object.assign(ipFailure(args, `${said}\nCommand failed -:${i + 1}`), {
          stderr: `${said}\nCommand failed -:${i + 1}\n`,
        });
      }
    }
    return out;
  };
  return {
    ip,
    calls,
    batches,
    get spawns() {
      return spawns;
    },
  };
}

describe('agent network', () => {
  describe('validation', () => {
    it('interface names: Linux rules, narrowed; never an option', () => {
      assert.equal(ifName('eth0', 'n'), 'eth0');
      assert.equal(ifName('tap0_kata.1', 'n'), 'tap0_kata.1');
      for (const bad of ['', '-eth0', '.x', 'a'.repeat(16), 'a b', 'a/b', 'a:b', 'eth0\n', 5, undefined])
        assert.throws(() => ifName(bad, 'n'), invalidArg, String(bad));
    });

    it('MACs, addresses and prefix lengths', () => {
      assert.equal(macAddress('02:42:AC:11:00:02', 'm'), '02:42:ac:11:00:02');
      for (const bad of ['', '02:42:ac:11:00', '02-42-ac-11-00-02', '-2:42:ac:11:00:02', '02:42:ac:11:00:02:03'])
        assert.throws(() => macAddress(bad, 'm'), invalidArg);
      assert.deepEqual(ipAddress('10.0.0.1', 'a'), { family: 4, address: '10.0.0.1' });
      assert.deepEqual(ipAddress('fd00::1', 'a', 6), { family: 6, address: 'fd00::1' });
      for (const bad of ['', '10.0.0', '10.0.0.256', 'fe80::1%eth0', '-1.2.3.4', 'localhost', '10.0.0.1/24'])
        assert.throws(() => ipAddress(bad, 'a'), invalidArg, bad);
      assert.throws(() => ipAddress('fd00::1', 'a', 4), /not an IPv4 address/);
      assert.equal(prefixLength('24', 4, 'p'), 24);
      assert.equal(prefixLength('128', 6, 'p'), 128);
      for (const bad of ['33', '-1', '', '2 4', '0x18', '1e1'])
        assert.throws(() => prefixLength(bad, 4, 'p'), invalidArg, bad);
    });

    it('CIDRs must not have host bits set (IPv4 and IPv6, with :: and an IPv4 tail)', () => {
      assert.equal(cidr('10.1.0.0/16', 4, 'd'), '10.1.0.0/16');
      assert.equal(cidr('10.1.2.3', 4, 'd'), '10.1.2.3/32');
      assert.equal(cidr('fd00:1::/64', 6, 'd'), 'fd00:1::/64');
      assert.throws(() => cidr('10.1.2.3/16', 4, 'd'), /host bits/);
      assert.throws(() => cidr('fd00::1/64', 6, 'd'), /host bits/);
      assert.equal(addressBits('::ffff:1.2.3.4', 6), 0xffff01020304n);
      assert.equal(addressBits('1::', 6), 1n << 112n);
      assert.equal(addressBits('255.0.0.1', 4), 0xff000001n);
    });

    it('an interface: unicast MAC, not lo, MTU 68-65535 or 0 (unchanged), addresses of their family, NOARP from raw_flags', () => {
      const ok: types.IInterface = {
        name: 'eth0',
        hwAddr: '02:42:AC:11:00:02',
        mtu: 1450,
        rawFlags: 0x1003 | 0x80,
        devicePath: '01/00',
        type: 'veth',
        IPAddresses: [
          { family: types.IPFamily.v4, address: '10.0.0.2', mask: '24' },
          { family: types.IPFamily.v6, address: 'fd00::2', mask: '64' },
        ],
      };
      assert.deepEqual(checkInterface(ok), {
        mac: '02:42:ac:11:00:02',
        name: 'eth0',
        mtu: 1450,
        noArp: true,
        addresses: [
          { family: 4, address: '10.0.0.2', prefix: 24 },
          { family: 6, address: 'fd00::2', prefix: 64 },
        ],
      });
      assert.equal(checkInterface({ ...ok, mtu: 0 }).mtu, 0);
      const bad: types.IInterface[] = [
        { ...ok, hwAddr: '01:00:5e:00:00:01' },
        { ...ok, hwAddr: '00:00:00:00:00:00' },
        { ...ok, name: 'lo' },
        { ...ok, name: '-x' },
        { ...ok, mtu: 67 },
        { ...ok, mtu: 65536 },
        { ...ok, rawFlags: -1 },
        { ...ok, devicePath: '../x' },
        { ...ok, type: 'a b' },
        { ...ok, IPAddresses: [{ family: types.IPFamily.v4, address: 'fd00::2', mask: '64' }] },
        { ...ok, IPAddresses: [{ family: types.IPFamily.v4, address: '10.0.0.2', mask: '33' }] },
        { ...ok, IPAddresses: [{ family: 7 as types.IPFamily, address: '10.0.0.2', mask: '24' }] },
        {
          ...ok,
          IPAddresses: [
            { address: '10.0.0.2', mask: '24' },
            { address: '10.0.0.2', mask: '16' },
          ],
        },
        { ...ok, IPAddresses: Array.from({ length: 65 }, (_, i) => ({ address: `10.0.${i}.2`, mask: '24' })) },
      ];
      for (const b of bad) assert.throws(() => checkInterface(b), invalidArg, JSON.stringify(b));
      assert.throws(() => checkInterface(undefined), /interface is missing/);
    });

    it('routes: default as empty dest, host routes, scope and family checked, list capped', () => {
      const [def, link, host] = checkRoutes([
        { dest: '', gateway: '10.0.0.1', device: 'eth0' },
        { dest: '10.0.0.0/24', device: 'eth0', scope: 253, source: '10.0.0.2', mtu: 1400 },
        { dest: 'fd00::5', device: 'eth0', family: types.IPFamily.v6, flags: 4 | 16 },
      ]);
      assert.deepEqual(def, {
        family: 4,
        dest: 'default',
        gateway: '10.0.0.1',
        device: 'eth0',
        scope: 0,
        mtu: 0,
        onlink: false,
      });
      assert.deepEqual(link, {
        family: 4,
        dest: '10.0.0.0/24',
        device: 'eth0',
        source: '10.0.0.2',
        scope: 253,
        mtu: 1400,
        onlink: false,
      });
      assert.deepEqual(host, { family: 6, dest: 'fd00::5/128', device: 'eth0', scope: 0, mtu: 0, onlink: true });
      assert.equal(checkRoutes([{ dest: '0.0.0.0/0', gateway: '10.0.0.1', device: 'eth0' }])[0]!.dest, 'default');
      const bad: types.IRoute[] = [
        { dest: '10.0.0.0/24' },
        { dest: '10.0.0.0/24', device: 'eth0', scope: 255 },
        { dest: '10.0.0.0/24', device: 'eth0', scope: 1 },
        { dest: '10.0.0.1/24', device: 'eth0' },
        { dest: 'fd00::/64', device: 'eth0' },
        { dest: '', gateway: 'fd00::1', device: 'eth0' },
        { dest: '', gateway: '10.0.0.1', device: 'eth0', scope: 253 },
        { dest: '10.0.0.0/24', device: 'eth0', flags: 0x100 },
        { dest: '10.0.0.0/24', device: 'eth0', mtu: 10 },
        { dest: '10.0.0.0/24', device: 'eth0', family: 2 as types.IPFamily },
        { dest: '10.0.0.0/24', device: 'eth0', source: '10.0.0.0/24' },
        { dest: '-1', device: 'eth0' },
      ];
      for (const b of bad) assert.throws(() => checkRoutes([b]), invalidArg, JSON.stringify(b));
      assert.throws(
        () =>
          checkRoutes(
            Array.from({ length: MAX_ROUTES + 1 }, () => ({ dest: '', gateway: '10.0.0.1', device: 'eth0' })),
          ),
        /at most/,
      );
    });

    it('neighbours: permanent by default, lladdr required, known states and flags only', () => {
      const [n] = checkNeighbors([
        { toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:01', device: 'eth0' },
      ]);
      assert.deepEqual(n, {
        family: 4,
        address: '10.0.0.1',
        mac: '02:00:00:00:00:01',
        device: 'eth0',
        state: 'permanent',
        router: false,
      });
      assert.equal(
        checkNeighbors([
          {
            toIPAddress: { address: 'fd00::1', family: types.IPFamily.v6 },
            lladdr: '02:00:00:00:00:01',
            device: 'eth0',
            state: 0x40,
            flags: 0x80,
          },
        ])[0]!.state,
        'noarp',
      );
      const bad: types.IARPNeighbor[] = [
        { lladdr: '02:00:00:00:00:01', device: 'eth0' },
        { toIPAddress: { address: '10.0.0.1' }, device: 'eth0' },
        { toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:01' },
        { toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:01', device: 'eth0', state: 0x20 },
        { toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:01', device: 'eth0', flags: 1 },
        {
          toIPAddress: { address: '10.0.0.1', family: types.IPFamily.v6 },
          lladdr: '02:00:00:00:00:01',
          device: 'eth0',
        },
      ];
      for (const b of bad) assert.throws(() => checkNeighbors([b]), invalidArg, JSON.stringify(b));
    });
  });

  describe('ip argv and output', () => {
    it('builds argv arrays for each change', () => {
      assert.deepEqual(linkSettings('eth0', 1450, false), ['link', 'set', 'dev', 'eth0', 'mtu', '1450', 'arp', 'on']);
      assert.deepEqual(linkSettings('eth0', 0, true), ['link', 'set', 'dev', 'eth0', 'arp', 'off']);
      assert.deepEqual(addrAdd('eth0', { family: 4, address: '10.0.0.2', prefix: 24 }), [
        'addr',
        'add',
        '10.0.0.2/24',
        'broadcast',
        '+',
        'dev',
        'eth0',
      ]);
      assert.deepEqual(addrAdd('eth0', { family: 6, address: 'fd00::2', prefix: 64 }), [
        'addr',
        'add',
        'fd00::2/64',
        'dev',
        'eth0',
      ]);
      assert.deepEqual(
        routeReplace({
          family: 4,
          dest: 'default',
          gateway: '10.0.0.1',
          device: 'eth0',
          scope: 0,
          mtu: 0,
          onlink: false,
        }),
        [
          '-4',
          'route',
          'replace',
          'default',
          'via',
          '10.0.0.1',
          'dev',
          'eth0',
          'scope',
          'global',
          'proto',
          'boot',
          'table',
          'main',
        ],
      );
      assert.deepEqual(
        routeReplace({
          family: 4,
          dest: '10.1.0.0/16',
          device: 'eth0',
          source: '10.0.0.2',
          scope: 253,
          mtu: 1400,
          onlink: true,
        }),
        [
          '-4',
          'route',
          'replace',
          '10.1.0.0/16',
          'dev',
          'eth0',
          'src',
          '10.0.0.2',
          'scope',
          'link',
          'mtu',
          '1400',
          'onlink',
          'proto',
          'boot',
          'table',
          'main',
        ],
      );
      assert.deepEqual(
        neighReplace({
          family: 4,
          address: '10.0.0.1',
          mac: '02:00:00:00:00:01',
          device: 'eth0',
          state: 'permanent',
          router: true,
        }),
        [
          '-4',
          'neigh',
          'replace',
          '10.0.0.1',
          'lladdr',
          '02:00:00:00:00:01',
          'dev',
          'eth0',
          'nud',
          'permanent',
          'router',
        ],
      );
    });

    it('orders link-scope routes before gateway routes, keeping the order within each', () => {
      const r = checkRoutes([
        { dest: '', gateway: '10.0.0.1', device: 'eth0' },
        { dest: '10.0.0.0/24', device: 'eth0', scope: 253 },
        { dest: '10.2.0.0/16', gateway: '10.0.0.1', device: 'eth0' },
        { dest: '10.0.0.1', device: 'eth0', scope: 253 },
      ]);
      assert.deepEqual(
        routeOrder(r).map((x) => x.dest),
        ['10.0.0.0/24', '10.0.0.1/32', 'default', '10.2.0.0/16'],
      );
    });

    it('ip -batch: one line per command, no validated value can split or comment a line, family lifted to the batch', () => {
      assert.equal(
        batchInput([linkDown('eth0'), addrAdd('eth0', { family: 6, address: 'fd00::2', prefix: 64 })]),
        'link set dev eth0 down\naddr add fd00::2/64 dev eth0\n',
      );
      assert.equal(
        batchInput([routeReplace(checkRoutes([{ dest: '', gateway: '10.0.0.1', device: 'eth0' }])[0]!)], 4),
        'route replace default via 10.0.0.1 dev eth0 scope global proto boot table main\n',
      );
      assert.throws(() => batchInput([['-4', 'route', 'show']]), /family any/);
      assert.throws(() => batchInput([['link', 'show']], 6), /family 6/);
      assert.throws(() => batchInput([]), code(Code.INTERNAL));
      assert.doesNotThrow(() => checkArgv(['-batch', '-']));
      assert.doesNotThrow(() => checkArgv(['-6', '-batch', '-']));
      assert.throws(() => checkArgv(['-batch', '-', 'x']), code(Code.INTERNAL));
      // What ip's batch reader treats specially: white space (splits words, ends lines), quotes, backslash, '#'.
      const separators = [' ', '\t', '\n', '\r', '\v', '\f', '"', "'", '\\', '#', '\0', '\x1b', '\u00a0', '\u2028'];
      for (const sep of separators) {
        const label = JSON.stringify(sep);
        // The runner's last guard: no argument with a separator ever reaches a batch line.
        assert.throws(() => batchInput([['link', 'set', 'dev', `eth${sep}0`, 'up']]), code(Code.INTERNAL), label);
        // And no checked value can hold one in the first place.
        assert.throws(() => ifName(`eth${sep}0`, 'n'), invalidArg, label);
        assert.throws(() => macAddress(`02:42:ac:11:00:0${sep}`, 'm'), invalidArg, label);
        assert.throws(() => ipAddress(`10.0.0.1${sep}`, 'a'), invalidArg, label);
        assert.throws(() => ipAddress(`fd00::1${sep}`, 'a'), invalidArg, label);
        assert.throws(() => cidr(`10.0.0.0/24${sep}`, 4, 'd'), invalidArg, label);
        assert.throws(() => prefixLength(`2${sep}4`, 4, 'p'), invalidArg, label);
        assert.throws(
          () =>
            checkInterface({
              name: 'eth0',
              hwAddr: '02:42:ac:11:00:02',
              IPAddresses: [{ address: `10.0.0.2${sep}`, mask: '24' }],
            }),
          invalidArg,
          label,
        );
        assert.throws(() => checkRoutes([{ dest: '', gateway: `10.0.0.1${sep}`, device: 'eth0' }]), invalidArg, label);
        assert.throws(() => checkRoutes([{ dest: '', gateway: '10.0.0.1', device: `eth0${sep}` }]), invalidArg, label);
        assert.throws(
          () =>
            checkNeighbors([
              { toIPAddress: { address: '10.0.0.1' }, lladdr: `02:00:00:00:00:01${sep}`, device: 'eth0' },
            ]),
          invalidArg,
          label,
        );
      }
    });

    it('refuses an argument that starts with "-" after the leading options', () => {
      checkArgv(['-j', '-4', 'route', 'show']);
      assert.throws(() => checkArgv(['link', 'set', 'dev', '-x']), code(Code.INTERNAL));
      assert.throws(() => checkArgv(['-4', 'addr', 'add', '-6']), code(Code.INTERNAL));
      assert.throws(() => checkArgv(['link', '']), code(Code.INTERNAL));
    });

    it('classifies ip failures once', () => {
      assert.equal(ipFailure(['x'], 'Cannot find device "eth9"\n').code, Code.NOT_FOUND);
      assert.equal(ipFailure(['x'], 'RTNETLINK answers: No such process\n').code, Code.NOT_FOUND);
      assert.equal(ipFailure(['x'], 'RTNETLINK answers: File exists\n').code, Code.ALREADY_EXISTS);
      assert.equal(ipFailure(['x'], 'Error: Nexthop has invalid gateway.\n').code, Code.INVALID_ARGUMENT);
      const other = ipFailure(['link', 'set'], 'RTNETLINK answers: Operation not permitted\n');
      assert.equal(other.code, Code.INTERNAL);
      assert.match(other.message, /^ip link set: RTNETLINK answers: Operation not permitted$/);
    });

    it('reads links and routes from ip -j, and reports them as Kata does', () => {
      const [lo, eth0] = parseLinks(JSON.stringify(GUEST_LINKS));
      assert.deepEqual(toInterface(lo!), {
        device: 'lo',
        name: 'lo',
        mtu: 65536,
        hwAddr: '00:00:00:00:00:00',
        devicePath: '',
        type: '',
        rawFlags: 0x1 | 0x8 | 0x40 | 0x10000,
        IPAddresses: [
          { family: types.IPFamily.v4, address: '127.0.0.1', mask: '8' },
          { family: types.IPFamily.v6, address: '::1', mask: '128' },
        ],
      });
      assert.equal(toInterface(eth0!).rawFlags, 0x2 | 0x1000);
      assert.equal(rawFlags(['UP', 'NO-CARRIER', 'BROADCAST']), 0x3, 'no carrier: not running');
      assert.deepEqual(parseLinks(''), []);
      assert.throws(() => parseLinks('{oops'), code(Code.INTERNAL));

      const routes = parseRoutes(
        JSON.stringify([
          { dst: 'default', gateway: '10.0.0.1', dev: 'eth0', flags: ['onlink'] },
          { dst: '10.1.0.0/16', dev: 'eth0', scope: 'link', prefsrc: '10.0.0.2', flags: [], metrics: [{ mtu: 1400 }] },
          { dst: '10.0.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.0.0.2', flags: [] },
          { dst: '10.9.9.9', dev: 'lo', flags: [] },
          { type: 'unreachable', dst: '10.8.0.0/16', flags: [] },
        ]),
      );
      assert.deepEqual(toRoute(4, routes[0]!), {
        dest: '',
        gateway: '10.0.0.1',
        device: 'eth0',
        source: '',
        scope: 0,
        family: types.IPFamily.v4,
        flags: 4,
        mtu: 0,
      });
      assert.deepEqual(toRoute(4, routes[1]!), {
        dest: '10.1.0.0/16',
        gateway: '',
        device: 'eth0',
        source: '10.0.0.2',
        scope: 253,
        family: types.IPFamily.v4,
        flags: 0,
        mtu: 1400,
      });
      assert.equal(toRoute(4, routes[3]!).dest, '10.9.9.9/32');
      assert.deepEqual(
        removableRoutes(routes).map((r) => r.dst),
        ['default', '10.1.0.0/16'],
        "not the kernel's, not on lo, not without a device",
      );
      assert.deepEqual(routeDelete(4, removableRoutes(routes)[0]!), [
        '-4',
        'route',
        'del',
        'default',
        'via',
        '10.0.0.1',
        'dev',
        'eth0',
        'table',
        'main',
      ]);
      assert.deepEqual(routeDelete(6, { dst: 'fd00::/64', dev: 'eth0', metric: 1024, flags: [] }), [
        '-6',
        'route',
        'del',
        'fd00::/64',
        'dev',
        'eth0',
        'metric',
        '1024',
        'table',
        'main',
      ]);
    });
  });

  describe('GuestNetwork (fake ip)', () => {
    const iface: types.IInterface = {
      name: 'eth0',
      hwAddr: '02:42:AC:11:00:02',
      mtu: 1450,
      IPAddresses: [{ family: types.IPFamily.v4, address: '10.0.0.2', mask: '24' }],
    };

    it('UpdateInterface finds the NIC by MAC (any case), configures it in order, and returns it', async () => {
      const { ip, calls } = fakeIp({ links: GUEST_LINKS });
      const res = await new GuestNetwork(ip).updateInterface({ interface: iface });
      assert.deepEqual(calls, [
        'link set dev eth0 down',
        'link set dev eth0 mtu 1450 arp on',
        'addr flush dev eth0',
        'addr add 10.0.0.2/24 broadcast + dev eth0',
        'link set dev eth0 up',
      ]);
      assert.equal(res.hwAddr, '02:42:ac:11:00:02');
    });

    it('UpdateInterface runs its changes as one ip -batch: 3 ip processes in all (find, change, read back)', async () => {
      const fake = fakeIp({ links: GUEST_LINKS });
      await new GuestNetwork(fake.ip).updateInterface({
        interface: {
          ...iface,
          name: 'pod0',
          IPAddresses: [
            { family: types.IPFamily.v4, address: '10.0.0.2', mask: '24' },
            { family: types.IPFamily.v6, address: 'fd00::2', mask: '64' },
          ],
        },
      });
      assert.equal(fake.calls.length, 7);
      assert.equal(fake.spawns, 3);
      assert.deepEqual(fake.batches, [fake.calls]);
    });

    it("UpdateInterface: a command failing in the batch is reported as itself, with ip's words and code", async () => {
      const fake = fakeIp({ links: GUEST_LINKS }, (args) =>
        args.includes('mtu')
          ? 'Error: mtu greater than device maximum.\nRTNETLINK answers: Invalid argument'
          : undefined,
      );
      await assert.rejects(
        new GuestNetwork(fake.ip).updateInterface({ interface: iface }),
        (e: StatusError) =>
          e.code === Code.INVALID_ARGUMENT &&
          e.message.startsWith('ip link set dev eth0 mtu 1450 arp on: ') &&
          /mtu greater than device maximum/.test(e.message) &&
          !/Command failed/.test(e.message),
      );
      assert.deepEqual(fake.calls, ['link set dev eth0 down', 'link set dev eth0 mtu 1450 arp on'], 'stops there');
    });

    it('UpdateInterface renames, swapping names with a link that has the wanted one', async () => {
      const links = [
        ...GUEST_LINKS,
        { ifindex: 3, ifname: 'eth1', flags: ['UP'], mtu: 1500, address: '02:00:00:00:00:09', addr_info: [] },
      ];
      const { ip, calls } = fakeIp({ links });
      await new GuestNetwork(ip)
        .updateInterface({ interface: { ...iface, hwAddr: '02:00:00:00:00:09', name: 'eth0' } })
        .catch(() => undefined);
      assert.deepEqual(calls.slice(0, 6), [
        'link set dev eth1 down',
        'link set dev eth0 name hull-tmp2',
        'link set dev eth1 name eth0',
        'link set dev hull-tmp2 name eth1',
        'link set dev eth0 mtu 1450 arp on',
        'addr flush dev eth0',
      ]);
      const plain = fakeIp({ links: GUEST_LINKS });
      await new GuestNetwork(plain.ip)
        .updateInterface({ interface: { ...iface, name: 'pod0' } })
        .catch(() => undefined);
      assert.deepEqual(plain.calls.slice(0, 2), ['link set dev eth0 down', 'link set dev eth0 name pod0']);
    });

    it('UpdateInterface: NOT_FOUND for an unknown MAC (naming what there is), INVALID_ARGUMENT before any change', async () => {
      const { ip, calls } = fakeIp({ links: GUEST_LINKS });
      const net = new GuestNetwork(ip, undefined, { timeoutMs: 100, pollMs: 10 });
      const t0 = Date.now();
      await assert.rejects(
        net.updateInterface({ interface: { ...iface, hwAddr: '02:00:00:00:00:77' } }),
        (e: StatusError) =>
          e.code === Code.NOT_FOUND && /02:00:00:00:00:77/.test(e.message) && /eth0 02:42:ac:11:00:02/.test(e.message),
      );
      assert.ok(Date.now() - t0 >= 90, 'it waited for the NIC to appear first');
      await assert.rejects(net.updateInterface({ interface: { ...iface, mtu: 20 } }), invalidArg);
      assert.deepEqual(calls, []);
    });

    it('UpdateInterface waits for a NIC that appears later (hot-plugged into a clone), then configures it', async () => {
      const state = { links: [GUEST_LINKS[0]] as unknown[] }; // lo only
      const { ip, calls } = fakeIp(state);
      setTimeout(() => (state.links = GUEST_LINKS), 150);
      const t0 = Date.now();
      const res = await new GuestNetwork(ip, undefined, { timeoutMs: 5000, pollMs: 10 }).updateInterface({
        interface: iface,
      });
      assert.ok(Date.now() - t0 >= 140, 'it waited');
      assert.equal(res.hwAddr, '02:42:ac:11:00:02');
      assert.equal(calls[0], 'link set dev eth0 down');
    });

    it("UpdateRoutes removes the old routes (not lo's, not the kernel's), then adds link routes before gateway routes", async () => {
      const { ip, calls } = fakeIp(
        {
          links: GUEST_LINKS,
          routes4: [
            { dst: '10.5.0.0/16', dev: 'eth0', scope: 'link', flags: [] },
            { dst: 'default', gateway: '10.5.0.1', dev: 'eth0', flags: [] },
            { dst: '10.0.0.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', flags: [] },
            { dst: '127.0.0.5', dev: 'lo', flags: [] },
          ],
          routes6: [{ dst: 'fd00::/64', dev: 'eth0', protocol: 'ra', metric: 1024, flags: [] }],
        },
        (args) =>
          args.includes('del') && args.includes('10.5.0.0/16') ? 'RTNETLINK answers: No such process' : undefined,
      );
      const res = await new GuestNetwork(ip).updateRoutes({
        routes: {
          Routes: [
            { dest: '', gateway: '10.0.0.1', device: 'eth0' },
            { dest: '10.0.0.0/24', device: 'eth0', scope: 253 },
          ],
        },
      });
      assert.deepEqual(calls, [
        '-4 route del default via 10.5.0.1 dev eth0 table main',
        '-4 route del 10.5.0.0/16 dev eth0 table main',
        '-6 route del fd00::/64 dev eth0 metric 1024 table main',
        '-4 route replace 10.0.0.0/24 dev eth0 scope link proto boot table main',
        '-4 route replace default via 10.0.0.1 dev eth0 scope global proto boot table main',
      ]);
      assert.ok(Array.isArray(res.Routes));
    });

    it('UpdateRoutes: deletions in one batch per family, a route already gone skipped (the rest run), other failures stop', async () => {
      const routes4 = [
        { dst: 'default', gateway: '10.5.0.1', dev: 'eth0', flags: [] },
        { dst: '10.6.0.0/16', gateway: '10.5.0.1', dev: 'eth0', flags: [] },
        { dst: '10.5.0.0/16', dev: 'eth0', scope: 'link', flags: [] },
      ];
      const want = { routes: { Routes: [{ dest: '10.0.0.0/24', device: 'eth0', scope: 253 }] } };
      const gone = fakeIp({ links: GUEST_LINKS, routes4 }, (args) =>
        args.includes('del') && args.includes('default') ? 'RTNETLINK answers: No such process' : undefined,
      );
      await new GuestNetwork(gone.ip).updateRoutes(want);
      assert.deepEqual(gone.calls, [
        '-4 route del default via 10.5.0.1 dev eth0 table main',
        '-4 route del 10.6.0.0/16 via 10.5.0.1 dev eth0 table main',
        '-4 route del 10.5.0.0/16 dev eth0 table main',
        '-4 route replace 10.0.0.0/24 dev eth0 scope link proto boot table main',
      ]);
      assert.deepEqual(gone.batches, [
        [
          'route del default via 10.5.0.1 dev eth0 table main',
          'route del 10.6.0.0/16 via 10.5.0.1 dev eth0 table main',
          'route del 10.5.0.0/16 dev eth0 table main',
        ],
        ['route del 10.6.0.0/16 via 10.5.0.1 dev eth0 table main', 'route del 10.5.0.0/16 dev eth0 table main'],
        ['route replace 10.0.0.0/24 dev eth0 scope link proto boot table main'],
      ]);
      const refused = fakeIp({ links: GUEST_LINKS, routes4 }, (args) =>
        args.includes('del') && args.includes('10.6.0.0/16') ? 'RTNETLINK answers: Operation not permitted' : undefined,
      );
      await assert.rejects(
        new GuestNetwork(refused.ip).updateRoutes(want),
        (e: StatusError) =>
          e.code === Code.INTERNAL &&
          /^ip -4 route del 10\.6\.0\.0\/16 via 10\.5\.0\.1 .*Operation not permitted$/.test(e.message),
      );
      assert.equal(refused.calls.length, 2, 'nothing after the refused deletion');
      // No stale routes: listing (addr show, 2 route shows), one batch of replacements, the answer (2 route shows).
      const plain = fakeIp({ links: GUEST_LINKS });
      await new GuestNetwork(plain.ip).updateRoutes({
        routes: {
          Routes: [
            { dest: '', gateway: '10.0.0.1', device: 'eth0' },
            { dest: '10.0.0.0/24', device: 'eth0', scope: 253 },
          ],
        },
      });
      assert.equal(plain.spawns, 6);
    });

    it('UpdateRoutes and AddARPNeighbors: NOT_FOUND for a device the guest lacks, before any change', async () => {
      const { ip, calls } = fakeIp({ links: GUEST_LINKS });
      const net = new GuestNetwork(ip);
      await assert.rejects(
        net.updateRoutes({ routes: { Routes: [{ dest: '', gateway: '10.0.0.1', device: 'eth7' }] } }),
        (e: StatusError) => e.code === Code.NOT_FOUND && /eth7/.test(e.message),
      );
      await assert.rejects(
        net.addArpNeighbors({
          neighbors: {
            ARPNeighbors: [{ toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:01', device: 'eth7' }],
          },
        }),
        code(Code.NOT_FOUND),
      );
      assert.deepEqual(calls, []);
      await net.addArpNeighbors({
        neighbors: {
          ARPNeighbors: [{ toIPAddress: { address: '10.0.0.1' }, lladdr: '02:00:00:00:00:0A', device: 'eth0' }],
        },
      });
      assert.deepEqual(calls, ['-4 neigh replace 10.0.0.1 lladdr 02:00:00:00:00:0a dev eth0 nud permanent']);
    });

    it('runs one operation at a time, after the network is ready', async () => {
      let release!: () => void;
      const ready = new Promise<void>((r) => {
        release = r;
      });
      const order: string[] = [];
      const ip: IpRunner = async (args) => {
        order.push(args.join(' '));
        await new Promise((r) => setTimeout(r, 5));
        return args[0] === '-j' ? JSON.stringify(args.includes('addr') ? GUEST_LINKS : []) : '';
      };
      const net = new GuestNetwork(ip, () => ready);
      const a = net.listInterfaces();
      const b = net.listRoutes();
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(order, [], 'nothing before ready');
      release();
      const [ifs, routes] = await Promise.all([a, b]);
      assert.equal(ifs.Interfaces?.length, 2);
      assert.deepEqual(routes.Routes, []);
      assert.deepEqual(order, ['-j -d addr show', '-j -4 route show table main', '-j -6 route show table main']);
    });
  });
});
