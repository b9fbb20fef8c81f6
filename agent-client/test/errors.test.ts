import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import { InternalError, NotFoundError } from '../../errors';
import { classifyAgentError } from '../errors';

describe("agent-client classifyAgentError (the guest's message is untrusted text)", () => {
  it('caps a huge status message from the agent at 1 KiB and cleans its control characters', () => {
    const err = classifyAgentError(new StatusError(Code.NOT_FOUND, `\u001b[31m${'A'.repeat(1 << 20)}`), 'WaitProcess');
    assert.ok(err instanceof NotFoundError);
    assert.ok(err.message.length < 1200, `message of ${err.message.length} characters`);
    assert.match(err.message, /^agent WaitProcess: \ufffd\[31mA+…\(\d+ bytes more\)$/);
  });

  it("caps any other failure's text too", () => {
    const err = classifyAgentError(new Error('B'.repeat(5000)), 'ListRoutes');
    assert.ok(err instanceof InternalError);
    assert.match(err.message, /…\(3976 bytes more\)$/);
  });
});
