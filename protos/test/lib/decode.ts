/**
 * The reverse of what hull writes, which only the tests need (hull never reads a timestamp or an event topic back):
 * test oracles for protos/well-known.ts and protos/containerd.ts.
 */
import { GO_ZERO_TIME_SECONDS, TaskEvents, type TimestampLike } from '../../containerd';

/** The topic containerd expects for an event's type URL (from the TaskEvents table), or undefined if it is not a task event. */
export function eventTopic(typeUrl: string): string | undefined {
  return Object.values(TaskEvents).find((e) => e.typeUrl === typeUrl)?.topic;
}

/**
 * The Date for a Timestamp (to the millisecond), or undefined when it is absent or is Go's zero time,
 * the two ways containerd says "not set".
 */
export function fromTimestamp(ts: TimestampLike | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const seconds = ts.seconds ?? 0;
  const nanos = ts.nanos ?? 0;
  if (seconds === GO_ZERO_TIME_SECONDS && nanos === 0) return undefined;
  return new Date(seconds * 1000 + Math.floor(nanos / 1e6));
}
