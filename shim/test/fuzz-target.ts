/**
 * The shim's containerd.task.v2.Task server as a fuzzing target: the real TaskServiceImpl and ttrpc server, the real
 * core Sandbox over core's fakes (hypervisor, agent, share, pod network), in a temporary folder. The generated
 * strings include the sandbox's id and a bundle with a valid config.json, so that Create can make the sandbox and
 * later calls reach it; no string names a host path outside that folder (stdio paths are opened by Create).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, Server, fuzzMethods, type ServerTarget } from 'ttrpc-ts';
import { Sandbox } from '../../core';
import { FakeAgent, FakeHypervisor, FakeShare, testConfig } from '../../core/test/fakes';
import { NOOP_LOGGER } from '../../log';
import { TaskService, TypeUrl } from '../../protos/containerd';
import type { EventPublisher } from '../publisher';
import { TaskServiceImpl } from '../task-service';

const SANDBOX_ID = 'sb';
/** Every code the shim's one error mapping (status.ts) can produce; UNKNOWN (an untyped error) is a finding. */
const TASK_CODES = [
  Code.OK,
  Code.NOT_FOUND,
  Code.ALREADY_EXISTS,
  Code.INVALID_ARGUMENT,
  Code.FAILED_PRECONDITION,
  Code.UNAVAILABLE,
  Code.UNIMPLEMENTED,
];

export interface ShimTarget extends ServerTarget {
  /** A bundle with a valid config.json. */
  bundle: string;
  cleanup(): Promise<void>;
}

export function shimTarget(options: { renewEvery?: number } = {}): ShimTarget {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-fuzz-shim-'));
  const bundle = path.join(tmp, 'bundle');
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  fs.writeFileSync(
    path.join(bundle, 'config.json'),
    JSON.stringify({
      ociVersion: '1.0.2',
      process: { args: ['sh'], cwd: '/' },
      root: { path: 'rootfs' },
      hostname: 'pod',
    }),
  );
  fs.mkdirSync(path.join(tmp, 'not-a-bundle'));
  fs.writeFileSync(path.join(tmp, 'not-a-bundle', 'config.json'), '{"process": ');
  const strings = [
    SANDBOX_ID,
    SANDBOX_ID,
    'c1',
    'c2',
    'e1',
    '',
    '..',
    '.',
    '\0',
    'x'.repeat(300),
    bundle,
    bundle,
    path.join(tmp, 'not-a-bundle'),
    tmp,
    path.join(tmp, 'nope'),
    'relative/bundle',
    `file://${path.join(tmp, 'out.log')}`,
    `fifo://${path.join(tmp, 'no-fifo')}`,
    'binary:///bin/true',
    TypeUrl.OciProcess,
    TypeUrl.OciLinuxResources,
    TypeUrl.RuntimeOptions,
    '{"args":["sh"],"cwd":"/"}',
    '{"memory":{"limit":1}}',
    'null',
    '[]',
  ];
  let hv: FakeHypervisor | undefined;
  let agent: FakeAgent | undefined;
  let share: FakeShare | undefined;
  let generation = 0;
  let service: TaskServiceImpl | undefined;
  const build = (): Server => {
    const dir = path.join(tmp, `state-${generation++}`);
    service = new TaskServiceImpl({
      namespace: 'fuzz',
      id: SANDBOX_ID,
      binDir: tmp,
      logger: NOOP_LOGGER,
      publisher: { publish: () => undefined } as unknown as EventPublisher,
      onShutdown: () => undefined,
      makeSandbox: (_configPath, events) => {
        hv = new FakeHypervisor();
        agent = new FakeAgent(hv);
        return new Sandbox({
          namespace: 'fuzz',
          id: SANDBOX_ID,
          dir,
          vmConfig: (vm) => ({ ...testConfig(), id: vm.id, stateDir: vm.stateDir, sharedDir: vm.sharedDir }),
          bootTimeoutMs: 1_000,
          hypervisor: () => hv!,
          share: (root, id) => (share = new FakeShare(root, id)),
          dial: async () => agent!,
          connectNetwork: async (netnsPath, record) => {
            record(netnsPath, []);
            return {
              taps: [],
              vmNetwork: () => ({ netnsPath, nics: [] }),
              describe: () => ({}),
              configureGuest: async () => undefined,
              forwardLocalhost: async () => undefined,
              disconnect: async () => undefined,
            };
          },
          logger: NOOP_LOGGER,
          events,
        });
      },
    });
    return new Server().register(TaskService, service.implementation());
  };

  const target: ShimTarget = {
    name: 'shim Task server',
    server: build(),
    bundle,
    strings,
    answerTimeoutMs: 5_000,
    methods: fuzzMethods(TaskService, TASK_CODES, {
      examples: {
        Create: [
          { id: SANDBOX_ID, bundle, rootfs: [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/l'] }] },
          { id: 'c1', bundle },
        ],
        Start: [{ id: SANDBOX_ID }, { id: 'c1', execId: 'e1' }],
        State: [{ id: SANDBOX_ID }],
        Delete: [{ id: 'c1' }, { id: SANDBOX_ID }],
        Kill: [{ id: SANDBOX_ID, signal: 9, all: true }],
        Exec: [
          {
            id: SANDBOX_ID,
            execId: 'e1',
            spec: { type_url: TypeUrl.OciProcess, value: Buffer.from('{"args":["sh"],"cwd":"/"}') },
          },
        ],
        Update: [
          {
            id: SANDBOX_ID,
            resources: { type_url: TypeUrl.OciLinuxResources, value: Buffer.from('{"memory":{"limit":1048576}}') },
          },
        ],
        ResizePty: [{ id: SANDBOX_ID, width: 80, height: 24 }],
        Wait: [{ id: 'c1' }],
      },
      // Wait waits for an exit that nothing here makes: it is answered when one comes, or never.
      longPoll: ['Wait'],
    }),
    afterCase: async (i) => {
      // The fakes record every call: forget them, and start over with a new sandbox every so often.
      if (hv) hv.calls.length = 0;
      if (agent) agent.calls.length = 0;
      if (share) share.calls.length = 0;
      if ((i + 1) % (options.renewEvery ?? 500) === 0) {
        const old = { server: target.server, service };
        target.server = build();
        await old.server.close();
        await old.service?.teardown();
        hv = agent = share = undefined;
      }
    },
    cleanup: async () => {
      await target.server.close();
      await service?.teardown();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  return target;
}
