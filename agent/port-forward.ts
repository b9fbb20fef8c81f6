/**
 * hull.agent.v1.PortForward: TCP connections to ports on the guest's loopback, relayed over the agent channel. The
 * guest's network namespace is the pod's, so 127.0.0.1:<port> here is what Kubernetes port forwarding reaches
 * (containerd dials localhost in the pod's namespace; hull's host side catches that and relays it here).
 *
 * Each connection's output is buffered up to a cap (then the socket is paused: backpressure to the guest's
 * server) and read with long polls; writes answer once the bytes are handed to the kernel. The number of open
 * connections is capped; the host closes what it opened (and DestroySandbox closes the rest).
 */
import net from 'node:net';
import { Code, StatusError } from 'ttrpc-ts';
import { OutputBuffer, READ_LIMIT, WRITE_LIMIT } from './process';

/** Open connections at once, per guest. */
export const MAX_CONNECTIONS = 256;
/** A loopback connect answers at once (accepted or refused); this bounds one to a listener whose backlog is full. */
const CONNECT_TIMEOUT_MS = 10_000;

interface Connection {
  socket: net.Socket;
  output: OutputBuffer;
}

export interface OpenedConnection {
  connectionId: number;
  address: string;
}

function connectTo(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(
      () => socket.destroy(Object.assign(new Error(`connect ${host}:${port} timed out`), { code: 'ETIMEDOUT' })),
      CONNECT_TIMEOUT_MS,
    );
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const errorCode = (err: unknown): string => String((err as NodeJS.ErrnoException).code ?? (err as Error).message);

export class LoopbackConnections {
  private readonly connections = new Map<number, Connection>();
  private lastId = 0;
  /** Connects being made: they count against the cap too. */
  private pending = 0;

  get size(): number {
    return this.connections.size;
  }

  /** Connects to 127.0.0.1:port, else [::1]:port (containerd's order for runc pods). */
  async open(req: { port?: number | null }): Promise<OpenedConnection> {
    const port = Number(req.port ?? 0);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new StatusError(Code.INVALID_ARGUMENT, `port ${req.port} is not a TCP port (1-65535)`);
    if (this.connections.size + this.pending >= MAX_CONNECTIONS) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `${MAX_CONNECTIONS} forwarded connections are open in the guest already`,
      );
    }
    this.pending++;
    let socket: net.Socket;
    let address = '127.0.0.1';
    try {
      try {
        socket = await connectTo(address, port);
      } catch (err4) {
        address = '::1';
        socket = await connectTo(address, port).catch((err6: unknown) => {
          throw new StatusError(
            Code.UNAVAILABLE,
            `nothing accepts connections on port ${port} in the pod: 127.0.0.1: ${errorCode(err4)}, [::1]: ${errorCode(err6)}`,
          );
        });
      }
    } finally {
      this.pending--;
    }
    const connectionId = this.nextId();
    // Errors end the output (OutputBuffer listens); the host sees end of file and closes.
    this.connections.set(connectionId, { socket, output: new OutputBuffer(socket) });
    return { connectionId, address };
  }

  /** Up to maxBytes of what the guest's side sent, waiting for some; eof once it ended and all was read. */
  async read(req: { connectionId?: number | null; maxBytes?: number | null }): Promise<{ data: Buffer; eof: boolean }> {
    const c = this.get(req.connectionId);
    const data = await c.output.read(Math.min(req.maxBytes || READ_LIMIT, READ_LIMIT));
    return { data, eof: data.length === 0 };
  }

  /** Answers once the bytes are with the kernel (so a slow guest server slows the host's writer down). */
  async write(req: { connectionId?: number | null; data?: Uint8Array | null }): Promise<void> {
    const c = this.get(req.connectionId);
    const data = req.data ?? new Uint8Array(0);
    if (data.length > WRITE_LIMIT)
      throw new StatusError(Code.INVALID_ARGUMENT, `write of ${data.length} bytes is over the limit of ${WRITE_LIMIT}`);
    if (data.length === 0) return;
    if (c.socket.destroyed || c.socket.writableEnded)
      throw new StatusError(Code.FAILED_PRECONDITION, `connection ${req.connectionId} is closed for writing`);
    await new Promise<void>((resolve, reject) => {
      c.socket.write(data, (err) =>
        err
          ? reject(new StatusError(Code.UNAVAILABLE, `connection ${req.connectionId}: ${errorCode(err)}`))
          : resolve(),
      );
    });
  }

  /** writeOnly: end the sending side (the guest's server reads end of file); else close the connection and forget it. */
  close(req: { connectionId?: number | null; writeOnly?: boolean | null }): void {
    const c = this.get(req.connectionId);
    if (req.writeOnly) {
      c.socket.end();
      return;
    }
    this.connections.delete(Number(req.connectionId));
    c.output.close();
  }

  closeAll(): void {
    for (const c of this.connections.values()) c.output.close();
    this.connections.clear();
  }

  private get(id: number | null | undefined): Connection {
    const c = this.connections.get(Number(id ?? 0));
    if (!c) throw new StatusError(Code.NOT_FOUND, `no forwarded connection ${id}`);
    return c;
  }

  private nextId(): number {
    do this.lastId = this.lastId >= 0xffffffff ? 1 : this.lastId + 1;
    while (this.connections.has(this.lastId));
    return this.lastId;
  }
}
