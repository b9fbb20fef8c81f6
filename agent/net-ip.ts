/**
 * iproute2's `ip` as the agent uses it: pure argv builders for each change, parsers for its JSON (`-j`) output, and
 * the runner (execFile of GUEST_IP with an argv array, never a shell). The runner refuses any argument after the
 * leading options that starts with '-', so a value can never be read as an option, and classifies ip's failures once,
 * here, into status codes.
 */
import { execFile } from 'node:child_process';
import { Code, StatusError } from 'ttrpc-ts';
import { types } from '../protos/agent';
import {
  ROUTE_SCOPES,
  RTNH_F_ONLINK,
  type CheckedAddress,
  type CheckedNeighbor,
  type CheckedRoute,
  type Family,
} from './net-validate';

/** iproute2's ip in the guest image (guest/config.ts GUEST_PATHS.ip); busybox's applet is at /sbin/ip. */
export const GUEST_IP = '/usr/sbin/ip';

/** Runs ip with `args` (and `input` on its stdin, for `-batch -`) and resolves with its stdout. */
export type IpRunner = (args: readonly string[], input?: string) => Promise<string>;

/** The options ip may be given before its object (`link`, `addr`, `route`, `neigh`); nothing else may start with '-'. */
const OPTIONS = new Set(['-j', '-d', '-4', '-6']);

/**
 * Throws unless every argument after the leading OPTIONS is free of a leading '-'. The one exception is the batch
 * form, OPTIONS then exactly `-batch -` (the commands come on stdin, each checked by `batchInput`).
 */
export function checkArgv(args: readonly string[]): void {
  let i = 0;
  while (i < args.length && OPTIONS.has(args[i]!)) i++;
  if (i > 0 && i === args.length - 2 && args[i] === '-batch' && args[i + 1] === '-') return;
  if (i === 0 && args.length === 2 && args[0] === '-batch' && args[1] === '-') return;
  for (const a of args.slice(i)) {
    if (a.startsWith('-') || a.length === 0 || a.includes('\0'))
      throw new StatusError(Code.INTERNAL, `refusing ip argument ${JSON.stringify(a)}`);
  }
}

/**
 * ip's failure, classified once: a missing device (or route: ESRCH) is NOT_FOUND, an existing object ALREADY_EXISTS, what the kernel
 * refuses as invalid INVALID_ARGUMENT; anything else INTERNAL. The message always has ip's own words.
 */
export function ipFailure(args: readonly string[], stderr: string, cause?: Error): StatusError {
  const said = stderr.trim().split('\n').slice(-3).join('; ') || cause?.message || 'failed';
  const message = `ip ${args.join(' ')}: ${said}`;
  const code = /Cannot find device|No such device|No such process/i.test(said)
    ? Code.NOT_FOUND
    : /File exists/i.test(said)
      ? Code.ALREADY_EXISTS
      : /Invalid argument|out of range|invalid gateway|Network is unreachable|Invalid prefix/i.test(said)
        ? Code.INVALID_ARGUMENT
        : Code.INTERNAL;
  return new StatusError(code, message, cause ? { cause } : undefined);
}

export function execIp(binary = GUEST_IP, timeoutMs = 30_000): IpRunner {
  return (args, input) => {
    checkArgv(args);
    return new Promise((resolve, reject) => {
      // spawns: wrapper; execIp's callers name the ip binary (default GUEST_IP)
      const child = execFile(binary, [...args], { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (err) reject(Object.assign(ipFailure(args, stderr, err), { stderr }));
        else resolve(stdout);
      });
      child.stdin?.on('error', () => undefined); // ip exited before reading it all: its exit status tells
      child.stdin?.end(input ?? '');
    });
  };
}

// ---- batches ------------------------------------------------------------------------------------------------

/**
 * What would change the meaning of a line of `ip -batch`: iproute2's makeargs splits words at white space, reads
 * quotes and backslashes, and getcmdline ends a line at '\n' and drops what follows '#'. No argument may hold any of
 * them (nor any other control character), so each argv becomes exactly one line of exactly its words.
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must not reach a batch line
const BATCH_UNSAFE = /[\s"'\\#\x00-\x1f\x7f]/;

/** Most lines one `ip -batch` takes from us (a request's commands are few: the route list is capped). */
export const MAX_BATCH_LINES = 1024;

