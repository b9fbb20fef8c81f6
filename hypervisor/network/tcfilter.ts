/**
 * Kata's "tcfilter" model, host side: for each pod interface (the veth CNI made) a tap in the same netns with the
 * veth's MTU, an ingress qdisc on both, and on each a u32 match-all filter `action mirred egress redirect dev
 * <other>`. Whatever arrives on the veth leaves through the tap (to QEMU), and whatever QEMU writes to the tap
 * leaves through the veth. Nothing CNI made is changed: the veth keeps its addresses, routes and neighbours.
 *
 * Our filter on a veth is recognised by what it does (a u32 filter at REDIRECT_PREF whose one action redirects to
 * our tap, or to a device that is gone, which tc shows as `*`), never by position alone, so a filter someone else
 * put there survives attach and detach.
 */
import { FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError, ShimError } from '../../errors';
import { checkNetnsFile, runInNetns, runJson, unlessNetnsGone } from './exec';
import { parseLinks, type LinkInfo } from './parse';
import type { NetEndpoint } from './types';
import {
  checkIfName,
  checkNetnsPathShape,
  checkTapName,
  isValidIfName,
  isValidMtu,
  normalizeMac,
  TAP_PATTERN,
} from './validate';

/** The filters' priority: 1, so that the redirect is the first thing an ingress packet meets. */
export const REDIRECT_PREF = '1';
const INGRESS_PARENT = 'ffff:';
/** A u32 filter handle as tc prints it (`800::800`). */
const U32_HANDLE = /^[0-9a-f]{1,3}:[0-9a-f]{0,3}:[0-9a-f]{1,3}$/;

type Undo = () => Promise<void>;

