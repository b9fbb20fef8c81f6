/**
 * The metrics tests' and bench's helpers: hull-monitor (bin/hull-monitor of this checkout) on a free loopback
 * port, and a real Prometheus (Debian's) scraping it, with its own config, a loopback listen address on a free
 * port and temporary storage; each is stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { REPO } from './containerd';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function httpGetText(url: string, timeoutMs = 30_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const gone = new Promise((r) => child.once('exit', r));
  process.kill(child.pid, 'SIGTERM');
  const t = setTimeout(() => child.pid && process.kill(child.pid, 'SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}

async function waitHttp(url: string, child: ChildProcess, what: string, log: () => string): Promise<void> {
  const until = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}): ${log().slice(-2000)}`);
    try {
      await httpGetText(url, 2_000);
      return;
    } catch {
      if (Date.now() > until) throw new Error(`${what} did not answer at ${url}: ${log().slice(-2000)}`);
      await sleep(200);
    }
  }
}

export interface RunningMonitor {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startHullMonitor(o: { stateDir: string; criSocket: string }): Promise<RunningMonitor> {
  const port = await freeLoopbackPort();
  let log = '';
  // spawns: node; hull-monitor is a node script of this checkout
  const child = spawn(
    process.execPath,
    [
      path.join(REPO, 'bin', 'hull-monitor'),
      '--listen',
      `127.0.0.1:${port}`,
      '--state-dir',
      o.stateDir,
      '--cri-socket',
      o.criSocket,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (c: Buffer) => (log += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (log += c.toString()));
  const url = `http://127.0.0.1:${port}/metrics`;
  try {
    await waitHttp(url, child, 'hull-monitor', () => log);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { url, port, stop: () => stopChild(child) };
}

export interface RunningPrometheus {
  url: string;
  /** An instant query: the result vector. */
  query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  stop(): Promise<void>;
}

export async function startPrometheus(o: {
  dir: string;
  target: string;
  intervalS?: number;
}): Promise<RunningPrometheus> {
  const port = await freeLoopbackPort();
  fs.mkdirSync(path.join(o.dir, 'data'), { recursive: true });
  const interval = `${o.intervalS ?? 2}s`;
  const config = path.join(o.dir, 'prometheus.yml');
  fs.writeFileSync(
    config,
    [
      'global:',
      `  scrape_interval: ${interval}`,
      `  scrape_timeout: ${interval}`,
      'scrape_configs:',
      '  - job_name: hull',
      '    static_configs:',
      `      - targets: ["${o.target}"]`,
      '',
    ].join('\n'),
  );
  let log = '';
  const child = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(o.dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1h',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-20_000)));
  child.stderr?.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-20_000)));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/-/ready`, child, 'prometheus', () => log);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return {
    url,
    async query(promql) {
      const r = await httpGetText(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = JSON.parse(r.body) as {
        status: string;
        error?: string;
        data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      if (body.status !== 'success') throw new Error(`query ${promql}: ${body.error ?? r.body}`);
      return body.data?.result ?? [];
    },
    stop: () => stopChild(child),
  };
}
