/** scanNetns: what CNI left in a pod's network namespace, read with `ip -j` inside it. */
import { checkNetnsFile, runJson } from './exec';
import { buildScan } from './parse';
import type { NetnsScan } from './types';

/**
 * Reads the netns: every non-loopback Ethernet-like interface with a MAC that is not one of our taps (each given a
 * tap name, `tap0_hull`, `tap1_hull`, … in ifindex order), its addresses (not link-local IPv6), the main table's
 * unicast routes on those interfaces (not fe80::/10 or ff00::/8), and their permanent neighbours. Changes nothing.
 * NotFoundError when the path does not exist, InvalidArgumentError when it is not a network namespace or holds a
 * value we refuse to pass on (the message names the netns and the device).
 */
export async function scanNetns(netnsPath: string): Promise<NetnsScan> {
  const ns = await checkNetnsFile(netnsPath);
  // The first command also proves the file is a network namespace; the others then run in parallel.
  const addr = await runJson(ns, 'ip', ['-d', 'addr', 'show']);
  const [route4, route6, neigh] = await Promise.all([
    runJson(ns, 'ip', ['-4', 'route', 'show', 'table', 'main']),
    runJson(ns, 'ip', ['-6', 'route', 'show', 'table', 'main']),
    runJson(ns, 'ip', ['neigh', 'show', 'nud', 'permanent']),
  ]);
  return buildScan({ addr, route4, route6, neigh }, ns);
}
