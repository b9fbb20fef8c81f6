/**
 * Kubernetes port forwarding into a pod's VM. containerd dials localhost:<port> in the pod's network namespace;
 * hypervisor/network's LocalhostRedirect catches that connection, and this relays it to the same port on the
 * guest's loopback through the agent (hull.agent.v1.PortForward): one OpenConnection, then ReadConnection long
 * polls one way and WriteConnection calls the other, in order, each waiting for the other side to take the bytes
 * (backpressure both ways). A port nothing listens on in the guest resets the client's connection, which
 * containerd reports to the kubelet as a failed forward, as for a runc pod whose port is closed.
 */
import type net from 'node:net';
import { errorMessage } from '../errors';
import type { PortForwardAgentClient } from '../agent-client';
import type { Logger } from '../log';

/** Relayed connections at once per pod; more are reset. */
export const MAX_RELAYS = 128;

export class PortForwardRelays {
  private readonly sockets = new Set<net.Socket>();
  private closed = false;

  constructor(
    private readonly agent: PortForwardAgentClient,
    private readonly logger: Logger,
  ) {}

  get size(): number {
    return this.sockets.size;
  }

  /** Relays `socket` to `port` on the guest's loopback until either side ends; never throws. */
  relay(socket: net.Socket, port: number): void {
    if (this.closed || this.sockets.size >= MAX_RELAYS) {
      if (!this.closed)
        this.logger.warn(
          { port, relays: this.sockets.size },
          `port forwarding: over ${MAX_RELAYS} connections at once, one refused`,
        );
      socket.resetAndDestroy();
      return;
    }
    this.sockets.add(socket);
    // A client gone mid-write (EPIPE, ECONNRESET) only ends this relay: 'close' follows and closes the guest's side.
    socket.on('error', () => socket.destroy());
    socket.once('close', () => this.sockets.delete(socket));
    void this.run(socket, port);
  }

  /** Ends every relayed connection (the sandbox goes away). */
  closeAll(): void {
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  private async run(socket: net.Socket, port: number): Promise<void> {
    const agent = this.agent;
    let id: number;
    try {
      ({ id } = await agent.openConnection(port));
    } catch (err) {
      this.logger.info({ port, error: errorMessage(err) }, 'port forwarding: no connection to the port in the guest');
      socket.resetAndDestroy();
      return;
    }
    if (socket.destroyed) {
      await agent.closeConnection(id).catch(() => undefined);
      return;
    }
    let closedInGuest = false;
    const closeInGuest = (): void => {
      if (closedInGuest) return;
      closedInGuest = true;
      agent.closeConnection(id).catch(() => undefined);
    };
    socket.once('close', closeInGuest);

    // Either direction failing ends both at once: the client's connection goes, and closing the guest's side ends
    // a ReadConnection still waiting (the agent answers it with end of file).
    const broken = (err: unknown): void => {
      if (!socket.destroyed) {
        this.logger.info({ port, error: errorMessage(err) }, 'port forwarding: connection broken');
        socket.destroy();
      }
      closeInGuest();
    };

    // Guest to client: until the guest's side ends, then end ours.
    const fromGuest = (async () => {
      for (;;) {
        const data = await agent.readConnection(id);
        if (data.length === 0) {
          socket.end();
          return;
        }
        if (socket.destroyed) return;
        if (!socket.write(data)) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              socket.off('drain', done);
              socket.off('close', done);
              resolve();
            };
            socket.on('drain', done);
            socket.on('close', done);
          });
        }
      }
    })().catch(broken);
    // Client to guest: in order, each write taken before the next is read; the client's end of file is passed on.
    const toGuest = (async () => {
      // Not `for await (… of socket)`: that destroys the socket at the client's end of file, answer unsent.
      for await (const chunk of socket.iterator({ destroyOnReturn: false }))
        await agent.writeConnection(id, chunk as Buffer);
      if (!socket.destroyed) await agent.endConnection(id);
    })().catch(broken);

    await Promise.all([fromGuest, toGuest]);
    if (socket.destroyed || socket.writableFinished) closeInGuest();
    else socket.once('finish', closeInGuest);
  }
}
