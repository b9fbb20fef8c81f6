/**
 * Pod networking at the agent-client edge: hull's plain types for Kata's types.Interface, types.Route and
 * types.ARPNeighbor, and the conversions both ways. Requests are shaped here (families derived from the
 * addresses, the default route as Kata's empty dest); the agent checks every field again. Replies come from the
 * guest, which is not trusted: they are checked (sizes, families, numbers) before they become hull's types.
 */
import net from 'node:net';
import { InvalidArgumentError } from '../errors';
import { types } from '../protos/agent';

export type IpFamily = 4 | 6;
/** Netlink route scopes: universe (0, routes via a gateway), site (200), link (253), host (254). */
export type RouteScope = 'universe' | 'site' | 'link' | 'host';

export interface InterfaceAddress {
  address: string;
  prefixLength: number;
  /** Derived from the address when absent. */
  family?: IpFamily;
}

/** What UpdateInterface asks for: the guest NIC whose MAC is `mac` gets this name, MTU and these addresses. */
export interface NetworkInterface {
  /** The pod veth's MAC, which the VM's NIC has (either case). */
  mac: string;
  /** Its name in the guest afterwards (usually the veth's, eth0). */
  name: string;
  /** Replace the NIC's addresses with these. */
  addresses: InterfaceAddress[];
  /** 68-65535; absent = leave the NIC's MTU as it is. */
  mtu?: number;
  /** ARP off on the link (IFF_NOARP). */
  noArp?: boolean;
  /** The NIC's PCI path in the guest, if known (informational: the agent finds the NIC by MAC). */
  pciPath?: string;
  /** The host link's type (veth, ...); informational. */
  linkType?: string;
}

/** A link as the guest reports it (UpdateInterface's answer, ListInterfaces). */
export interface GuestInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: Required<InterfaceAddress>[];
  /** The kernel's link kind (tun, veth, ...), '' for a plain device. */
  linkType: string;
  /** IFF_* flags. */
  flags: number;
  up: boolean;
}

export interface RouteSpec {
  /** 'default', a CIDR ("10.0.0.0/24") or a bare address (a host route). */
  dest: string;
  gateway?: string;
  /** The guest interface's name. */
  device: string;
  /** Preferred source address. */
  source?: string;
  /** Default universe (what a route via a gateway needs); a route to a directly attached subnet is usually 'link'. */
  scope?: RouteScope;
  /** Derived from dest or gateway when absent (IPv4 for a bare default route). */
  family?: IpFamily;
  onlink?: boolean;
  mtu?: number;
}

/** A route as the guest reports it (ListRoutes, UpdateRoutes' answer). */
export interface GuestRoute {
  dest: string;
  gateway?: string;
  device: string;
  source?: string;
  /** A known scope by name, else the netlink number. */
  scope: RouteScope | number;
  family: IpFamily;
  onlink: boolean;
  mtu?: number;
}

export interface ArpNeighbor {
  address: string;
  mac: string;
  device: string;
  /** Default permanent. */
  state?: 'permanent' | 'noarp' | 'reachable' | 'stale';
  /** NTF_ROUTER. */
  router?: boolean;
}

const SCOPES: Record<RouteScope, number> = { universe: 0, site: 200, link: 253, host: 254 };
const NUD: Record<NonNullable<ArpNeighbor['state']>, number> = {
  permanent: 0x80,
  noarp: 0x40,
  reachable: 0x02,
  stale: 0x04,
};
const IFF_UP = 0x1;
const IFF_NOARP = 0x80;
const RTNH_F_ONLINK = 0x4;
const NTF_ROUTER = 0x80;
/** Caps on what a guest may answer with. */
const MAX_REPLY_ITEMS = 4096;
const MAX_REPLY_STRING = 256;

const toWireFamily = (f: IpFamily): types.IPFamily => (f === 4 ? types.IPFamily.v4 : types.IPFamily.v6);

function familyOf(address: string, what: string): IpFamily {
  const f = net.isIP(address);
  if (f !== 4 && f !== 6) throw new InvalidArgumentError(`${what} ${JSON.stringify(address)} is not an IP address`);
  return f;
}

export function toGrpcInterface(iface: NetworkInterface): types.IInterface {
  return {
    device: iface.name,
    name: iface.name,
    hwAddr: iface.mac,
    mtu: iface.mtu ?? 0,
    IPAddresses: iface.addresses.map((a) => ({
      family: toWireFamily(a.family ?? familyOf(a.address, 'interface address')),
      address: a.address,
      mask: String(a.prefixLength),
    })),
    devicePath: iface.pciPath ?? '',
    type: iface.linkType ?? '',
    rawFlags: iface.noArp ? IFF_NOARP : 0,
  };
}

