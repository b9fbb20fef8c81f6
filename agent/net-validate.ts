/**
 * Checks on the network requests the host sends (Kata's types.Interface, types.Route, types.ARPNeighbor). Every
 * field is checked before anything in the guest changes, and each request becomes a plain checked shape that the
 * ip argv builders (net-ip.ts) take: a bad value is INVALID_ARGUMENT naming the field, never an `ip` argument.
 * Every string that reaches ip's argv is an interface name, an address or a MAC in the forms below, none of which
 * can start with '-'.
 *
 * Wire facts, as upstream's agent and runtime use them: IPAddress.mask is the prefix length in decimal ("24");
 * IPFamily is v4 = 0, v6 = 1; Route.dest is a CIDR ("10.0.0.0/24"), a bare address (a host route), or empty for
 * the default route; Route.source is the preferred source address (bare); Route.scope is the netlink scope
 * (0 universe, 200 site, 253 link, 254 host); Route.flags are RTNH_F_* bits, of which only onlink (4) is a request;
 * ARPNeighbor.state is a NUD_* value (0 means permanent); Interface.raw_flags are IFF_* bits, of which only NOARP
 * (0x80) is applied.
 */
import net from 'node:net';
import type { types } from '../protos/agent';
import { invalid } from './validate';

export type Family = 4 | 6;

export interface CheckedAddress {
  family: Family;
  address: string;
  prefix: number;
}

export interface CheckedInterface {
  /** The guest link to configure is the one with this MAC (lower-cased). */
  mac: string;
  /** Its name afterwards. */
  name: string;
  /** 0: leave the MTU as it is. */
  mtu: number;
  addresses: CheckedAddress[];
  noArp: boolean;
}

export interface CheckedRoute {
  family: Family;
  /** 'default', or a CIDR with no host bits set. */
  dest: string;
  gateway?: string;
  device: string;
  source?: string;
  scope: RouteScope;
  /** 0: none. */
  mtu: number;
  onlink: boolean;
}

export interface CheckedNeighbor {
  family: Family;
  address: string;
  mac: string;
  device: string;
  /** ip's name for the NUD state. */
  state: NudState;
  router: boolean;
}

export const MAX_ADDRESSES = 64;
export const MAX_ROUTES = 512;
export const MAX_NEIGHBORS = 512;
export const MIN_MTU = 68;
export const MAX_MTU = 65535;
const MAX_IFNAME_BYTES = 15;

/** Netlink route scopes the host may ask for, by number, with ip's names. */
export const ROUTE_SCOPES = { 0: 'global', 200: 'site', 253: 'link', 254: 'host' } as const;
export type RouteScope = keyof typeof ROUTE_SCOPES;

/** RTNH_F_* bits: onlink is the one a route can ask for; the others are states the kernel reports (ignored). */
export const RTNH_F_ONLINK = 0x4;
const RTNH_F_KNOWN = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80;

/** NUD_* states a neighbour may be given, with ip's names (0 is taken as permanent, as upstream does). */
export const NUD_STATES = { 0x80: 'permanent', 0x40: 'noarp', 0x02: 'reachable', 0x04: 'stale' } as const;
export type NudState = (typeof NUD_STATES)[keyof typeof NUD_STATES];
export const NUD_PERMANENT = 0x80;
/** NTF_ROUTER: the one neighbour flag accepted. */
export const NTF_ROUTER = 0x80;

export const IFF_NOARP = 0x80;

const familyOf = (value: unknown, what: string): Family => {
  const n = value ?? 0;
  if (n === 0) return 4;
  if (n === 1) return 6;
  throw invalid(`${what} ${String(value)} is not an IP family (0 = v4, 1 = v6)`);
};

const familyName = (f: Family): string => (f === 4 ? 'IPv4' : 'IPv6');

/** A Linux interface name, narrowed to [A-Za-z0-9_.-] (1-15 bytes, not starting with '-' or '.'). */
export function ifName(value: unknown, what: string): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(value) || value.length > MAX_IFNAME_BYTES) {
    throw invalid(
      `${what} ${JSON.stringify(value)} is not an interface name (1-${MAX_IFNAME_BYTES} of [A-Za-z0-9_.-], not starting with '-' or '.')`,
    );
  }
  return value;
}

