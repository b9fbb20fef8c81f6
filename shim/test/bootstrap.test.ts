/**
 * `start`'s answer by caller (bootstrap.ts), the hand-written protobuf of `start` and `-info` (wire.ts) against the
 * generated classes, the Go build information of the containerd binaries on this host (go-buildinfo.ts), and the
 * task API v3 served by the same handlers as v2 (task-services.ts).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Client, Server, createServiceClient, duplexPair } from 'ttrpc-ts';
import {
  bootstrap,
  containerd,
  google,
  runtimeOptions,
  TASK_SERVICE,
  TASK_SERVICE_V3,
  TaskService,
} from '../../protos/containerd';
import { chooseAnswer, formatAnswer, type Caller } from '../bootstrap';
import { containerdMajor, goModInfo } from '../go-buildinfo';
import type { StdinInput } from '../stdin';
import { registerTaskServices, TASK_SERVICES, type TaskHandlers } from '../task-services';
import { decodeAny, decodeBootstrapParams, encodeBootstrapResult, encodeRuntimeInfo, readFields } from '../wire';

const ADDRESS = 'unix:///run/containerd/s/f6b99128c07bdbd0902363ba979c22f8ef053e683a7ce24dd016a1ab17092c33';
const NONE: StdinInput = { kind: 'none', why: 'empty' };
const data = (bytes: Uint8Array): StdinInput => ({ kind: 'data', data: Buffer.from(bytes) });

/** containerd 2.3's BootstrapParams for a start, encoded by the generated class. */
function params23(): Uint8Array {
  return bootstrap.BootstrapParams.encode({
    instanceId: 'redis',
    namespace: 'default',
    logLevel: bootstrap.LogLevel.LOG_LEVEL_DEBUG,
    containerdVersion: '2.3.4',
    containerdTtrpcAddress: '/run/containerd/containerd.sock.ttrpc',
    containerdGrpcAddress: '/run/containerd/containerd.sock',
    containerdBinary: '/usr/bin/containerd',
    extensions: [{ value: { type_url: 'runtimeoptions.v1.Options', value: Buffer.from([0x12, 0x01, 0x78]) } }],
    socketDir: '/run/containerd/s',
  }).finish();
}

/** Runtime options as containerd 1.6 to 2.2 write them on start's stdin: a google.protobuf.Any. */
function runtimeOptionsAny(): Uint8Array {
  return google.protobuf.Any.encode({
    type_url: 'runtimeoptions.v1.Options',
    value: runtimeOptions.Options.encode({ configPath: '/etc/hull/configuration.toml' }).finish(),
  }).finish();
}

describe('shim start: the answer by caller (bootstrap.ts)', () => {
  const modInfo = (major: number | undefined) => (): string | undefined =>
    major === undefined
      ? undefined
      : `path\tgithub.com/containerd/containerd${major >= 2 ? `/v${major}` : ''}/cmd/containerd\nbuild\t-compiler=gc\n`;
  const caller = (c: Partial<Caller>): Caller => ({
    input: NONE,
    env: {},
    publishBinary: '/usr/bin/containerd',
    modInfo: modInfo(undefined),
    ...c,
  });

  it('containerd 1.6 (no MAX_SHIM_VERSION): the bare address, which is all it parses', () => {
    const a = chooseAnswer(caller({ modInfo: modInfo(1) }));
    assert.equal(a.form, 'address');
    assert.equal(formatAnswer(a, ADDRESS).toString(), ADDRESS);
    // Runtime options on stdin change nothing.
    assert.equal(chooseAnswer(caller({ input: data(runtimeOptionsAny()) })).form, 'address');
  });

  it('containerd 2.x (MAX_SHIM_VERSION=2, publish binary .../containerd/v2/cmd/containerd): JSON, version 3', () => {
    const a = chooseAnswer(caller({ env: { MAX_SHIM_VERSION: '2' }, modInfo: modInfo(2) }));
    assert.deepEqual([a.form, 'version' in a && a.version], ['json', 3]);
    // Byte for byte what Go's encoding/json makes of pkg/shim BootstrapParams.
    assert.equal(formatAnswer(a, ADDRESS).toString(), `{"version":3,"address":"${ADDRESS}","protocol":"ttrpc"}`);
    // With runtime options on stdin (an Any has no containerd_version): the same.
    const withOptions = chooseAnswer(
      caller({ env: { MAX_SHIM_VERSION: '2' }, modInfo: modInfo(2), input: data(runtimeOptionsAny()) }),
    );
    assert.deepEqual(withOptions, a);
  });

  it('containerd 1.7 (same environment, publish binary .../containerd/cmd/containerd) or unknown: JSON, version 2', () => {
    for (const major of [1, undefined]) {
      const a = chooseAnswer(caller({ env: { MAX_SHIM_VERSION: '2' }, modInfo: modInfo(major) }));
      assert.deepEqual([a.form, 'version' in a && a.version], ['json', 2], `major ${major}`);
      assert.equal(formatAnswer(a, ADDRESS).toString(), `{"version":2,"address":"${ADDRESS}","protocol":"ttrpc"}`);
    }
    const noBinary = chooseAnswer(caller({ env: { MAX_SHIM_VERSION: '2' }, publishBinary: '', modInfo: modInfo(2) }));
    assert.deepEqual([noBinary.form, 'version' in noBinary && noBinary.version], ['json', 2]);
  });

  it('containerd 2.3 (BootstrapParams on stdin): a protobuf BootstrapResult, version 3, whatever the environment', () => {
    for (const env of [{}, { MAX_SHIM_VERSION: '2' }]) {
      const a = chooseAnswer(caller({ env, input: data(params23()) }));
      assert.equal(a.form, 'protobuf');
      const r = bootstrap.BootstrapResult.decode(formatAnswer(a, ADDRESS));
      assert.deepEqual(r.toJSON(), { version: 3, address: ADDRESS, protocol: 'ttrpc' });
    }
  });

  it('garbage, truncated or oversized stdin is not BootstrapParams', () => {
    const env = { MAX_SHIM_VERSION: '2' };
    const full = params23();
    for (const input of [
      data(Buffer.from('not protobuf at all {"version":3}')),
      data(full.subarray(0, full.length - 3)),
      { kind: 'refused', why: 'too-large' } as StdinInput,
      { kind: 'refused', why: 'timeout' } as StdinInput,
      { kind: 'none', why: 'tty' } as StdinInput,
    ]) {
      const a = chooseAnswer(caller({ env, input, modInfo: modInfo(2) }));
      assert.equal(a.form, 'json');
    }
  });
});

