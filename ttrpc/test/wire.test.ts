import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../src/wire';

// The ttrpc envelope as upstream defines it, loaded by reflection to cross-check our hand-written codec. Parsed in
// before(): protobufjs's 64-bit setting is process wide and other suites loaded in the same run may change it.
const PROTO = `
  syntax = "proto3";
  package ttrpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message KeyValue { string key = 1; string value = 2; }
  message Request { string service = 1; string method = 2; bytes payload = 3; int64 timeout_nano = 4; repeated KeyValue metadata = 5; }
  message Response { Status status = 1; bytes payload = 2; }
`;

describe('ttrpc envelope encoding', () => {
  let Request: protobuf.Type;
  let Response: protobuf.Type;
  before(() => {
    const root = protobuf.parse(PROTO).root;
    Request = root.lookupType('ttrpc.Request');
    Response = root.lookupType('ttrpc.Response');
  });

  it('encodes a Request byte for byte as protobufjs does', () => {
    const req = {
      service: 'containerd.task.v2.Task',
      method: 'State',
      payload: Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63]),
      timeoutNano: 2_000_000_000,
      metadata: [
        { key: 'containerd-namespace-ttrpc', value: 'default' },
        { key: 'k', value: 'v2' },
      ],
    };
    const ours = encodeRequest(req);
    const theirs = Request.encode(Request.fromObject(req)).finish();
    assert.deepEqual([...ours], [...theirs]);
    const back = decodeRequest(ours);
    assert.equal(back.service, req.service);
    assert.equal(back.method, req.method);
    assert.deepEqual([...back.payload], [...req.payload]);
    assert.equal(back.timeoutNano, req.timeoutNano);
    assert.deepEqual(back.metadata, req.metadata);
  });

  it('round-trips a negative timeout (a deadline already past) as a ten-byte varint', () => {
    const bytes = encodeRequest({
      service: 's',
      method: 'm',
      payload: new Uint8Array(0),
      timeoutNano: -5,
      metadata: [],
    });
    const theirs = Request.toObject(Request.decode(bytes), { longs: Number });
    assert.equal(theirs.timeoutNano, -5);
    assert.equal(decodeRequest(bytes).timeoutNano, -5);
  });

  it('encodes an error Response with status and details, and an OK one without status', () => {
    const err = encodeResponse({
      status: { code: 5, message: 'container x: not found', details: [{ typeUrl: 'a.B', value: Buffer.from([1, 2]) }] },
      payload: new Uint8Array(0),
    });
    const theirs = Response.encode(
      Response.fromObject({
        status: {
          code: 5,
          message: 'container x: not found',
          details: [{ typeUrl: 'a.B', value: Buffer.from([1, 2]) }],
        },
      }),
    ).finish();
    assert.deepEqual([...err], [...theirs]);
    const decoded = decodeResponse(err);
    assert.equal(decoded.status!.code, 5);
    assert.equal(decoded.status!.details[0]!.typeUrl, 'a.B');

    const ok = encodeResponse({ payload: Buffer.from('xyz') });
    assert.deepEqual([...ok], [...Response.encode(Response.fromObject({ payload: Buffer.from('xyz') })).finish()]);
    assert.equal(decodeResponse(ok).status, undefined);
  });

  it('skips unknown fields of every wire type', () => {
    const w = protobuf.Writer.create();
    w.uint32((1 << 3) | 2).string('svc');
    w.uint32((9 << 3) | 0).uint64(123456789);
    w.uint32((10 << 3) | 1).fixed64(7);
    w.uint32((11 << 3) | 5).fixed32(7);
    w.uint32((12 << 3) | 2).bytes(Buffer.from('junk'));
    w.uint32((2 << 3) | 2).string('m');
    const req = decodeRequest(w.finish());
    assert.equal(req.service, 'svc');
    assert.equal(req.method, 'm');
  });

  it('rejects truncated input', () => {
    const bytes = encodeRequest({
      service: 'service',
      method: 'm',
      payload: Buffer.alloc(50),
      timeoutNano: 0,
      metadata: [],
    });
    assert.throws(() => decodeRequest(bytes.subarray(0, bytes.length - 3)), /overruns/);
  });
});
