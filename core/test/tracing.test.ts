/** core's spans (core/tracing.ts): the VM boot's parts under a traced call, nothing outside one. */
import assert from 'node:assert/strict';
import { inRootSpan, startTestTracing, type TestTracing } from '../../agent-client/test/otel';
import { NOOP_LOGGER } from '../../log';
import { inSpan } from '../tracing';
import { SandboxVm } from '../vm';
import { FakeAgent, FakeHypervisor, testConfig } from './fakes';

describe('core tracing', () => {
  let tracing: TestTracing;
  beforeEach(() => (tracing = startTestTracing()));
  afterEach(() => tracing.stop());

  const boot = async (): Promise<SandboxVm> => {
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    return SandboxVm.boot(hv, testConfig(), { bootTimeoutMs: 1000, logger: NOOP_LOGGER, dial: async () => agent });
  };

  it('vm.boot holds vm.qemu_start, vm.guest_boot and vm.agent_ready, in that order', async () => {
    const vm = await inRootSpan('Create', boot);
    for (let i = 0; i < 50 && !tracing.spans().some((s) => s.name === 'vm.agent_ready'); i++)
      await new Promise((r) => setTimeout(r, 10)); // the split is recorded after the boot returns
    const spans = tracing.spans();
    const byName = (n: string) => spans.find((s) => s.name === n)!;
    const create = byName('Create');
    const vmBoot = byName('vm.boot');
    assert.equal(vmBoot.parentSpanContext?.spanId, create.spanContext().spanId);
    assert.equal(vmBoot.attributes['hull.sandbox.id'], testConfig().id);
    for (const part of ['vm.qemu_start', 'vm.guest_boot', 'vm.agent_ready'])
      assert.equal(byName(part).parentSpanContext?.spanId, vmBoot.spanContext().spanId, part);
    const ms = (t: [number, number]): number => t[0] * 1000 + t[1] / 1e6;
    assert.ok(ms(byName('vm.guest_boot').endTime) <= ms(byName('vm.agent_ready').startTime) + 0.001);
    await vm.shutdown({ gracefulMs: 100 });
  });

  it('outside a traced call the boot records nothing; a failing step marks its span', async () => {
    const vm = await boot();
    await vm.shutdown({ gracefulMs: 100 });
    assert.deepEqual(tracing.spans(), []);
    await assert.rejects(
      inRootSpan('Create', () => inSpan('share.prepare', {}, () => Promise.reject(new Error('no virtiofsd')))),
      /no virtiofsd/,
    );
    const step = tracing.spans().find((s) => s.name === 'share.prepare');
    assert.equal(step?.status.code, 2);
    assert.equal(step?.status.message, 'no virtiofsd');
  });
});
