/** The one identifier rule (containerd's identifiers.Validate) and the host's validateId. */
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { IDENTIFIER_MAX_LENGTH, identifierProblem, isIdentifier } from '../identifiers';
import { validateId } from '../validate-id';

// containerd's pkg/identifiers/validate_test.go cases, and path pieces.
const VALID = [
  'foo',
  'foo.bar',
  'foo-bar',
  'foo_bar',
  'a',
  'A',
  '0',
  'c1',
  'A_b.c-d',
  '0abc',
  'swarmkit-5u4bhjpx9qlegnd3w5ek5u2cd',
  'x'.repeat(IDENTIFIER_MAX_LENGTH),
  'default',
  'k8s.io',
  'a.b_c-d.e',
];
const INVALID = [
  '',
  '.',
  '..',
  '../x',
  'a/b',
  '-a',
  '.hidden',
  'trailing-',
  'trailing.',
  'foo..bar',
  'foo__bar',
  'foo--bar',
  'foo.-bar',
  'a b',
  'a\0b',
  'a\nb',
  'é',
  'foo:bar',
  'x'.repeat(IDENTIFIER_MAX_LENGTH + 1),
];

describe("identifiers: containerd's rule, the one every layer uses", () => {
  it('accepts alphanumeric components joined by single separators, up to 76 characters', () => {
    for (const id of VALID) {
      assert.equal(identifierProblem('id', id), undefined, id);
      assert.equal(validateId('container id', id), id);
    }
  });

  it('refuses separators at either end or doubled, other characters, path pieces, and more than 76 characters', () => {
    for (const id of INVALID) {
      assert.equal(isIdentifier(id), false, JSON.stringify(id));
      assert.throws(
        () => validateId('container id', id),
        (e: unknown) => e instanceof InvalidArgumentError && e.message.startsWith('container id'),
        JSON.stringify(id),
      );
    }
  });

  it('refuses what is not a string', () => {
    for (const v of [undefined, null, 7, {}, ['a']])
      assert.match(identifierProblem('exec id', v) ?? '', /^exec id must be a non-empty string/);
  });
});
