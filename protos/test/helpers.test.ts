/**
 * The hand-written parts of protos/: type URLs and event topics, Any and Timestamp helpers, int64 handling, the
 * ttrpc method descriptors (checked against the services in our own .proto files), and root separation.
 */
import assert from 'node:assert/strict';
import * as protobuf from 'protobufjs';
import * as agentProtos from '../agent';
import { AgentService, HealthService } from '../agent';
import {
  EventsService,
  GO_ZERO_TIME_SECONDS,
  MAX_UINT64_NUMBER,
  TaskEvents,
  TaskService,
  TypeUrl,
  TypeUrlMismatchError,
  cgroups1,
  cgroups2,
  clampUint64,
  events,
  packAny,
  packJsonAny,
  runcOptions,
  runtimeOptions,
  task,
  taskEvent,
  toTimestamp,
  typeUrlMatches,
  unpackAny,
  unpackJsonAny,
} from '../containerd';
import * as containerdProtos from '../containerd';
import { eventTopic, fromTimestamp } from './lib/decode';
import { loadOurs } from './lib/roots';

describe('protos type URLs and event topics', function () {
  it('protobuf type URLs are the bare full names of the generated messages', function () {
    const bare = (cls: { getTypeUrl(prefix?: string): string }): string => cls.getTypeUrl('').replace(/^\//, '');
    assert.equal(TypeUrl.CgroupsV1Metrics, bare(cgroups1.Metrics));
    assert.equal(TypeUrl.CgroupsV2Metrics, bare(cgroups2.Metrics));
    assert.equal(TypeUrl.RuntimeOptions, bare(runtimeOptions.Options));
    assert.equal(TypeUrl.RuncProcessDetails, bare(runcOptions.ProcessDetails));
    for (const [name, e] of Object.entries(TaskEvents)) {
      assert.equal(e.typeUrl, `containerd.events.${name}`);
      assert.equal(e.typeUrl, bare(e.type));
      assert.equal(TypeUrl[name as keyof typeof TypeUrl], e.typeUrl);
    }
    assert.ok(!Object.values(TypeUrl).some((u) => u.startsWith('type.googleapis.com/')));
  });

  it('JSON OCI type URLs follow containerd typeurl registration', function () {
    assert.equal(TypeUrl.OciSpec, 'types.containerd.io/opencontainers/runtime-spec/1/Spec');
    assert.equal(TypeUrl.OciProcess, 'types.containerd.io/opencontainers/runtime-spec/1/Process');
    assert.equal(TypeUrl.OciLinuxResources, 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources');
  });

  it('maps every task event to its containerd topic', function () {
    const expected: Record<string, string> = {
      'containerd.events.TaskCreate': '/tasks/create',
      'containerd.events.TaskStart': '/tasks/start',
      'containerd.events.TaskDelete': '/tasks/delete',
      'containerd.events.TaskExit': '/tasks/exit',
      'containerd.events.TaskOOM': '/tasks/oom',
      'containerd.events.TaskExecAdded': '/tasks/exec-added',
      'containerd.events.TaskExecStarted': '/tasks/exec-started',
      'containerd.events.TaskPaused': '/tasks/paused',
      'containerd.events.TaskResumed': '/tasks/resumed',
      'containerd.events.TaskCheckpointed': '/tasks/checkpointed',
    };
    for (const [url, topic] of Object.entries(expected)) assert.equal(eventTopic(url), topic, url);
    assert.equal(Object.keys(TaskEvents).length, Object.keys(expected).length);
    assert.equal(eventTopic('containerd.events.TaskIO'), undefined);
    assert.equal(eventTopic(TypeUrl.CgroupsV1Metrics), undefined);
  });

  it('taskEvent packs the payload with its type URL and topic', function () {
    const exitedAt = toTimestamp(new Date('2024-05-01T10:00:00.250Z'));
    const { topic, event } = taskEvent('TaskExit', { containerId: 'c1', id: 'c1', pid: 42, exitStatus: 137, exitedAt });
    assert.equal(topic, '/tasks/exit');
    assert.equal(event.type_url, 'containerd.events.TaskExit');
    const back = unpackAny(event, TypeUrl.TaskExit, events.TaskExit);
    assert.equal(back.containerId, 'c1');
    assert.equal(back.exitStatus, 137);
    assert.deepEqual(fromTimestamp(back.exitedAt), new Date('2024-05-01T10:00:00.250Z'));
  });
});

describe('protos Any helpers', function () {
  it('packs and unpacks a protobuf message', function () {
    const any = packAny(TypeUrl.RuntimeOptions, runtimeOptions.Options, { typeUrl: 'x', configPath: '/etc/hull.toml' });
    assert.equal(any.type_url, 'runtimeoptions.v1.Options');
    assert.equal(unpackAny(any, TypeUrl.RuntimeOptions, runtimeOptions.Options).configPath, '/etc/hull.toml');
  });

  it('accepts a prefixed type URL and rejects another type or a missing Any', function () {
    const bytes = runtimeOptions.Options.encode({ configPath: '/c' }).finish();
    const prefixed = { type_url: 'type.googleapis.com/runtimeoptions.v1.Options', value: bytes };
    assert.equal(unpackAny(prefixed, TypeUrl.RuntimeOptions, runtimeOptions.Options).configPath, '/c');
    assert.ok(typeUrlMatches('runtimeoptions.v1.Options', 'runtimeoptions.v1.Options'));
    assert.ok(!typeUrlMatches('xruntimeoptions.v1.Options', 'runtimeoptions.v1.Options'));
    assert.throws(
      () =>
        unpackAny(
          { type_url: 'containerd.runc.v1.Options', value: bytes },
          TypeUrl.RuntimeOptions,
          runtimeOptions.Options,
        ),
      (e: unknown) => e instanceof TypeUrlMismatchError && e.actual === 'containerd.runc.v1.Options',
    );
    assert.throws(() => unpackAny(undefined, TypeUrl.RuntimeOptions, runtimeOptions.Options), TypeUrlMismatchError);
  });

  it('packs and unpacks JSON payloads (OCI Process)', function () {
    const process = { args: ['sh'], cwd: '/', env: ['A=b'], user: { uid: 0, gid: 0 } };
    const any = packJsonAny(TypeUrl.OciProcess, process);
    assert.equal(Buffer.from(any.value).toString(), JSON.stringify(process));
    assert.deepEqual(unpackJsonAny(any, TypeUrl.OciProcess), process);
    assert.throws(() => unpackJsonAny(any, TypeUrl.OciLinuxResources), TypeUrlMismatchError);
    const wire = task.ExecProcessRequest.decode(
      task.ExecProcessRequest.encode({ id: 'c', execId: 'e', spec: any }).finish(),
    );
    assert.deepEqual(unpackJsonAny(wire.spec, TypeUrl.OciProcess), process);
  });
});

describe('protos Timestamp helpers', function () {
  it('converts Dates to seconds and nanos and back', function () {
    assert.deepEqual(toTimestamp(new Date(1700000000123)), { seconds: 1700000000, nanos: 123000000 });
    assert.deepEqual(toTimestamp(0), { seconds: 0, nanos: 0 });
    assert.deepEqual(toTimestamp(-1), { seconds: -1, nanos: 999000000 });
    assert.deepEqual(toTimestamp(1999.9999999), { seconds: 2, nanos: 0 });
    assert.deepEqual(fromTimestamp({ seconds: 1700000000, nanos: 123999999 }), new Date(1700000000123));
    assert.deepEqual(fromTimestamp({ seconds: -1, nanos: 999000000 }), new Date(-1));
    assert.deepEqual(fromTimestamp({}), new Date(0));
    assert.throws(() => toTimestamp(new Date(NaN)), RangeError);
  });

  it('treats an absent Timestamp and Go zero time as unset', function () {
    assert.equal(fromTimestamp(undefined), undefined);
    assert.equal(fromTimestamp(null), undefined);
    assert.equal(fromTimestamp({ seconds: GO_ZERO_TIME_SECONDS, nanos: 0 }), undefined);
    assert.equal(GO_ZERO_TIME_SECONDS * 1000, new Date('0001-01-01T00:00:00Z').getTime());
  });

  it('survives the wire (int64 seconds as a number)', function () {
    const exitedAt = toTimestamp(new Date('2031-01-02T03:04:05.678Z'));
    const res = task.WaitResponse.decode(task.WaitResponse.encode({ exitStatus: 1, exitedAt }).finish());
    assert.equal(typeof res.exitedAt?.seconds, 'number');
    assert.deepEqual(fromTimestamp(res.exitedAt), new Date('2031-01-02T03:04:05.678Z'));
  });
});

describe('protos int64 handling', function () {
  it('decodes 64-bit fields as numbers, defaults included', function () {
    const m = cgroups1.MemoryEntry.decode(cgroups1.MemoryEntry.encode({ limit: 268435456 }).finish());
    assert.equal(m.limit, 268435456);
    assert.equal(typeof m.usage, 'number');
    assert.equal(m.usage, 0);
    const ms = cgroups1.MemoryEntry.fromObject({ limit: '1024' });
    assert.equal(ms.limit, 1024);
  });

  it('round-trips negative int64 and large uint64 values', function () {
    const p = agentProtos.grpc.Process.decode(agentProtos.grpc.Process.encode({ OOMScoreAdj: -998 }).finish());
    assert.equal(p.OOMScoreAdj, -998);
    const big = 9223372036854771712; // 2^63 - 4096, cgroup v1 "no limit"
    assert.equal(cgroups1.MemoryEntry.decode(cgroups1.MemoryEntry.encode({ limit: big }).finish()).limit, big);
    const bytes = cgroups2.MemoryStat.encode({ swapLimit: MAX_UINT64_NUMBER }).finish();
    assert.equal(Buffer.from(bytes).toString('hex'), '9802' + '80f0ffffffffffffff01');
    assert.equal(cgroups2.MemoryStat.decode(bytes).swapLimit, MAX_UINT64_NUMBER);
  });

  it('clampUint64 keeps values encodable', function () {
    // The hazard it exists for: u64::MAX decodes as 2^64, which encodes as 0.
    const max = cgroups2.MemoryStat.decode(Buffer.from('9802ffffffffffffffffff01', 'hex')).swapLimit;
    assert.equal(max, 2 ** 64);
    assert.equal(cgroups2.MemoryStat.decode(cgroups2.MemoryStat.encode({ swapLimit: max }).finish()).swapLimit, 0);
    assert.equal(
      cgroups2.MemoryStat.decode(cgroups2.MemoryStat.encode({ swapLimit: clampUint64(max) }).finish()).swapLimit,
      MAX_UINT64_NUMBER,
    );
    assert.equal(clampUint64(2 ** 64), MAX_UINT64_NUMBER);
    assert.equal(clampUint64(Infinity), MAX_UINT64_NUMBER);
    assert.equal(clampUint64(-5), 0);
    assert.equal(clampUint64(NaN), 0);
    assert.equal(clampUint64(12.7), 12);
    assert.equal(MAX_UINT64_NUMBER, 2 ** 64 - 2048);
  });
});

describe('protos ttrpc method descriptors', function () {
  interface Descriptor {
    service: string;
    method: string;
    request: { decode(b: Uint8Array): unknown };
    response: { decode(b: Uint8Array): unknown };
  }
  const generated: Record<'containerd' | 'agent', Record<string, unknown>> = {
    containerd: { ...containerdProtos },
    agent: { ...agentProtos },
  };
  const classOf = (side: 'containerd' | 'agent', fullName: string): unknown =>
    fullName
      .split('.')
      .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], generated[side]);

  const cases: Array<[string, 'containerd' | 'agent', string, Record<string, Descriptor>, number]> = [
    ['TaskService', 'containerd', 'containerd.task.v2.Task', TaskService, 17],
    ['EventsService', 'containerd', 'containerd.services.events.ttrpc.v1.Events', EventsService, 1],
    ['AgentService', 'agent', 'grpc.AgentService', AgentService, 42],
    ['HealthService', 'agent', 'grpc.Health', HealthService, 2],
  ];
  for (const [label, side, serviceName, service, count] of cases) {
    it(`${label} covers every method of ${serviceName} with the right codecs`, function () {
      const root = loadOurs(side, { keepCase: true });
      const svc = root.lookupService(serviceName);
      svc.resolveAll();
      assert.deepEqual(Object.keys(service).sort(), svc.methodsArray.map((m) => m.name).sort());
      assert.equal(Object.keys(service).length, count);
      for (const m of svc.methodsArray) {
        const d = service[m.name]!;
        assert.equal(d.service, serviceName);
        assert.equal(d.method, m.name);
        const name = (t: protobuf.Type | null): string => t!.fullName.slice(1);
        const req = classOf(side, name(m.resolvedRequestType)) as new () => unknown;
        const res = classOf(side, name(m.resolvedResponseType)) as new () => unknown;
        assert.ok(
          d.request.decode(new Uint8Array(0)) instanceof req,
          `${m.name} request is ${name(m.resolvedRequestType)}`,
        );
        assert.ok(
          d.response.decode(new Uint8Array(0)) instanceof res,
          `${m.name} response is ${name(m.resolvedResponseType)}`,
        );
      }
    });
  }

  it('encodes and decodes through a descriptor', function () {
    const bytes = TaskService.Create.request.encode({
      id: 'c1',
      bundle: '/b',
      rootfs: [{ type: 'overlay', source: 'overlay' }],
    });
    const req = TaskService.Create.request.decode(bytes);
    assert.equal(req.rootfs?.[0]?.type, 'overlay');
    assert.equal(TaskService.Create.response.decode(TaskService.Create.response.encode({ pid: 7 })).pid, 7);
  });
});

describe('protos generated roots', function () {
  it('keeps the containerd and agent roots apart', function () {
    const roots = (protobuf as unknown as { roots: Record<string, Record<string, unknown>> }).roots;
    assert.equal(roots.containerd!.containerd, containerdProtos.containerd);
    assert.equal(roots.agent!.grpc, agentProtos.grpc);
    assert.notEqual(containerdProtos.google.protobuf.Empty, agentProtos.google.protobuf.Empty);
    assert.equal(roots.containerd!.grpc, undefined);
    assert.equal(roots.agent!.containerd, undefined);
  });
});
