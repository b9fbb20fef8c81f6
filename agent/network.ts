/**
 * The guest side of pod networking (Kata's UpdateInterface, UpdateRoutes, AddARPNeighbors, ListInterfaces,
 * ListRoutes), done with iproute2's ip. The host's shim reads the pod's network namespace (made by CNI) and sends
 * the veth's name, MAC, addresses and MTU, its routes and its neighbours; the guest NIC (virtio-net on the tap that
 * mirrors the veth) has the veth's MAC, which is how it is found. Requests are checked whole before anything
 * changes (net-validate.ts) and run one at a time.
 */
import { Code, StatusError } from 'ttrpc-ts';
import type { grpc, types } from '../protos/agent';
import { log } from './log';
import {
  addrAdd,
  addrFlush,
  addrShow,
  execIp,
  linkDown,
  linkRename,
  linkSettings,
  linkUp,
  neighReplace,
  parseLinks,
  parseRoutes,
  removableRoutes,
  routeDelete,
  routeOrder,
  routeReplace,
  routeShow,
  runBatch,
  toInterface,
  toRoute,
  type IpLink,
  type IpRunner,
} from './net-ip';
import { checkInterface, checkNeighbors, checkRoutes, type Family } from './net-validate';

/** How long UpdateInterface waits for a NIC with the requested MAC (a clone's hot-plugged NIC) to appear. */
export const NIC_WAIT_MS = 10_000;

export class GuestNetwork {
  #tail: Promise<unknown> = Promise.resolve();

  /**
   * @param ip runs iproute2's ip (tests pass a recorder)
   * @param ready resolves when the NIC driver is loaded and lo is up (init.ts networkReady)
   * @param nicWait how long UpdateInterface waits for a NIC with the MAC to appear, and how often it looks
   */
  constructor(
    private readonly ip: IpRunner = execIp(),
    private readonly ready: () => Promise<void> = () => Promise.resolve(),
    private readonly nicWait: { timeoutMs: number; pollMs: number } = { timeoutMs: NIC_WAIT_MS, pollMs: 20 },
  ) {}

