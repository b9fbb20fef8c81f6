/**
 * OnlineCPUMem: onlines the CPUs and memory blocks the host hot-plugged (Hypervisor.resize). The guest kernel adds
 * a hot-plugged CPU offline (no udev here to online it) and, without `memhp_default_state=online` on the command
 * line, a hot-plugged memory block offline too. Every offline CPU (/sys/devices/system/cpu/cpuN/online: 0 -> 1) and
 * every offline memory block (/sys/devices/system/memory/memoryN/state: offline -> online) is onlined. With `wait`,
 * the CPUs are polled for (a CPU appears a little after QEMU's device_add returns, once the kernel has handled the
 * ACPI event) until `nbCpus` have been onlined by this call, at most ONLINE_WAIT_MS.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';

/** How long a `wait` request polls for hot-added CPUs (generous: a TCG guest handles the ACPI event slowly). */
export const ONLINE_WAIT_MS = 30_000;
export const ONLINE_POLL_MS = 50;
/** The most CPUs one request may ask for, and the most sysfs entries read per pass. */
export const MAX_NB_CPUS = 1024;
const MAX_ENTRIES = 65_536;

export interface OnlineRequest {
  wait?: boolean | null;
  nbCpus?: number | null;
  cpuOnly?: boolean | null;
}

export interface OnlineOptions {
  /** The sysfs root: /sys in the guest, a fake tree in tests. */
  sysRoot?: string;
  waitMs?: number;
  pollMs?: number;
  /** Writes a sysfs file (tests make one fail); default fs.writeFileSync. */
  writeFile?: (file: string, data: string) => void;
}

export interface OnlineResult {
  cpus: number;
  memoryBlocks: number;
}

type Writer = (file: string, data: string) => void;
const defaultWrite: Writer = (file, data) => fs.writeFileSync(file, data);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Checks the host's request (it is trusted here, its values are still checked). */
export function checkOnlineRequest(req: OnlineRequest): { wait: boolean; nbCpus: number; cpuOnly: boolean } {
  const nbCpus = req.nbCpus ?? 0;
  if (!Number.isInteger(nbCpus) || nbCpus < 0 || nbCpus > MAX_NB_CPUS)
    throw new StatusError(Code.INVALID_ARGUMENT, `nb_cpus ${nbCpus} must be an integer in [0, ${MAX_NB_CPUS}]`);
  return { wait: req.wait === true, nbCpus, cpuOnly: req.cpuOnly === true };
}

/** Entries of `dir` named <prefix><number>, numerically sorted (at most MAX_ENTRIES). */
function numbered(dir: string, prefix: string): string[] {
  const re = new RegExp(`^${prefix}(\\d{1,6})$`);
  const names = fs.readdirSync(dir).filter((n) => re.test(n));
  if (names.length > MAX_ENTRIES) throw new StatusError(Code.INTERNAL, `${dir}: more than ${MAX_ENTRIES} entries`);
  return names.sort((a, b) => Number(a.slice(prefix.length)) - Number(b.slice(prefix.length)));
}

function readSmall(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').slice(0, 64).trim();
  } catch {
    return undefined; // gone, or not there (cpu0 has no `online`)
  }
}

/** One pass over the CPUs: onlines each offline one. Returns how many it onlined; failures are collected. */
export function onlineCpusOnce(sysRoot: string, failures: string[], write: Writer = defaultWrite): number {
  const dir = path.join(sysRoot, 'devices/system/cpu');
  let n = 0;
  for (const name of numbered(dir, 'cpu')) {
    const file = path.join(dir, name, 'online');
    if (readSmall(file) !== '0') continue;
    try {
      write(file, '1');
      n++;
    } catch (err) {
      // Someone else (the kernel) onlined it meanwhile: done, not a failure.
      if (readSmall(file) === '1') n++;
      else failures.push(`${name}: ${(err as Error).message}`);
    }
  }
  return n;
}

/** One pass over the memory blocks: onlines each offline one. */
export function onlineMemoryOnce(sysRoot: string, failures: string[], write: Writer = defaultWrite): number {
  const dir = path.join(sysRoot, 'devices/system/memory');
  if (!fs.existsSync(dir)) return 0; // a kernel without memory hot-plug
  let n = 0;
  for (const name of numbered(dir, 'memory')) {
    const file = path.join(dir, name, 'state');
    if (readSmall(file) !== 'offline') continue;
    try {
      write(file, 'online');
      n++;
    } catch (err) {
      // With memhp_default_state=online the guest kernel onlines a new block itself, and a write racing it fails
      // (EINVAL): a block that reads online now is done, not a failure.
      if (readSmall(file)?.startsWith('online')) n++;
      else failures.push(`${name}: ${(err as Error).message}`);
    }
  }
  return n;
}

export async function onlineCpuMem(req: OnlineRequest, opts: OnlineOptions = {}): Promise<OnlineResult> {
  const { wait, nbCpus, cpuOnly } = checkOnlineRequest(req);
  const sysRoot = opts.sysRoot ?? '/sys';
  const deadline = Date.now() + (opts.waitMs ?? ONLINE_WAIT_MS);
  const failures: string[] = [];
  const write = opts.writeFile ?? defaultWrite;
  let cpus = onlineCpusOnce(sysRoot, failures, write);
  while (wait && cpus < nbCpus && failures.length === 0 && Date.now() < deadline) {
    await sleep(opts.pollMs ?? ONLINE_POLL_MS);
    cpus += onlineCpusOnce(sysRoot, failures, write);
  }
  const memoryBlocks = cpuOnly ? 0 : onlineMemoryOnce(sysRoot, failures, write);
  if (failures.length > 0)
    throw new StatusError(Code.INTERNAL, `onlining failed: ${failures.slice(0, 4).join('; ')}`.slice(0, 1024));
  if (wait && cpus < nbCpus)
    throw new StatusError(Code.DEADLINE_EXCEEDED, `onlined ${cpus} of ${nbCpus} hot-added CPUs in time`);
  return { cpus, memoryBlocks };
}
