import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HealthStatus } from '../../agent-client';
import { UnavailableError } from '../../errors';
import { NOOP_LOGGER } from '../../log';
import type { SandboxEvent } from '../events';
import { HealthMonitor } from '../health';
import { Sandbox } from '../sandbox';
import { SandboxVm } from '../vm';
import { FakeAgent, FakeHypervisor, FakeShare, testConfig } from './fakes';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A check whose answer the test sets: a status, 'hang' (never answers until abandoned), or an error. */
function scripted(): {
  check: ConstructorParameters<typeof HealthMonitor>[0];
  answer: { now: HealthStatus | 'hang' | Error };
  calls: number[];
  abandoned: number;
} {
  const s = {
    answer: { now: 'serving' as HealthStatus | 'hang' | Error },
    calls: [] as number[],
    abandoned: 0,
    check: undefined as unknown as ConstructorParameters<typeof HealthMonitor>[0],
  };
  s.check = async ({ signal }) => {
    s.calls.push(Date.now());
    const a = s.answer.now;
    if (a instanceof Error) throw a;
    if (a !== 'hang') return a;
    return new Promise((_r, reject) =>
      signal.addEventListener(
        'abort',
        () => {
          s.abandoned++;
          reject(new Error('abandoned'));
        },
        { once: true },
      ),
    );
  };
  return s;
}

describe('core HealthMonitor (the agent checked every interval, lost after the timeout)', () => {
  let monitor: HealthMonitor | undefined;
  afterEach(() => monitor?.stop());

  it('a healthy agent: a check every interval and no failure', async () => {
    const s = scripted();
    let failed: Error | undefined;
    monitor = new HealthMonitor(s.check, { intervalMs: 20, timeoutMs: 100 }, (e) => (failed = e), NOOP_LOGGER);
    monitor.start();
    await sleep(250);
    assert.equal(failed, undefined);
    assert.ok(s.calls.length >= 2, `${s.calls.length} checks in 250 ms every 20 ms`); // a loaded host runs fewer, never a failure
  });

  it('a hung agent is declared lost within interval + timeout, once, and the hung call is abandoned', async () => {
    const s = scripted();
    const failures: UnavailableError[] = [];
    monitor = new HealthMonitor(s.check, { intervalMs: 30, timeoutMs: 150 }, (e) => failures.push(e), NOOP_LOGGER);
    monitor.start();
    await sleep(100);
    const hungAt = Date.now();
    s.answer.now = 'hang';
    while (failures.length === 0 && Date.now() - hungAt < 20_000) await sleep(5);
    assert.equal(failures.length, 1);
    assert.ok(failures[0] instanceof UnavailableError);
    assert.match(
      failures[0].message,
      /has not answered a health check for \d+ ms \(timeout 150 ms; last: no answer within 150 ms\)/,
    );
    assert.ok(s.abandoned >= 1);
    const checks = s.calls.length;
    await sleep(150);
    assert.equal(s.calls.length, checks, 'no check after the failure');
    assert.equal(failures.length, 1);
  });

  it('failing answers (errors, not serving) count as no answer; one success within the timeout resets it', async () => {
    const s = scripted();
    let failure: Error | undefined;
    const failed = (): Error | undefined => failure;
    monitor = new HealthMonitor(s.check, { intervalMs: 20, timeoutMs: 200 }, (e) => (failure = e), NOOP_LOGGER);
    s.answer.now = new UnavailableError('busy');
    monitor.start();
    await sleep(120);
    s.answer.now = 'serving';
    await sleep(60);
    s.answer.now = 'not-serving';
    await sleep(120);
    assert.equal(failed(), undefined, 'never 200 ms without a success');
    await sleep(250);
    assert.match(failed()?.message ?? '', /last: the agent says it is not-serving/);
  });

  it('interval 0 means no checks; stop() ends a check in flight at once', async () => {
    const s = scripted();
    monitor = new HealthMonitor(
      s.check,
      { intervalMs: 0, timeoutMs: 100 },
      () => assert.fail('no check, no failure'),
      NOOP_LOGGER,
    );
    monitor.start();
    await sleep(50);
    assert.equal(s.calls.length, 0);

    s.answer.now = 'hang';
    monitor = new HealthMonitor(
      s.check,
      { intervalMs: 5, timeoutMs: 10_000 },
      () => assert.fail('stopped first'),
      NOOP_LOGGER,
    );
    monitor.start();
    while (s.calls.length === 0) await sleep(5);
    const t0 = Date.now();
    await monitor.stop();
    assert.ok(Date.now() - t0 < 5_000, 'stop() does not wait out the 10 s timeout');
    assert.equal(s.abandoned, 1);
  });
});

