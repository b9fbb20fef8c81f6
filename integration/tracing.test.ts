/**
 * Traces end to end (a private containerd, the real shim, QEMU and guest, and a real OTLP/gRPC receiver): with
 * `[runtime] enable_tracing` a `ctr run` yields one trace per Task call, the Create's going Task/Create → vm.boot
 * (QEMU start, guest boot, agent ready) → agent calls → the guest's own spans (mounts, crun create), every parent
 * link inside the trace, and the sandbox's final Delete carries the guest's DestroySandbox (drained before the VM
 * powers off); with tracing off nothing is sent and the shim never loads the SDK.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import { guestArtifacts } from './lib/guest';
import { OtlpReceiver, type ReceivedSpan } from './lib/otlp-receiver';

const RUNTIME = 'io.containerd.hull.v2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The `shim exiting` line hull's shim logged for `id` (containerd copies the shim's log into its own). */
function shimExitReport(ctd: PrivateContainerd, id: string): Record<string, unknown> | undefined {
  for (const line of fs.readFileSync(ctd.log, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.id === id && o.msg === 'shim exiting') return o;
    } catch {
      /* a partial line */
    }
  }
  return undefined;
}

async function waitFor<T>(what: string, ms: number, probe: () => T | undefined): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) return assert.fail(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
}

/** The trace as an indented tree with durations (HULL_TRACE_DUMP=1), for a reader. */
function dumpTree(spans: ReceivedSpan[]): void {
  const print = (s: ReceivedSpan, depth: number): void => {
    const guest = s.attributes['hull.guest'] ? ' (guest)' : '';
    console.log(`${'  '.repeat(depth)}${s.name}${guest} ${(s.endMs - s.startMs).toFixed(1)} ms`);
    for (const c of spans.filter((x) => x.parentSpanId === s.spanId).sort((a, b) => a.startMs - b.startMs))
      print(c, depth + 1);
  };
  for (const root of spans.filter((s) => !spans.some((p) => p.spanId === s.parentSpanId))) print(root, 0);
}

