/**
 * hull-monitor: the node's one Prometheus endpoint for hull (Kata's kata-monitor role). Listens on one TCP port;
 * each GET /metrics scrapes every live shim of the node (monitor.ts) and answers the union.
 *
 *   hull-monitor [--listen 127.0.0.1:8090] [--state-dir /run/hull] [--cri-socket /run/containerd/containerd.sock]
 *                [--scrape-timeout 5] [--max-bytes 4194304]
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_MS, HullMonitor } from './monitor';
import { CriPods } from './pods';

export interface MonitorFlags {
  host: string;
  port: number;
  stateDir: string;
  criSocket: string;
  timeoutMs: number;
  maxBytes: number;
}

export function parseFlags(argv: string[]): MonitorFlags {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string', default: '127.0.0.1:8090' },
      'state-dir': { type: 'string', default: '/run/hull' },
      'cri-socket': { type: 'string', default: '/run/containerd/containerd.sock' },
      'scrape-timeout': { type: 'string', default: String(DEFAULT_TIMEOUT_MS / 1000) },
      'max-bytes': { type: 'string', default: String(DEFAULT_MAX_BYTES) },
    },
    strict: true,
  });
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]*)):(\d{1,5})$/.exec(values.listen);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`--listen ${values.listen}: expected host:port`);
  const timeoutMs = Number(values['scrape-timeout']) * 1000;
  const maxBytes = Number(values['max-bytes']);
  if (!(timeoutMs > 0 && timeoutMs <= 120_000)) throw new Error('--scrape-timeout: seconds, above 0, at most 120');
  if (!(Number.isInteger(maxBytes) && maxBytes > 0)) throw new Error('--max-bytes: a positive integer');
  return {
    host: m[1] ?? (m[2] || '0.0.0.0'),
    port,
    stateDir: values['state-dir'],
    criSocket: values['cri-socket'],
    timeoutMs,
    maxBytes,
  };
}

export async function serve(flags: MonitorFlags): Promise<{ server: http.Server; close(): Promise<void> }> {
  const pods = flags.criSocket ? new CriPods(flags.criSocket) : undefined;
  const monitor = new HullMonitor({
    stateDir: flags.stateDir,
    ...(pods ? { pods: pods.list } : {}),
    timeoutMs: flags.timeoutMs,
    maxBytes: flags.maxBytes,
  });
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('hull-monitor: GET /metrics\n');
      return;
    }
    monitor.scrape().then(
      (text) => res.writeHead(200, { 'content-type': monitor.registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(flags.port, flags.host, () => resolve());
  });
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        pods?.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export async function main(argv = process.argv.slice(2)): Promise<void> {
  let flags: MonitorFlags;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    process.stderr.write(`hull-monitor: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const served = await serve(flags);
  const addr = served.server.address();
  process.stderr.write(
    `hull-monitor: serving /metrics on ${typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr)}, shims under ${flags.stateDir}\n`,
  );
  const stop = (): void => void served.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (require.main === module) void main();
