/**
 * The Task-call wrapper (shim/task-tracing.ts) over an in-memory SDK, and the lazy loading of the SDK
 * (shim/tracing.ts): off, no SDK module is ever in the shim's process.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { SpanKind, trace } from '@opentelemetry/api';
import type { HandlerContext, ServiceImplementation } from 'ttrpc-ts';
import { inRootSpan, startTestTracing, type TestTracing } from '../../agent-client/test/otel';
import { inSpan } from '../../core/tracing';
import { NotFoundError } from '../../errors';
import type { TaskService } from '../../protos/containerd';
import { parentContext, traceTaskService } from '../task-tracing';

type Impl = ServiceImplementation<typeof TaskService>;
const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';
const ctx = (metadata: Record<string, string[]> = {}): HandlerContext => ({
  service: 'containerd.task.v2.Task',
  method: 'Create',
  metadata,
  signal: new AbortController().signal,
  deadline: undefined,
});

describe('Task calls traced', () => {
  let tracing: TestTracing;
  beforeEach(() => (tracing = startTestTracing()));
  afterEach(() => tracing.stop());

  const impl = (): Impl =>
    ({
      Create: async () => {
        await inSpan('vm.boot', {}, async () => undefined);
        return { pid: 7 };
      },
      Start: () => {
        throw new NotFoundError('container c9: not found');
      },
    }) as unknown as Impl;

  it("a server span per call with the ids, containerd's traceparent as parent, core's steps below it", async () => {
    const after: string[] = [];
    const service = traceTaskService(impl(), { sandboxId: 'sb', enabled: () => true, after: (m) => after.push(m) });
    const res = await service.Create({ id: 'c1', bundle: '/b' }, ctx({ traceparent: [`00-${TRACE}-${PARENT}-01`] }));
    assert.deepEqual(res, { pid: 7 });
    const spans = tracing.spans();
    const create = spans.find((s) => s.name === 'containerd.task.v2.Task/Create')!;
    assert.equal(create.kind, SpanKind.SERVER);
    assert.equal(create.spanContext().traceId, TRACE);
    assert.equal(create.parentSpanContext?.spanId, PARENT);
    assert.equal(create.parentSpanContext?.isRemote, true);
    assert.deepEqual(
      [create.attributes['hull.sandbox.id'], create.attributes['hull.container.id'], create.attributes['rpc.method']],
      ['sb', 'c1', 'Create'],
    );
    const boot = spans.find((s) => s.name === 'vm.boot')!;
    assert.equal(boot.parentSpanContext?.spanId, create.spanContext().spanId);
    assert.deepEqual(after, ['Create']);
  });

  it('without a traceparent the call is a root; an error marks the span and still reaches containerd', async () => {
    const service = traceTaskService(impl(), { sandboxId: 'sb', enabled: () => true });
    await assert.rejects(Promise.resolve(service.Start({ id: 'c9', execId: 'e1' }, ctx())), NotFoundError);
    const [start] = tracing.spans();
    assert.equal(start?.name, 'containerd.task.v2.Task/Start');
    assert.equal(start?.parentSpanContext, undefined);
    assert.equal(start?.status.code, 2);
    assert.equal(start?.attributes['hull.exec.id'], 'e1');
  });

  it('off: the handler runs as it is, no span', async () => {
    const before: string[] = [];
    const service = traceTaskService(impl(), {
      sandboxId: 'sb',
      enabled: () => false,
      before: (m) => before.push(m),
    });
    assert.deepEqual(await service.Create({ id: 'c1' }, ctx()), { pid: 7 });
    assert.deepEqual(tracing.spans(), []);
    assert.deepEqual(before, ['Create'], 'before runs (it may turn tracing on)');
  });

  it('ignores a malformed or zero traceparent', () => {
    for (const bad of [`00-${TRACE}-${PARENT}`, `00-${'0'.repeat(32)}-${PARENT}-01`, 'junk'])
      assert.equal(trace.getSpanContext(parentContext({ traceparent: [bad] })), undefined, bad);
  });

  it('core steps outside a traced call start nothing', async () => {
    await inSpan('share.prepare', {}, async () => undefined);
    await inRootSpan('x', async () => undefined);
    assert.deepEqual(
      tracing.spans().map((s) => s.name),
      ['x'],
    );
  });
});

describe('the SDK is loaded only when tracing is on', function () {
  this.timeout(20_000);
  const dist = path.resolve(__dirname, '..');
  /** In a fresh process: the daemon's modules, then ShimTracing.start(settings); prints what require.cache holds. */
  const probe = (enable: boolean): { loaded: boolean; enabled: boolean; otel: string[] } =>
    JSON.parse(
      execFileSync(
        process.execPath,
        [
          '-e',
          `
          require(${JSON.stringify(path.join(dist, 'daemon.js'))});
          const { ShimTracing } = require(${JSON.stringify(path.join(dist, 'tracing.js'))});
          const log = { info() {}, warn() {}, error() {}, debug() {} };
          const t = new ShimTracing(log, { 'service.name': 'probe' });
          t.start({ enableTracing: ${enable}, tracingEndpoint: 'http://127.0.0.1:9', tracingSamplingRatio: 1 });
          const otel = [...new Set(Object.keys(require.cache).map((f) => (f.match(/@opentelemetry\\/[^/]+/) || [])[0]).filter(Boolean))];
          console.log(JSON.stringify({ loaded: ShimTracing.sdkLoaded(), enabled: t.enabled, otel }));
          t.shutdown().then(() => process.exit(0));
          `,
        ],
        { encoding: 'utf8' },
      ),
    ) as { loaded: boolean; enabled: boolean; otel: string[] };

  it('off: only @opentelemetry/api is in the process', () => {
    const off = probe(false);
    assert.deepEqual(off, { loaded: false, enabled: false, otel: ['@opentelemetry/api'] });
  });

  it('on: the SDK and the OTLP/gRPC exporter are loaded', () => {
    const on = probe(true);
    assert.equal(on.loaded, true);
    assert.equal(on.enabled, true);
    for (const m of ['@opentelemetry/sdk-trace-base', '@opentelemetry/exporter-trace-otlp-grpc'])
      assert.ok(on.otel.includes(m), on.otel.join(', '));
    assert.ok(!on.otel.includes('@opentelemetry/sdk-node'), 'not sdk-node');
  });
});