/** Six octets "aa:bb:cc:dd:ee:ff" in either case; returned lower-cased. */
export function macAddress(value: unknown, what: string): string {
  if (typeof value !== 'string' || !/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/.test(value)) {
    throw invalid(`${what} ${JSON.stringify(value)} is not a MAC address of six octets (aa:bb:cc:dd:ee:ff)`);
  }
  return value.toLowerCase();
}

/** An IPv4 or IPv6 address as node's net.isIP takes it, without a zone (%eth0); its family checked if given. */
export function ipAddress(value: unknown, what: string, family?: Family): { family: Family; address: string } {
  const kind = typeof value === 'string' && !value.includes('%') && value.length <= 64 ? net.isIP(value) : 0;
  if (kind !== 4 && kind !== 6) throw invalid(`${what} ${JSON.stringify(value)} is not an IP address`);
  if (family !== undefined && kind !== family)
    throw invalid(`${what} ${String(value)} is not an ${familyName(family)} address`);
  return { family: kind, address: value as string };
}

/** A prefix length in decimal, 0-32 for IPv4 and 0-128 for IPv6. */
export function prefixLength(value: unknown, family: Family, what: string): number {
  const max = family === 4 ? 32 : 128;
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !/^\d{1,3}$/.test(text) || Number(text) > max)
    throw invalid(`${what} ${JSON.stringify(value)} is not a prefix length from 0 to ${max}`);
  return Number(text);
}

/** An MTU from 68 to 65535, or 0 (proto3's unset: leave it). */
export function mtu(value: unknown, what: string): number {
  const n = value ?? 0;
  if (n === 0) return 0;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < MIN_MTU || n > MAX_MTU)
    throw invalid(`${what} ${String(value)} is not an MTU from ${MIN_MTU} to ${MAX_MTU} (or 0 for unset)`);
  return n;
}

function uint32(value: unknown, what: string): number {
  const n = value ?? 0;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0xffffffff)
    throw invalid(`${what} ${String(value)} is not a 32-bit unsigned integer`);
  return n;
}

function list<T>(value: readonly T[] | null | undefined, max: number, what: string): readonly T[] {
  const items = value ?? [];
  if (!Array.isArray(items)) throw invalid(`${what} is not a list`);
  if (items.length > max) throw invalid(`${what} has ${items.length} entries; at most ${max}`);
  return items;
}

