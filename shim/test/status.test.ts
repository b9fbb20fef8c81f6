import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  NotImplementedError,
  UnavailableError,
  type ShimError,
} from '../../errors';
import { toStatusError } from '../status';

describe('shim toStatusError (hull errors to ttrpc codes)', () => {
  const table: [new (m: string) => ShimError, Code][] = [
    [NotFoundError, Code.NOT_FOUND],
    [AlreadyExistsError, Code.ALREADY_EXISTS],
    [InvalidArgumentError, Code.INVALID_ARGUMENT],
    [FailedPreconditionError, Code.FAILED_PRECONDITION],
    [UnavailableError, Code.UNAVAILABLE],
    [DeadlineExceededError, Code.DEADLINE_EXCEEDED],
    [CancelledError, Code.CANCELLED],
    [NotImplementedError, Code.UNIMPLEMENTED],
    [InternalError, Code.INTERNAL],
  ];

  for (const [Ctor, code] of table) {
    it(`${Ctor.name} → ${Code[code]} (${code}), message and cause kept`, () => {
      const err = new Ctor(`container c1: ${Ctor.name}`);
      const s = toStatusError(err);
      assert.ok(s instanceof StatusError);
      assert.equal(s.code, code);
      assert.equal(s.message, `container c1: ${Ctor.name}`);
      assert.equal(s.cause, err);
    });
  }

  it('the contract codes by number (containerd errdefs reads them back)', () => {
    assert.deepEqual(
      table.map(([C]) => toStatusError(new C('x')).code),
      [5, 6, 3, 9, 14, 4, 1, 12, 13],
    );
  });

  it('passes a StatusError through, and maps anything untyped to UNKNOWN', () => {
    const s = new StatusError(Code.PERMISSION_DENIED, 'no');
    assert.equal(toStatusError(s), s);
    const plain = toStatusError(new Error('boom'));
    assert.equal(plain.code, Code.UNKNOWN);
    assert.equal(plain.message, 'boom');
    assert.equal(toStatusError('a string').message, 'a string');
    assert.equal(toStatusError(undefined).code, Code.UNKNOWN);
  });
});
