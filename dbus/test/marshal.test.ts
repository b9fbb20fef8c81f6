import assert from 'node:assert/strict';
import {
  DBusProtocolError,
  MessageDecoder,
  MessageType,
  Reader,
  Writer,
  decodeMessage,
  encodeMessage,
  parseSignature,
  type DBusValue,
  type Message,
} from '..';

const hex = (b: Buffer): string => b.toString('hex');
const bytes = (sig: string, values: DBusValue[]): Buffer => {
  const w = new Writer();
  w.writeAll(sig, values);
  return w.result();
};
const read = (sig: string, b: Buffer, le = true): DBusValue[] => new Reader(b, 0, b.length, le).readAll(sig);
const protocolError = (re: RegExp) => (err: unknown) => err instanceof DBusProtocolError && re.test(err.message);

/** systemd's StartTransientUnit body, as the systemd cgroup driver sends it. */
const START_BODY: DBusValue[] = [
  'cri-containerd-abc.scope',
  'replace',
  [
    ['Description', { signature: 's', value: 'hull pod sandbox cri-containerd-abc.scope' }],
    ['Slice', { signature: 's', value: 'kubepods-burstable-pod123.slice' }],
    ['Delegate', { signature: 'b', value: true }],
    ['PIDs', { signature: 'au', value: [4242] }],
    ['DefaultDependencies', { signature: 'b', value: false }],
  ],
  [],
];

