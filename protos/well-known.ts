/**
 * google.protobuf.Any and google.protobuf.Timestamp helpers, typed structurally so that they work with the
 * classes of either generated root.
 *
 * Type URLs follow containerd 1.6 (github.com/containerd/typeurl v1): protobuf messages are named by their bare
 * full name (`containerd.events.TaskExit`), with no `type.googleapis.com/` prefix; JSON payloads registered by
 * containerd (the OCI runtime spec types) have URLs like `types.containerd.io/opencontainers/runtime-spec/1/Process`
 * and carry JSON bytes.
 */

/**
 * The plain shape of google.protobuf.Any as the generated code accepts and returns it. Note `type_url`: protobufjs
 * builds the well-known types from bundled definitions that keep proto field names, so unlike our own messages
 * they are not camel-cased. An object with `typeUrl` instead still type-checks (the fields are optional) but
 * loses its type URL on the wire.
 */
export interface AnyLike {
  type_url?: string | null;
  value?: Uint8Array | null;
}

/** A packed Any, both fields present. */
export interface PackedAny {
  type_url: string;
  value: Uint8Array;
}

/** The plain shape of google.protobuf.Timestamp (int64 seconds as a number, see int64.ts). */
export interface TimestampLike {
  seconds?: number | null;
  nanos?: number | null;
}

/** A generated message class, as far as packing needs it. */
export interface Encoder<T> {
  encode(message: T): { finish(): Uint8Array };
}

/** A generated message class, as far as unpacking needs it. */
export interface Decoder<T> {
  decode(bytes: Uint8Array): T;
}

/** Thrown when an Any holds something other than what the caller expects. */
export class TypeUrlMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`expected an Any of type ${expected}, got ${actual === '' ? 'an empty type URL' : actual}`);
    this.name = 'TypeUrlMismatchError';
  }
}

/**
 * Whether `actual` names the type `expected`. Accepts the bare name containerd 1.6 uses and also a prefixed
 * form (`type.googleapis.com/<name>`), which newer clients send.
 */
export function typeUrlMatches(actual: string, expected: string): boolean {
  return actual === expected || actual.endsWith(`/${expected}`);
}

export function packAny<T>(typeUrl: string, type: Encoder<T>, message: T): PackedAny {
  return { type_url: typeUrl, value: type.encode(message).finish() };
}

/** Unpacks a protobuf message; throws TypeUrlMismatchError if `any` is absent or holds another type. */
export function unpackAny<T>(any: AnyLike | null | undefined, typeUrl: string, type: Decoder<T>): T {
  const actual = any?.type_url ?? '';
  if (!typeUrlMatches(actual, typeUrl)) throw new TypeUrlMismatchError(typeUrl, actual);
  return type.decode(any?.value ?? new Uint8Array(0));
}

/** Packs a JSON payload, as containerd does for the OCI runtime-spec types. */
export function packJsonAny(typeUrl: string, value: unknown): PackedAny {
  return { type_url: typeUrl, value: new TextEncoder().encode(JSON.stringify(value)) };
}

/** Unpacks a JSON payload; throws TypeUrlMismatchError on another type and SyntaxError on malformed JSON. */
export function unpackJsonAny(any: AnyLike | null | undefined, typeUrl: string): unknown {
  const actual = any?.type_url ?? '';
  if (!typeUrlMatches(actual, typeUrl)) throw new TypeUrlMismatchError(typeUrl, actual);
  return JSON.parse(new TextDecoder().decode(any?.value ?? new Uint8Array(0)));
}

/**
 * Seconds of Go's zero time.Time (0001-01-01T00:00:00Z). containerd marshals its non-nullable timestamps
 * (`exited_at` of a process that has not exited) as this value rather than leaving them out.
 */
export const GO_ZERO_TIME_SECONDS = -62135596800;

/** A Timestamp for a Date or a count of milliseconds since the epoch; nanos is always in [0, 1e9). */
export function toTimestamp(time: Date | number): { seconds: number; nanos: number } {
  const ms = typeof time === 'number' ? time : time.getTime();
  if (!Number.isFinite(ms)) throw new RangeError(`toTimestamp: not a valid time: ${String(time)}`);
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  // Fractional milliseconds can round up to a whole second.
  return nanos >= 1e9 ? { seconds: seconds + 1, nanos: nanos - 1e9 } : { seconds, nanos };
}
