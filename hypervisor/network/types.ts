/** What hull reads from a pod's network namespace and hands to the guest (Kata's endpoints, routes, neighbours). */

/** An address on a pod interface; link-local IPv6 addresses are never listed. */
export interface NetAddress {
  family: 4 | 6;
  address: string;
  prefixLength: number;
}

/** A pod interface CNI made (a veth, usually `eth0`) and the tap hull connects it to. */
export interface NetEndpoint {
  /** The interface's name in the netns; the guest NIC gets the same name. */
  name: string;
  /** Its MAC (lower case); the guest NIC carries it. */
  mac: string;
  mtu: number;
  addresses: NetAddress[];
  /** The tap hull creates beside it (`tap<i>_hull`); QEMU opens it with `-netdev tap,ifname=<tap>`. */
  tap: string;
}

/** A route of the main table on one of the endpoints. */
export interface NetRoute {
  /** `'default'` or a CIDR (a host route always has its `/32` or `/128`). */
  dest: string;
  gateway?: string;
  /** The endpoint's name. */
  device: string;
  /** The preferred source address. */
  source?: string;
  /** The netlink scope: 0 universe, 200 site, 253 link, 254 host. */
  scope: number;
  family: 4 | 6;
}

/** A permanent neighbour (static ARP/NDP entry) on one of the endpoints. */
export interface NetNeighbor {
  address: string;
  family: 4 | 6;
  lladdr: string;
  device: string;
  /** The NUD state as the kernel numbers it (NUD_PERMANENT = 0x80). */
  state: number;
}

export interface NetnsScan {
  endpoints: NetEndpoint[];
  routes: NetRoute[];
  neighbors: NetNeighbor[];
}

/** NUD_PERMANENT from linux/neighbour.h. */
export const NUD_PERMANENT = 0x80;
