/**
 * The agent channel over vsock: a listener on Kata's port 1024, every CID, handing each connection from the host
 * to the ttrpc server. Only the host (peer CID 2) may talk to the agent: with the vsock_loopback transport loaded,
 * a process in the guest (a container) could otherwise connect to CID 1 and drive the agent, so any other peer is
 * closed at once and logged.
 */
import type { Duplex } from 'node:stream';
import { VMADDR_CID_HOST, VsockError, VsockServer } from 'hull-vsock';
import { log } from './log';

/** Kata's agent port; the host dials it (AGENT_VSOCK_PORT in hypervisor/types.ts). */
export const AGENT_VSOCK_PORT = 1024;
/** After a failed accept (EMFILE and the like), wait this long before the next one. */
const ACCEPT_BACKOFF_MS = 100;

export class VsockListener {
  private constructor(private readonly server: VsockServer) {}

  /** Listens (throws a VsockError such as EAFNOSUPPORT or EADDRINUSE) and serves until stop(). */
  static start(port: number, onConnection: (stream: Duplex) => void): VsockListener {
    const listener = new VsockListener(VsockServer.listen({ port }));
    void listener.acceptLoop(onConnection);
    return listener;
  }

  stop(): void {
    this.server.close();
  }

  private async acceptLoop(onConnection: (stream: Duplex) => void): Promise<void> {
    while (!this.server.closed) {
      try {
        const socket = await this.server.accept();
        const peer = socket.remoteAddress;
        if (peer?.cid !== VMADDR_CID_HOST) {
          log.warn('refused a vsock connection that does not come from the host', {
            peer: peer ? `${peer.cid}:${peer.port}` : 'unknown',
          });
          socket.destroy();
          continue;
        }
        onConnection(socket);
      } catch (err) {
        if (err instanceof VsockError && err.code === 'ERR_SERVER_CLOSED') return;
        log.warn('vsock accept failed', { error: (err as Error).message });
        await new Promise((r) => setTimeout(r, ACCEPT_BACKOFF_MS));
      }
    }
  }
}
