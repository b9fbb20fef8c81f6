/** The few system operations Node cannot do itself, run through busybox with argv arrays (never a shell string). */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { Code, StatusError } from 'ttrpc-ts';

export const BUSYBOX = '/bin/busybox';

export function run(applet: string, args: readonly string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(BUSYBOX, [applet, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err)
        reject(
          new StatusError(Code.INTERNAL, `${applet} ${args.join(' ')}: ${stderr.trim() || err.message}`, {
            cause: err,
          }),
        );
      else resolve(stdout);
    });
  });
}

export async function mount(
  fstype: string,
  source: string,
  target: string,
  options: readonly string[] = [],
): Promise<void> {
  fs.mkdirSync(target, { recursive: true });
  await run('mount', ['-t', fstype, ...(options.length ? ['-o', options.join(',')] : []), source, target]);
}

/** Detaches the mount (lazy), and succeeds if nothing is mounted there. */
export async function unmount(target: string): Promise<void> {
  if (!isMountPoint(target)) return;
  await run('umount', ['-l', target]);
}

/** Mount points from /proc/self/mountinfo (field 5), with octal escapes decoded. */
export function mountPoints(): Set<string> {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return new Set();
  }
  const points = new Set<string>();
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return points;
}

export const isMountPoint = (target: string): boolean => mountPoints().has(target);

/** Set by the initramfs's /init (guest/initramfs.ts INIT_UPTIME_ENV): the guest's uptime when user space began. */
export const INIT_UPTIME_ENV = 'HULL_INIT_UPTIME';

/**
 * The guest's uptime in ms when the initramfs's /init started, from its environment variable (/proc/uptime's first
 * field: seconds with two decimals); NaN when absent or malformed.
 */
export function initStartedMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[INIT_UPTIME_ENV];
  if (v === undefined || !/^\d{1,9}\.\d{2}$/.test(v)) return NaN;
  return Math.round(parseFloat(v) * 1000);
}

/** This process's resident and proportional set size in KiB, both from smaps_rollup (NaN where /proc does not say). */
export function selfMemoryKiB(): { rssKiB: number; pssKiB: number } {
  try {
    const rollup = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
    return { rssKiB: kib('Rss'), pssKiB: kib('Pss') };
  } catch {
    return { rssKiB: Math.round(process.memoryUsage.rss() / 1024), pssKiB: NaN };
  }
}

/** Milliseconds since the guest kernel started (CLOCK_BOOTTIME as /proc/uptime shows it). */
export function uptimeMs(): number {
  try {
    return Math.round(parseFloat(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]!) * 1000);
  } catch {
    return NaN;
  }
}

/** The kernel command line as key=value pairs (bare words map to ''). */
export function kernelParams(): Map<string, string> {
  const params = new Map<string, string>();
  let text: string;
  try {
    text = fs.readFileSync('/proc/cmdline', 'utf8');
  } catch {
    return params;
  }
  for (const word of text.trim().split(/\s+/)) {
    const eq = word.indexOf('=');
    if (eq < 0) params.set(word, '');
    else params.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return params;
}

/** The agent channels the host chose: `hull.agent=serial`, `vsock` or `serial,vsock` (default serial). */
export function agentChannels(): string[] {
  return (kernelParams().get('hull.agent') ?? 'serial').split(',');
}
