/**
 * The one identifier rule: containerd's identifiers.Validate (pkg/identifiers), which every id hull gets from
 * containerd already passed: one or more ASCII letters or digits, in components joined by single '.', '_' or '-'
 * (no leading, trailing or doubled separator), at most 76 characters. Namespaces, sandbox, container and exec ids all
 * follow it; it also keeps an id usable as one path component (never '.', '..', '/' or empty).
 *
 * It lives in protos/ because it is part of the contract with containerd, and because protos/ is the one layer both
 * sides may import: the host's layers (core, hypervisor, fs-share, agent-client) and the agent in the guest, which
 * may not import errors/. So this file imports nothing; each side turns a problem into its own error:
 * `validateId` (protos/validate-id.ts) throws the host's InvalidArgumentError, the agent an INVALID_ARGUMENT status.
 */

/** identifiers.maxLength in containerd. */
export const IDENTIFIER_MAX_LENGTH = 76;

const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** Why `id` is not a valid identifier (a message naming `what`), or undefined when it is one. */
export function identifierProblem(what: string, id: unknown): string | undefined {
  if (typeof id !== 'string' || id === '') return `${what} must be a non-empty string`;
  if (id.length > IDENTIFIER_MAX_LENGTH)
    return `${what} ${JSON.stringify(id.slice(0, 80))}… is longer than ${IDENTIFIER_MAX_LENGTH} characters`;
  if (!IDENTIFIER.test(id)) {
    return `${what} ${JSON.stringify(id)} is not a valid identifier: letters and digits in components joined by single '.', '_' or '-'`;
  }
  return undefined;
}

export const isIdentifier = (id: unknown): boolean => identifierProblem('id', id) === undefined;
