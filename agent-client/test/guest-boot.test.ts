import assert from 'node:assert/strict';
import { guestKiB, parseGuestBoot, MAX_UPTIME_MS } from '../guest-boot';

describe('agent-client/guest-boot', () => {
  const good = { initStartedMs: 900, agentStartedMs: 1200, agentMainMs: 1500, agentReadyMs: 1700, uptimeMs: 2500 };

  it('keeps a boot whose points are in order', () => {
    assert.deepEqual(parseGuestBoot(good), good);
  });

  it('reads a missing or zero point (an older agent, an unknown figure) as NaN and keeps the rest', () => {
    const r = parseGuestBoot({ ...good, initStartedMs: 0, agentMainMs: undefined });
    assert.ok(Number.isNaN(r.initStartedMs));
    assert.ok(Number.isNaN(r.agentMainMs));
    assert.equal(r.agentStartedMs, 1200);
    assert.equal(r.agentReadyMs, 1700);
    assert.equal(r.uptimeMs, 2500);
  });

  it('drops what is not a finite positive uptime below the bound', () => {
    for (const bad of [-1, NaN, Infinity, -Infinity, MAX_UPTIME_MS + 1, null, '5' as unknown as number]) {
      const r = parseGuestBoot({ ...good, agentMainMs: bad });
      assert.ok(Number.isNaN(r.agentMainMs), String(bad));
      assert.equal(r.agentReadyMs, 1700, String(bad));
    }
  });

  it('drops a point earlier than an earlier valid one (the guest cannot make the boot run backwards)', () => {
    const r = parseGuestBoot({ ...good, agentMainMs: 1000 });
    assert.ok(Number.isNaN(r.agentMainMs));
    assert.equal(r.agentReadyMs, 1700);
    const r2 = parseGuestBoot({ ...good, initStartedMs: 5000 });
    assert.equal(r2.initStartedMs, 5000);
    assert.ok(Number.isNaN(r2.agentStartedMs) && Number.isNaN(r2.agentReadyMs) && Number.isNaN(r2.uptimeMs));
  });

  it('accepts a memory figure only as a positive 32-bit integer of KiB', () => {
    assert.equal(guestKiB(40_000), 40_000);
    for (const bad of [0, -5, 1.5, 2 ** 32, NaN, undefined, null]) assert.ok(Number.isNaN(guestKiB(bad)), String(bad));
  });
});
