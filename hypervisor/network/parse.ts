/**
 * Pure parsers from `ip -j` output to a NetnsScan. The JSON comes from a namespace the pod can change, so every
 * field is type-checked, and every name, MAC and address that leaves here has passed the checks in validate.ts.
 * A malformed document is an InternalError (iproute2 changed under us); a value we refuse on one of the pod's
 * interfaces is an InvalidArgumentError naming the netns and the device.
 */
import { InternalError, InvalidArgumentError } from '../../errors';
import {
  NUD_PERMANENT,
  type NetAddress,
  type NetEndpoint,
  type NetNeighbor,
  type NetRoute,
  type NetnsScan,
} from './types';
import {
  TAP_PATTERN,
  checkIfName,
  ipFamily,
  isLinkLocalV6,
  isMulticastMac,
  isMulticastV6,
  isValidMtu,
  isValidPrefix,
  isZeroMac,
  normalizeMac,
} from './validate';

/** One interface as `ip -j -d addr show` describes it (only the fields we use). */
export interface LinkInfo {
  index: number;
  name: string;
  flags: string[];
  mtu: unknown;
  linkType: string | undefined;
  address: unknown;
  /** linkinfo.info_kind: veth, tun, … */
  kind: string | undefined;
  /** For a tun device: its linkinfo.info_data. */
  tun?: { type: unknown; multiQueue: unknown };
  addrInfo: unknown[];
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function arrayOf(data: unknown, netnsPath: string, what: string): Json[] {
  if (!Array.isArray(data) || !data.every(isObject))
    throw new InternalError(`netns ${netnsPath}: ${what}: not a JSON array of objects`);
  return data;
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Parses `ip -j -d addr show` (or `ip -j -d link show`, without addresses). */
export function parseLinks(data: unknown, netnsPath: string): LinkInfo[] {
  return arrayOf(data, netnsPath, 'ip -j -d addr show').map((e) => {
    if (typeof e.ifname !== 'string' || !Number.isInteger(e.ifindex)) {
      throw new InternalError(`netns ${netnsPath}: ip -j -d addr show: an entry without ifname or ifindex`);
    }
    const linkinfo = isObject(e.linkinfo) ? e.linkinfo : undefined;
    const kind = optString(linkinfo?.info_kind);
    const infoData = isObject(linkinfo?.info_data) ? linkinfo.info_data : undefined;
    const link: LinkInfo = {
      index: e.ifindex as number,
      name: e.ifname,
      flags: Array.isArray(e.flags) ? e.flags.filter((f): f is string => typeof f === 'string') : [],
      mtu: e.mtu,
      linkType: optString(e.link_type),
      address: e.address,
      kind,
      addrInfo: Array.isArray(e.addr_info) ? (e.addr_info as unknown[]) : [],
    };
    if (kind === 'tun') link.tun = { type: infoData?.type, multiQueue: infoData?.multi_queue };
    return link;
  });
}

/**
 * Whether hull connects this interface to the VM: Ethernet-like (`link_type` ether), not loopback, with a non-zero
 * MAC, and not one of our own taps.
 */
export function isEndpointCandidate(link: LinkInfo): boolean {
  if (link.flags.includes('LOOPBACK') || link.linkType !== 'ether') return false;
  if (TAP_PATTERN.test(link.name)) return false;
  if (link.address === undefined || link.address === null) return false;
  const mac = normalizeMac(link.address);
  return mac === undefined || !isZeroMac(mac); // a MAC we cannot read is refused later, loudly
}

function parseAddresses(link: LinkInfo, device: string, netnsPath: string): NetAddress[] {
  const out: NetAddress[] = [];
  for (const a of link.addrInfo) {
    if (!isObject(a)) throw new InternalError(`netns ${netnsPath}: device ${device}: addr_info entry is not an object`);
    const family = a.family === 'inet' ? 4 : a.family === 'inet6' ? 6 : undefined;
    if (family === undefined) continue;
    const address = a.local;
    if (ipFamily(address) !== family || !isValidPrefix(family, a.prefixlen)) {
      throw new InvalidArgumentError(
        `netns ${netnsPath}: device ${device}: unusable address ${JSON.stringify(address)}/${JSON.stringify(a.prefixlen)}`,
      );
    }
    if (a.scope === 'host') continue;
    if (family === 6 && (a.scope === 'link' || isLinkLocalV6(address as string))) continue;
    out.push({ family, address: address as string, prefixLength: a.prefixlen });
  }
  return out;
}

/** The endpoints of a netns, in ifindex order, each given `tap<i>_hull`. */
export function endpointsFromLinks(links: LinkInfo[], netnsPath: string): NetEndpoint[] {
  const candidates = links.filter(isEndpointCandidate).sort((a, b) => a.index - b.index);
  return candidates.map((link, i) => {
    const name = checkIfName(link.name, `netns ${netnsPath}`);
    const mac = normalizeMac(link.address);
    if (mac === undefined || isMulticastMac(mac)) {
      throw new InvalidArgumentError(
        `netns ${netnsPath}: device ${name}: unusable MAC ${JSON.stringify(link.address)}`,
      );
    }
    if (!isValidMtu(link.mtu))
      throw new InvalidArgumentError(`netns ${netnsPath}: device ${name}: unusable MTU ${JSON.stringify(link.mtu)}`);
    return { name, mac, mtu: link.mtu, addresses: parseAddresses(link, name, netnsPath), tap: `tap${i}_hull` };
  });
}

const SCOPES: Record<string, number> = { global: 0, universe: 0, site: 200, link: 253, host: 254, nowhere: 255 };

function parseScope(v: unknown): number | undefined {
  if (v === undefined) return 0;
  if (typeof v === 'string') return SCOPES[v];
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 255 ? (v as number) : undefined;
}

/** `dst` as ip prints it ('default', 'a.b.c.d', 'a.b.c.d/n') to 'default' or a CIDR; undefined when unusable. */
function parseDest(dst: unknown, family: 4 | 6): string | undefined {
  if (dst === 'default') return 'default';
  if (typeof dst !== 'string') return undefined;
  const [addr, prefix, extra] = dst.split('/');
  if (extra !== undefined || ipFamily(addr) !== family) return undefined;
  if (prefix === undefined) return `${addr}/${family === 4 ? 32 : 128}`;
  if (!/^[0-9]{1,3}$/.test(prefix) || !isValidPrefix(family, Number(prefix))) return undefined;
  return Number(prefix) === 0 ? 'default' : `${addr}/${Number(prefix)}`;
}

/**
 * Parses `ip -j -<family> route show table main`: unicast routes on one of `devices`. Left out: routes on other
 * devices (lo, tunnels), non-unicast ones (blackhole, unreachable, …), multipath routes (no single device), and for
 * IPv6 destinations in fe80::/10 (the kernel's per-link routes) or ff00::/8.
 */
export function parseRoutes(data: unknown, family: 4 | 6, devices: ReadonlySet<string>, netnsPath: string): NetRoute[] {
  const out: NetRoute[] = [];
  for (const r of arrayOf(data, netnsPath, `ip -j -${family} route show table main`)) {
    if (typeof r.dev !== 'string' || !devices.has(r.dev)) continue;
    if (r.type !== undefined && r.type !== 'unicast') continue;
    if (family === 6 && typeof r.dst === 'string' && (isLinkLocalV6(r.dst) || isMulticastV6(r.dst))) continue;
    const where = `netns ${netnsPath}: device ${r.dev}: route ${JSON.stringify(r.dst)}`;
    const dest = parseDest(r.dst, family);
    if (dest === undefined) throw new InvalidArgumentError(`${where}: unusable destination`);
    const scope = parseScope(r.scope);
    if (scope === undefined) throw new InvalidArgumentError(`${where}: unknown scope ${JSON.stringify(r.scope)}`);
    const route: NetRoute = { dest, device: r.dev, scope, family };
    if (r.gateway !== undefined) {
      if (ipFamily(r.gateway) !== family)
        throw new InvalidArgumentError(`${where}: unusable gateway ${JSON.stringify(r.gateway)}`);
      route.gateway = r.gateway as string;
    } else if (r.via !== undefined) {
      continue; // a gateway of the other family (RFC 5549): the guest gets no such route
    }
    if (r.prefsrc !== undefined) {
      if (ipFamily(r.prefsrc) !== family)
        throw new InvalidArgumentError(`${where}: unusable source ${JSON.stringify(r.prefsrc)}`);
      route.source = r.prefsrc as string;
    }
    out.push(route);
  }
  return out;
}

/** Parses `ip -j neigh show nud permanent`: the permanent entries on one of `devices`. */
export function parseNeighbors(data: unknown, devices: ReadonlySet<string>, netnsPath: string): NetNeighbor[] {
  const out: NetNeighbor[] = [];
  for (const n of arrayOf(data, netnsPath, 'ip -j neigh show')) {
    if (typeof n.dev !== 'string' || !devices.has(n.dev)) continue;
    if (!Array.isArray(n.state) || !n.state.includes('PERMANENT')) continue;
    const where = `netns ${netnsPath}: device ${n.dev}: neighbour ${JSON.stringify(n.dst)}`;
    const family = ipFamily(n.dst);
    if (family === undefined) throw new InvalidArgumentError(`${where}: unusable address`);
    if (n.lladdr === undefined) continue; // a permanent entry without a link-layer address: nothing to copy
    const lladdr = normalizeMac(n.lladdr);
    if (lladdr === undefined) throw new InvalidArgumentError(`${where}: unusable lladdr ${JSON.stringify(n.lladdr)}`);
    out.push({ address: n.dst as string, family, lladdr, device: n.dev, state: NUD_PERMANENT });
  }
  return out;
}

/** The whole scan from the four documents scanNetns reads. */
export function buildScan(
  docs: { addr: unknown; route4: unknown; route6: unknown; neigh: unknown },
  netnsPath: string,
): NetnsScan {
  const endpoints = endpointsFromLinks(parseLinks(docs.addr, netnsPath), netnsPath);
  const devices = new Set(endpoints.map((e) => e.name));
  const routes = [
    ...parseRoutes(docs.route4, 4, devices, netnsPath),
    ...parseRoutes(docs.route6, 6, devices, netnsPath),
  ];
  return { endpoints, routes, neighbors: parseNeighbors(docs.neigh, devices, netnsPath) };
}
