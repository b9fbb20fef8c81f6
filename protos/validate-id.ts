/** The host side's identifier check: protos/identifiers.ts' rule, failing with an InvalidArgumentError. */
import { InvalidArgumentError } from '../errors';
import { identifierProblem } from './identifiers';

/** Returns `id` when it is a valid identifier (containerd's rule); throws InvalidArgumentError naming `what` if not. */
export function validateId(what: string, id: string): string {
  const problem = identifierProblem(what, id);
  if (problem !== undefined) throw new InvalidArgumentError(problem);
  return id;
}
