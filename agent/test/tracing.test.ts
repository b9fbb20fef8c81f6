/** The guest's span recording (agent/tracing.ts): traceparent parsing, nesting, and the bounded buffer. */
import assert from 'node:assert/strict';
import { SpanRecorder, guestSpan, parseTraceparent, serverSpan } from '../tracing';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';
const md = (value: string): Record<string, string[]> => ({ traceparent: [value] });

describe('agent tracing', () => {
  it('parses a sampled W3C traceparent and nothing else', () => {
    assert.deepEqual(parseTraceparent(md(`00-${TRACE}-${PARENT}-01`)), { traceId: TRACE, spanId: PARENT });
    for (const bad of [
      `00-${TRACE}-${PARENT}-00`, // not sampled
      `01-${TRACE}-${PARENT}-01`, // unknown version
      `00-${'0'.repeat(32)}-${PARENT}-01`,
      `00-${TRACE}-${'0'.repeat(16)}-01`,
      `00-${TRACE.toUpperCase()}-${PARENT}-01`,
      `00-${TRACE}-${PARENT}-01-extra`,
      'x'.repeat(10_000),
    ])
      assert.equal(parseTraceparent(md(bad)), undefined, bad);
    assert.equal(parseTraceparent({}), undefined);
    assert.equal(parseTraceparent(undefined), undefined);
  });

  it('records a call span as the child of the traceparent, and its steps as its children', async () => {
    const rec = new SpanRecorder(10);
    const result = await serverSpan(
      'grpc.AgentService/CreateContainer',
      md(`00-${TRACE}-${PARENT}-01`),
      { 'hull.container.id': 'c1', 'hull.exec.id': undefined },
      () => guestSpan('crun create', { 'hull.container.id': 'c1' }, async () => 42, rec),
      rec,
    );
    assert.equal(result, 42);
    const { spans, dropped } = rec.drain(0);
    assert.equal(dropped, 0);
    assert.deepEqual(
      spans.map((s) => s.name),
      ['crun create', 'grpc.AgentService/CreateContainer'],
    );
    const [child, call] = spans as [(typeof spans)[0], (typeof spans)[0]];
    assert.equal(call.traceId, TRACE);
    assert.equal(call.parentSpanId, PARENT);
    assert.equal(child.parentSpanId, call.spanId);
    assert.match(call.spanId ?? '', /^[0-9a-f]{16}$/);
    assert.deepEqual(call.attributes, [{ key: 'hull.container.id', value: 'c1' }]);
    assert.ok((call.startMs ?? 0) <= (child.startMs ?? 0) && (child.endMs ?? 0) <= (call.endMs ?? 0));
  });

  it('an error marks the span and is rethrown', async () => {
    const rec = new SpanRecorder(10);
    await assert.rejects(
      Promise.resolve(
        serverSpan('m', md(`00-${TRACE}-${PARENT}-01`), {}, () => Promise.reject(new Error('crun failed')), rec),
      ),
      /crun failed/,
    );
    const [span] = rec.drain(0).spans;
    assert.equal(span?.statusCode, 2);
    assert.equal(span?.statusMessage, 'crun failed');
  });

  it('records nothing without a traceparent, or for a step outside a traced call', async () => {
    const rec = new SpanRecorder(10);
    assert.equal(await serverSpan('m', {}, {}, () => 1, rec), 1);
    assert.equal(await guestSpan('crun start', {}, () => 2, rec), 2);
    assert.equal(rec.size, 0);
  });

  it('keeps at most its capacity, drops and counts the rest, and drains in order', async () => {
    const rec = new SpanRecorder(3);
    for (let i = 0; i < 5; i++) await serverSpan(`s${i}`, md(`00-${TRACE}-${PARENT}-01`), {}, () => i, rec);
    const first = rec.drain(2);
    assert.deepEqual(
      first.spans.map((s) => s.name),
      ['s0', 's1'],
    );
    assert.equal(first.dropped, 2);
    const second = rec.drain(100);
    assert.deepEqual(
      second.spans.map((s) => s.name),
      ['s2'],
    );
    assert.equal(second.dropped, 0, 'the count restarts at each drain');
  });

  it('nextDrain resolves at the next drain, or after its timeout when none comes', async () => {
    const rec = new SpanRecorder(3);
    let done = false;
    const waiting = rec.nextDrain(10_000).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false, 'no drain yet');
    rec.drain(0);
    await waiting;
    const t0 = Date.now();
    await rec.nextDrain(50);
    assert.ok(Date.now() - t0 >= 45, 'no drain: the timeout');
  });
});