/** The family option a command starts with (`-4`/`-6`), which a batch takes once, before `-batch`. */
export function commandFamily(args: readonly string[]): Family | undefined {
  return args[0] === '-4' ? 4 : args[0] === '-6' ? 6 : undefined;
}

/**
 * The stdin of `ip [-4|-6] -batch -` for `commands` (argv arrays as the builders make them, all of `family`, the
 * family option stripped): one line per command. Throws INTERNAL for an argument that could change the batch's
 * meaning (see BATCH_UNSAFE) or a command that is not of the batch's family.
 */
export function batchInput(commands: readonly (readonly string[])[], family?: Family): string {
  if (commands.length === 0 || commands.length > MAX_BATCH_LINES)
    throw new StatusError(Code.INTERNAL, `ip batch of ${commands.length} commands`);
  return commands
    .map((args) => {
      checkArgv(args);
      if (commandFamily(args) !== family)
        throw new StatusError(Code.INTERNAL, `ip batch for family ${family ?? 'any'}: ${args.join(' ')}`);
      const words = family === undefined ? args : args.slice(1);
      for (const w of words) {
        if (w.startsWith('-') || BATCH_UNSAFE.test(w))
          throw new StatusError(Code.INTERNAL, `refusing ip batch argument ${JSON.stringify(w)}`);
      }
      return `${words.join(' ')}\n`;
    })
    .join('');
}

/**
 * Runs `commands` in order, as few ip processes as their family options allow: each run of consecutive commands
 * with the same family option (none, -4, -6) is one `ip -batch -`. Like one ip per command, it stops at the first
 * command that fails, and that failure is the one ipFailure makes for that command alone (ip names the failed line,
 * "Command failed -:N", which maps it back; its own words are the lines before).
 */
export async function runBatch(ip: IpRunner, commands: readonly (readonly string[])[]): Promise<void> {
  let start = 0;
  while (start < commands.length) {
    const family = commandFamily(commands[start]!);
    let end = start + 1;
    while (end < commands.length && end - start < MAX_BATCH_LINES && commandFamily(commands[end]!) === family) end++;
    const group = commands.slice(start, end);
    const argv = [...(family === undefined ? [] : [`-${family}`]), '-batch', '-'];
    const input = batchInput(group, family);
    const offset = start;
    await ip(argv, input).catch((err: unknown) => {
      const failure = batchFailure(group, err);
      // Which of `commands` failed (1-based), for a caller that tolerates some failures (route deletion).
      if (failure !== err) Object.assign(failure as object, { batchLine: offset + (failure as { line: number }).line });
      throw failure;
    });
    start = end;
  }
}

/** The failure of one batch as the failure of its command that failed (when ip named it), else as it came. */
export function batchFailure(group: readonly (readonly string[])[], err: unknown): unknown {
  const stderr = (err as { stderr?: unknown } | null)?.stderr;
  if (typeof stderr !== 'string') return err;
  const lines = stderr.split('\n');
  const at = lines.findIndex((l) => /^Command failed -:\d+$/.test(l.trim()));
  if (at < 0) return err;
  const n = Number(/(\d+)$/.exec(lines[at]!.trim())![1]);
  const args = group[n - 1];
  if (!args) return err;
  const own = lines.slice(0, at).join('\n');
  const failure = ipFailure(args, own, err instanceof Error ? err : undefined);
  return Object.assign(failure, { line: n });
}

// ---- argv builders ------------------------------------------------------------------------------------------

export const linkDown = (dev: string): string[] => ['link', 'set', 'dev', dev, 'down'];
export const linkUp = (dev: string): string[] => ['link', 'set', 'dev', dev, 'up'];
export const linkRename = (dev: string, name: string): string[] => ['link', 'set', 'dev', dev, 'name', name];
/** MTU (0: unchanged) and ARP on or off. */
export const linkSettings = (dev: string, mtu: number, noArp: boolean): string[] => [
  'link',
  'set',
  'dev',
  dev,
  ...(mtu ? ['mtu', String(mtu)] : []),
  'arp',
  noArp ? 'off' : 'on',
];
export const addrFlush = (dev: string): string[] => ['addr', 'flush', 'dev', dev];
/**
 * IPv4 addresses get their broadcast address computed (`broadcast +`), as CNI's do. No family option: the address
 * (checked to be of its family) gives it, so an interface's addresses and link changes go in one batch.
 */
