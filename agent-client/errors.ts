/**
 * The one place agent failures are classified: a status from the agent becomes hull's typed error by its code,
 * a closed channel becomes UnavailableError, an expired per-method deadline DeadlineExceededError. The agent's
 * message is the guest's text: it is capped and cleaned (guestText) before it goes into hull's error.
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
  guestText,
} from '../errors';

export function classifyAgentError(err: unknown, method: string): ShimError {
  if (err instanceof ShimError) return err;
  const options = { cause: err };
  if (err instanceof ConnectionClosedError)
    return new UnavailableError(`agent ${method}: the agent connection is closed`, options);
  if (err instanceof StatusError) {
    const message = `agent ${method}: ${guestText(err.message)}`;
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
  if (err instanceof TtrpcError) return new InternalError(`agent ${method}: ${guestText(err.message)}`, options);
  return new InternalError(`agent ${method}: ${guestText(err instanceof Error ? err.message : err)}`, options);
}
