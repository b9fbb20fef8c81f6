/**
 * Per-method deadlines for agent calls. The long polls (WaitProcess, ReadStdout, ReadStderr, GetOOMEvent,
 * ReadConnection) and WriteConnection (which waits for a server in the guest to read) have none: they return when there is something to say. Defaults are generous because a guest under TCG emulation is
 * an order of magnitude slower than under KVM.
 */
export const NO_DEADLINE = 0;

export const DEFAULT_TIMEOUT_MS = 60_000;

export const AGENT_TIMEOUTS_MS: Readonly<Record<string, number>> = {
  WaitProcess: NO_DEADLINE,
  ReadStdout: NO_DEADLINE,
  ReadStderr: NO_DEADLINE,
  GetOOMEvent: NO_DEADLINE,
  ReadConnection: NO_DEADLINE,
  // The debug console's output (its WaitProcess shares Kata's name and entry).
  ReadOutput: NO_DEADLINE,
  WriteConnection: NO_DEADLINE,
  OpenConnection: 20_000,
  CloseConnection: 10_000,
  Check: 10_000,
  Version: 10_000,
  GetGuestDetails: 10_000,
  GuestInfo: 10_000,
  DrainSpans: 10_000,
  SetGuestDateTime: 10_000,
  ReseedRandomDev: 10_000,
  TtyWinResize: 10_000,
  DestroySandbox: 30_000,
  CreateSandbox: 120_000,
  CreateContainer: 120_000,
  RemoveContainer: 120_000,
  // The agent waits (bounded, ONLINE_WAIT_MS in agent/hotplug.ts) for hot-added CPUs to appear.
  OnlineCPUMem: 60_000,
};

export function timeoutFor(method: string): number {
  return AGENT_TIMEOUTS_MS[method] ?? DEFAULT_TIMEOUT_MS;
}
