import assert from 'node:assert/strict';
import { INIT_UPTIME_ENV, initStartedMs, selfMemoryKiB } from '../system';

describe('agent boot figures', () => {
  it('reads the initramfs start from the variable /init exports', () => {
    assert.equal(INIT_UPTIME_ENV, 'HULL_INIT_UPTIME'); // guest/initramfs.ts's name too (its test pins it)
    assert.equal(initStartedMs({ [INIT_UPTIME_ENV]: '1.23' }), 1230);
    assert.equal(initStartedMs({ [INIT_UPTIME_ENV]: '12345.67' }), 12_345_670);
  });

  it('reads a missing or malformed value as unknown (NaN)', () => {
    for (const v of [undefined, '', '1', '1.2', '-1.00', '1.23 4', '1e3.00', ' 1.23', '1234567890.00'])
      assert.ok(Number.isNaN(initStartedMs(v === undefined ? {} : { [INIT_UPTIME_ENV]: v })), String(v));
  });

  it('measures its own RSS and PSS', () => {
    const m = selfMemoryKiB();
    assert.ok(m.rssKiB > 1000);
    assert.ok(Number.isNaN(m.pssKiB) || m.pssKiB > 1000);
  });
});