describe('tracing: OTLP/gRPC export of the shim and the guest', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let receiver: OtlpReceiver;

  before(async function () {
    guestArtifacts();
    receiver = await OtlpReceiver.start();
    ctd = await startContainerd();
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
    await receiver?.stop();
  });

  function writeConfig(name: string, tracing: boolean): string {
    const file = path.join(ctd.dir, name);
    fs.writeFileSync(
      file,
      [
        '[agent]',
        'boot_timeout = 120',
        '[runtime]',
        `state_dir = "${ctd.stateDir}"`,
        `enable_tracing = ${tracing}`,
        `tracing_endpoint = "${receiver.endpoint}"`,
        'tracing_sampling_ratio = 1.0',
        '',
      ].join('\n'),
    );
    return file;
  }

  async function ctrRun(id: string, config: string): Promise<void> {
    const r = await ctd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--runtime-config-path',
      config,
      BUSYBOX_IMAGE,
      id,
      'true',
    ]);
    assert.equal(r.code, 0, r.stderr);
  }

  it('a ctr run makes one trace per Task call; Create → vm.boot → agent calls → the guest (crun create), no orphans', async () => {
    receiver.clear();
    const id = 'traced';
    await ctrRun(id, writeConfig('tracing-on.toml', true));
    const report = await waitFor('the shim exits', 60_000, () => shimExitReport(ctd, id));
    assert.equal(report.tracing, true, JSON.stringify(report));
    assert.equal(report.tracingSdkLoaded, true);

    const create = await waitFor('the Create span', 30_000, () =>
      receiver.spans.find(
        (s) => s.name === 'containerd.task.v2.Task/Create' && s.attributes['hull.container.id'] === id,
      ),
    );
    const trace = receiver.spans.filter((s) => s.traceId === create.traceId);
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    if (process.env.HULL_TRACE_DUMP) dumpTree(trace);
    const named = (name: string, parent?: ReceivedSpan): ReceivedSpan => {
      const s = trace.find((t) => t.name === name && (!parent || t.parentSpanId === parent.spanId));
      assert.ok(
        s,
        `${name} under ${parent?.name ?? 'the trace'}; the trace has: ${trace.map((t) => t.name).join(', ')}`,
      );
      return s;
    };
    // containerd 1.6 sends no traceparent: the Create is the root, and every other span's parent is in the trace.
    assert.equal(create.parentSpanId, '');
    assert.equal(create.kind, 2, 'a server span');
    assert.equal(create.attributes['hull.sandbox.id'], id);
    for (const s of trace) if (s !== create) assert.ok(byId.has(s.parentSpanId), `${s.name} is no orphan`);
    assert.equal(create.resource['service.name'], 'hull-shim');

    const boot = named('vm.boot', create);
    named('vm.qemu_start', boot);
    const guestBoot = named('vm.guest_boot', boot);
    const agentReady = named('vm.agent_ready', boot);
    assert.ok(guestBoot.endMs <= agentReady.startMs + 1, 'guest boot, then agent ready');
    named('share.prepare', create);
    named('share.container', create);

    const createSandbox = named('grpc.AgentService/CreateSandbox', create);
    assert.equal(createSandbox.kind, 3, 'a client span');
    const guestSandbox = named('grpc.AgentService/CreateSandbox', createSandbox);
    assert.equal(guestSandbox.attributes['hull.guest'], true);
    named('mount virtiofs', guestSandbox);
    const createContainer = named('grpc.AgentService/CreateContainer', create);
    const guestContainer = named('grpc.AgentService/CreateContainer', createContainer);
    const crunCreate = named('crun create', guestContainer);
    assert.equal(crunCreate.attributes['hull.container.id'], id);
    assert.equal(crunCreate.scope, 'hull-agent');
    // The guest's times, mapped onto the host's clock, fall inside their host parent.
    assert.ok(
      guestContainer.startMs >= createContainer.startMs - 50 && guestContainer.endMs <= createContainer.endMs + 50,
    );

    // The other Task calls: traces of their own (Start's reaching crun start in the guest).
    const start = receiver.spans.find((s) => s.name === 'containerd.task.v2.Task/Start');
    assert.ok(start, 'a Start span');
    assert.notEqual(start.traceId, create.traceId);
    const startTrace = receiver.spans.filter((s) => s.traceId === start.traceId);
    assert.ok(
      startTrace.some((s) => s.name === 'crun start'),
      startTrace.map((s) => s.name).join(', '),
    );

    // The sandbox's final Delete ends with the VM powering off: the guest's spans of that Delete (its
    // DestroySandbox) are drained before the VM goes away and exported before the shim exits.
    const del = receiver.spans.find(
      (s) => s.name === 'containerd.task.v2.Task/Delete' && s.attributes['hull.container.id'] === id,
    );
    assert.ok(del, 'the sandbox Delete span');
    const delTrace = receiver.spans.filter((s) => s.traceId === del.traceId);
    if (process.env.HULL_TRACE_DUMP) dumpTree(delTrace);
    const delById = new Map(delTrace.map((s) => [s.spanId, s]));
    for (const s of delTrace) if (s !== del) assert.ok(delById.has(s.parentSpanId), `${s.name} is no orphan`);
    const under = (s: ReceivedSpan, ancestor: ReceivedSpan): boolean => {
      for (let p = delById.get(s.parentSpanId); p; p = delById.get(p.parentSpanId)) if (p === ancestor) return true;
      return false;
    };
    const destroyClient = delTrace.find(
      (s) => s.name === 'grpc.AgentService/DestroySandbox' && !s.attributes['hull.guest'],
    );
    assert.ok(destroyClient, `a DestroySandbox client span; the trace has: ${delTrace.map((t) => t.name).join(', ')}`);
    assert.ok(under(destroyClient, del), 'DestroySandbox below the Delete');
    const destroyGuest = delTrace.find(
      (s) => s.name === 'grpc.AgentService/DestroySandbox' && s.attributes['hull.guest'] === true,
    );
    assert.ok(destroyGuest, `the guest's DestroySandbox; the trace has: ${delTrace.map((t) => t.name).join(', ')}`);
    assert.equal(destroyGuest.parentSpanId, destroyClient.spanId, "the guest's span is the client span's child");
    assert.equal(destroyGuest.scope, 'hull-agent');
    assert.ok(
      destroyGuest.startMs >= destroyClient.startMs - 50 && destroyGuest.endMs <= destroyClient.endMs + 50,
      'the guest span falls inside its host parent',
    );
    assert.ok(report.guestSpans && (report.guestSpans as { exported: number }).exported > 0);
  });

  it('with tracing off nothing is sent, and the shim never loads the SDK', async () => {
    receiver.clear();
    const id = 'untraced';
    await ctrRun(id, writeConfig('tracing-off.toml', false));
    const report = await waitFor('the shim exits', 60_000, () => shimExitReport(ctd, id));
    assert.equal(report.tracing, false);
    assert.equal(report.tracingSdkLoaded, false, 'no OpenTelemetry SDK module in the shim process');
    await sleep(2_000); // longer than the batch processor's delay
    assert.equal(receiver.exports, 0, 'no export reached the receiver');
  });
});