export const addrAdd = (dev: string, a: CheckedAddress): string[] => [
  'addr',
  'add',
  `${a.address}/${a.prefix}`,
  ...(a.family === 4 && a.prefix < 31 ? ['broadcast', '+'] : []),
  'dev',
  dev,
];

/** `ip route replace`: idempotent, and it also takes over a matching route the kernel made for an address. */
export function routeReplace(r: CheckedRoute): string[] {
  return [
    `-${r.family}`,
    'route',
    'replace',
    r.dest,
    ...(r.gateway === undefined ? [] : ['via', r.gateway]),
    'dev',
    r.device,
    ...(r.source === undefined ? [] : ['src', r.source]),
    'scope',
    ROUTE_SCOPES[r.scope],
    ...(r.mtu ? ['mtu', String(r.mtu)] : []),
    ...(r.onlink ? ['onlink'] : []),
    'proto',
    'boot',
    'table',
    'main',
  ];
}

/**
 * Link-scope routes (no gateway) before routes via a gateway, which need a route to their gateway first; the
 * order within each group is kept.
 */
export function routeOrder(routes: readonly CheckedRoute[]): CheckedRoute[] {
  return [...routes.filter((r) => r.gateway === undefined), ...routes.filter((r) => r.gateway !== undefined)];
}

export const neighReplace = (n: CheckedNeighbor): string[] => [
  `-${n.family}`,
  'neigh',
  'replace',
  n.address,
  'lladdr',
  n.mac,
  'dev',
  n.device,
  'nud',
  n.state,
  ...(n.router ? ['router'] : []),
];

export const addrShow = (): string[] => ['-j', '-d', 'addr', 'show'];
export const routeShow = (family: Family): string[] => ['-j', `-${family}`, 'route', 'show', 'table', 'main'];

// ---- ip's JSON ----------------------------------------------------------------------------------------------

/** One link of `ip -j -d addr show`, the fields we read. */
export interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  address: string;
  linkKind: string;
  addresses: CheckedAddress[];
}

/** One route of `ip -j route show`, the fields we read. */
export interface IpRoute {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  flags: string[];
  mtu?: number;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

function parseJsonArray(text: string, what: string): Record<string, unknown>[] {
  let value: unknown;
  try {
    value = JSON.parse(text.trim() === '' ? '[]' : text);
  } catch (err) {
    throw new StatusError(Code.INTERNAL, `${what}: ip printed something other than JSON`, { cause: err as Error });
  }
  if (!Array.isArray(value)) throw new StatusError(Code.INTERNAL, `${what}: ip printed JSON that is not a list`);
  return value.filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null);
}

export function parseLinks(text: string): IpLink[] {
  return parseJsonArray(text, 'ip addr show').flatMap((o): IpLink[] => {
    const ifindex = num(o.ifindex);
    const ifname = str(o.ifname);
    if (ifindex === undefined || ifname === undefined) return [];
    const addresses = (Array.isArray(o.addr_info) ? (o.addr_info as Record<string, unknown>[]) : []).flatMap(
      (a): CheckedAddress[] => {
        const family = a.family === 'inet' ? 4 : a.family === 'inet6' ? 6 : undefined;
        const local = str(a.local);
        const prefix = num(a.prefixlen);
        return family && local !== undefined && prefix !== undefined ? [{ family, address: local, prefix }] : [];
      },
    );
    const info = o.linkinfo as Record<string, unknown> | undefined;
    return [
      {
        ifindex,
        ifname,
        flags: strings(o.flags),
        mtu: num(o.mtu) ?? 0,
        address: (str(o.address) ?? '').toLowerCase(),
        linkKind: str(info?.info_kind) ?? '',
        addresses,
      },
    ];
  });
}

