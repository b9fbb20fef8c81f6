/** The reaper: hull-init's "<pid> <exit_code>\n" records, split anywhere, and statuses kept until someone asks. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { RecordParser, Reaper, type ExitRecord } from '../reaper';

function parse(chunks: Array<string | Buffer>): { records: ExitRecord[]; bad: string[] } {
  const records: ExitRecord[] = [];
  const bad: string[] = [];
  const p = new RecordParser(
    (r) => records.push(r),
    (l) => bad.push(l),
  );
  for (const c of chunks) p.push(c);
  return { records, bad };
}

/** Lets the stream's 'data' events run. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('agent reaper', () => {
  describe('RecordParser', () => {
    it('parses whole lines, several per chunk', () => {
      assert.deepEqual(parse(['12 0\n345 137\n']).records, [
        { pid: 12, exitCode: 0 },
        { pid: 345, exitCode: 137 },
      ]);
    });

    it('joins records split across reads, at any byte', () => {
      const text = '4194304 255\n7 1\n';
      for (let i = 1; i < text.length; i++) {
        assert.deepEqual(
          parse([text.slice(0, i), Buffer.from(text.slice(i))]).records,
          [
            { pid: 4194304, exitCode: 255 },
            { pid: 7, exitCode: 1 },
          ],
          `split at ${i}`,
        );
      }
      assert.deepEqual(parse([...text].map((c) => c)).records.length, 2, 'one byte at a time');
    });

    it('keeps an unfinished line until its newline comes', () => {
      assert.deepEqual(parse(['99 3']), { records: [], bad: [] });
    });

    it('skips malformed lines and goes on', () => {
      const { records, bad } = parse(['x 1\n0 1\n5 256\n-3 1\n5  1\n 5 1\n5 1 2\n\n8 2\n']);
      assert.deepEqual(records, [{ pid: 8, exitCode: 2 }]);
      assert.deepEqual(bad, ['x 1', '0 1', '5 256', '-3 1', '5  1', ' 5 1', '5 1 2', '']);
    });

    it('discards an overlong run without a newline, then resynchronises', () => {
      const { records, bad } = parse(['1'.repeat(100), '2\n6 0\n']);
      assert.equal(bad.length, 2);
      assert.deepEqual(records, [{ pid: 6, exitCode: 0 }]);
    });
  });

  describe('Reaper', () => {
    it('resolves a waiter when its pid is reported, from a stream split anywhere', async () => {
      const stream = new PassThrough();
      const reaper = new Reaper().attach(stream);
      const events: ExitRecord[] = [];
      reaper.on('exit', (r: ExitRecord) => events.push(r));
      const a = reaper.waitFor(42);
      const b = reaper.waitFor(42);
      stream.write('4');
      await tick();
      stream.write('2 13');
      await tick();
      stream.write('7\n');
      assert.equal(await a, 137);
      assert.equal(await b, 137, 'every waiter of the pid');
      assert.deepEqual(events, [{ pid: 42, exitCode: 137 }]);
      assert.equal(reaper.keptCount, 0, 'a status someone waited for is not kept');
    });

    it('keeps a status that came before anyone asked, and hands it out once', async () => {
      const stream = new PassThrough();
      const reaper = new Reaper().attach(stream);
      stream.write('100 3\n101 0\n');
      await tick();
      assert.equal(reaper.keptCount, 2);
      assert.equal(await reaper.waitFor(100), 3);
      assert.equal(reaper.keptCount, 1);
      let second: number | undefined;
      void reaper.waitFor(100).then((c) => (second = c));
      await tick();
      assert.equal(second, undefined, 'handed out once: a second waitFor waits for a new status');
      stream.write('100 9\n');
      await tick();
      assert.equal(second, 9);
    });

    it('drops unclaimed statuses after keepMs', async () => {
      let now = 1000;
      const reaper = new Reaper({ keepMs: 500, now: () => now });
      reaper.record({ pid: 1, exitCode: 1 });
      now = 1300;
      reaper.record({ pid: 2, exitCode: 2 });
      now = 1600;
      assert.equal(reaper.keptCount, 1, 'pid 1 expired');
      assert.equal(await reaper.waitFor(2), 2);
    });

    it('keeps at most maxKept unclaimed statuses, dropping the oldest', async () => {
      const reaper = new Reaper({ maxKept: 3 });
      for (let pid = 1; pid <= 5; pid++) reaper.record({ pid, exitCode: pid });
      assert.equal(reaper.keptCount, 3);
      assert.equal(await reaper.waitFor(5), 5);
      assert.equal(await reaper.waitFor(3), 3);
      let early = false;
      void reaper.waitFor(1).then(() => (early = true));
      await tick();
      assert.equal(early, false, 'pid 1 was dropped');
    });

    it('a reused pid: the newer status replaces the unclaimed older one', async () => {
      const reaper = new Reaper();
      reaper.record({ pid: 7, exitCode: 1 });
      reaper.record({ pid: 7, exitCode: 2 });
      assert.equal(reaper.keptCount, 1);
      assert.equal(await reaper.waitFor(7), 2);
    });

    it('rejects waiters when the pipe ends, and later waits at once', async () => {
      const stream = new PassThrough();
      const reaper = new Reaper().attach(stream);
      stream.write('8 0\n');
      await tick();
      const pending = reaper.waitFor(9);
      stream.end();
      await assert.rejects(pending, /closed/);
      await assert.rejects(reaper.waitFor(10), /closed/);
      assert.equal(await reaper.waitFor(8), 0, 'what was read before is still handed out');
    });
  });
});
