/**
 * How dial reaches the agent: one connection attempt per transport, which failures mean "not yet" (retried until
 * the boot deadline), and the string form of an endpoint.
 */
import type { Duplex } from 'node:stream';
import { connect as connectVsock, parseVsockUri, VsockError } from 'hull-vsock';
import { Client } from 'ttrpc-ts';
import { InvalidArgumentError } from '../errors';
import type { AgentEndpoint } from './types';

/** Opens a vsock stream to cid:port (the default is hull-vsock's connect; tests pass their own). */
export type VsockConnector = (
  address: { cid: number; port: number },
  options: { timeoutMs: number; signal?: AbortSignal },
) => Promise<Duplex>;

/**
 * `vsock://<cid>:<port>`, `unix://<path>` or an absolute socket path (the serial port's socket or a unix socket:
 * both are unix sockets on the host) as an AgentEndpoint.
 */
export function parseAgentEndpoint(address: string): AgentEndpoint {
  if (address.startsWith('vsock://')) {
    try {
      return { transport: 'vsock', ...parseVsockUri(address) };
    } catch (cause) {
      throw new InvalidArgumentError(`agent address ${JSON.stringify(address)} is not vsock://<cid>:<port>`, { cause });
    }
  }
  const path = address.startsWith('unix://') ? address.slice('unix://'.length) : address;
  if (!path.startsWith('/'))
    throw new InvalidArgumentError(
      `agent address ${JSON.stringify(address)} is neither vsock://<cid>:<port> nor an absolute unix socket path`,
    );
  return { transport: 'unix', path };
}

export function describeEndpoint(endpoint: AgentEndpoint): string {
  return endpoint.transport === 'vsock' ? `vsock://${endpoint.cid}:${endpoint.port}` : endpoint.path;
}

/**
 * Failures that mean the agent is not there yet, so dial tries again:
 * - unix (serial port socket, test socket): the socket file is not there yet (ENOENT), nothing accepts (ECONNREFUSED, EAGAIN);
 * - vsock: the guest's vsock driver is up but nothing listens on the port yet (ECONNRESET: the guest answered
 *   with a reset), the guest's driver is not up yet so nothing answers (ETIMEDOUT, from the kernel or from our own
 *   per-attempt timeout), or the attempt was aborted (the loop then reports why). ENODEV (no transport reaches
 *   the CID: vhost_vsock not loaded, or no VM holds that CID) is not retried.
 */
const RETRYABLE = {
  unix: new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']),
  vsock: new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EAGAIN', 'EINTR', 'ABORT_ERR']),
};

export function isNotYet(endpoint: AgentEndpoint, err: unknown): boolean {
  if (endpoint.transport === 'vsock') return err instanceof VsockError ? RETRYABLE.vsock.has(err.code) : false;
  return RETRYABLE.unix.has((err as NodeJS.ErrnoException).code ?? '');
}

/** One connection attempt, as a ttrpc client. */
export async function connectOnce(
  endpoint: AgentEndpoint,
  options: { timeoutMs: number; signal?: AbortSignal; vsockConnector?: VsockConnector },
): Promise<Client> {
  if (endpoint.transport === 'vsock') {
    const { timeoutMs, signal } = options;
    const address = { cid: endpoint.cid, port: endpoint.port };
    const stream = options.vsockConnector
      ? await options.vsockConnector(address, signal ? { timeoutMs, signal } : { timeoutMs })
      : await connectVsock({ ...address, timeoutMs, ...(signal ? { signal } : {}) });
    return new Client(stream);
  }
  return Client.connect(endpoint.path, { connectTimeoutMs: options.timeoutMs });
}
