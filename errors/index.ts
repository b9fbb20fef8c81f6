/**
 * hull's closed set of error classes. Every layer below shim/ throws these (never a bare Error whose message has to
 * be parsed); shim's toStatus() is the one place they become ttrpc status codes. Keep `cause` when wrapping:
 *   throw new UnavailableError('start vm', { cause: err });
 */
export abstract class ShimError extends Error {
  /** A stable name for logs and for the status mapping. */
  abstract readonly kind: ErrorKind;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
  }

  override get name(): string {
    return this.constructor.name;
  }
}

export type ErrorKind =
  | 'not-found'
  | 'already-exists'
  | 'invalid-argument'
  | 'failed-precondition'
  | 'unavailable'
  | 'deadline-exceeded'
  | 'cancelled'
  | 'not-implemented'
  | 'internal';

/** No such sandbox, container or exec; a process already reaped. */
export class NotFoundError extends ShimError {
  readonly kind = 'not-found';
}

/** A duplicate id (container, exec). */
export class AlreadyExistsError extends ShimError {
  readonly kind = 'already-exists';
}

/** Bad input: an invalid id, path, spec, signal or configuration value. */
export class InvalidArgumentError extends ShimError {
  readonly kind = 'invalid-argument';
}

/** The operation is not allowed in the current state (start twice, exec on a stopped container). */
export class FailedPreconditionError extends ShimError {
  readonly kind = 'failed-precondition';
}

/** The VM, the agent or a helper process is gone or unreachable. */
export class UnavailableError extends ShimError {
  readonly kind = 'unavailable';
}

/** A deadline passed (boot deadline, RPC deadline). */
export class DeadlineExceededError extends ShimError {
  readonly kind = 'deadline-exceeded';
}

/** The caller aborted the operation. */
export class CancelledError extends ShimError {
  readonly kind = 'cancelled';
}

/** Not implemented by hull (yet); the README's feature table says so. */
export class NotImplementedError extends ShimError {
  readonly kind = 'not-implemented';
}

/** A bug or an unexpected failure of something hull relies on. */
export class InternalError extends ShimError {
  readonly kind = 'internal';
}

/** A message for any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === 'string' ? err : String(err);
}

export { GUEST_TEXT_MAX_BYTES, guestText } from './guest-text';
