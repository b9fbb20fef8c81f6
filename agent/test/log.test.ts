import assert from 'node:assert/strict';
import { AgentLogger, RECORD_MAX_BYTES, formatRecord, type Level } from '../log';

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

/** A port that takes writes, or fails them with `fail`'s code; records what it took and what fell back. */
function harness(): {
  logger: AgentLogger;
  written: string[];
  console: Array<[Level, string, Record<string, unknown> | undefined]>;
  fail: { code?: string };
} {
  const written: string[] = [];
  const console: Array<[Level, string, Record<string, unknown> | undefined]> = [];
  const fail: { code?: string } = {};
  const logger = new AgentLogger(
    (_fd, buf) => {
      if (fail.code) throw errno(fail.code);
      written.push(buf.toString());
      return buf.length;
    },
    (level, msg, fields) => void console.push([level, msg, fields]),
  );
  return { logger, written, console, fail };
}

describe('agent/log: records on the log port, the console as fallback', () => {
  it('before the port is open, records go to the console; after, one JSON line each to the port', () => {
    const h = harness();
    h.logger.write('info', 'early', { a: 1 });
    h.logger.usePort(99);
    h.logger.write('warn', 'later', { target: '/run' });
    h.logger.write('info', 'no fields');
    assert.deepEqual(h.console, [['info', 'early', { a: 1 }]]);
    assert.deepEqual(h.written, [
      '{"level":"warn","msg":"later","fields":{"target":"/run"}}\n',
      '{"level":"info","msg":"no fields"}\n',
    ]);
  });

  it('records are bounded: long texts cut, too many fields named instead, never over RECORD_MAX_BYTES, one line each', () => {
    const long = formatRecord('error', 'm'.repeat(10_000), { s: 's'.repeat(10_000), stack: 'a\nb' });
    assert.ok(long.length <= RECORD_MAX_BYTES);
    const parsed = JSON.parse(long.toString());
    assert.equal(parsed.msg.length, 1025);
    assert.equal(parsed.fields.s.length, 1025);
    assert.equal(parsed.fields.stack, 'a\nb');
    assert.equal(long.indexOf(10), long.length - 1, 'one line');
    const many = formatRecord(
      'info',
      'many',
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, 'x'.repeat(1000)])),
    );
    assert.ok(many.length <= RECORD_MAX_BYTES);
    assert.equal(JSON.parse(many.toString()).fields.fieldsCut, true);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    assert.doesNotThrow(() => formatRecord('info', 'c', { circular, big: 10n }));
  });

  it('the host not connected (ENODEV): that record goes to the console, the next tries the port again', () => {
    const h = harness();
    h.logger.usePort(99);
    h.fail.code = 'ENODEV';
    h.logger.write('info', 'while away');
    h.fail.code = undefined;
    h.logger.write('info', 'back');
    assert.deepEqual(h.console, [['info', 'while away', undefined]]);
    assert.deepEqual(h.written, ['{"level":"info","msg":"back"}\n']);
    assert.ok(h.logger.portOpen);
  });

  it('a host that does not read (EAGAIN): records queue (bounded), the oldest dropped and counted, the count sent first', async () => {
    const h = harness();
    h.logger.usePort(99);
    h.fail.code = 'EAGAIN';
    for (let i = 0; i < 1000; i++) h.logger.write('info', `r${i}`);
    assert.deepEqual(h.logger.pending, { queued: 256, dropped: 744 });
    assert.deepEqual(h.console, [], 'nothing goes to the console: the host is there, only slow');
    h.fail.code = undefined;
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(h.written.length, 257);
    assert.deepEqual(JSON.parse(h.written[0]!), {
      level: 'warn',
      msg: 'log records dropped (the host did not read them in time)',
      fields: { dropped: 744 },
    });
    assert.equal(JSON.parse(h.written[1]!).msg, 'r744');
    assert.equal(JSON.parse(h.written[256]!).msg, 'r999');
    assert.deepEqual(h.logger.pending, { queued: 0, dropped: 0 });
  });

  it('the drop count is never dropped itself: a host still slow when the retry comes, then more records', async () => {
    const h = harness();
    h.logger.usePort(99);
    h.fail.code = 'EAGAIN';
    for (let i = 0; i < 300; i++) h.logger.write('info', `a${i}`);
    await new Promise((r) => setTimeout(r, 120)); // retries, still EAGAIN
    for (let i = 0; i < 300; i++) h.logger.write('info', `b${i}`);
    h.fail.code = undefined;
    await new Promise((r) => setTimeout(r, 120));
    const records = h.written.map((l) => JSON.parse(l) as { msg: string; fields?: { dropped?: number } });
    const dropped = records.reduce((n, r) => n + (r.fields?.dropped ?? 0), 0);
    const kept = records.filter((r) => /^[ab]\d+$/.test(r.msg)).length;
    assert.equal(kept, 256);
    assert.equal(dropped + kept, 600, 'every record is written or counted');
  });

  it('any other error closes the port: the queue and every later record go to the console', () => {
    const h = harness();
    h.logger.usePort(-1);
    h.fail.code = 'EIO';
    h.logger.write('error', 'lost port', { x: 1 });
    h.logger.write('info', 'after');
    assert.equal(h.logger.portOpen, false);
    assert.deepEqual(
      h.console.map(([l, m]) => [l, m]),
      [
        ['warn', 'the log port failed; logging to the console'],
        ['error', 'lost port'],
        ['info', 'after'],
      ],
    );
  });
});