describe('dbus marshalling', () => {
  describe('signatures', () => {
    it('parses the complete types, dicts inside arrays only', () => {
      assert.deepEqual(
        parseSignature('ssa(sv)a(sa(sv))').map((t) => t.code),
        ['s', 's', 'a', 'a'],
      );
      assert.equal(parseSignature('a{sv}')[0]!.children![0]!.code, '{');
      assert.deepEqual(parseSignature(''), []);
    });
    for (const [sig, why] of [
      ['a', /ends early/],
      ['(s', /unclosed struct|ends early/],
      ['()', /empty struct/],
      ['a{vs}', /key must be a basic type/],
      ['a{sss}', /exactly two types/],
      ['h', /unsupported type code/],
      ['{ss}', /unsupported type code/],
      ['a'.repeat(33) + 'y', /deeper than 32/],
      ['('.repeat(33) + 'y' + ')'.repeat(33), /deeper than 32/],
      ['s'.repeat(256), /longer than 255/],
    ] as const) {
      it(`refuses ${JSON.stringify(sig).slice(0, 30)}`, () =>
        assert.throws(() => parseSignature(sig), protocolError(why)));
    }
  });

  describe("values, byte for byte (little-endian, the specification's alignment)", () => {
    it('basic types', () => {
      assert.equal(hex(bytes('yu', [1, 2])), '01000000' + '02000000');
      assert.equal(hex(bytes('s', ['ab'])), '02000000' + '616200');
      assert.equal(hex(bytes('g', ['au'])), '02' + '617500');
      assert.equal(hex(bytes('yt', [7, 2n ** 40n])), '07000000' + '00000000' + '0000000000010000');
      assert.equal(hex(bytes('n', [-2])), 'feff');
      assert.equal(hex(bytes('b', [true])), '01000000');
      assert.equal(hex(bytes('o', ['/org/freedesktop/systemd1'])).slice(0, 8), '19000000');
    });

    it('arrays: the length excludes the padding to the first element, which is there even when empty', () => {
      assert.equal(hex(bytes('au', [[1, 2]])), '08000000' + '01000000' + '02000000');
      assert.equal(hex(bytes('a(sv)', [[]])), '00000000' + '00000000');
      assert.equal(hex(bytes('ya(y)', [9, [[1]]])), '09000000' + '01000000' + '01');
    });

    it('variants carry their signature', () => {
      assert.equal(hex(bytes('v', [{ signature: 'b', value: true }])), '01' + '6200' + '00' + '01000000');
    });

    it("round trips StartTransientUnit's body (ssa(sv)a(sa(sv))) and a dict", () => {
      const sig = 'ssa(sv)a(sa(sv))';
      assert.deepEqual(read(sig, bytes(sig, START_BODY)), START_BODY);
      const aux: DBusValue[] = [[['x.scope', [['Delegate', { signature: 'b', value: false }]]]]];
      assert.deepEqual(read('a(sa(sv))', bytes('a(sa(sv))', aux)), aux);
      const dict: DBusValue[] = [
        [
          ['a', { signature: 'x', value: -5n }],
          ['b', { signature: 'ad', value: [1.5, -2] }],
        ],
      ];
      assert.deepEqual(read('a{sv}', bytes('a{sv}', dict)), dict);
    });

    it('big-endian input is read too', () => {
      assert.deepEqual(read('uu', Buffer.from('00000002' + '0000002a', 'hex'), false), [2, 42]);
      assert.deepEqual(read('s', Buffer.from('00000002' + '616200', 'hex'), false), ['ab']);
    });

    it('refuses values that do not fit their type', () => {
      assert.throws(() => bytes('y', [256]), protocolError(/is not a y/));
      assert.throws(() => bytes('u', [-1]), protocolError(/is not a u/));
      assert.throws(() => bytes('u', ['1']), protocolError(/is not a u/));
      assert.throws(() => bytes('s', ['a\0b']), protocolError(/NUL/));
      assert.throws(() => bytes('o', ['/a/']), protocolError(/not an object path/));
      assert.throws(() => bytes('v', [{ signature: 'ss', value: 'x' }]), protocolError(/one complete type/));
      assert.throws(() => bytes('(su)', [['x']]), protocolError(/2 fields/));
      assert.throws(() => bytes('ss', ['x']), protocolError(/given 1 values/));
    });

    it('refuses malformed input', () => {
      assert.throws(() => read('s', Buffer.from('02000000616201', 'hex')), protocolError(/not NUL-terminated/));
      assert.throws(() => read('s', Buffer.from('0200000061', 'hex')), protocolError(/truncated/));
      assert.throws(() => read('s', Buffer.from('020000000062' + '00', 'hex')), protocolError(/contains NUL/));
      assert.throws(() => read('s', Buffer.from('02000000ff6100', 'hex')), protocolError(/UTF-8/));
      assert.throws(() => read('b', Buffer.from('02000000', 'hex')), protocolError(/boolean 2/));
      assert.throws(() => read('au', Buffer.from('10000000' + '01000000', 'hex')), protocolError(/past the message/));
      assert.throws(
        () => read('au', Buffer.from('06000000' + '01000000' + '0200', 'hex')),
        protocolError(/overrun|truncated/),
      );
      assert.throws(() => read('yu', Buffer.from('01' + '000100' + '02000000', 'hex')), protocolError(/padding/));
      assert.throws(() => read('o', Buffer.from('03000000' + '2f2f6100', 'hex')), protocolError(/object path/));
      assert.throws(() => read('v', Buffer.from('02' + '737300', 'hex')), protocolError(/one complete type/));
      assert.throws(() => read('au', Buffer.from('00000005', 'hex')), protocolError(/64 MiB/));
      // Variants inside variants, deeper than the limit.
      let nested = Buffer.from('01' + '7500' + '00' + '07000000', 'hex'); // v(u 7)
      for (let i = 0; i < 70; i++) nested = Buffer.concat([Buffer.from('01' + '7600', 'hex'), nested]);
      assert.throws(() => read('v', nested), protocolError(/nest too deep|padding|truncated/));
    });
  });

  describe('messages', () => {
    const call: Message = {
      type: MessageType.MethodCall,
      serial: 7,
      destination: 'org.freedesktop.systemd1',
      path: '/org/freedesktop/systemd1',
      interface: 'org.freedesktop.systemd1.Manager',
      member: 'StartTransientUnit',
      signature: 'ssa(sv)a(sa(sv))',
      body: START_BODY,
    };

    it('encode then decode gives the same message; the body starts 8-aligned', () => {
      const b = encodeMessage(call);
      assert.equal(String.fromCharCode(b[0]!), 'l');
      assert.equal(b[1], 1, 'METHOD_CALL');
      assert.equal(b[3], 1, 'protocol version 1');
      assert.equal(b.readUInt32LE(8), 7, 'serial');
      const fieldsEnd = 16 + b.readUInt32LE(12);
      assert.equal(b.length - b.readUInt32LE(4), fieldsEnd + ((8 - (fieldsEnd % 8)) % 8));
      assert.deepEqual(decodeMessage(b), { ...call, flags: 0 });
    });

    it("the bus's Hello, byte for byte", () => {
      const hello = encodeMessage({
        type: MessageType.MethodCall,
        serial: 1,
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'Hello',
      });
      // As libdbus and sd-bus write it (fields: path, interface, member, destination; no signature for no body).
      assert.equal(
        hex(hello),
        '6c010001' +
          '00000000' +
          '01000000' +
          '6d000000' +
          '01016f00' +
          '15000000' +
          Buffer.from('/org/freedesktop/DBus\0').toString('hex') +
          '0000' +
          '02017300' +
          '14000000' +
          Buffer.from('org.freedesktop.DBus\0').toString('hex') +
          '000000' +
          '03017300' +
          '05000000' +
          Buffer.from('Hello\0').toString('hex') +
          '0000' +
          '06017300' +
          '14000000' +
          Buffer.from('org.freedesktop.DBus\0').toString('hex') +
          '000000',
      );
    });

    it('refuses what a message type requires but lacks, and unix fds', () => {
      assert.throws(
        () => encodeMessage({ type: MessageType.MethodCall, serial: 1, path: '/' }),
        protocolError(/member/),
      );
      assert.throws(
        () => encodeMessage({ type: MessageType.Error, serial: 1, replySerial: 1 }),
        protocolError(/error name/),
      );
      assert.throws(() => encodeMessage({ ...call, member: 'a.b' }), protocolError(/member/));
      assert.throws(() => encodeMessage({ ...call, serial: 0 }), protocolError(/serial/));
      const b = encodeMessage({ type: MessageType.Signal, serial: 2, path: '/a', interface: 'a.b', member: 'C' });
      // Rewrite the message with a UNIX_FDS field of 1.
      const w = new Writer();
      w.writeAll('yyyyuua(yv)', [
        0x6c,
        4,
        0,
        1,
        0,
        2,
        [
          [1, { signature: 'o', value: '/a' }],
          [2, { signature: 's', value: 'a.b' }],
          [3, { signature: 's', value: 'C' }],
          [9, { signature: 'u', value: 1 }],
        ],
      ]);
      w.align(8);
      assert.ok(b.length > 0);
      assert.throws(() => decodeMessage(w.result()), protocolError(/unix fds/));
    });

    it('the stream decoder: byte by byte, two at once, and a message above the cap refused from its header', () => {
      const b = encodeMessage(call);
      const d = new MessageDecoder(1 << 20);
      const got: Message[] = [];
      for (let i = 0; i < b.length; i++) got.push(...d.push(b.subarray(i, i + 1)));
      assert.equal(got.length, 1);
      assert.deepEqual(got[0]!.body, START_BODY);
      assert.equal(d.push(Buffer.concat([b, b])).length, 2);
      const small = new MessageDecoder(256);
      const header = Buffer.from(b.subarray(0, 16));
      header.writeUInt32LE(1 << 20, 4); // announces a 1 MiB body
      assert.throws(() => small.push(header), protocolError(/larger than the cap of 256/));
      assert.throws(() => new MessageDecoder(1 << 20).push(Buffer.from('x'.repeat(16))), protocolError(/byte order/));
    });
  });
});
