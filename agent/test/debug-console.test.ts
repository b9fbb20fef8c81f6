/**
 * The agent's debug console on the host: the refusals (before CreateSandbox, disabled, outside the guest) and a
 * process with pipes (the terminal path needs the guest's hull-ctty: integration/hull-exec.test.ts).
 */
import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import { DebugConsole, MAX_DEBUG_PROCESSES, debugArgs, debugEnv } from '../debug-console';

const code = (c: Code) => (err: unknown) => err instanceof StatusError && err.code === c;

describe('agent/debug-console', () => {
  it('refuses everything before CreateSandbox, and when the host did not enable it', async () => {
    const d = new DebugConsole({ inGuest: true });
    await assert.rejects(d.start({ execId: 'a', args: ['true'] }), /not available before CreateSandbox/);
    d.configure(false);
    await assert.rejects(d.start({ execId: 'a', args: ['true'] }), code(Code.FAILED_PRECONDITION));
    await assert.rejects(d.start({ execId: 'a', args: ['true'] }), /disabled for this sandbox/);
    assert.throws(() => d.closeInput({ execId: 'a' }), /disabled/);
    d.configure(true); // only the first CreateSandbox decides
    await assert.rejects(d.start({ execId: 'a', args: ['true'] }), /disabled/);
  });

  it('never runs anything outside the guest (the test mode agent)', async () => {
    const d = new DebugConsole({ inGuest: false });
    d.configure(true);
    await assert.rejects(d.start({ execId: 'a', args: ['true'] }), /only inside the guest/);
  });

  it('checks the request', () => {
    assert.throws(() => debugArgs([]), code(Code.INVALID_ARGUMENT));
    assert.throws(() => debugArgs(['']), /empty/);
    assert.throws(() => debugArgs(['a\0']), /NUL/);
    assert.throws(() => debugArgs(Array(257).fill('x')), /256/);
    assert.deepEqual(debugEnv(['TERM=xterm', 'A=b=c']), {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: '/root',
      TERM: 'xterm',
      A: 'b=c',
    });
    assert.throws(() => debugEnv(['=x']), /NAME=value/);
    assert.throws(() => debugEnv(['1A=x']), /NAME=value/);
    assert.throws(() => debugEnv(Array(65).fill('A=b')), /at most/);
  });

  describe('a process with pipes', () => {
    let d: DebugConsole;
    beforeEach(() => {
      d = new DebugConsole({ inGuest: true });
      d.configure(true);
    });
    afterEach(() => d.closeAll());

    const readAll = async (execId: string, stream: 1 | 2): Promise<string> => {
      let text = '';
      for (;;) {
        const b = await d.read({ execId, stream });
        if (b.length === 0) return text;
        text += b.toString();
      }
    };

    it('runs a command: its stdout, stderr and exit status', async () => {
      const { pid } = await d.start({ execId: 's1', args: ['/bin/sh', '-c', 'echo out; echo err >&2; exit 3'] });
      assert.ok(pid > 1);
      const [out, err, status] = await Promise.all([readAll('s1', 1), readAll('s1', 2), d.wait({ execId: 's1' })]);
      assert.equal(out, 'out\n');
      assert.equal(err, 'err\n');
      assert.equal(status, 3);
      await assert.rejects(d.start({ execId: 's1', args: ['true'] }), code(Code.ALREADY_EXISTS));
      d.remove({ execId: 's1' });
      assert.throws(() => d.remove({ execId: 's1' }), code(Code.NOT_FOUND));
    });

    it('passes stdin and its end, in the environment it was given', async () => {
      await d.start({ execId: 's2', args: ['/bin/sh', '-c', 'cat; echo "$HOME $X"'], env: ['X=y'] });
      assert.equal(await d.write({ execId: 's2', data: Buffer.from('typed\n') }), 6);
      d.closeInput({ execId: 's2' });
      assert.equal(await readAll('s2', 1), 'typed\n/root y\n');
      assert.equal(await d.wait({ execId: 's2' }), 0);
    });

    it('signals it (128 + the signal) and a removed process is killed', async () => {
      await d.start({ execId: 's3', args: ['sleep', '60'] });
      d.signal({ execId: 's3', signal: 2 });
      assert.equal(await d.wait({ execId: 's3' }), 130);
      const { pid } = await d.start({ execId: 's4', args: ['sleep', '60'] });
      d.remove({ execId: 's4' });
      await new Promise((r) => setTimeout(r, 200));
      assert.throws(() => process.kill(pid, 0), /ESRCH/);
    });

    it('a program that does not exist is NOT_FOUND; at most MAX_DEBUG_PROCESSES at once', async () => {
      await assert.rejects(d.start({ execId: 'x', args: ['/no/such/program'] }), code(Code.NOT_FOUND));
      for (let i = 0; i < MAX_DEBUG_PROCESSES; i++) await d.start({ execId: `m${i}`, args: ['sleep', '60'] });
      await assert.rejects(d.start({ execId: 'one-more', args: ['sleep', '60'] }), code(Code.RESOURCE_EXHAUSTED));
    });
  });
});
