/**
 * Agent calls traced (agent-client/tracing.ts): client spans and their traceparent, the real agent (host test mode)
 * recording its spans and the client draining them, and the checks on what the guest sends back.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import { KataAgentClient } from '../client';
import { AgentCallTracer } from '../tracing';
import { inRootSpan, startTestTracing, type TestTracing } from './otel';

const AGENT = path.resolve(__dirname, '..', '..', 'agent', 'main.js');
const TRACE = '0af7651916cd43dd8448eb211c80319c';

describe('agent client tracing', () => {
  let tracing: TestTracing;
  beforeEach(() => (tracing = startTestTracing()));
  afterEach(() => tracing.stop());

  describe('against the real agent (host test mode)', function () {
    this.timeout(20_000);
    let dir: string;
    let agentProcess: ChildProcess;
    let client: KataAgentClient;

    beforeEach(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-trace-test-'));
      const socket = path.join(dir, 'agent.sock');
      agentProcess = spawn(process.execPath, [AGENT], {
        env: { ...process.env, HULL_AGENT_SOCKET: socket },
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      client = await KataAgentClient.dial({ transport: 'unix', path: socket }, { deadline: Date.now() + 10_000 });
    });

    afterEach(async () => {
      await client.close();
      if (agentProcess.exitCode === null) {
        agentProcess.kill('SIGKILL');
        await new Promise((r) => agentProcess.once('exit', r));
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("a call inside a span gets a client span; the agent's span comes back as its child, on the host's clock", async () => {
      const t0 = Date.now();
      await inRootSpan('task', () => client.guestDetails());
      const batch = await client.drainSpans();
      const host = tracing.spans();
      const root = host.find((s) => s.name === 'task')!;
      const call = host.find((s) => s.name === 'grpc.AgentService/GetGuestDetails')!;
      assert.ok(call, host.map((s) => s.name).join(', '));
      assert.equal(call.kind, SpanKind.CLIENT);
      assert.equal(call.parentSpanContext?.spanId, root.spanContext().spanId);
      assert.ok(!host.some((s) => s.name.endsWith('/DrainSpans')), 'the drain itself is not traced');
      assert.equal(batch.refused, 0);
      assert.equal(batch.dropped, 0);
      const guest = batch.spans.find((s) => s.name === 'grpc.AgentService/GetGuestDetails');
      assert.ok(guest, JSON.stringify(batch));
      assert.equal(guest.traceId, call.spanContext().traceId);
      assert.equal(guest.parentSpanId, call.spanContext().spanId);
      assert.ok(guest.startMs >= t0 - 100 && guest.endMs <= Date.now() + 100);
      assert.deepEqual((await client.drainSpans()).spans, [], 'drained once');
    });

    it('outside a span nothing is traced and the agent records nothing', async () => {
      await client.guestDetails();
      assert.deepEqual(tracing.spans(), []);
      assert.deepEqual((await client.drainSpans()).spans, []);
    });

    it('a failed call marks its span', async () => {
      await assert.rejects(inRootSpan('task', () => client.startContainer('nope')));
      const call = tracing.spans().find((s) => s.name === 'grpc.AgentService/StartContainer');
      assert.equal(call?.status.code, 2);
      assert.equal(call?.attributes['hull.container.id'], 'nope');
      const guest = (await client.drainSpans()).spans.find((s) => s.name === 'grpc.AgentService/StartContainer');
      assert.equal(guest?.status.code, 'error');
    });
  });

  describe("checks on the guest's spans", () => {
    const now = 1_700_000_000_000;
    /** A tracer that handed TRACE to the guest. */
    async function tracer(): Promise<AgentCallTracer> {
      const t = new AgentCallTracer();
      await inRootSpan('task', async () => {
        const begun = t.begin('grpc.AgentService', 'CreateContainer')!;
        (t as unknown as { traces: Set<string> }).traces.add(TRACE);
        t.end(begun.span);
      });
      return t;
    }
    const span = (more: Record<string, unknown> = {}): Record<string, unknown> => ({
      traceId: TRACE,
      spanId: '1111111111111111',
      parentSpanId: '2222222222222222',
      name: 'crun create',
      startMs: now - 500,
      endMs: now - 400,
      attributes: [{ key: 'hull.container.id', value: 'c1' }],
      statusCode: 0,
      ...more,
    });

    it('maps the guest clock onto the host clock and keeps a good span', async () => {
      // The guest's clock is 1 h behind.
      const guestOffset = -3_600_000;
      const res = {
        spans: [span({ startMs: now - 500 + guestOffset, endMs: now - 400 + guestOffset })],
        dropped: 3,
        nowMs: now + guestOffset,
      };
      const batch = (await tracer()).check(res, now);
      assert.equal(batch.refused, 0);
      assert.equal(batch.dropped, 3);
      const [got] = batch.spans;
      assert.deepEqual(
        { ...got, attributes: { ...got?.attributes } },
        {
          traceId: TRACE,
          spanId: '1111111111111111',
          parentSpanId: '2222222222222222',
          name: 'crun create',
          startMs: now - 500,
          endMs: now - 400,
          attributes: { 'hull.container.id': 'c1' },
          status: { code: 'unset', message: '' },
        },
      );
    });

    it("maps by the midpoint of the drain's send and answer: a slow answer does not shift the guest's spans", async () => {
      // The guest's clock agrees with the host's; it read it 60 ms after the send; the answer took 140 ms more.
      const res = { spans: [span()], nowMs: now - 140 };
      const [got] = (await tracer()).check(res, now, now - 200).spans;
      assert.equal(got?.startMs, now - 500 + 40, "off by half the two delays' difference (140 - 60) / 2");
      const [old] = (await tracer()).check(res, now).spans;
      assert.equal(old?.startMs, now - 500 + 140, 'by the answer alone: off by its whole delay');
    });

    it('remembers the last 1024 trace ids handed to the guest, no more, however many calls', async () => {
      const t = new AgentCallTracer();
      const ids: string[] = [];
      for (let i = 0; i < 5000; i++)
        await inRootSpan('task', async () => {
          const begun = t.begin('grpc.AgentService', 'StatsContainer')!;
          ids.push(begun.span.spanContext().traceId);
          t.end(begun.span);
        });
      assert.equal(new Set(ids).size, 5000, 'a trace per call');
      assert.equal((t as unknown as { traces: Set<string> }).traces.size, 1024);
      assert.ok(t.knows(ids.at(-1)!) && t.knows(ids.at(-1024)!));
      assert.ok(!t.knows(ids.at(-1025)!) && !t.knows(ids[0]!), 'the oldest are forgotten');
    });

    it('refuses what fails a check, and counts it', async () => {
      const t = await tracer();
      const bad = [
        span({ traceId: 'ffffffffffffffffffffffffffffffff' }), // a trace never handed to the guest
        span({ traceId: TRACE.toUpperCase() }),
        span({ spanId: '0000000000000000' }),
        span({ spanId: 'zz11111111111111' }),
        span({ parentSpanId: '' }), // the guest never starts a trace
        span({ name: '' }),
        span({ startMs: now - 400, endMs: now - 500 }), // ends before it starts
        span({ startMs: now - 3 * 3_600_000 }), // too old
        span({ endMs: now + 60_000 }), // in the future
        span({ startMs: Number.NaN }),
        span({ attributes: Array.from({ length: 17 }, (_, i) => ({ key: `k${i}`, value: 'v' })) }),
        span({ attributes: [{ key: 'bad key!', value: 'v' }] }),
      ];
      const batch = t.check({ spans: bad, dropped: 0, nowMs: now }, now);
      assert.deepEqual(batch.spans, []);
      assert.equal(batch.refused, bad.length);
    });

    it('caps names and values, marks foreign attribute keys, and caps the count per drain', async () => {
      const t = await tracer();
      const res = {
        spans: [
          span({ name: `n${'x'.repeat(1000)}\u0007`, attributes: [{ key: 'pid', value: 'v'.repeat(10_000) }] }),
          ...Array.from({ length: 600 }, () => span()),
        ],
        nowMs: now,
      };
      const batch = t.check(res, now);
      assert.equal(batch.spans.length, 512);
      assert.equal(batch.refused, 601 - 512);
      const first = batch.spans[0]!;
      assert.ok(Buffer.byteLength(first.name) <= 160, first.name);
      assert.ok(!first.name.includes('\u0007'));
      assert.ok(Buffer.byteLength(first.attributes['guest.pid'] ?? '') <= 300);
    });

    it('no span without the guest clock to map it', async () => {
      const batch = (await tracer()).check({ spans: [span()] }, now);
      assert.equal(batch.refused, 1);
    });
  });
});