async function getLink(netnsPath: string, name: string): Promise<LinkInfo | undefined> {
  try {
    const links = parseLinks(await runJson(netnsPath, 'ip', ['-d', 'link', 'show', 'dev', name]), netnsPath);
    return links.find((l) => l.name === name);
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

async function hasIngressQdisc(netnsPath: string, dev: string): Promise<boolean> {
  const list = await runJson(netnsPath, 'tc', ['qdisc', 'show', 'dev', dev, 'ingress']);
  return Array.isArray(list) && list.some((q) => (q as { kind?: unknown } | null)?.kind === 'ingress');
}

function addRedirect(netnsPath: string, from: string, to: string): Promise<string> {
  return runInNetns(netnsPath, 'tc', [
    'filter',
    'add',
    'dev',
    from,
    'parent',
    INGRESS_PARENT,
    'protocol',
    'all',
    'pref',
    REDIRECT_PREF,
    'u32',
    'match',
    'u8',
    '0',
    '0',
    'action',
    'mirred',
    'egress',
    'redirect',
    'dev',
    to,
  ]);
}

interface FilterEntry {
  pref: unknown;
  kind: unknown;
  options?: { fh?: unknown; actions?: unknown };
}

/** The mirred redirect target of a one-action u32 filter at our priority, else undefined. */
function redirectTarget(f: FilterEntry): string | undefined {
  if (String(f.pref) !== REDIRECT_PREF || f.kind !== 'u32' || !Array.isArray(f.options?.actions)) return undefined;
  const actions = f.options.actions as Array<Record<string, unknown> | null>;
  const a = actions.length === 1 ? actions[0] : undefined;
  if (a?.kind !== 'mirred' || a.mirred_action !== 'redirect' || a.direction !== 'egress') return undefined;
  return typeof a.to_dev === 'string' ? a.to_dev : undefined;
}

/**
 * Removes from `dev`'s ingress our redirects to any of `taps` (or to a device that is gone). Returns how many it
 * removed and how many filter entries are left.
 */
async function removeRedirects(
  netnsPath: string,
  dev: string,
  taps: readonly string[],
): Promise<{ removed: number; left: number }> {
  const read = async (): Promise<FilterEntry[]> => {
    const list = await runJson(netnsPath, 'tc', ['filter', 'show', 'dev', dev, 'ingress']);
    if (!Array.isArray(list))
      throw new InternalError(`netns ${netnsPath}: tc -j filter show dev ${dev} ingress: not a JSON array`);
    return list.filter((f): f is FilterEntry => typeof f === 'object' && f !== null);
  };
  const filters = await read();
  // The u32 rules at our priority (tc also lists the classifier and its hash table there: no rule handle, kept).
  const rules = filters.filter(
    (f) => String(f.pref) === REDIRECT_PREF && typeof f.options?.fh === 'string' && U32_HANDLE.test(f.options.fh),
  );
  const ours = rules.filter((f) => {
    const target = redirectTarget(f);
    return target !== undefined && (target === '*' || taps.includes(target));
  });
  if (ours.length === 0) return { removed: 0, left: filters.length };
  const base = ['filter', 'del', 'dev', dev, 'parent', INGRESS_PARENT, 'protocol', 'all', 'pref', REDIRECT_PREF];
  if (ours.length === rules.length) {
    await runInNetns(netnsPath, 'tc', base); // everything at our priority is ours: drop the whole u32 instance
  } else {
    for (const f of ours) {
      const fh = f.options?.fh;
      if (typeof fh !== 'string' || !U32_HANDLE.test(fh))
        throw new InternalError(`netns ${netnsPath}: device ${dev}: filter handle ${JSON.stringify(fh)} unusable`);
      await runInNetns(netnsPath, 'tc', [...base, 'handle', fh, 'u32']);
    }
  }
  return { removed: ours.length, left: (await read()).length };
}

function checkEndpoints(netnsPath: string, endpoints: readonly NetEndpoint[]): void {
  if (!Array.isArray(endpoints)) throw new InvalidArgumentError(`netns ${netnsPath}: endpoints must be an array`);
  const names = new Set<string>();
  const taps = new Set<string>();
  for (const ep of endpoints) {
    const where = `netns ${netnsPath}`;
    const name = checkIfName(ep?.name, where);
    if (TAP_PATTERN.test(name))
      throw new InvalidArgumentError(`${where}: device ${name} is a hull tap, not an endpoint`);
    checkTapName(ep.tap, `${where}: device ${name}`);
    if (normalizeMac(ep.mac) === undefined)
      throw new InvalidArgumentError(`${where}: device ${name}: invalid MAC ${JSON.stringify(ep.mac)}`);
    if (!isValidMtu(ep.mtu))
      throw new InvalidArgumentError(`${where}: device ${name}: invalid MTU ${JSON.stringify(ep.mtu)}`);
    if (names.has(name) || taps.has(ep.tap))
      throw new InvalidArgumentError(`${where}: device ${name} or tap ${ep.tap} listed twice`);
    names.add(name);
    taps.add(ep.tap);
  }
}

async function attachOne(netnsPath: string, ep: NetEndpoint, undo: Undo[]): Promise<void> {
  const where = `netns ${netnsPath}: device ${ep.name}`;
  const veth = await getLink(netnsPath, ep.name);
  if (veth === undefined) throw new NotFoundError(`${where} does not exist`);
  const mac = normalizeMac(veth.address);
  if (mac !== normalizeMac(ep.mac))
    throw new FailedPreconditionError(`${where}: its MAC is ${String(veth.address)}, not ${ep.mac} (scan again)`);

  // The tap: reuse ours if it is a single-queue tap without packet info (what QEMU's ifname= opens), else recreate.
  const tapWhere = `netns ${netnsPath}: tap ${ep.tap}`;
  let tap = await getLink(netnsPath, ep.tap);
  if (tap !== undefined && tap.kind !== 'tun')
    throw new FailedPreconditionError(`${tapWhere} exists and is a ${tap.kind ?? 'non-tun'} device, not a tap`);
  if (tap !== undefined && (tap.tun?.type !== 'tap' || tap.tun.multiQueue === true)) {
    await runInNetns(netnsPath, 'ip', ['link', 'del', 'dev', ep.tap]);
    tap = undefined;
  }
  if (tap === undefined) {
    await runInNetns(netnsPath, 'ip', ['tuntap', 'add', 'dev', ep.tap, 'mode', 'tap']);
    undo.push(async () => {
      await runInNetns(netnsPath, 'ip', ['link', 'del', 'dev', ep.tap]);
    });
  } else if (await hasIngressQdisc(netnsPath, ep.tap)) {
    await runInNetns(netnsPath, 'tc', ['qdisc', 'del', 'dev', ep.tap, 'ingress']); // reset: its filters go with it
  }
  await runInNetns(netnsPath, 'ip', ['link', 'set', 'dev', ep.tap, 'mtu', String(ep.mtu), 'up']);
  await runInNetns(netnsPath, 'tc', ['qdisc', 'add', 'dev', ep.tap, 'ingress']);
  if (tap !== undefined)
    undo.push(async () => {
      await runInNetns(netnsPath, 'tc', ['qdisc', 'del', 'dev', ep.tap, 'ingress']);
    });
  await addRedirect(netnsPath, ep.tap, ep.name);

  // The veth: our ingress qdisc unless one is there, then our redirect (replacing an earlier one of ours).
  if (await hasIngressQdisc(netnsPath, ep.name)) {
    await removeRedirects(netnsPath, ep.name, [ep.tap]);
  } else {
    await runInNetns(netnsPath, 'tc', ['qdisc', 'add', 'dev', ep.name, 'ingress']);
    undo.push(async () => {
      await runInNetns(netnsPath, 'tc', ['qdisc', 'del', 'dev', ep.name, 'ingress']);
    });
  }
  await addRedirect(netnsPath, ep.name, ep.tap);
  undo.push(async () => {
    await removeRedirects(netnsPath, ep.name, [ep.tap]);
  });
}

/**
 * Creates each endpoint's tap (MTU of the veth, up) and the redirection both ways. Idempotent: an existing tap of
 * ours is reused and its filters reset, and our old redirect on the veth is replaced. On failure what this call
 * made is undone (best effort) and the first error is thrown. Calls for one netns must not overlap.
 */
export async function attachEndpoints(netnsPath: string, endpoints: NetEndpoint[]): Promise<void> {
  const ns = await checkNetnsFile(netnsPath);
  checkEndpoints(ns, endpoints);
  const undo: Undo[] = [];
  try {
    for (const ep of endpoints) await attachOne(ns, ep, undo);
  } catch (err) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // best effort: the error that made us undo is the one to report
      }
    }
    throw err;
  }
}