describe('shim wire.ts: the hand-written protobuf matches the generated classes', () => {
  it('RuntimeInfo decodes as containerd.types.RuntimeInfo, field for field', () => {
    const features = Buffer.from('{"ociVersionMin":"1.0.0"}');
    const bytes = encodeRuntimeInfo({
      name: 'io.containerd.hull.v2',
      version: { version: '0.1.0', revision: 'abc' },
      options: { typeUrl: 'runtimeoptions.v1.Options', value: Buffer.from([1, 2, 3]) },
      features: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/features/Features', value: features },
      annotations: { b: '2', a: '1' },
    });
    const info = containerd.types.RuntimeInfo.decode(bytes);
    assert.equal(info.name, 'io.containerd.hull.v2');
    assert.deepEqual({ ...info.version }, { version: '0.1.0', revision: 'abc' });
    assert.equal(info.options?.type_url, 'runtimeoptions.v1.Options');
    assert.deepEqual([...info.options.value!], [1, 2, 3]);
    assert.equal(info.features?.type_url, 'types.containerd.io/opencontainers/runtime-spec/1/features/Features');
    assert.equal(Buffer.from(info.features.value!).toString(), features.toString());
    assert.deepEqual({ ...info.annotations }, { a: '1', b: '2' });
    // And the generated encoder writes the same bytes (same field order, maps in key order).
    assert.deepEqual(
      Buffer.from(
        containerd.types.RuntimeInfo.encode({
          name: info.name,
          version: info.version,
          options: info.options,
          features: info.features,
          annotations: { a: '1', b: '2' },
        }).finish(),
      ),
      bytes,
    );
  });

  it('BootstrapResult: negative and zero int32, empty strings', () => {
    for (const r of [
      { version: 3, address: ADDRESS, protocol: 'ttrpc' },
      { version: 0, address: '', protocol: '' },
      { version: -1, address: 'x', protocol: 'grpc' },
    ]) {
      const bytes = encodeBootstrapResult(r);
      assert.deepEqual(Buffer.from(bootstrap.BootstrapResult.encode(r).finish()), bytes);
      const back = bootstrap.BootstrapResult.decode(bytes);
      assert.deepEqual([back.version, back.address, back.protocol], [r.version, r.address, r.protocol]);
    }
  });

  it('BootstrapParams and Any decode as the generated classes encode them; unknown fields are skipped', () => {
    const p = decodeBootstrapParams(params23());
    assert.deepEqual(
      { ...p, extensions: p.extensions.map((e) => ({ typeUrl: e.typeUrl, value: [...e.value] })) },
      {
        instanceId: 'redis',
        namespace: 'default',
        containerdVersion: '2.3.4',
        containerdTtrpcAddress: '/run/containerd/containerd.sock.ttrpc',
        containerdGrpcAddress: '/run/containerd/containerd.sock',
        containerdBinary: '/usr/bin/containerd',
        extensions: [{ typeUrl: 'runtimeoptions.v1.Options', value: [0x12, 0x01, 0x78] }],
        socketDir: '/run/containerd/s',
      },
    );
    const any = decodeAny(runtimeOptionsAny());
    assert.equal(any.typeUrl, 'runtimeoptions.v1.Options');
    // A fixed64 and a fixed32 field (numbers upstream may add) are skipped.
    const withUnknown = Buffer.concat([
      Buffer.from(params23()),
      Buffer.from([0x99, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xa5, 0x01, 1, 2, 3, 4]),
    ]);
    assert.equal(decodeBootstrapParams(withUnknown).containerdVersion, '2.3.4');
  });

  it('malformed input throws: truncated fields, overlong varints, groups, field 0', () => {
    for (const bad of [
      [0x0a, 0x05, 0x61],
      [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
      [0x0b],
      [0x00, 0x01],
      [0x0d, 0x01],
    ])
      assert.throws(() => readFields(Buffer.from(bad)), Error, JSON.stringify(bad));
  });
});

describe('shim go-buildinfo.ts: containerd binaries on this host', () => {
  const cases: [string, number][] = [
    ['/usr/bin/containerd', 1],
    ['/var/cache/hull/containerd-2.1.9/bin/containerd', 2],
  ];
  for (const [file, major] of cases) {
    it(`${file} is containerd ${major}.x`, function () {
      if (!fs.existsSync(file)) this.skip();
      const t0 = performance.now();
      const info = goModInfo(file);
      const ms = performance.now() - t0;
      assert.equal(containerdMajor(info), major, info?.slice(0, 200));
      assert.ok(ms < 200, `read in ${ms.toFixed(1)} ms`);
    });
  }

  it('not a Go program, not ELF, absent: undefined', () => {
    assert.equal(goModInfo(process.execPath), undefined);
    assert.equal(goModInfo(__filename), undefined);
    assert.equal(goModInfo('/nonexistent/containerd'), undefined);
    assert.equal(containerdMajor('path\tgithub.com/example/containerd/cmd/containerd'), undefined);
    assert.equal(containerdMajor('path\tgithub.com/containerd/containerd/v3/cmd/containerd'), 3);
  });
});

describe('shim task-services.ts: containerd.task.v3.Task beside v2', () => {
  it('v2 and v3 calls reach the same handler and get the same answer; spans and first calls name the service', async () => {
    const calls: string[] = [];
    const first: string[] = [];
    const handlers: Partial<TaskHandlers> = {
      Connect: (req) => {
        calls.push(`Connect ${req.id}`);
        return { shimPid: 42, taskPid: 7, version: '' };
      },
      State: (req) => {
        calls.push(`State ${req.id}`);
        return { id: req.id, bundle: '/b', pid: 7, status: 2, execId: '' };
      },
    };
    const server = new Server();
    registerTaskServices(server, handlers as TaskHandlers, { sandboxId: 'sb', enabled: () => false }, (s, m) =>
      first.push(`${s}/${m}`),
    );
    const [a, b] = duplexPair();
    server.serveStream(b);
    const client = new Client(a);
    try {
      const answers = [];
      for (const { definition } of TASK_SERVICES) {
        const task = createServiceClient(client, definition);
        answers.push(await task.Connect({ id: 'c1' }));
        answers.push(await task.State({ id: 'c1' }));
      }
      assert.deepEqual(calls, ['Connect c1', 'State c1', 'Connect c1', 'State c1']);
      assert.deepEqual(first, [`${TASK_SERVICE}/Connect`, `${TASK_SERVICE_V3}/Connect`]);
      assert.deepEqual(answers[2], answers[0]);
      assert.deepEqual(answers[3], answers[1]);
      // The raw bytes on the wire are the same too.
      const v2 = await client.callRaw(TASK_SERVICE, 'State', TaskService.State.request.encode({ id: 'c1' }));
      const v3 = await client.callRaw(TASK_SERVICE_V3, 'State', TaskService.State.request.encode({ id: 'c1' }));
      assert.deepEqual(Buffer.from(v3), Buffer.from(v2));
      // containerd.task.v4 does not exist.
      await assert.rejects(
        client.callRaw('containerd.task.v4.Task', 'State', new Uint8Array()),
        /not implemented|unimplemented|UNIMPLEMENTED/i,
      );
    } finally {
      client.close();
      await server.close();
    }
  });
});
