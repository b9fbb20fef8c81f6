/** What container tests and benchmarks share: a busybox root filesystem on the host, and reading a process's output. */
import fs from 'node:fs';
import path from 'node:path';
import type { AgentClient } from '../../agent-client';

/** A minimal root filesystem: Debian's static busybox and links for the given applets. */
export function busyboxRootfs(dir: string, applets: readonly string[]): string {
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(dir, 'bin', 'busybox'));
  fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  for (const a of applets) fs.symlinkSync('busybox', path.join(dir, 'bin', a));
  return dir;
}

/** Reads a stream of a process until its end, handing each chunk to `sink`. */
export async function drainStream(read: () => Promise<Buffer>, sink: (chunk: Buffer) => void): Promise<void> {
  for (;;) {
    const chunk = await read();
    if (chunk.length === 0) return;
    sink(chunk);
  }
}

/** Everything a process wrote to stdout and stderr, read until end of stream, then its exit code. */
export async function collectOutput(
  agent: AgentClient,
  cid: string,
  execId = '',
): Promise<{ stdout: string; stderr: string; code: number }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const [, , code] = await Promise.all([
    drainStream(
      () => agent.readStdout(cid, execId),
      (c) => out.push(c),
    ),
    drainStream(
      () => agent.readStderr(cid, execId),
      (c) => err.push(c),
    ),
    agent.waitProcess(cid, execId),
  ]);
  return { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code };
}
