/**
 * The guest's boot figures and the agent's footprint from GuestInfo, validated: the guest is untrusted, and these
 * figures feed benchmarks, spans and metrics. Each uptime must be a finite number of ms in (0, MAX_UPTIME_MS], and the
 * boot's points must come in order (user space, node, the agent's code, serving, the reply): a point before an
 * earlier valid one is dropped. What is dropped or unknown is NaN.
 */

/** About 31 years: past it an uptime is not believable. */
export const MAX_UPTIME_MS = 1e12;

/** Guest uptimes in ms (CLOCK_BOOTTIME: 0 is the kernel's start); NaN when unknown or invalid. */
export interface GuestBootPoints {
  /** The initramfs's /init started (the first user-space program). */
  initStartedMs: number;
  /** The agent's process (node) started. */
  agentStartedMs: number;
  /** The agent's main code ran (node's bootstrap and the bundle's loading are done). */
  agentMainMs: number;
  /** The agent began serving. */
  agentReadyMs: number;
  /** When the guest made the reply. */
  uptimeMs: number;
}

export interface GuestBootInput {
  initStartedMs?: number | null;
  agentStartedMs?: number | null;
  agentMainMs?: number | null;
  agentReadyMs?: number | null;
  uptimeMs?: number | null;
}

const ORDER: (keyof GuestBootPoints)[] = ['initStartedMs', 'agentStartedMs', 'agentMainMs', 'agentReadyMs', 'uptimeMs'];

function uptime(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= MAX_UPTIME_MS ? v : NaN;
}

export function parseGuestBoot(info: GuestBootInput): GuestBootPoints {
  const out = {} as GuestBootPoints;
  let last = 0;
  for (const key of ORDER) {
    const v = uptime(info[key]);
    if (Number.isNaN(v) || v < last) {
      out[key] = NaN;
      continue;
    }
    out[key] = v;
    last = v;
  }
  return out;
}

/** A memory figure in KiB from the guest: a positive integer below 2^32, else NaN. */
export function guestKiB(v: unknown): number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 2 ** 32 ? v : NaN;
}
