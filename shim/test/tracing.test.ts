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
});
