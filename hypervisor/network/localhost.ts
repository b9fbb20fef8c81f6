/**
 * Port forwarding for a pod in a VM, host side. containerd's CRI plugin serves PortForward by dialling
 * localhost:<port> inside the pod's network namespace (what reaches a runc pod's servers). Under hull nothing
 * listens there: the pod's processes are in the guest. So the namespace gets one listener of ours on 127.0.0.1 and
 * a nat rule that sends every TCP connection to 127.0.0.1 there (REDIRECT); the port the client asked for is the
 * connection's original destination (conntrack), and the caller relays the connection to that port in the guest.
 *
 * The listener's socket is made inside the namespace (hull-netns); the rule is added and removed with iptables
 * through nsenter, carries the comment `hull-port-forward`, and is recognised by its exact form, never by position.
 */
import type net from 'node:net';
import { listenInNetns, originalDestination } from 'hull-netns';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  ShimError,
  UnavailableError,
} from '../../errors';
import { checkNetnsFile, runInNetns, unlessNetnsGone } from './exec';

export const REDIRECT_COMMENT = 'hull-port-forward';
/** How long iptables waits for the xtables lock (another iptables in the same namespace). */
const XTABLES_WAIT_S = '10';

/** The rule, without the command (-A/-D/-C), for the listener's port. */
function ruleSpec(port: number): string[] {
  return [
    'OUTPUT',
    '-d',
    '127.0.0.1/32',
    '-o',
    'lo',
    '-p',
    'tcp',
    '-m',
    'comment',
    '--comment',
    REDIRECT_COMMENT,
    '-j',
    'REDIRECT',
    '--to-ports',
    String(port),
  ];
}

/** Our rule as `iptables -S` prints it; anything else in the chain is not ours. */
const OUR_RULE = new RegExp(
  `^-A OUTPUT -d 127\\.0\\.0\\.1/32 -o lo -p tcp -m comment --comment "?${REDIRECT_COMMENT}"? -j REDIRECT --to-ports (\\d{1,5})$`,
);

function iptables(netnsPath: string, args: string[]): Promise<string> {
  return runInNetns(netnsPath, 'iptables', ['-w', XTABLES_WAIT_S, '-t', 'nat', ...args]);
}

/** The ports of our REDIRECT rules in the namespace's nat OUTPUT chain. Exported for tests. */
export function parseRedirectPorts(listing: string): number[] {
  const ports: number[] = [];
  for (const line of listing.split('\n')) {
    const m = OUR_RULE.exec(line.trim());
    const port = m ? Number(m[1]) : NaN;
    if (port >= 1 && port <= 65535) ports.push(port);
  }
  return ports;
}

/** A connection for the caller to relay: `port` is the one the client dialled on the namespace's localhost. */
export type LocalhostConnection = (socket: net.Socket, port: number) => void;

export class LocalhostRedirect {
  private closed = false;
  private constructor(
    readonly netnsPath: string,
    private readonly server: net.Server,
    /** The listener's own port in the namespace. */
    readonly port: number,
  ) {}

  /**
   * Starts the listener and the rule. Fails with UnavailableError when iptables is missing, FailedPreconditionError
   * when the kernel has no nat REDIRECT; nothing is left behind when it fails.
   */
  static async start(netnsPath: string, onConnection: LocalhostConnection): Promise<LocalhostRedirect> {
    const ns = await checkNetnsFile(netnsPath);
    let server: net.Server;
    try {
      server = await listenInNetns(ns, { host: '127.0.0.1', port: 0, allowHalfOpen: true, pauseOnConnect: true });
    } catch (cause) {
      const code = (cause as { code?: string }).code;
      if (code === 'ENOENT') throw new NotFoundError(`netns ${ns} does not exist`, { cause });
      if (code === 'EINVAL') throw new InvalidArgumentError(`netns ${ns} is not a network namespace`, { cause });
      throw new InternalError(`netns ${ns}: cannot listen on 127.0.0.1: ${(cause as Error).message}`, { cause });
    }
    const self = new LocalhostRedirect(ns, server, (server.address() as net.AddressInfo).port);
    server.on('connection', (socket: net.Socket) => self.accept(socket, onConnection));
    try {
      await iptables(ns, ['-A', ...ruleSpec(self.port)]);
    } catch (err) {
      server.close();
      throw describeRuleError(ns, err);
    }
    return self;
  }

  /** Stops accepting (relayed connections are the caller's) and removes its rule; a namespace gone is fine. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    // The namespace may have gone first (CNI's teardown removed it, or containerd unmounted it): then so did the rule.
    await unlessNetnsGone(this.netnsPath, (ns) => deleteRule(ns, this.port));
  }

  private accept(socket: net.Socket, onConnection: LocalhostConnection): void {
    socket.on('error', () => socket.destroy());
    if (this.closed) {
      socket.destroy();
      return;
    }
    let port: number;
    try {
      const dst = originalDestination(socket);
      if (dst.family !== 4 || dst.address !== '127.0.0.1') throw new Error(`connection to ${dst.address}`);
      port = dst.port;
    } catch {
      socket.resetAndDestroy();
      return;
    }
    onConnection(socket, port);
  }
}

function describeRuleError(ns: string, err: unknown): ShimError {
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof UnavailableError)
    return new UnavailableError(`netns ${ns}: port forwarding needs iptables (${msg})`, { cause: err });
  if (/REDIRECT|nat|No chain|Couldn't load|Extension|not supported/i.test(msg)) {
    return new FailedPreconditionError(
      `netns ${ns}: the kernel cannot redirect localhost connections (nat REDIRECT): ${msg}`,
      { cause: err },
    );
  }
  return err instanceof ShimError ? err : new InternalError(`netns ${ns}: ${msg}`, { cause: err });
}

/**
 * Removes every rule of ours from the namespace (crash recovery, where the listener's port is not known); a
 * namespace already gone, or iptables missing (then no rule of ours can exist), is fine.
 */
export async function removeLocalhostRedirects(netnsPath: string): Promise<void> {
  await unlessNetnsGone(netnsPath, removeAllRules);
}

async function removeAllRules(ns: string): Promise<void> {
  let listing: string;
  try {
    listing = await iptables(ns, ['-S', 'OUTPUT']);
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof UnavailableError) return;
    // A nat table never used in this namespace lists fine; a kernel without one has no rule of ours either.
    if (err instanceof ShimError && /table|chain/i.test(err.message)) return;
    throw err;
  }
  for (const port of parseRedirectPorts(listing)) await deleteRule(ns, port);
}

/** Deletes our rule for `port`; a rule already gone is fine. */
async function deleteRule(ns: string, port: number): Promise<void> {
  try {
    await iptables(ns, ['-D', ...ruleSpec(port)]);
  } catch (err) {
    if (!/Bad rule|does a matching rule exist/i.test((err as Error).message)) throw err;
  }
}
