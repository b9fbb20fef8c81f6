import assert from 'node:assert/strict';
import { NOOP_LOGGER, type Logger } from '../../log';
import { GuestConsole } from '../console';

function recorder(): Logger & { lines: { level: string; msg: string; obj: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void =>
      void lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return { lines, info: at('info'), warn: at('warn'), debug: at('debug'), error: at('error') };
}

describe('hypervisor GuestConsole (the guest console in memory, bounded)', () => {
  it('splits lines across chunks (a UTF-8 character split too), drops CRs and blank lines, ends the last partial line', () => {
    const c = new GuestConsole(NOOP_LOGGER, false);
    const text = Buffer.from('first li\u00e9ne\r\n\n  \nsecond\nthird without newline');
    c.push(text.subarray(0, 11)); // cuts the 2-byte é in two
    c.push(text.subarray(11, 20));
    c.push(text.subarray(20));
    assert.deepEqual(c.tail(), ['first li\u00e9ne', 'second']);
    c.end();
    assert.deepEqual(c.tail(), ['first li\u00e9ne', 'second', 'third without newline']);
    assert.deepEqual(c.tail(2), ['second', 'third without newline']);
    c.push(Buffer.from('after the end\n'));
    assert.equal(c.tail().length, 3);
  });

  it('caps a line (even one that never ends) and says how many bytes were cut; control characters replaced', () => {
    const c = new GuestConsole(NOOP_LOGGER, false, { maxLineBytes: 10 });
    for (let i = 0; i < 100; i++) c.push(Buffer.from('z'.repeat(1000)));
    c.push(Buffer.from('\n\u001b[31mred\u001b[0m\n'));
    assert.deepEqual(c.tail(), ['z'.repeat(10) + '…(99990 bytes more)', '\ufffd[31mred\ufffd[…(2 bytes more)']);
  });

  it('keeps at most maxLines lines and maxBytes characters, the newest', () => {
    const c = new GuestConsole(NOOP_LOGGER, false, { maxLines: 5, maxBytes: 1000 });
    for (let i = 0; i < 50; i++) c.push(Buffer.from(`line ${i}\n`));
    assert.deepEqual(c.tail(), ['line 45', 'line 46', 'line 47', 'line 48', 'line 49']);
    const d = new GuestConsole(NOOP_LOGGER, false, { maxLines: 1000, maxBytes: 250, maxLineBytes: 100 });
    for (let i = 0; i < 50; i++) d.push(Buffer.from(`${String(i).padStart(2, '0')}${'.'.repeat(98)}\n`));
    assert.deepEqual(
      d.tail().map((l) => l.slice(0, 2)),
      ['48', '49'],
    );
    assert.deepEqual(d.totals, { bytes: 50 * 101, lines: 50, notLogged: 0 });
  });

  it('forwards lines into the log at most linesPerWindow per window, counting the rest and reporting them when the next window opens', () => {
    let now = 0;
    const log = recorder();
    const c = new GuestConsole(log, true, { linesPerWindow: 3, windowMs: 1000 }, () => now);
    for (let i = 0; i < 10; i++) c.push(Buffer.from(`a${i}\n`));
    assert.deepEqual(
      log.lines.map((l) => l.obj.line),
      ['a0', 'a1', 'a2'],
    );
    now = 1500;
    c.push(Buffer.from('b0\n'));
    assert.deepEqual(
      log.lines.slice(3).map((l) => [l.level, l.obj.line ?? l.obj.notLogged]),
      [
        ['warn', 7],
        ['debug', 'b0'],
      ],
    );
    assert.match(log.lines[3]!.msg, /^7 guest console lines not logged/);
    for (let i = 1; i < 5; i++) c.push(Buffer.from(`b${i}\n`));
    c.end();
    assert.deepEqual(
      log.lines.slice(5).map((l) => [l.level, l.obj.line ?? l.obj.notLogged]),
      [
        ['debug', 'b1'],
        ['debug', 'b2'],
        ['warn', 2],
      ],
    );
    assert.equal(c.totals.notLogged, 9);
  });

  it('without forward, nothing goes into the log', () => {
    const log = recorder();
    const c = new GuestConsole(log, false);
    for (let i = 0; i < 1000; i++) c.push(Buffer.from('x\n'));
    c.end();
    assert.deepEqual(log.lines, []);
  });
});
