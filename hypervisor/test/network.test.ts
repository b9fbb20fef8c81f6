// Real network namespaces (needs root, iproute2, util-linux nsenter, python3): the test makes its own namespaces
// `hull-nt-<random>` (the "pod", with a veth eth0 as CNI would leave it) and `hull-nt-<random>-br` (the bridge side
// of the veth), and removes them in after(), whatever happened.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../../errors';
import { attachEndpoints, detachEndpoints, removeLocalhostRedirects, scanNetns, type NetEndpoint } from '../network';

function run(file: string, args: string[], timeout = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    // spawns: wrapper; run's callers name the program
    execFile(file, args, { timeout }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

const ip = (args: string[]): Promise<string> => run('ip', args);
// spawns: nsenter, ip, tc, python3; the tools inNs's callers run in the netns
const inNs = (ns: string, tool: string, args: string[], timeout?: number): Promise<string> =>
  run('nsenter', [`--net=/var/run/netns/${ns}`, '--', tool, ...args], timeout);
/** The fields of `ip -j` / `tc -j` output these tests look at. */
interface IpLink {
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  linkinfo?: { info_kind: string; info_data?: { type: string } };
  addr_info?: Array<{ local: string; prefixlen: number; scope: string }>;
}
interface TcEntry {
  pref: number;
  kind: string;
  options?: { actions?: Array<{ kind: string; mirred_action?: string; direction?: string; to_dev?: string }> };
}
const json = async <T = IpLink>(ns: string, tool: string, args: string[]): Promise<T[]> =>
  JSON.parse((await inNs(ns, tool, ['-j', ...args])) || '[]') as T[];

/**
 * Test-only: opens a persistent tap (TUNSETIFF, IFF_TAP | IFF_NO_PI) as QEMU would, writes an ARP request "who has
 * <peer>? tell <me>" from the endpoint's MAC every 0.5 s, and reports what it read: the peer's ARP reply (the
 * tap -> veth -> peer -> veth -> tap round trip) and a UDP datagram the peer sent to <me> on port 9 (veth -> tap).
 */
const TAP_PROBE = `
import fcntl, json, os, select, struct, sys, time
tap, mac, me, peer, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH22x', tap.encode(), 0x0002 | 0x1000))
v4 = lambda s: bytes(int(x) for x in s.split('.'))
hw = bytes.fromhex(mac.replace(':', ''))
arp = b'\\xff' * 6 + hw + b'\\x08\\x06' + struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + hw + v4(me) + b'\\x00' * 6 + v4(peer)
seen = {'arpReply': False, 'udpFromPeer': False}
end, next_send = time.time() + seconds, 0
print('open', flush=True)
while time.time() < end and not all(seen.values()):
    if time.time() >= next_send:
        os.write(fd, arp)
        next_send = time.time() + 0.5
    if not select.select([fd], [], [], 0.2)[0]:
        continue
    f = os.read(fd, 65536)
    if len(f) >= 42 and f[12:14] == b'\\x08\\x06' and f[20:22] == b'\\x00\\x02' and f[28:32] == v4(peer) and f[32:38] == hw:
        seen['arpReply'] = True
    if len(f) >= 38 and f[12:14] == b'\\x08\\x00' and f[23] == 17 and f[26:30] == v4(peer) and f[30:34] == v4(me) and f[36:38] == b'\\x00\\x09':
        seen['udpFromPeer'] = True
print(json.dumps(seen), flush=True)
`;

/** Test-only: sends a few UDP datagrams to <dst>:9 from inside the namespace it runs in. */
const UDP_SENDER = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b'hull', (sys.argv[1], 9))
    time.sleep(0.3)
`;

describe('hypervisor/network on real namespaces', function () {
  const id = crypto.randomBytes(4).toString('hex');
  const pod = `hull-nt-${id}`;
  const bridge = `hull-nt-${id}-br`;
  const podPath = `/var/run/netns/${pod}`;
  const x = 100 + crypto.randomInt(150);
  // Never 0: `fd00:ef:0::2` is written back by the kernel as `fd00:ef::2`, and the expected strings below are the
  // uncompressed form (a 1-in-250 failure, seen twice).
  const y = 1 + crypto.randomInt(249);
  const me = `10.${x}.${y}.2`;
  const gw = `10.${x}.${y}.1`;
  const v6 = `fd00:${x.toString(16)}:${y.toString(16)}::`;
  const NEIGH_MAC = '02:00:5e:00:53:01';
  const MTU = 1400;
  const made: string[] = [];
  let tmp = '';
  let eth0Mac = '';
  let endpoints: NetEndpoint[] = [];

  before(async function () {
    this.timeout(60_000);
    for (const ns of [pod, bridge]) {
      await ip(['netns', 'add', ns]);
      made.push(ns);
    }
    await ip([
      'link',
      'add',
      'eth0',
      'netns',
      pod,
      'mtu',
      String(MTU),
      'type',
      'veth',
      'peer',
      'name',
      'br0',
      'netns',
      bridge,
      'mtu',
      String(MTU),
    ]);
    await ip(['-n', pod, 'link', 'set', 'lo', 'up']);
    await ip(['-n', pod, 'link', 'set', 'eth0', 'up']);
    await ip(['-n', bridge, 'link', 'set', 'br0', 'up']);
    await ip(['-n', pod, 'addr', 'add', `${me}/24`, 'dev', 'eth0']);
    await ip(['-n', pod, 'addr', 'add', `${v6}2/64`, 'dev', 'eth0', 'nodad']);
    await ip(['-n', pod, 'route', 'add', 'default', 'via', gw, 'dev', 'eth0']);
    await ip(['-n', pod, '-6', 'route', 'add', 'default', 'via', `${v6}1`, 'dev', 'eth0']);
    await ip(['-n', pod, 'neigh', 'add', `10.${x}.${y}.9`, 'lladdr', NEIGH_MAC, 'dev', 'eth0', 'nud', 'permanent']);
    await ip(['-n', bridge, 'addr', 'add', `${gw}/24`, 'dev', 'br0']);
    eth0Mac = (await json(pod, 'ip', ['link', 'show', 'dev', 'eth0']))[0]!.address;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-nt-'));
  });

  after(async function () {
    this.timeout(60_000);
    for (const ns of made) await ip(['netns', 'del', ns]).catch(() => undefined);
    if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('scanNetns checks the netns path before reading it', async () => {
    assert.ok((await scanNetns(`/var/run/netns/${pod}`)).endpoints);
    const file = path.join(tmp, 'plain');
    fs.writeFileSync(file, '');
    await assert.rejects(scanNetns(file), (e: Error) => e instanceof InvalidArgumentError && e.message.includes(file));
    await assert.rejects(
      scanNetns('/proc/self/ns/mnt'),
      (e: Error) => e instanceof InvalidArgumentError && /not a network namespace/.test(e.message),
    );
    await assert.rejects(scanNetns(`/var/run/netns/${pod}-missing`), NotFoundError);
    for (const bad of ['', 'relative', '/a/../b', '/a//b', '/a/', `/a\0b`, `/${'x'.repeat(4096)}`]) {
      await assert.rejects(scanNetns(bad), InvalidArgumentError, JSON.stringify(bad.slice(0, 20)));
    }
  });

  it('scan: a missing path or a file that is no netns is a clear error', async () => {
    await assert.rejects(
      scanNetns(`/var/run/netns/${pod}-missing`),
      (e: Error) => e instanceof NotFoundError && e.message.includes(`${pod}-missing does not exist`),
    );
    await assert.rejects(
      scanNetns(fs.mkdtempSync(path.join(tmp, 'd-'))),
      (e: Error) => e instanceof InvalidArgumentError && /not a namespace file/.test(e.message),
    );
    await assert.rejects(
      scanNetns('/proc/self/ns/uts'),
      (e: Error) => e instanceof InvalidArgumentError && /not a network namespace/.test(e.message),
    );
  });

  it("scan and attach refuse the host's own network namespace: its NICs never go to a VM", async () => {
    await assert.rejects(
      scanNetns(`/proc/${process.pid}/ns/net`),
      (e: Error) => e instanceof InvalidArgumentError && /host's own network namespace/.test(e.message),
    );
    await assert.rejects(
      attachEndpoints('/proc/self/ns/net', []),
      (e: Error) => e instanceof InvalidArgumentError && /host's own network namespace/.test(e.message),
    );
  });

  it('scan finds exactly eth0 with its MAC, MTU, addresses, routes and permanent neighbour', async () => {
    const scan = await scanNetns(podPath);
    assert.deepEqual(scan.endpoints, [
      {
        name: 'eth0',
        mac: eth0Mac,
        mtu: MTU,
        addresses: [
          { family: 4, address: me, prefixLength: 24 },
          { family: 6, address: `${v6}2`, prefixLength: 64 },
        ],
        tap: 'tap0_hull',
      },
    ]);
    assert.deepEqual(scan.routes, [
      { dest: 'default', gateway: gw, device: 'eth0', scope: 0, family: 4 },
      { dest: `10.${x}.${y}.0/24`, device: 'eth0', source: me, scope: 253, family: 4 },
      { dest: `${v6}/64`, device: 'eth0', scope: 0, family: 6 },
      { dest: 'default', gateway: `${v6}1`, device: 'eth0', scope: 0, family: 6 },
    ]);
    assert.deepEqual(scan.neighbors, [
      { address: `10.${x}.${y}.9`, family: 4, lladdr: NEIGH_MAC, device: 'eth0', state: 0x80 },
    ]);
    endpoints = scan.endpoints;
  });

  async function redirects(dev: string): Promise<string[]> {
    const filters = await json<TcEntry>(pod, 'tc', ['filter', 'show', 'dev', dev, 'ingress']);
    return filters.flatMap((f) =>
      (f.options?.actions ?? []).map(
        (a) => `${f.pref} ${f.kind} ${a.kind} ${a.mirred_action ?? ''} ${a.direction ?? ''} ${a.to_dev ?? ''}`,
      ),
    );
  }

  async function checkAttached(): Promise<void> {
    const [tap] = await json(pod, 'ip', ['-d', 'link', 'show', 'dev', 'tap0_hull']);
    assert.equal(tap!.mtu, MTU);
    assert.equal(tap!.linkinfo?.info_kind, 'tun');
    assert.equal(tap!.linkinfo?.info_data?.type, 'tap');
    assert.ok(tap!.flags.includes('UP'));
    assert.deepEqual(await redirects('eth0'), ['1 u32 mirred redirect egress tap0_hull']);
    assert.deepEqual(await redirects('tap0_hull'), ['1 u32 mirred redirect egress eth0']);
  }

  it('attach makes tap0_hull with the veth MTU and the two redirects; twice is the same', async () => {
    await attachEndpoints(podPath, endpoints);
    await checkAttached();
    await attachEndpoints(podPath, endpoints);
    await checkAttached();
    // CNI's view is unchanged, and a rescan ignores our tap.
    assert.deepEqual((await scanNetns(podPath)).endpoints, endpoints);
  });

  it('the redirects carry packets both ways between the tap and the bridge side', async function () {
    this.timeout(30_000);
    const probe = inNs(pod, 'python3', ['-c', TAP_PROBE, 'tap0_hull', eth0Mac, me, gw, '10'], 20_000);
    await new Promise((r) => setTimeout(r, 1000)); // let the probe open the tap (carrier up) first
    await inNs(bridge, 'python3', ['-c', UDP_SENDER, me, '6'], 20_000);
    const lines = (await probe).trim().split('\n');
    assert.equal(lines[0], 'open');
    assert.deepEqual(JSON.parse(lines[1]!), { arpReply: true, udpFromPeer: true });
  });

  it('foreign ingress filters on the veth survive attach and detach', async () => {
    const foreign = (pref: string, match: string[]) =>
      inNs(pod, 'tc', [
        'filter',
        'add',
        'dev',
        'eth0',
        'parent',
        'ffff:',
        'protocol',
        'all',
        'pref',
        pref,
        'u32',
        ...match,
        'action',
        'mirred',
        'egress',
        'mirror',
        'dev',
        'eth0',
      ]);
    await detachEndpoints(podPath, ['tap0_hull']);
    await inNs(pod, 'tc', ['qdisc', 'add', 'dev', 'eth0', 'ingress']);
    await foreign('1', ['match', 'u32', '0xc0000201', '0xffffffff', 'at', '16']); // same priority as ours
    await foreign('100', ['match', 'u8', '0', '0']);
    const theirs = ['1 u32 mirred mirror egress eth0', '100 u32 mirred mirror egress eth0'];
    await attachEndpoints(podPath, endpoints);
    await attachEndpoints(podPath, endpoints);
    assert.deepEqual((await redirects('eth0')).sort(), [...theirs, '1 u32 mirred redirect egress tap0_hull'].sort());
    await detachEndpoints(podPath, ['tap0_hull']);
    assert.deepEqual(await redirects('eth0'), theirs);
    await inNs(pod, 'tc', ['qdisc', 'del', 'dev', 'eth0', 'ingress']);
  });

  it('a failed attach undoes what it made', async () => {
    const missing: NetEndpoint = { name: 'eth7', mac: '02:00:5e:00:53:07', mtu: 1500, addresses: [], tap: 'tap1_hull' };
    await assert.rejects(
      attachEndpoints(podPath, [...endpoints, missing]),
      (e: Error) => e instanceof NotFoundError && e.message.includes('device eth7'),
    );
    assert.deepEqual((await json(pod, 'ip', ['link', 'show'])).map((l) => l.ifname).sort(), ['eth0', 'lo']);
    assert.deepEqual(await json<TcEntry>(pod, 'tc', ['qdisc', 'show', 'dev', 'eth0', 'ingress']), []);
    await assert.rejects(attachEndpoints(podPath, [{ ...endpoints[0]!, mac: '02:00:5e:00:53:99' }]), /its MAC is/);
    await assert.rejects(attachEndpoints(podPath, [{ ...endpoints[0]!, tap: 'eth0' }]), InvalidArgumentError);
    await assert.rejects(attachEndpoints(podPath, [{ ...endpoints[0]!, mtu: 70_000 }]), InvalidArgumentError);
  });

  it('detach removes the tap and the qdiscs, keeps eth0 and its addresses; twice is fine', async () => {
    await attachEndpoints(podPath, endpoints);
    await detachEndpoints(podPath, ['tap0_hull']);
    const links = await json(pod, 'ip', ['addr', 'show']);
    assert.deepEqual(links.map((l) => l.ifname).sort(), ['eth0', 'lo']);
    const eth0 = links.find((l) => l.ifname === 'eth0')!;
    assert.deepEqual(
      eth0.addr_info!.filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`),
      [`${me}/24`, `${v6}2/64`],
    );
    assert.equal(eth0.mtu, MTU);
    assert.deepEqual(await json<TcEntry>(pod, 'tc', ['qdisc', 'show', 'dev', 'eth0', 'ingress']), []);
    assert.deepEqual((await scanNetns(podPath)).routes.length, 4);
    await detachEndpoints(podPath, ['tap0_hull']);
    await assert.rejects(detachEndpoints(podPath, ['eth0']), InvalidArgumentError);
  });

  it('detach and removeLocalhostRedirects never act on the host\'s own netns, nor on a namespace file of another kind (errors, not "gone")', async () => {
    const own = `/proc/${process.pid}/ns/net`;
    await assert.rejects(
      detachEndpoints(own, ['tap0_hull']),
      (e: Error) => e instanceof InvalidArgumentError && /host's own network namespace/.test(e.message),
    );
    await assert.rejects(
      removeLocalhostRedirects(own),
      (e: Error) => e instanceof InvalidArgumentError && /host's own network namespace/.test(e.message),
    );
    await assert.rejects(
      detachEndpoints(`/proc/${process.pid}/ns/ipc`, ['tap0_hull']),
      (e: Error) => e instanceof InvalidArgumentError && /not a network namespace/.test(e.message),
    );
  });

  it('detach after the netns is deleted does not throw', async () => {
    await attachEndpoints(podPath, endpoints);
    await ip(['netns', 'del', pod]);
    made.splice(made.indexOf(pod), 1);
    await detachEndpoints(podPath, ['tap0_hull']);
    await detachEndpoints('/var/run/netns/never-was', ['tap0_hull']);
  });
});
