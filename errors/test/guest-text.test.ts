import assert from 'node:assert/strict';
import { GUEST_TEXT_MAX_BYTES, guestText } from '..';

describe('errors guestText (text from the guest, capped and cleaned)', () => {
  it('leaves a short plain message alone', () => {
    assert.equal(guestText('no such container: c1'), 'no such container: c1');
  });

  it('caps a long message at 1 KiB by default and says how much was cut', () => {
    const out = guestText('x'.repeat(10_000));
    assert.equal(out, `${'x'.repeat(GUEST_TEXT_MAX_BYTES)}…(${10_000 - GUEST_TEXT_MAX_BYTES} bytes more)`);
  });

  it('never cuts a UTF-8 character in two', () => {
    const out = guestText('é'.repeat(10), 5); // 2 bytes each: 2 whole characters fit in 5 bytes
    assert.equal(out, 'éé…(16 bytes more)');
  });

  it('makes control characters harmless: escape sequences, NUL, CR; newlines kept only when multiline', () => {
    assert.equal(guestText('a\u001b[2Jb\u0000c\rd\u009be'), 'a\ufffd[2Jb\ufffdc\ufffdd\ufffde');
    assert.equal(guestText('line 1\nline 2\tx'), 'line 1 | line 2\tx');
    assert.equal(guestText('line 1\nline 2', 100, { multiline: true }), 'line 1\nline 2');
  });

  it('shows a value that is not a string', () => {
    assert.equal(guestText(undefined), 'undefined');
    assert.equal(guestText(42), '42');
  });
});
