/** The one place where hull's typed errors become ttrpc status codes (containerd's errdefs read them back). */
import { Code, StatusError } from 'ttrpc-ts';
import { ShimError, errorMessage, type ErrorKind } from '../errors';

const CODES: Record<ErrorKind, Code> = {
  'not-found': Code.NOT_FOUND,
  'already-exists': Code.ALREADY_EXISTS,
  'invalid-argument': Code.INVALID_ARGUMENT,
  'failed-precondition': Code.FAILED_PRECONDITION,
  unavailable: Code.UNAVAILABLE,
  'deadline-exceeded': Code.DEADLINE_EXCEEDED,
  cancelled: Code.CANCELLED,
  'not-implemented': Code.UNIMPLEMENTED,
  internal: Code.INTERNAL,
};

export function toStatusError(err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  if (err instanceof ShimError) return new StatusError(CODES[err.kind], err.message, { cause: err });
  return new StatusError(Code.UNKNOWN, errorMessage(err), { cause: err });
}
