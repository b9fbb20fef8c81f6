/**
 * The shim's metrics endpoint (Kata's shim-monitor model): HTTP on a unix socket in the sandbox's state folder,
 * `GET /metrics` answers Prometheus' text format, computed at that moment (ShimMetrics.render). Only root reaches it
 * (the socket is 0600). hull-monitor (monitor/) finds and scrapes these sockets.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { ShimMetrics } from './prometheus';

/** The socket's name in the sandbox's state folder (`<state_dir>/<namespace>/<sandbox id>/`). */
export const METRICS_SOCKET = 'metrics.sock';

export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    readonly path: string,
  ) {}

  static async listen(socketPath: string, metrics: ShimMetrics): Promise<MetricsServer> {
    fs.rmSync(socketPath, { force: true }); // a previous daemon's, dead (this shim owns the folder)
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      metrics.render().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (err: unknown) =>
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error)?.message ?? 'error'}\n`),
      );
    });
    server.requestTimeout = 10_000;
    server.headersTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    fs.chmodSync(socketPath, 0o600);
    server.unref(); // the daemon's life is the Task server's, not this one's
    return new MetricsServer(server, socketPath);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
    fs.rmSync(this.path, { force: true });
  }
}
