/** Container resources and process lists between hull's types and the agent protocol. */
import { InvalidArgumentError } from '../errors';
import type { grpc } from '../protos/agent';
import type { ContainerResources } from './types';

/** Largest pid list accepted from the guest (it is not trusted). */
export const MAX_PIDS = 1 << 16;

function int(value: number | undefined, what: string): number {
  if (value === undefined) return 0; // 0 is "not set" on the wire
  if (!Number.isSafeInteger(value)) throw new InvalidArgumentError(`${what} ${value} is not an integer`);
  if (value === 0) throw new InvalidArgumentError(`${what} 0 is not a limit (leave it out, or -1 for none)`);
  return value;
}

/** OCI LinuxResources for the agent; undefined leaves the spec without resources. */
export function toGrpcResources(r: ContainerResources | undefined): grpc.ILinuxResources | undefined {
  if (!r) return undefined;
  return {
    Memory: {
      Limit: int(r.memoryLimitBytes, 'memory limit'),
      Reservation: int(r.memoryReservationBytes, 'memory reservation'),
      Swap: int(r.memorySwapBytes, 'memory+swap limit'),
    },
    CPU: {
      Shares: int(r.cpuShares, 'cpu shares'),
      Quota: int(r.cpuQuotaUs, 'cpu quota'),
      Period: int(r.cpuPeriodUs, 'cpu period'),
      Cpus: r.cpus ?? '',
      Mems: r.mems ?? '',
    },
    Pids: { Limit: int(r.pidsLimit, 'pids limit') },
  };
}

/** ListProcesses' JSON answer: an array of positive pids; anything else is refused (returns undefined). */
export function parsePidList(data: Uint8Array): number[] | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(value) || value.length > MAX_PIDS) return undefined;
  return value.every((p) => Number.isSafeInteger(p) && (p as number) > 0) ? (value as number[]) : undefined;
}
