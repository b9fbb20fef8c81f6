/**
 * The shims of this node: every `<state_dir>/<namespace>/<sandbox id>/metrics.sock` (shim/metrics-server.ts), and
 * one scrape of such a socket (HTTP GET /metrics) bounded in time and in bytes.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { isIdentifier } from '../protos/identifiers';

/** The socket's name in a sandbox's state folder (shim/metrics-server.ts METRICS_SOCKET). */
export const METRICS_SOCKET = 'metrics.sock';
/** At most this many sandboxes are looked at per scrape. */
export const MAX_SHIMS = 1024;

export interface ShimSocket {
  namespace: string;
  sandboxId: string;
  path: string;
}

/** Every metrics socket below `stateDir` (namespace and sandbox folders whose names are valid ids). */
export function findShimSockets(stateDir: string): ShimSocket[] {
  const out: ShimSocket[] = [];
  const dirs = (p: string): string[] => {
    try {
      return fs
        .readdirSync(p, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return [];
    }
  };
  for (const namespace of dirs(stateDir).filter(isIdentifier)) {
    for (const sandboxId of dirs(path.join(stateDir, namespace)).filter(isIdentifier)) {
      const p = path.join(stateDir, namespace, sandboxId, METRICS_SOCKET);
      try {
        if (!fs.lstatSync(p).isSocket()) continue;
      } catch {
        continue;
      }
      out.push({ namespace, sandboxId, path: p });
      if (out.length >= MAX_SHIMS) return out;
    }
  }
  return out;
}

export type ScrapeFailure = 'refused' | 'timeout' | 'too_large' | 'http_status' | 'error';

export class ScrapeError extends Error {
  constructor(
    readonly reason: ScrapeFailure,
    message: string,
  ) {
    super(message);
    this.name = 'ScrapeError';
  }
}

/** GET /metrics on a shim's socket: its text, or a ScrapeError (dead shim, deadline, more than maxBytes, non-200). */
export function scrapeShim(socketPath: string, o: { timeoutMs: number; maxBytes: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: ScrapeError | undefined, text?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      if (err) reject(err);
      else resolve(text!);
    };
    const timer = setTimeout(
      () => finish(new ScrapeError('timeout', `no answer within ${o.timeoutMs} ms`)),
      o.timeoutMs,
    );
    const req = http.get({ socketPath, path: '/metrics', agent: false }, (res) => {
      if (res.statusCode !== 200) return finish(new ScrapeError('http_status', `HTTP ${res.statusCode}`));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > o.maxBytes) return finish(new ScrapeError('too_large', `more than ${o.maxBytes} bytes`));
        chunks.push(c);
      });
      res.on('end', () => finish(undefined, Buffer.concat(chunks).toString('utf8')));
      res.on('error', (e) => finish(new ScrapeError('error', e.message)));
    });
    req.on('error', (e: NodeJS.ErrnoException) =>
      finish(
        new ScrapeError(
          e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'refused' : 'error',
          `${e.code ?? ''} ${e.message}`.trim(),
        ),
      ),
    );
  });
}