  /**
   * Finds the link whose MAC is `hwAddr` (waiting up to `nicWait.timeoutMs` for it: in a VM cloned from a
   * template the host hot-plugs the NIC just before, and the guest's PCIe hot-plug and virtio_net bring it up
   * asynchronously), names it `name` (swapping names with another link that has it), sets its MTU and ARP flag,
   * replaces its addresses with the given ones and brings it up. Returns the link as it is now.
   */
  async updateInterface(req: grpc.IUpdateInterfaceRequest): Promise<types.IInterface> {
    const want = checkInterface(req.interface);
    return this.serial(async () => {
      let links = await this.links();
      const until = Date.now() + this.nicWait.timeoutMs;
      while (!links.some((l) => l.address === want.mac) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, this.nicWait.pollMs));
        links = await this.links();
      }
      const link = links.find((l) => l.address === want.mac);
      if (!link) {
        const seen =
          links
            .filter((l) => l.ifname !== 'lo')
            .map((l) => `${l.ifname} ${l.address}`)
            .join(', ') || 'none';
        throw new StatusError(Code.NOT_FOUND, `no guest interface has MAC ${want.mac} (interfaces: ${seen})`);
      }
      // One ip process for all the changes, in this order, stopping at the first that fails (ip -batch).
      await runBatch(this.ip, [
        linkDown(link.ifname),
        ...(link.ifname !== want.name ? this.rename(link, want.name, links) : []),
        linkSettings(want.name, want.mtu, want.noArp),
        addrFlush(want.name),
        ...want.addresses.map((a) => addrAdd(want.name, a)),
        linkUp(want.name),
      ]);
      const holder = link.ifname !== want.name ? links.find((l) => l.ifname === want.name) : undefined;
      if (holder) log.info('interface names swapped', { [want.name]: link.address, [link.ifname]: holder.address });
      const now = (await this.links()).find((l) => l.address === want.mac);
      if (!now)
        throw new StatusError(
          Code.INTERNAL,
          `interface ${want.name} (${want.mac}) disappeared while it was configured`,
        );
      log.info('interface updated', {
        name: want.name,
        mac: want.mac,
        mtu: now.mtu,
        addresses: want.addresses.map((a) => `${a.address}/${a.prefix}`),
      });
      return toInterface(now);
    });
  }

  /**
   * Replaces the guest's routes in the main table (except those on lo and those the kernel made for an address)
   * with the given ones, link-scope routes first, and returns the routes as they are now.
   */
  async updateRoutes(req: grpc.IUpdateRoutesRequest): Promise<grpc.IRoutes> {
    const routes = checkRoutes(req.routes?.Routes);
    return this.serial(async () => {
      await this.requireDevices(
        routes.map((r) => r.device),
        'route',
      );
      for (const family of [4, 6] as const) {
        const current = removableRoutes(parseRoutes(await this.ip(routeShow(family))));
        // Routes via a gateway first, then the routes they may depend on.
        await this.deleteRoutes([
          ...current.filter((c) => c.gateway !== undefined).map((r) => routeDelete(family, r)),
          ...current.filter((c) => c.gateway === undefined).map((r) => routeDelete(family, r)),
        ]);
      }
      await runBatch(this.ip, routeOrder(routes).map(routeReplace));
      log.info('routes updated', { count: routes.length });
      return { Routes: await this.routes() };
    });
  }

  /** Adds (or replaces) each neighbour, permanent unless another state is given. */
  async addArpNeighbors(req: grpc.IAddARPNeighborsRequest): Promise<void> {
    const neighbors = checkNeighbors(req.neighbors?.ARPNeighbors);
    await this.serial(async () => {
      await this.requireDevices(
        neighbors.map((n) => n.device),
        'neighbor',
      );
      await runBatch(this.ip, neighbors.map(neighReplace));
      log.info('neighbors added', { count: neighbors.length });
    });
  }

  async listInterfaces(): Promise<grpc.IInterfaces> {
    return this.serial(async () => ({ Interfaces: (await this.links()).map(toInterface) }));
  }

  async listRoutes(): Promise<grpc.IRoutes> {
    return this.serial(async () => ({ Routes: await this.routes() }));
  }

  // ---- internals --------------------------------------------------------------------------------------------

  /** One operation at a time (each is several ip commands that must not interleave), after `ready`. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(async () => {
      await this.ready();
      return fn();
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  private async links(): Promise<IpLink[]> {
    return parseLinks(await this.ip(addrShow()));
  }

  private async routes(): Promise<types.IRoute[]> {
    const out: types.IRoute[] = [];
    for (const family of [4, 6] as Family[])
      out.push(...parseRoutes(await this.ip(routeShow(family))).map((r) => toRoute(family, r)));
    return out;
  }

  private async requireDevices(names: readonly string[], what: string): Promise<void> {
    const present = new Set((await this.links()).map((l) => l.ifname));
    const missing = [...new Set(names)].filter((n) => !present.has(n));
    if (missing.length)
      throw new StatusError(Code.NOT_FOUND, `${what} device ${missing.join(', ')} does not exist in the guest`);
  }

  /**
   * Deletes routes in order, in one ip batch, tolerating those already gone (NOT_FOUND: removed with another,
   * e.g. with its gateway's link route) as one ip per route did: a batch stops at its first failing line, so after
   * a NOT_FOUND the rest is run again as a new batch; any other failure ends it.
   */
  private async deleteRoutes(commands: readonly string[][]): Promise<void> {
    let rest = commands;
    while (rest.length) {
      const done = await runBatch(this.ip, rest).then(
        () => rest.length,
        (err: unknown) => {
          const line = (err as { batchLine?: unknown }).batchLine;
          if (!(err instanceof StatusError && err.code === Code.NOT_FOUND && typeof line === 'number')) throw err;
          return line; // lines 1..line-1 were deleted, line `line` was already gone
        },
      );
      rest = rest.slice(done);
    }
  }

  /**
   * The commands that rename `link` (already down) to `name`. If another link has that name, the two swap names
   * through a temporary one (how the kernel numbers NICs need not match the host's order); the other link keeps
   * its state.
   */
  private rename(link: IpLink, name: string, links: readonly IpLink[]): string[][] {
    const holder = links.find((l) => l.ifname === name);
    if (!holder) return [linkRename(link.ifname, name)];
    const temp = `hull-tmp${holder.ifindex}`.slice(0, 15);
    if (links.some((l) => l.ifname === temp))
      throw new StatusError(Code.INTERNAL, `cannot free the name ${name}: ${temp} is taken too`);
    const wasUp = holder.flags.includes('UP');
    return [
      ...(wasUp ? [linkDown(holder.ifname)] : []),
      linkRename(holder.ifname, temp),
      linkRename(link.ifname, name),
      linkRename(temp, link.ifname),
      ...(wasUp ? [linkUp(link.ifname)] : []),
    ];
  }
}
