import assert from 'node:assert/strict';
import { CancelledError, DeadlineExceededError, UnavailableError } from '../../errors';
import { NOOP_LOGGER } from '../../log';
import type { GuestSpanBatch } from '../../agent-client';
import { LAST_DRAIN_MS, SandboxVm, type AgentDialer } from '../vm';
import { FakeAgent, FakeHypervisor, testConfig } from './fakes';

describe('core SandboxVm (fake hypervisor and agent)', () => {
  it('boots: prepare, start, dial; and shuts down gracefully through the agent', async () => {
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    const vm = await SandboxVm.boot(hv, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent,
    });
    assert.deepEqual(hv.calls, ['prepare', 'start']);
    assert.ok(vm.timings.agentReadyMs >= vm.timings.qemuStartedMs);
    const exit = await vm.shutdown({ gracefulMs: 1000 });
    assert.equal(exit.code, 0);
    assert.deepEqual(agent.calls, ['destroySandbox', 'close']);
    assert.deepEqual(hv.calls, ['prepare', 'start', 'stop', 'cleanup']);
  });

  it("drains the guest's spans after DestroySandbox, before the VM is stopped, and hands them over once", async () => {
    const hv = new FakeHypervisor();
    const batch: GuestSpanBatch = { spans: [], dropped: 3, refused: 0 };
    class Draining extends FakeAgent {
      timeouts: (number | undefined)[] = [];
      async drainSpans(o?: { timeoutMs?: number }): Promise<GuestSpanBatch> {
        this.calls.push(`drainSpans (hypervisor: ${hv.calls.join(',')})`);
        this.timeouts.push(o?.timeoutMs);
        return batch;
      }
    }
    const agent = new Draining(hv);
    const vm = await SandboxVm.boot(hv, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent,
    });
    await vm.shutdown({ gracefulMs: 1000 });
    assert.deepEqual(agent.calls, ['destroySandbox', 'drainSpans (hypervisor: prepare,start)', 'close']);
    assert.deepEqual(agent.timeouts, [LAST_DRAIN_MS]);
    assert.equal(vm.takeLastSpans(), batch);
    assert.equal(vm.takeLastSpans(), undefined, 'once');
  });

  it('a guest that does not answer the last drain delays the shutdown by LAST_DRAIN_MS at most', async () => {
    const hv = new FakeHypervisor();
    class Silent extends FakeAgent {
      drainSpans(): Promise<GuestSpanBatch> {
        this.calls.push('drainSpans');
        return new Promise(() => undefined); // never answers, ignores its deadline
      }
    }
    const agent = new Silent(hv);
    const vm = await SandboxVm.boot(hv, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent,
    });
    const t0 = Date.now();
    const exit = await vm.shutdown({ gracefulMs: 5_000 });
    const took = Date.now() - t0;
    assert.equal(exit.code, 0);
    assert.ok(took >= LAST_DRAIN_MS - 20 && took < LAST_DRAIN_MS + 500, `shutdown took ${took} ms`);
    assert.deepEqual(hv.calls, ['prepare', 'start', 'stop', 'cleanup']);
    assert.equal(vm.takeLastSpans(), undefined);
  });

  it('stops and cleans the VM when the agent never answers, with a deadline error', async () => {
    const hv = new FakeHypervisor();
    const dial: AgentDialer = (_e, o) =>
      new Promise((_, reject) => {
        const t = setTimeout(
          () => reject(new DeadlineExceededError('the agent did not answer')),
          o.deadline - Date.now(),
        );
        o.signal?.addEventListener('abort', () => {
          clearTimeout(t);
          reject(o.signal!.reason as Error);
        });
      });
    await assert.rejects(
      SandboxVm.boot(hv, testConfig(), { bootTimeoutMs: 50, logger: NOOP_LOGGER, dial }),
      DeadlineExceededError,
    );
    assert.deepEqual(hv.calls, ['prepare', 'start', 'stop(force)', 'cleanup']);
    assert.equal(hv.running, false);
  });

  it("a boot failure carries the guest console's and the agent log's last lines", async () => {
    class WithAgentLog extends FakeHypervisor {
      agentLogTail(maxLines?: number): string[] {
        return ['hull-agent info ready', 'hull-agent warn mount failed {"target":"/run"}'].slice(-(maxLines ?? 200));
      }
    }
    const hv = new WithAgentLog();
    const dial: AgentDialer = () => Promise.reject(new DeadlineExceededError('the agent did not answer'));
    await assert.rejects(
      SandboxVm.boot(hv, testConfig(), { bootTimeoutMs: 1000, logger: NOOP_LOGGER, dial }),
      (e: Error) => {
        assert.ok(e instanceof DeadlineExceededError);
        assert.equal(
          e.message,
          'the agent did not answer; guest console: [ fake ] last console line; agent log: hull-agent info ready | ' +
            'hull-agent warn mount failed {"target":"/run"}',
        );
        return true;
      },
    );
  });

  it('fails the dial at once, with the exit described, when the VM dies while booting', async () => {
    const hv = new FakeHypervisor();
    const dial: AgentDialer = (_e, o) =>
      new Promise((_, reject) => o.signal?.addEventListener('abort', () => reject(o.signal!.reason as Error)));
    setTimeout(() => hv.exit({ code: 1, signal: null }), 20);
    const t0 = Date.now();
    await assert.rejects(
      SandboxVm.boot(hv, testConfig(), { bootTimeoutMs: 10_000, logger: NOOP_LOGGER, dial }),
      (e: Error) =>
        e instanceof UnavailableError && /exit code 1/.test(e.message) && /last console line/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 1000);
    assert.deepEqual(hv.calls.slice(-2), ['stop(force)', 'cleanup']);
  });

  it('cleans up when QEMU fails to start, and honours the caller aborting', async () => {
    const hv = new FakeHypervisor();
    hv.failStart = new UnavailableError('qemu: bad option');
    await assert.rejects(
      SandboxVm.boot(hv, testConfig(), { bootTimeoutMs: 1000, logger: NOOP_LOGGER, dial: async () => new FakeAgent() }),
      /bad option/,
    );
    assert.deepEqual(hv.calls, ['prepare', 'start', 'stop(force)', 'cleanup']);

    const hv2 = new FakeHypervisor();
    const controller = new AbortController();
    const dial: AgentDialer = (_e, o) =>
      new Promise((_, reject) =>
        o.signal?.addEventListener('abort', () => reject(new CancelledError('aborted', { cause: o.signal!.reason }))),
      );
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(
      SandboxVm.boot(hv2, testConfig(), {
        bootTimeoutMs: 10_000,
        logger: NOOP_LOGGER,
        dial,
        signal: controller.signal,
      }),
      CancelledError,
    );
    assert.deepEqual(hv2.calls.slice(-2), ['stop(force)', 'cleanup']);
  });
});
