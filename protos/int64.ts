/**
 * Makes protobufjs represent 64-bit integers as JavaScript numbers, matching the `--force-number` typings of the
 * generated code. Without this, protobufjs finds the `long` package and decodes every int64/uint64 as a `Long`
 * object while the typings say `number`.
 *
 * Import this module for its side effect BEFORE any generated module (protos/gen/*): the generated classes read
 * `util.Long` when they load to pick their prototype defaults. `containerd.ts` and `agent.ts` do this; nothing
 * else should require protos/gen directly.
 *
 * The setting is process wide (protobufjs keeps one `util`), which is what we want: hull uses protobufjs only
 * through these modules.
 *
 * Precision: values above Number.MAX_SAFE_INTEGER (2^53 - 1) are rounded when decoded; a uint64 of 2^64 - 1
 * (cgroup "max") decodes as 2^64, and a number >= 2^64 wraps modulo 2^64 when encoded (2^64 itself becomes 0).
 * Clamp with `clampUint64` before encoding values that can reach that range.
 */
import * as protobuf from 'protobufjs/minimal';

// The typings declare `Long` as always present; null is what protobufjs itself uses when `long` is missing.
(protobuf.util as { Long: unknown }).Long = null;
protobuf.configure();

/** The largest uint64 that survives a number round trip and still reads as "no limit": 2^64 - 2048. */
export const MAX_UINT64_NUMBER = 18446744073709549568;

/** Clamps a number into the range a uint64 field can encode from a JavaScript number (0 .. 2^64 - 2048). */
export function clampUint64(value: number): number {
  if (!(value > 0)) return 0;
  return value >= MAX_UINT64_NUMBER ? MAX_UINT64_NUMBER : Math.trunc(value);
}
