import assert from 'node:assert/strict';
import {
  Frame,
  FrameDecoder,
  MAX_FRAME,
  MAX_HELLO,
  encodeFrame,
  encodeJson,
  parseHello,
  parseResize,
} from '../debug-socket';

const hello = {
  args: ['cat', '/proc/version'],
  terminal: false,
  rows: 0,
  columns: 0,
  term: 'xterm-256color',
  client: { pid: 42, uid: 0, user: 'ops', loginUid: 1000, tty: '/dev/pts/3' },
};

describe('protos/debug-socket (hull exec <-> shim)', () => {
  it('decodes frames split anywhere across chunks, and several in one chunk', () => {
    const bytes = Buffer.concat([
      encodeJson(Frame.Hello, hello),
      encodeFrame(Frame.Input, Buffer.from('echo hi\n')),
      encodeFrame(Frame.InputEnd),
      encodeFrame(Frame.Signal, Buffer.from([2])),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new FrameDecoder();
      const frames = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
      assert.deepEqual(
        frames.map((f) => f.type),
        [Frame.Hello, Frame.Input, Frame.InputEnd, Frame.Signal],
      );
      assert.equal(frames[1]!.payload.toString(), 'echo hi\n');
      assert.equal(frames[2]!.payload.length, 0);
      assert.deepEqual([...frames[3]!.payload], [2]);
    }
  });

  it('refuses an unknown type, an oversized frame and an oversized hello, before their payload arrives', () => {
    assert.throws(() => new FrameDecoder().push(Buffer.from([0x01, 0, 0, 0, 0])), /type 0x1 is unknown/);
    const big = Buffer.alloc(5);
    big[0] = Frame.Input;
    big.writeUInt32BE(MAX_FRAME + 1, 1);
    assert.throws(() => new FrameDecoder().push(big), /over/);
    const bigHello = Buffer.alloc(5);
    bigHello[0] = Frame.Hello;
    bigHello.writeUInt32BE(MAX_HELLO + 1, 1);
    assert.throws(() => new FrameDecoder().push(bigHello), /over/);
    assert.throws(() => encodeFrame(Frame.Stdout, Buffer.alloc(MAX_FRAME + 1)), RangeError);
  });

  it('parses a hello and refuses bad ones', () => {
    const ok = parseHello(Buffer.from(JSON.stringify(hello)));
    assert.deepEqual(ok, hello);
    const bad = (v: unknown): string => {
      const r = parseHello(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));
      assert.equal(typeof r, 'string');
      return r as string;
    };
    assert.match(bad('{'), /not JSON/);
    assert.match(bad([1]), /not an object/);
    assert.match(bad({ ...hello, args: 'sh' }), /args/);
    assert.match(bad({ ...hello, args: ['a\0b'] }), /args/);
    assert.match(bad({ ...hello, args: Array(257).fill('x') }), /args/);
    assert.match(bad({ ...hello, args: [''] }), /empty/);
    assert.match(bad({ ...hello, terminal: 'yes' }), /terminal/);
    assert.match(bad({ ...hello, rows: -1 }), /rows/);
    assert.match(bad({ ...hello, columns: 1.5 }), /rows/);
    assert.match(bad({ ...hello, term: 'x"; rm' }), /term/);
  });

  it("keeps the client's self-description fit for a log line", () => {
    const r = parseHello(
      Buffer.from(
        JSON.stringify({ ...hello, client: { pid: -3, uid: 'root', user: 'a\nb\x1b[31m' + 'x'.repeat(100) } }),
      ),
    );
    assert.ok(typeof r !== 'string');
    assert.equal(r.client.pid, 0);
    assert.equal(r.client.uid, -1);
    assert.equal(r.client.loginUid, -1);
    assert.equal(r.client.user.length, 64);
    assert.ok(r.client.user.startsWith('a?b?[31m'));
    assert.equal(r.client.tty, '');
  });

  it('parses a resize', () => {
    assert.deepEqual(parseResize(Buffer.from('{"rows":40,"columns":132}')), { rows: 40, columns: 132 });
    assert.equal(parseResize(Buffer.from('{"rows":0,"columns":132}')), undefined);
    assert.equal(parseResize(Buffer.from('{"rows":40,"columns":10001}')), undefined);
    assert.equal(parseResize(Buffer.from('nope')), undefined);
  });
});
