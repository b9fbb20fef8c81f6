/**
 * A pod's network, Kata's "tcfilter" model: containerd's CRI plugin made the pod's network namespace and CNI put a
 * veth (eth0, the pod IP) in it. The sandbox reads that namespace, puts a tap beside each veth with tc redirection
 * both ways (hypervisor/network), starts QEMU inside the namespace with a NIC per tap carrying the veth's MAC, and
 * sends the guest the interfaces, routes and permanent neighbours the namespace has. Nothing CNI made is changed, so
 * CNI's teardown and the host's view of the pod IP (hostPort mappings, traffic to the pod IP) work as with runc.
 * Kubernetes port forwarding (containerd dials localhost in the namespace) is relayed into the guest: a listener of
 * ours catches those connections (hypervisor/network's LocalhostRedirect) and core/port-forward.ts relays them.
 */
import type {
  ArpNeighbor,
  NetworkAgentClient,
  OciSpec,
  PortForwardAgentClient,
  RouteScope,
  RouteSpec,
} from '../agent-client';
import {
  attachEndpoints,
  detachEndpoints,
  LocalhostRedirect,
  scanNetns,
  type NetnsScan,
  type NetRoute,
} from '../hypervisor/network';
import type { VmNetwork } from '../hypervisor/types';
import type { Logger } from '../log';
import { PortForwardRelays } from './port-forward';

/** The pod's network namespace: a network namespace the sandbox container's spec names by path. */
export function podNetnsPath(spec: OciSpec): string | undefined {
  const ns = spec.linux?.namespaces?.find((n) => n.type === 'network');
  return ns?.path ? ns.path : undefined;
}

const SCOPES: Record<number, RouteScope> = { 0: 'universe', 200: 'site', 253: 'link', 254: 'host' };

function routeSpec(r: NetRoute): RouteSpec {
  const out: RouteSpec = { dest: r.dest, device: r.device, family: r.family, scope: SCOPES[r.scope] ?? 'universe' };
  if (r.gateway) out.gateway = r.gateway;
  if (r.source) out.source = r.source;
  return out;
}

/** What the sandbox uses of a pod's network (a fake in core's unit tests). */
export interface PodNetworkLink {
  readonly taps: string[];
  vmNetwork(): VmNetwork | undefined;
  describe(): object;
  configureGuest(agent: NetworkAgentClient): Promise<void>;
  /** Relays connections to localhost in the namespace (Kubernetes port forwarding) to the guest's loopback. */
  forwardLocalhost(agent: PortForwardAgentClient, logger: Logger): Promise<void>;
  disconnect(): Promise<void>;
}

export type ConnectPodNetwork = (
  netnsPath: string,
  record: (netnsPath: string, taps: string[]) => void,
) => Promise<PodNetworkLink>;

export class PodNetwork implements PodNetworkLink {
  private redirect: LocalhostRedirect | undefined;
  private relays: PortForwardRelays | undefined;

  private constructor(
    readonly netnsPath: string,
    private readonly scan: NetnsScan,
  ) {}

  /**
   * Reads the namespace and connects each of its interfaces to a tap. `record(taps)` runs before anything is made,
   * so that a crash from there on leaves what crash recovery needs to remove them.
   */
  static async connect(netnsPath: string, record: (netnsPath: string, taps: string[]) => void): Promise<PodNetwork> {
    const scan = await scanNetns(netnsPath); // checks the path first: an nsfs file that is a network namespace
    record(
      netnsPath,
      scan.endpoints.map((e) => e.tap),
    );
    await attachEndpoints(netnsPath, scan.endpoints);
    return new PodNetwork(netnsPath, scan);
  }

  get taps(): string[] {
    return this.scan.endpoints.map((e) => e.tap);
  }

  /** What QEMU needs: the namespace and a NIC per tap (none when the namespace has no interface but lo). */
  vmNetwork(): VmNetwork | undefined {
    if (this.scan.endpoints.length === 0) return undefined;
    return {
      netnsPath: this.netnsPath,
      nics: this.scan.endpoints.map((e) => ({ tap: e.tap, mac: e.mac, mtu: e.mtu })),
    };
  }

  /** For the log: what the pod's network is. */
  describe(): { netns: string; interfaces: string[]; routes: number; neighbors: number } {
    return {
      netns: this.netnsPath,
      interfaces: this.scan.endpoints.map(
        (e) => `${e.name} ${e.mac} ${e.addresses.map((a) => `${a.address}/${a.prefixLength}`).join(',')} → ${e.tap}`,
      ),
      routes: this.scan.routes.length,
      neighbors: this.scan.neighbors.length,
    };
  }

  /** The guest gets each interface (found by MAC), then the routes, then the permanent neighbours. */
  async configureGuest(agent: NetworkAgentClient): Promise<void> {
    for (const e of this.scan.endpoints) {
      await agent.updateInterface({
        mac: e.mac,
        name: e.name,
        mtu: e.mtu,
        addresses: e.addresses.map((a) => ({ address: a.address, prefixLength: a.prefixLength, family: a.family })),
      });
    }
    if (this.scan.routes.length) await agent.updateRoutes(this.scan.routes.map(routeSpec));
    const neighbors: ArpNeighbor[] = this.scan.neighbors.map((n) => ({
      address: n.address,
      mac: n.lladdr,
      device: n.device,
      state: 'permanent',
    }));
    if (neighbors.length) await agent.addArpNeighbors(neighbors);
  }

  async forwardLocalhost(agent: PortForwardAgentClient, logger: Logger): Promise<void> {
    if (this.redirect) return;
    const relays = new PortForwardRelays(agent, logger);
    this.redirect = await LocalhostRedirect.start(this.netnsPath, (socket, port) => relays.relay(socket, port));
    this.relays = relays;
  }

  /**
   * Stops port forwarding (its listener, rule and connections), then removes the taps and their redirection (after
   * QEMU is gone); a namespace already deleted is fine.
   */
  async disconnect(): Promise<void> {
    const redirect = this.redirect;
    this.redirect = undefined;
    this.relays?.closeAll();
    this.relays = undefined;
    const errors: unknown[] = [];
    await redirect?.stop().catch((err: unknown) => errors.push(err));
    await detachEndpoints(this.netnsPath, this.taps).catch((err: unknown) => errors.push(err));
    if (errors.length) throw errors[0];
  }
}
