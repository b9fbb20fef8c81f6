/** ShimTracing (shim/tracing.ts): the decision taken once, and the guest's spans drained after traced calls. */
import assert from 'node:assert/strict';
import type { GuestSpanBatch } from '../../agent-client';
import { NOOP_LOGGER } from '../../log';
import { ShimTracing } from '../tracing';

const settings = { enableTracing: true, tracingEndpoint: 'http://127.0.0.1:9', tracingSamplingRatio: 1 };

describe('ShimTracing', () => {
  it('decides once: off stays off, and drains nothing', async () => {
    const t = new ShimTracing(NOOP_LOGGER, {});
    let drains = 0;
    t.setGuestSpanSource(async () => {
      drains++;
      return undefined;
    });
    t.start({ ...settings, enableTracing: false });
    t.start(settings); // too late: the first decision holds
    t.afterCall();
    await new Promise((r) => setImmediate(r));
    assert.equal(t.enabled, false);
    assert.equal(drains, 0);
    await t.shutdown();
  });

  it('on: drains after calls, one drain at a time (calls meanwhile coalesce), and counts what the guest lost', async () => {
    const t = new ShimTracing(NOOP_LOGGER, { 'service.name': 'test' });
    t.start(settings);
    assert.equal(t.enabled, true);
    let drains = 0;
    let release: () => void = () => undefined;
    t.setGuestSpanSource(async (): Promise<GuestSpanBatch> => {
      drains++;
      await new Promise<void>((r) => (release = r));
      return { spans: [], dropped: 2, refused: 1 };
    });
    try {
      t.afterCall();
      t.afterCall();
      t.afterCall();
      assert.equal(drains, 1, 'one drain at a time');
      release();
      await new Promise((r) => setTimeout(r, 10));
      assert.equal(drains, 2, 'the calls made meanwhile: one more drain');
      release();
      await new Promise((r) => setTimeout(r, 10));
      assert.equal(drains, 2);
      assert.deepEqual(t.counts, { exported: 0, dropped: 4, refused: 2 });
    } finally {
      release();
      await t.shutdown();
    }
    assert.equal(t.enabled, false);
  });

  it('at exit it drains once more: the spans the VM drained as it powered off (a SIGTERM teardown) are exported', async () => {
    const t = new ShimTracing(NOOP_LOGGER, {});
    t.start(settings);
    const now = Date.now();
    const last: GuestSpanBatch = {
      spans: [
        {
          traceId: '0af7651916cd43dd8448eb211c80319c',
          spanId: '1111111111111111',
          parentSpanId: '2222222222222222',
          name: 'grpc.AgentService/DestroySandbox',
          startMs: now - 20,
          endMs: now - 10,
          attributes: {},
          status: { code: 'unset', message: '' },
        },
      ],
      dropped: 0,
      refused: 0,
    };
    let handed: GuestSpanBatch | undefined = last;
    t.setGuestSpanSource(async () => {
      const b = handed;
      handed = undefined;
      return b;
    });
    await t.shutdown(); // no Task call drained after the teardown
    assert.equal(handed, undefined, 'drained at exit');
    assert.equal(t.counts.exported, 1);
  });

  it('a collector that is not there: spans are lost, the calls and the exit are not held up', async function () {
    this.timeout(20_000);
    const t = new ShimTracing(NOOP_LOGGER, {});
    t.start(settings); // 127.0.0.1:9: nothing listens
    const { trace } = await import('@opentelemetry/api');
    const t0 = Date.now();
    for (let i = 0; i < 100; i++) trace.getTracer('test').startSpan(`s${i}`).end();
    assert.ok(Date.now() - t0 < 1_000, 'ending spans does not wait for the collector');
    const t1 = Date.now();
    await t.shutdown();
    assert.ok(Date.now() - t1 < 6_000, `the last export is bounded (${Date.now() - t1} ms)`);
  });

  it('a hung collector (accepts, never answers): the exit waits at most its bound', async function () {
    this.timeout(20_000);
    const net = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const hung = net.createServer((c) => sockets.push(c));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const port = (hung.address() as import('node:net').AddressInfo).port;
    try {
      const t = new ShimTracing(NOOP_LOGGER, {});
      t.start({ ...settings, tracingEndpoint: `http://127.0.0.1:${port}` });
      const { trace } = await import('@opentelemetry/api');
      for (let i = 0; i < 10; i++) trace.getTracer('test').startSpan(`s${i}`).end();
      const t0 = Date.now();
      await t.shutdown();
      const ms = Date.now() - t0;
      assert.ok(ms < 6_500, `bounded: ${ms} ms`);
      // The globals are released even though the provider's shutdown still hangs on the collector.
      const { BasicTracerProvider } = await import('@opentelemetry/sdk-trace-base');
      assert.equal(trace.setGlobalTracerProvider(new BasicTracerProvider()), true, 'the global provider was released');
      trace.disable();
    } finally {
      for (const c of sockets) c.destroy();
      hung.close();
    }
  });
});
