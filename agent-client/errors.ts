/**
 * The one place agent failures are classified: a status from the agent becomes hull's typed error by its code,
 * a closed channel becomes UnavailableError, an expired per-method deadline DeadlineExceededError.
 */
import { Code, ConnectionClosedError, StatusError, TtrpcError } from 'ttrpc-ts';
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  NotImplementedError,
  ShimError,
  UnavailableError,
} from '../errors';

export function classifyAgentError(err: unknown, method: string): ShimError {
  if (err instanceof ShimError) return err;
  const options = { cause: err };
  if (err instanceof ConnectionClosedError) return new UnavailableError(`agent ${method}: the agent connection is closed`, options);
  if (err instanceof StatusError) {
    const message = `agent ${method}: ${err.message}`;
    switch (err.code) {
      case Code.NOT_FOUND:
        return new NotFoundError(message, options);
      case Code.ALREADY_EXISTS:
        return new AlreadyExistsError(message, options);
      case Code.INVALID_ARGUMENT:
      case Code.OUT_OF_RANGE:
        return new InvalidArgumentError(message, options);
      case Code.FAILED_PRECONDITION:
        return new FailedPreconditionError(message, options);
      case Code.UNIMPLEMENTED:
        return new NotImplementedError(message, options);
      case Code.DEADLINE_EXCEEDED:
        return new DeadlineExceededError(message, options);
      case Code.CANCELLED:
        return new CancelledError(message, options);
      case Code.UNAVAILABLE:
        return new UnavailableError(message, options);
      default:
        return new InternalError(message, options);
    }
  }
  if (err instanceof TtrpcError) return new InternalError(`agent ${method}: ${err.message}`, options);
  return new InternalError(`agent ${method}: ${err instanceof Error ? err.message : String(err)}`, options);
}
