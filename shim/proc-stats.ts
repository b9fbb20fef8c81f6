/**
 * A process's figures from /proc, read when the metrics are scraped: RSS and PSS, CPU time, threads, open fds and
 * block I/O. A process and the children it forked are summed (virtiofsd runs its work in a forked child). A
 * figure the kernel does not give (gone, no permission) is left out.
 */
import fs from 'node:fs';

export interface ProcFigures {
  rssBytes?: number;
  pssBytes?: number;
  cpuUserSeconds?: number;
  cpuSystemSeconds?: number;
  threads?: number;
  openFds?: number;
  ioReadBytes?: number;
  ioWriteBytes?: number;
}

/** USER_HZ: 100 on every Linux architecture hull runs on. */
const CLOCK_TICKS = 100;
/** At most this many children of a process are followed (one level down). */
const MAX_CHILDREN = 16;

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return undefined;
  }
}

function kbField(text: string | undefined, key: string): number | undefined {
  const m = text && new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

function numField(text: string | undefined, key: string): number | undefined {
  const m = text && new RegExp(`^${key}:\\s+(\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * One process's figures (undefined when it is gone, or when `startTime`, its /proc/<pid>/stat field 22 when it was
 * spawned, differs: the pid was reused by another process).
 */
export function readProc(pid: number, proc = '/proc', startTime?: string): ProcFigures | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const stat = read(`${proc}/${pid}/stat`);
  if (stat === undefined) return undefined;
  // After the command's closing parenthesis: state is field 3, utime 14, stime 15, num_threads 20, starttime 22.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (startTime !== undefined && rest[22 - 3] !== startTime) return undefined;
  const field = (n: number): number | undefined => {
    const v = Number(rest[n - 3]);
    return Number.isFinite(v) ? v : undefined;
  };
  const utime = field(14);
  const stime = field(15);
  const status = read(`${proc}/${pid}/status`);
  const io = read(`${proc}/${pid}/io`);
  let openFds: number | undefined;
  try {
    openFds = fs.readdirSync(`${proc}/${pid}/fd`).length;
  } catch {
    openFds = undefined;
  }
  const out: ProcFigures = {
    rssBytes: kbField(status, 'VmRSS'),
    pssBytes: kbField(read(`${proc}/${pid}/smaps_rollup`), 'Pss'),
    cpuUserSeconds: utime === undefined ? undefined : utime / CLOCK_TICKS,
    cpuSystemSeconds: stime === undefined ? undefined : stime / CLOCK_TICKS,
    threads: field(20),
    openFds,
    ioReadBytes: numField(io, 'read_bytes'),
    ioWriteBytes: numField(io, 'write_bytes'),
  };
  for (const k of Object.keys(out) as (keyof ProcFigures)[]) if (out[k] === undefined) delete out[k];
  return out;
}

/** The pids of a process's direct children (the kernel's list for its main thread). */
export function childrenOf(pid: number, proc = '/proc'): number[] {
  const text = read(`${proc}/${pid}/task/${pid}/children`) ?? '';
  return text
    .trim()
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .slice(0, MAX_CHILDREN);
}

/** A process and its direct children, summed; undefined when the process is gone. */
export function readProcTree(pid: number, proc = '/proc', startTime?: string): ProcFigures | undefined {
  const own = readProc(pid, proc, startTime);
  if (!own) return undefined;
  for (const child of childrenOf(pid, proc)) {
    const c = readProc(child, proc);
    if (!c) continue;
    for (const k of Object.keys(c) as (keyof ProcFigures)[]) own[k] = (own[k] ?? 0) + c[k]!;
  }
  return own;
}