/** The address as a number (IPv4: 32 bits, IPv6: 128 bits), for the host-bits check. */
export function addressBits(address: string, family: Family): bigint {
  if (family === 4) return address.split('.').reduce((n, octet) => (n << 8n) | BigInt(Number(octet)), 0n);
  let text = address;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = addressBits(v4[1], 4);
    text = `${text.slice(0, -v4[1].length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? headGroups
      : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** A CIDR "address/len" (or a bare address: a host route), with no bits set past the prefix. */
export function cidr(value: string, family: Family, what: string): string {
  const slash = value.indexOf('/');
  const { address } = ipAddress(slash < 0 ? value : value.slice(0, slash), what, family);
  const bits = family === 4 ? 32 : 128;
  const prefix = slash < 0 ? bits : prefixLength(value.slice(slash + 1), family, `${what} prefix`);
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((addressBits(address, family) & hostMask) !== 0n)
    throw invalid(`${what} ${value} has host bits set past its /${prefix} prefix`);
  return `${address}/${prefix}`;
}

export function checkInterface(iface: types.IInterface | null | undefined): CheckedInterface {
  if (!iface) throw invalid('interface is missing');
  const mac = macAddress(iface.hwAddr, 'interface hwAddr');
  // A NIC has a unicast MAC; the loopback's is all zeros, and it is not the host's to configure.
  if (mac === '00:00:00:00:00:00' || (parseInt(mac.slice(0, 2), 16) & 1) !== 0)
    throw invalid(`interface hwAddr ${mac} is not a unicast MAC`);
  const name = ifName(iface.name, 'interface name');
  if (name === 'lo') throw invalid("interface name lo is the loopback's");
  if (iface.device) ifName(iface.device, 'interface device');
  if (iface.devicePath && !/^[0-9a-fA-F]{2}(\/[0-9a-fA-F]{2}){0,31}$/.test(iface.devicePath))
    throw invalid(`interface devicePath ${JSON.stringify(iface.devicePath)} is not a PCI path (xx/yy/...)`);
  if (iface.type && !/^[A-Za-z0-9_-]{1,32}$/.test(iface.type))
    throw invalid(`interface type ${JSON.stringify(iface.type)} is not a link type`);
  const rawFlags = uint32(iface.rawFlags, 'interface raw_flags');
  const seen = new Set<string>();
  const addresses = list(iface.IPAddresses, MAX_ADDRESSES, 'interface IPAddresses').map((a, i): CheckedAddress => {
    const what = `interface IPAddresses[${i}]`;
    const family = familyOf(a.family, `${what} family`);
    const { address } = ipAddress(a.address, `${what} address`, family);
    const prefix = prefixLength(a.mask, family, `${what} mask`);
    if (seen.has(address)) throw invalid(`${what} ${address} is listed twice`);
    seen.add(address);
    return { family, address, prefix };
  });
  return { mac, name, mtu: mtu(iface.mtu, 'interface mtu'), addresses, noArp: (rawFlags & IFF_NOARP) !== 0 };
}

export function checkRoute(route: types.IRoute, i: number): CheckedRoute {
  const what = `routes[${i}]`;
  const family = familyOf(route.family, `${what} family`);
  const rawDest = route.dest ?? '';
  const dest = rawDest === '' || rawDest === 'default' ? 'default' : cidr(rawDest, family, `${what} dest`);
  const scope = uint32(route.scope, `${what} scope`);
  if (!(scope in ROUTE_SCOPES))
    throw invalid(`${what} scope ${scope} is not one of 0 (universe), 200 (site), 253 (link), 254 (host)`);
  const flags = uint32(route.flags, `${what} flags`);
  if ((flags & ~RTNH_F_KNOWN) !== 0)
    throw invalid(`${what} flags 0x${flags.toString(16)} has bits that are not RTNH_F_* flags`);
  const checked: CheckedRoute = {
    family,
    dest: dest === `${family === 4 ? '0.0.0.0' : '::'}/0` ? 'default' : dest,
    device: ifName(route.device, `${what} device`),
    scope: scope as RouteScope,
    mtu: mtu(route.mtu, `${what} mtu`),
    onlink: (flags & RTNH_F_ONLINK) !== 0,
  };
  if (route.gateway) checked.gateway = ipAddress(route.gateway, `${what} gateway`, family).address;
  if (route.source) checked.source = ipAddress(route.source, `${what} source`, family).address;
  if (checked.gateway !== undefined && checked.scope !== 0)
    throw invalid(`${what}: a route via a gateway must have scope 0 (universe), not ${checked.scope}`);
  return checked;
}

export function checkRoutes(routes: readonly types.IRoute[] | null | undefined): CheckedRoute[] {
  return list(routes, MAX_ROUTES, 'routes').map(checkRoute);
}

export function checkNeighbor(n: types.IARPNeighbor, i: number): CheckedNeighbor {
  const what = `neighbors[${i}]`;
  if (!n.toIPAddress) throw invalid(`${what} toIPAddress is missing`);
  const declared =
    n.toIPAddress.family === undefined || n.toIPAddress.family === null
      ? undefined
      : familyOf(n.toIPAddress.family, `${what} toIPAddress family`);
  const { family, address } = ipAddress(n.toIPAddress.address, `${what} toIPAddress`, declared);
  const stateValue = n.state ?? 0;
  const state = stateValue === 0 ? 'permanent' : NUD_STATES[stateValue as keyof typeof NUD_STATES];
  if (state === undefined)
    throw invalid(
      `${what} state ${stateValue} is not one of 0 or 0x80 (permanent), 0x40 (noarp), 0x02 (reachable), 0x04 (stale)`,
    );
  const flags = n.flags ?? 0;
  if (flags !== 0 && flags !== NTF_ROUTER) throw invalid(`${what} flags ${flags} is not 0 or 0x80 (router)`);
  return {
    family,
    address,
    mac: macAddress(n.lladdr, `${what} lladdr`),
    device: ifName(n.device, `${what} device`),
    state,
    router: flags === NTF_ROUTER,
  };
}

export function checkNeighbors(neighbors: readonly types.IARPNeighbor[] | null | undefined): CheckedNeighbor[] {
  return list(neighbors, MAX_NEIGHBORS, 'neighbors').map(checkNeighbor);
}