export function parseRoutes(text: string): IpRoute[] {
  return parseJsonArray(text, 'ip route show').flatMap((o): IpRoute[] => {
    const dst = str(o.dst);
    if (dst === undefined) return [];
    const metrics = Array.isArray(o.metrics) ? (o.metrics as Record<string, unknown>[]) : [];
    const route: IpRoute = { dst, flags: strings(o.flags) };
    for (const key of ['type', 'gateway', 'dev', 'protocol', 'scope', 'prefsrc'] as const) {
      const v = str(o[key]);
      if (v !== undefined) route[key] = v;
    }
    const metric = num(o.metric);
    if (metric !== undefined) route.metric = metric;
    const mtu = metrics.map((m) => num(m.mtu)).find((m) => m !== undefined);
    if (mtu !== undefined) route.mtu = mtu;
    return [route];
  });
}

/** ip route del for a route ip listed: enough to name exactly that route (type, dst, gateway, dev, metric). */
export function routeDelete(family: Family, r: IpRoute & { dev: string }): string[] {
  return [
    `-${family}`,
    'route',
    'del',
    ...(r.type !== undefined && r.type !== 'unicast' ? [r.type] : []),
    r.dst,
    ...(r.gateway === undefined ? [] : ['via', r.gateway]),
    'dev',
    r.dev,
    ...(r.metric === undefined ? [] : ['metric', String(r.metric)]),
    'table',
    'main',
  ];
}

/** Routes UpdateRoutes removes: on a device other than lo, and not made by the kernel for an address. */
export function removableRoutes(routes: readonly IpRoute[]): (IpRoute & { dev: string })[] {
  return routes.filter(
    (r): r is IpRoute & { dev: string } => r.dev !== undefined && r.dev !== 'lo' && r.protocol !== 'kernel',
  );
}

// ---- to Kata's types ----------------------------------------------------------------------------------------

/** IFF_* bits by the names ip prints. ip shows NO-CARRIER for an up link that is not running, and no RUNNING. */
const IFF: Record<string, number> = {
  UP: 0x1,
  BROADCAST: 0x2,
  DEBUG: 0x4,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  NOTRAILERS: 0x20,
  RUNNING: 0x40,
  NOARP: 0x80,
  PROMISC: 0x100,
  ALLMULTI: 0x200,
  MASTER: 0x400,
  SLAVE: 0x800,
  MULTICAST: 0x1000,
  PORTSEL: 0x2000,
  AUTOMEDIA: 0x4000,
  DYNAMIC: 0x8000,
  LOWER_UP: 0x10000,
  DORMANT: 0x20000,
  ECHO: 0x40000,
};

export function rawFlags(flags: readonly string[]): number {
  let bits = flags.reduce((n, f) => n | (IFF[f] ?? 0), 0);
  if ((bits & IFF.UP!) !== 0 && !flags.includes('NO-CARRIER')) bits |= IFF.RUNNING!;
  return bits >>> 0;
}

const toFamily = (f: Family): types.IPFamily => (f === 4 ? types.IPFamily.v4 : types.IPFamily.v6);

export function toInterface(link: IpLink): types.IInterface {
  return {
    device: link.ifname,
    name: link.ifname,
    IPAddresses: link.addresses.map((a) => ({
      family: toFamily(a.family),
      address: a.address,
      mask: String(a.prefix),
    })),
    mtu: link.mtu,
    hwAddr: link.address,
    devicePath: '',
    type: link.linkKind,
    rawFlags: rawFlags(link.flags),
  };
}

const SCOPE_NUMBERS: Record<string, number> = { global: 0, universe: 0, site: 200, link: 253, host: 254, nowhere: 255 };

/** A route as Kata reports it: dest a CIDR, or '' for the default route; source the preferred source address. */
export function toRoute(family: Family, r: IpRoute): types.IRoute {
  const dest = r.dst === 'default' ? '' : r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`;
  const scope = r.scope === undefined ? 0 : (SCOPE_NUMBERS[r.scope] ?? (/^\d+$/.test(r.scope) ? Number(r.scope) : 0));
  return {
    dest,
    gateway: r.gateway ?? '',
    device: r.dev ?? '',
    source: r.prefsrc ?? '',
    scope,
    family: toFamily(family),
    flags: r.flags.includes('onlink') ? RTNH_F_ONLINK : 0,
    mtu: r.mtu ?? 0,
  };
}
