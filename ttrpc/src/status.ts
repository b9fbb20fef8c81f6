/**
 * Status codes and the closed set of ttrpc errors. This file is the one place where errors are mapped to and
 * from google.rpc.Status: `toStatus` (server side: what to send for a thrown error) and `fromStatus` (client
 * side: which error to raise for a received status).
 */

/** google.rpc.Code. */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** google.protobuf.Any, kept opaque. */
export interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

/** google.rpc.Status. */
export interface Status {
  code: Code;
  message: string;
  details: AnyMessage[];
}

/** Base of every error ttrpc-ts raises. */
export abstract class TtrpcError extends Error {
  abstract readonly code: Code;
}

/**
 * An RPC that ended with a non-OK status: raised by the client for a status received from the server, and thrown by
 * server handlers to choose the status sent back.
 */
export class StatusError extends TtrpcError {
  readonly code: Code;
  readonly details: AnyMessage[];

  constructor(code: Code, message: string, options?: { details?: AnyMessage[]; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details ?? [];
  }

  override get name(): string {
    return `StatusError(${Code[this.code] ?? this.code})`;
  }

  toStatus(): Status {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** The call's deadline passed, locally or on the server. */
export class DeadlineExceededError extends StatusError {
  constructor(message = 'deadline exceeded', options?: { details?: AnyMessage[]; cause?: unknown }) {
    super(Code.DEADLINE_EXCEEDED, message, options);
  }
}

/** The caller aborted the call (AbortSignal), or the server reported it cancelled. */
export class CancelledError extends StatusError {
  constructor(message = 'cancelled', options?: { details?: AnyMessage[]; cause?: unknown }) {
    super(Code.CANCELLED, message, options);
  }
}

/** A message over the size limit: refused before sending, or reported by the peer. */
export class MessageTooLargeError extends StatusError {
  constructor(message: string, options?: { details?: AnyMessage[]; cause?: unknown }) {
    super(Code.RESOURCE_EXHAUSTED, message, options);
  }
}

/**
 * The connection closed (or could not be used) before the call completed. Not a status sent by the peer: callers
 * test for it with `instanceof`, never by message (containerd's Go code compares against "ttrpc: closed").
 */
export class ConnectionClosedError extends TtrpcError {
  readonly code = Code.UNAVAILABLE;

  constructor(message = 'ttrpc: closed', options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
  }

  override get name(): string {
    return 'ConnectionClosedError';
  }
}

/** The peer violated the protocol (undecodable response, unknown stream id). The connection is closed. */
export class ProtocolError extends TtrpcError {
  readonly code = Code.INTERNAL;

  override get name(): string {
    return 'ProtocolError';
  }
}

/** What a server sends for an error thrown by a handler. */
export function toStatus(err: unknown): Status {
  if (err instanceof StatusError) return err.toStatus();
  if (err instanceof TtrpcError) return { code: err.code, message: err.message, details: [] };
  if (isAbortError(err)) {
    const reason = (err as { cause?: unknown }).cause;
    const timedOut =
      (err as Error).name === 'TimeoutError' || (reason instanceof Error && reason.name === 'TimeoutError');
    return { code: timedOut ? Code.DEADLINE_EXCEEDED : Code.CANCELLED, message: errorMessage(err), details: [] };
  }
  return { code: Code.UNKNOWN, message: errorMessage(err), details: [] };
}

/** The error a client raises for a non-OK status. */
export function fromStatus(status: Status): StatusError {
  const options = { details: status.details };
  switch (status.code) {
    case Code.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(status.message, options);
    case Code.CANCELLED:
      return new CancelledError(status.message, options);
    case Code.RESOURCE_EXHAUSTED:
      return new MessageTooLargeError(status.message, options);
    default:
      return new StatusError(status.code, status.message, options);
  }
}

/** A message for any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError');
}
