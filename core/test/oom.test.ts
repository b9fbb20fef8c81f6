import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NOOP_LOGGER, type Logger } from '../../log';
import type { SandboxEvent } from '../events';
import { OomCoalescer } from '../oom';
import { Sandbox } from '../sandbox';
import { FakeAgent, FakeHypervisor, FakeShare, testConfig } from './fakes';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, pred: () => boolean, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function recorder(): { logger: Logger; warned: { obj: Record<string, unknown>; msg: string }[] } {
  const warned: { obj: Record<string, unknown>; msg: string }[] = [];
  return {
    warned,
    logger: { ...NOOP_LOGGER, warn: (obj, msg) => warned.push({ obj: obj as Record<string, unknown>, msg }) },
  };
}

describe('core OomCoalescer (OOM events from the guest, per container, rate limited)', () => {
  let oom: OomCoalescer | undefined;
  afterEach(() => oom?.stop());

  it('publishes the first OOM at once, then one event per interval for all that follow, counting them in the log', async () => {
    const published: string[] = [];
    const { logger, warned } = recorder();
    oom = new OomCoalescer((id) => published.push(id), logger, 100);
    for (let i = 0; i < 1000; i++) oom.report('c1');
    oom.report('c2');
    assert.deepEqual(published, ['c1', 'c2'], 'the first of each container at once');
    await until('the coalesced event', () => published.length === 3);
    assert.deepEqual(published, ['c1', 'c2', 'c1']);
    assert.deepEqual(
      warned.map((w) => w.obj.coalesced),
      [999],
    );
    await sleep(250);
    assert.equal(published.length, 3, 'nothing more when nothing more happened');
    oom.report('c1');
    assert.equal(published.length, 4, 'a quiet interval later, the next OOM goes out at once');
  });

  it('a steady flood gives at most one event per interval', async () => {
    const published: number[] = [];
    oom = new OomCoalescer(() => published.push(performance.now()), NOOP_LOGGER, 50);
    const end = Date.now() + 300;
    while (Date.now() < end) {
      for (let i = 0; i < 100; i++) oom.report('c1');
      await sleep(2);
    }
    // Timers may run late on a loaded host, never early: every two events are at least an interval apart.
    assert.ok(published.length >= 1);
    for (let i = 1; i < published.length; i++)
      assert.ok(
        published[i]! - published[i - 1]! >= 49,
        `events ${i - 1} and ${i} are ${published[i]! - published[i - 1]!} ms apart`,
      );
  });

  it('stop() drops what is pending', async () => {
    const published: string[] = [];
    oom = new OomCoalescer((id) => published.push(id), NOOP_LOGGER, 30);
    oom.report('c1');
    oom.report('c1');
    oom.stop();
    oom.report('c1');
    await sleep(80);
    assert.deepEqual(published, ['c1']);
  });

  it('through the sandbox: a guest answering GetOOMEvent 500 times at once makes one oom event, then one more', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-oom-'));
    const hv = new FakeHypervisor();
    const agent = new FakeAgent(hv);
    const events: SandboxEvent[] = [];
    const sandbox = new Sandbox({
      namespace: 'ns1',
      id: 'sb',
      dir: path.join(tmp, 'sb'),
      vmConfig: (vm) => ({ ...testConfig(), id: vm.id, stateDir: vm.stateDir, sharedDir: vm.sharedDir }),
      bootTimeoutMs: 1_000,
      hypervisor: () => hv,
      share: (root, id) => new FakeShare(root, id),
      dial: async () => agent,
      logger: NOOP_LOGGER,
      events: (e) => events.push(e),
      oomIntervalMs: 100,
    });
    try {
      const bundle = path.join(tmp, 'bundle');
      fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
      await sandbox.create({
        id: 'sb',
        bundle,
        spec: { ociVersion: '1.0.2', process: { args: ['sh'], cwd: '/' }, root: { path: 'rootfs' } },
        rootfs: [],
        stdio: { stdin: '', stdout: '', stderr: '', terminal: false },
      });
      for (let i = 0; i < 500; i++) agent.oom('sb');
      agent.oom('not-a-container');
      const ooms = (): string[] => events.filter((e) => e.type === 'oom').map((e) => e.containerId);
      await until('the coalesced event', () => ooms().length === 2);
      await sleep(250);
      assert.deepEqual(ooms(), ['sb', 'sb']);
    } finally {
      for (const p of agent.procs.values()) p.exit(137);
      await sandbox.teardown().catch(() => undefined);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