export function toGrpcRoute(r: RouteSpec): types.IRoute {
  const dest = r.dest === 'default' ? '' : r.dest;
  const family =
    r.family ??
    (dest !== ''
      ? familyOf(dest.split('/')[0] ?? '', 'route dest')
      : r.gateway
        ? familyOf(r.gateway, 'route gateway')
        : 4);
  return {
    dest,
    gateway: r.gateway ?? '',
    device: r.device,
    source: r.source ?? '',
    scope: SCOPES[r.scope ?? 'universe'],
    family: toWireFamily(family),
    flags: r.onlink ? RTNH_F_ONLINK : 0,
    mtu: r.mtu ?? 0,
  };
}

export function toGrpcNeighbor(n: ArpNeighbor): types.IARPNeighbor {
  return {
    toIPAddress: { family: toWireFamily(familyOf(n.address, 'neighbor address')), address: n.address, mask: '' },
    device: n.device,
    lladdr: n.mac,
    state: NUD[n.state ?? 'permanent'],
    flags: n.router ? NTF_ROUTER : 0,
  };
}

// ---- replies from the guest -----------------------------------------------------------------------------------

/** Thrown for a reply that is not what the agent should say; the client classifies it (INTERNAL). */
export class BadReplyError extends Error {}

function text(value: unknown, what: string): string {
  const s = value ?? '';
  if (typeof s !== 'string' || s.length > MAX_REPLY_STRING)
    throw new BadReplyError(`${what} is not a string of at most ${MAX_REPLY_STRING} characters`);
  return s;
}

function count(value: unknown, what: string, max = 0xffffffff): number {
  const n = value ?? 0;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max)
    throw new BadReplyError(`${what} ${String(value)} is not an integer from 0 to ${max}`);
  return n;
}

function items<T>(value: readonly T[] | null | undefined, what: string): readonly T[] {
  const list = value ?? [];
  if (!Array.isArray(list) || list.length > MAX_REPLY_ITEMS)
    throw new BadReplyError(`${what} is not a list of at most ${MAX_REPLY_ITEMS}`);
  return list;
}

function fromWireFamily(value: unknown, what: string): IpFamily {
  const f = value ?? 0;
  if (f === types.IPFamily.v4) return 4;
  if (f === types.IPFamily.v6) return 6;
  throw new BadReplyError(`${what} ${String(value)} is not an IP family`);
}

export function fromGrpcInterface(i: types.IInterface | null | undefined): GuestInterface {
  if (!i) throw new BadReplyError('the interface is missing');
  const flags = count(i.rawFlags, 'interface raw_flags');
  return {
    name: text(i.name, 'interface name'),
    mac: text(i.hwAddr, 'interface hwAddr').toLowerCase(),
    mtu: count(i.mtu, 'interface mtu', 0x7fffffff),
    addresses: items(i.IPAddresses, 'interface addresses').map((a) => {
      const family = fromWireFamily(a.family, 'address family');
      const address = text(a.address, 'address');
      if (net.isIP(address) !== family)
        throw new BadReplyError(`address ${JSON.stringify(address)} is not an IPv${family} address`);
      const mask = text(a.mask, 'address mask');
      if (!/^\d{1,3}$/.test(mask) || Number(mask) > (family === 4 ? 32 : 128))
        throw new BadReplyError(`address mask ${JSON.stringify(mask)} is not a prefix length`);
      return { family, address, prefixLength: Number(mask) };
    }),
    linkType: text(i.type, 'interface type'),
    flags,
    up: (flags & IFF_UP) !== 0,
  };
}

export function fromGrpcInterfaces(list: readonly types.IInterface[] | null | undefined): GuestInterface[] {
  return items(list, 'interfaces').map(fromGrpcInterface);
}

export function fromGrpcRoutes(list: readonly types.IRoute[] | null | undefined): GuestRoute[] {
  return items(list, 'routes').map((r) => {
    const scopeNumber = count(r.scope, 'route scope', 255);
    const scope = (Object.keys(SCOPES) as RouteScope[]).find((k) => SCOPES[k] === scopeNumber) ?? scopeNumber;
    const route: GuestRoute = {
      dest: text(r.dest, 'route dest') || 'default',
      device: text(r.device, 'route device'),
      scope,
      family: fromWireFamily(r.family, 'route family'),
      onlink: (count(r.flags, 'route flags') & RTNH_F_ONLINK) !== 0,
    };
    const gateway = text(r.gateway, 'route gateway');
    const source = text(r.source, 'route source');
    const mtu = count(r.mtu, 'route mtu');
    if (gateway) route.gateway = gateway;
    if (source) route.source = source;
    if (mtu) route.mtu = mtu;
    return route;
  });
}
