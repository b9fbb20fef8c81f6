/**
 * Pure checks of everything this module passes to `ip`/`tc` or hands back to core: netns paths, interface names,
 * MACs, IP addresses. What `ip -j` prints is data from a namespace the pod can change, so it goes through these too.
 */
import net from 'node:net';
import path from 'node:path';
import { InvalidArgumentError } from '../../errors';

export const MAX_NETNS_PATH = 4096;

/** Our taps: `tap<i>_hull`. scanNetns skips them; detachEndpoints deletes nothing else. */
export const TAP_PATTERN = /^tap(0|[1-9][0-9]{0,5})_hull$/;

/**
 * An interface name we are willing to pass on: at most 15 bytes (IFNAMSIZ - 1), letters, digits and `_ . @ + -`,
 * not starting with `-`, `.` or `@` (so never an option, `.` or `..`). The kernel allows more; CNI never needs it.
 */
const IFNAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,14}$/;

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function isValidIfName(name: unknown): name is string {
  return typeof name === 'string' && IFNAME_PATTERN.test(name);
}

export function checkIfName(name: unknown, what: string): string {
  if (!isValidIfName(name)) throw new InvalidArgumentError(`${what}: invalid interface name ${JSON.stringify(name)}`);
  return name;
}

export function checkTapName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !TAP_PATTERN.test(name)) {
    throw new InvalidArgumentError(`${what}: ${JSON.stringify(name)} is not a hull tap name (tap<N>_hull)`);
  }
  return name;
}

/** A MAC in lower case, or undefined when `mac` is not six colon-separated hex octets. */
export function normalizeMac(mac: unknown): string | undefined {
  if (typeof mac !== 'string') return undefined;
  const m = mac.toLowerCase();
  return MAC_PATTERN.test(m) ? m : undefined;
}

/** A NIC's own MAC: six octets, unicast, not all zeros; returned lower-cased. */
export function checkMac(mac: unknown, what: string): string {
  const m = normalizeMac(mac);
  if (m === undefined)
    throw new InvalidArgumentError(
      `${what}: ${JSON.stringify(mac)} is not a MAC address of six octets (aa:bb:cc:dd:ee:ff)`,
    );
  if (isMulticastMac(m))
    throw new InvalidArgumentError(`${what}: ${m} is a multicast address; a NIC needs a unicast one`);
  if (isZeroMac(m)) throw new InvalidArgumentError(`${what}: the MAC is all zeros`);
  return m;
}

export function isZeroMac(mac: string): boolean {
  return mac === '00:00:00:00:00:00';
}

/** Whether the MAC's group bit is set (multicast or broadcast): never an interface's own address. */
export function isMulticastMac(mac: string): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 1) === 1;
}

/** 4 or 6 for a literal IP address (no zone index, no prefix), else undefined. */
export function ipFamily(address: unknown): 4 | 6 | undefined {
  if (typeof address !== 'string' || address.includes('%')) return undefined;
  const f = net.isIP(address);
  return f === 4 || f === 6 ? f : undefined;
}

function firstHextet(v6: string): number {
  const head = v6.startsWith('::') ? '0' : (v6.split(':')[0] ?? '0');
  return parseInt(head, 16);
}

/** fe80::/10. */
export function isLinkLocalV6(address: string): boolean {
  return (firstHextet(address) & 0xffc0) === 0xfe80;
}

/** ff00::/8. */
export function isMulticastV6(address: string): boolean {
  return (firstHextet(address) & 0xff00) === 0xff00;
}

export function isValidPrefix(family: 4 | 6, prefixLength: unknown): prefixLength is number {
  return (
    Number.isInteger(prefixLength) &&
    (prefixLength as number) >= 0 &&
    (prefixLength as number) <= (family === 4 ? 32 : 128)
  );
}

/** An MTU we can give a tap: 68 (IPv4's minimum) to 65521 (the tun driver's maximum). */
export function isValidMtu(mtu: unknown): mtu is number {
  return Number.isInteger(mtu) && (mtu as number) >= 68 && (mtu as number) <= 65521;
}

/**
 * The shape of a network namespace path, checked before any tool sees it: a string, absolute, normalised (no `.`,
 * `..`, `//` or trailing `/`), no NUL, at most 4096 bytes. Returns it unchanged.
 */
export function checkNetnsPathShape(netnsPath: unknown): string {
  if (typeof netnsPath !== 'string' || netnsPath === '')
    throw new InvalidArgumentError('netns path: empty or not a string');
  const shown = JSON.stringify(netnsPath.slice(0, 200));
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(netnsPath))
    throw new InvalidArgumentError(`netns path ${shown}: contains a control character`);
  if (Buffer.byteLength(netnsPath) > MAX_NETNS_PATH)
    throw new InvalidArgumentError(`netns path ${shown}: longer than ${MAX_NETNS_PATH} bytes`);
  if (!path.posix.isAbsolute(netnsPath)) throw new InvalidArgumentError(`netns path ${shown}: not absolute`);
  if (netnsPath === '/' || path.posix.normalize(netnsPath) !== netnsPath || netnsPath.endsWith('/')) {
    throw new InvalidArgumentError(`netns path ${shown}: not normalised`);
  }
  return netnsPath;
}
