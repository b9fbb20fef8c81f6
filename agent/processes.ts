/**
 * ListProcesses: the processes of a container are those in its cgroup (cgroup.procs of its folder and of any
 * folder below it), as guest pids. Kata's format "json" is the JSON array of those pids (what containerd's Pids
 * needs); "table" is a `ps`-like table built from /proc (UID PID PPID STAT TIME CMD) rather than by running `ps`
 * with arguments from the host, so the only arguments accepted are none or Kata's default `-ef`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { invalid } from './validate';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;
const MAX_DEPTH = 16;
const MAX_CMD = 4096;

export type ProcessListFormat = 'json' | 'table';

export function listFormat(
  format: string | null | undefined,
  args: readonly string[] | null | undefined,
): ProcessListFormat {
  if (format !== 'json' && format !== 'table')
    throw invalid(`process list format ${JSON.stringify(format ?? '')} is not "json" or "table"`);
  const list = args ?? [];
  if (list.length > 0 && !(list.length === 1 && list[0] === '-ef'))
    throw invalid('ps arguments are not supported: the table has fixed columns');
  return format;
}

/** The pids in cgroup folder `dir` and the folders below it, sorted. */
export function cgroupPids(dir: string): number[] {
  const pids = new Set<number>();
  const walk = (d: string, depth: number): void => {
    for (const line of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n'))
      if (/^\d+$/.test(line)) pids.add(Number(line));
    if (depth >= MAX_DEPTH) return;
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      try {
        walk(path.join(d, entry.name), depth + 1);
      } catch {
        // removed meanwhile
      }
    }
  };
  walk(dir, 0);
  return [...pids].sort((a, b) => a - b);
}

export interface ProcessRow {
  uid: number;
  pid: number;
  ppid: number;
  state: string;
  cpuTicks: number;
  cmd: string;
}

/** /proc/<pid>/stat: the command name is in parentheses and may itself contain ")" or spaces. */
export function parseStat(text: string): { comm: string; state: string; ppid: number; cpuTicks: number } {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const fields = text.slice(close + 2).split(' ');
  return {
    comm: text.slice(open + 1, close),
    state: fields[0] ?? '?',
    ppid: Number(fields[1] ?? 0),
    cpuTicks: Number(fields[11] ?? 0) + Number(fields[12] ?? 0),
  };
}

/** One process as a table row; undefined if it has gone. */
export function readProcess(pid: number, procRoot = '/proc'): ProcessRow | undefined {
  try {
    const stat = parseStat(fs.readFileSync(`${procRoot}/${pid}/stat`, 'utf8'));
    const uid = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`${procRoot}/${pid}/status`, 'utf8'));
    const argv = fs.readFileSync(`${procRoot}/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').split('\0').join(' ');
    return {
      uid: Number(uid?.[1] ?? 0),
      pid,
      ppid: stat.ppid,
      state: stat.state,
      cpuTicks: stat.cpuTicks,
      cmd: (argv || `[${stat.comm}]`).slice(0, MAX_CMD),
    };
  } catch {
    return undefined;
  }
}

function cpuTime(ticks: number): string {
  const s = Math.floor(ticks / CLOCK_TICKS);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(Math.floor(s / 3600))}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`;
}

export function formatTable(rows: readonly ProcessRow[]): string {
  const lines = [
    ['UID', 'PID', 'PPID', 'STAT', 'TIME', 'CMD'],
    ...rows.map((r) => [String(r.uid), String(r.pid), String(r.ppid), r.state, cpuTime(r.cpuTicks), r.cmd]),
  ];
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((cell, i) => (i < 5 ? cell.padStart(widths[i]!) : cell)).join('  ')).join('\n') + '\n';
}

/** The process list of Kata's ListProcesses, as bytes. */
export function processList(pids: readonly number[], format: ProcessListFormat, procRoot = '/proc'): Buffer {
  if (format === 'json') return Buffer.from(JSON.stringify(pids));
  return Buffer.from(
    formatTable(pids.map((p) => readProcess(p, procRoot)).filter((r): r is ProcessRow => r !== undefined)),
  );
}