/**
 * Removes the taps (only names `tap<N>_hull`) and our redirects to them from every other interface's ingress,
 * and that ingress qdisc once no filter is left on it. A netns or a device that is already gone is fine. Never
 * touches addresses, routes or neighbours. Tries every step, then throws the first error (a netns file that is
 * a namespace of another kind is an InvalidArgumentError, not "gone").
 */
export async function detachEndpoints(netnsPath: string, taps: string[]): Promise<void> {
  const ns = checkNetnsPathShape(netnsPath);
  if (!Array.isArray(taps)) throw new InvalidArgumentError(`netns ${ns}: taps must be an array`);
  for (const t of taps) checkTapName(t, `netns ${ns}`);
  if (taps.length === 0) return;
  // Missing, or no longer a namespace file (unmounted, maybe while we work): gone with its taps, nothing to undo.
  await unlessNetnsGone(ns, () => detachFrom(ns, taps));
}

async function detachFrom(ns: string, taps: string[]): Promise<void> {
  let links: LinkInfo[];
  try {
    links = parseLinks(await runJson(ns, 'ip', ['-d', 'link', 'show']), ns);
  } catch (err) {
    if (err instanceof NotFoundError) return; // removed since the check (a listing of all links names no device)
    throw err;
  }
  const errors: ShimError[] = [];
  const attempt = async (fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (err instanceof NotFoundError) return; // the device went away meanwhile
      errors.push(err instanceof ShimError ? err : new InternalError(`netns ${ns}: detach`, { cause: err }));
    }
  };
  for (const link of links) {
    if (link.flags.includes('LOOPBACK') || taps.includes(link.name) || !isValidIfName(link.name)) continue;
    await attempt(async () => {
      const { removed, left } = await removeRedirects(ns, link.name, taps);
      if (removed > 0 && left === 0) await runInNetns(ns, 'tc', ['qdisc', 'del', 'dev', link.name, 'ingress']);
    });
  }
  for (const tap of taps) {
    if (links.some((l) => l.name === tap)) await attempt(() => runInNetns(ns, 'ip', ['link', 'del', 'dev', tap]));
  }
  const [first] = errors;
  if (first !== undefined) throw first;
}