describe('core SandboxVm and Sandbox with a hung agent (fakes)', () => {
  it('SandboxVm: a hung agent makes the VM lost: QEMU force-stopped, listeners told once; shutdown then skips the agent', async () => {
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    const vm = await SandboxVm.boot(hv, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent,
      health: { intervalMs: 20, timeoutMs: 100 },
    });
    const lost: Error[] = [];
    vm.onLost((e) => lost.push(e));
    await sleep(100);
    assert.equal(lost.length, 0);
    assert.ok(agent.checks >= 2);
    agent.health = 'hang';
    const t0 = Date.now();
    while (lost.length === 0 && Date.now() - t0 < 2_000) await sleep(5);
    assert.equal(lost.length, 1);
    assert.match(String(lost.at(0)?.message), /has not answered a health check/);
    assert.ok(hv.calls.includes('stop(force)'));
    assert.equal(hv.running, false);
    agent.lose(new Error('connection reset')); // the connection breaking as QEMU dies: no second report
    await sleep(10);
    assert.equal(lost.length, 1);
    const exit = await vm.shutdown({ gracefulMs: 5_000 });
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(!agent.calls.includes('destroySandbox'), 'no graceful DestroySandbox to a hung agent');
    assert.deepEqual(hv.calls.slice(-1), ['cleanup']);
  });

  it('SandboxVm: no health check after shutdown starts, and none configured means none', async () => {
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    const vm = await SandboxVm.boot(hv, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent,
      health: { intervalMs: 10, timeoutMs: 50 },
    });
    await vm.shutdown({ gracefulMs: 1000 });
    const checks = agent.checks;
    await sleep(60);
    assert.equal(agent.checks, checks);

    const hv2 = new FakeHypervisor();
    const agent2 = new FakeAgent(hv2);
    const vm2 = await SandboxVm.boot(hv2, testConfig(), {
      bootTimeoutMs: 1000,
      logger: NOOP_LOGGER,
      dial: async () => agent2,
    });
    await sleep(30);
    assert.equal(agent2.checks, 0);
    await vm2.shutdown({ gracefulMs: 1000 });
  });

  it('Sandbox: every started process exits 255 when the agent hangs; deleting the sandbox then leaves nothing', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-health-'));
    const dir = path.join(tmp, 'state', 'sb');
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    const events: SandboxEvent[] = [];
    const sandbox = new Sandbox({
      namespace: 'ns1',
      id: 'sb',
      dir,
      vmConfig: (vm) => ({ ...testConfig(), id: vm.id, stateDir: vm.stateDir, sharedDir: vm.sharedDir }),
      bootTimeoutMs: 1_000,
      hypervisor: () => hv,
      share: (root, id) => new FakeShare(root, id),
      dial: async () => agent,
      logger: NOOP_LOGGER,
      events: (e) => events.push(e),
      health: { intervalMs: 20, timeoutMs: 100 },
    });
    const NO_STDIO = { stdin: '', stdout: '', stderr: '', terminal: false };
    const spec = { ociVersion: '1.0.2', process: { args: ['sh'], cwd: '/' }, root: { path: 'rootfs' } };
    try {
      for (const id of ['sb', 'c2']) {
        const bundle = path.join(tmp, 'bundles', id);
        fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
        await sandbox.create({ id, bundle, spec, rootfs: [], stdio: NO_STDIO });
        await sandbox.start(id, '');
      }
      await sandbox.exec('c2', 'e1', { args: ['sleep', '9'] }, NO_STDIO);
      await sandbox.start('c2', 'e1');
      agent.health = 'hang';
      const statuses = await Promise.all([sandbox.wait('sb', ''), sandbox.wait('c2', ''), sandbox.wait('c2', 'e1')]);
      assert.deepEqual(
        statuses.map((s) => s.exitStatus),
        [255, 255, 255],
      );
      assert.equal(hv.running, false, 'QEMU killed');
      assert.deepEqual(
        events.filter((e) => e.type === 'exit').map((e) => e.exitStatus),
        [255, 255, 255],
      );
      await sandbox.delete('c2', 'e1');
      await sandbox.delete('c2', '');
      await sandbox.delete('sb', '');
      assert.ok(!agent.calls.includes('destroySandbox'));
      assert.deepEqual(hv.calls.slice(-1), ['cleanup']);
      assert.equal(fs.existsSync(dir), false, 'the sandbox folder is gone');
      assert.ok(sandbox.empty);
    } finally {
      for (const p of agent.procs.values()) p.exit(137);
      await sandbox.teardown().catch(() => undefined);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
