/**
 * The agent's ttrpc server as a fuzzing target, on the host: the real registerServices with the real Containers
 * (crun, its state and the bundles pointed into a temporary folder, no hull-init reaper: every request is checked in
 * full, then CreateContainer and ExecProcess stop at FAILED_PRECONDITION before anything is written or run), the real
 * GuestNetwork checks with an ip runner that refuses (as the agent's test mode), the real LoopbackConnections except
 * that opening a connection is refused (it would reach the host's own ports), the real Health, Diagnostics
 * (ReadFile resolves under the guest's share path, absent on a host) and Processes services. Faked: CreateSandbox
 * (it mounts and loads modules once its checks pass; refused here), the clock, power-off.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, Server, StatusError, fuzzMethods, type FuzzMethod, type ServerTarget } from 'ttrpc-ts';
import { AgentService, HealthService } from '../../protos/agent';
import { DiagnosticsService, PortForwardService, ProcessesService } from '../../protos/hull';
import { Containers } from '../container';
import { onlineCpuMem } from '../hotplug';
import { GuestNetwork } from '../network';
import { LoopbackConnections, type OpenedConnection } from '../port-forward';
import type { GuestSandbox } from '../sandbox';
import { registerServices } from '../service';

/** The codes the agent's handlers answer with (StatusError everywhere); UNKNOWN (an untyped error) is a finding. */
const AGENT_CODES = [
  Code.OK,
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.ALREADY_EXISTS,
  Code.FAILED_PRECONDITION,
  Code.RESOURCE_EXHAUSTED,
  Code.UNIMPLEMENTED,
];

const refused = (what: string) => () =>
  Promise.reject(new StatusError(Code.FAILED_PRECONDITION, `${what}: refused by the fuzzing harness`));

class NoLoopback extends LoopbackConnections {
  override open(req: { port?: number | null }): Promise<OpenedConnection> {
    const port = Number(req.port ?? 0);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      return Promise.reject(new StatusError(Code.INVALID_ARGUMENT, `port ${req.port} is not a TCP port (1-65535)`));
    return refused('connecting to the host')();
  }
}

export interface AgentTarget extends ServerTarget {
  cleanup(): Promise<void>;
}

export function agentTarget(): AgentTarget {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-fuzz-agent-'));
  const clock: number[] = [];
  const server = new Server();
  registerServices(server, {
    sandbox: {
      create: refused('CreateSandbox'),
      destroy: async () => undefined,
      storageHandlers: ['virtio-fs'],
      sandboxId: undefined,
    } as unknown as GuestSandbox,
    containers: new Containers(() => undefined, {
      crun: path.join(tmp, 'no-crun'),
      crunRoot: path.join(tmp, 'crun'),
      bundleRoot: path.join(tmp, 'bundles'),
      sharedContainers: path.join(tmp, 'shared', 'containers'),
      consoleRoot: path.join(tmp, 'consoles'),
    }),
    network: new GuestNetwork(refused('ip')),
    portForward: new NoLoopback(),
    transport: 'fuzz',
    startedMs: 1,
    readyMs: () => 2,
    powerOff: () => undefined,
    isInit: false,
    reaper: () => undefined,
    // A fake sysfs with no CPU to online: the request is checked, a `wait` ends at once.
    onlineCpuMem: async (req) => {
      fs.mkdirSync(path.join(tmp, 'sys', 'devices', 'system', 'cpu'), { recursive: true });
      await onlineCpuMem(req, { sysRoot: path.join(tmp, 'sys'), waitMs: 5, pollMs: 1 }).catch((err: unknown) => {
        if (err instanceof StatusError) throw err;
        throw new StatusError(Code.INTERNAL, String(err));
      });
    },
    setClock: async (sec) => {
      clock.push(sec);
      if (clock.length > 100) clock.length = 0;
    },
  });
  const oci = {
    ociVersion: '1.0.2',
    process: { args: ['sh'], cwd: '/', user: { uid: 0, gid: 0 } },
    root: { path: 'rootfs' },
    hostname: 'pod',
    linux: { namespaces: [{ type: 'pid' }, { type: 'mount' }] },
  };
  const methods: FuzzMethod[] = [
    ...fuzzMethods(AgentService, AGENT_CODES, {
      examples: {
        CreateContainer: [{ containerId: 'c1', execId: 'c1', OCI: oci }],
        ExecProcess: [{ containerId: 'c1', execId: 'e1', process: oci.process }],
        SignalProcess: [{ containerId: 'c1', signal: 9 }],
        UpdateInterface: [
          {
            interface: {
              device: 'eth0',
              name: 'eth0',
              hwAddr: '02:00:00:00:00:01',
              mtu: 1500,
              IPAddresses: [{ address: '10.0.0.2', mask: '24', family: 0 }],
            },
          },
        ],
        UpdateRoutes: [{ routes: { Routes: [{ dest: '0.0.0.0/0', gateway: '10.0.0.1', device: 'eth0' }] } }],
        AddARPNeighbors: [
          {
            neighbors: {
              ARPNeighbors: [
                { toIPAddress: { address: '10.0.0.1' }, device: 'eth0', lladdr: '02:00:00:00:00:02', state: 128 },
              ],
            },
          },
        ],
        SetGuestDateTime: [{ Sec: 1_700_000_000 }],
        ReadStdout: [{ containerId: 'c1', len: 4096 }],
        WriteStdin: [{ containerId: 'c1', data: Buffer.from('x') }],
        TtyWinResize: [{ containerId: 'c1', row: 24, column: 80 }],
        UpdateContainer: [{ containerId: 'c1', resources: { memory: { limit: 1 << 20 } } }],
        CreateSandbox: [
          {
            sandboxId: 'sb',
            hostname: 'pod',
            storages: [
              {
                driver: 'virtio-fs',
                source: 'kataShared',
                fstype: 'virtiofs',
                mountPoint: '/run/kata-containers/shared/containers',
              },
            ],
          },
        ],
      },
      // GetOOMEvent waits for an OOM kill (answered when the connection goes).
      longPoll: ['GetOOMEvent'],
    }),
    ...fuzzMethods(HealthService, AGENT_CODES),
    ...fuzzMethods(ProcessesService, AGENT_CODES, {
      examples: { ListProcesses: [{ containerId: 'c1', format: 'json' }] },
    }),
    ...fuzzMethods(PortForwardService, AGENT_CODES, {
      examples: {
        OpenConnection: [{ port: 80 }],
        ReadConnection: [{ id: 1 }],
        WriteConnection: [{ id: 1, data: Buffer.from('x') }],
      },
    }),
    ...fuzzMethods(DiagnosticsService, AGENT_CODES, {
      examples: { ReadFile: [{ path: 'containers/c1/config.json', maxBytes: 10 }] },
    }),
  ];
  const strings = [
    'c1',
    'c2',
    'e1',
    'sb',
    '',
    '..',
    '.',
    '/',
    '\0',
    'x'.repeat(300),
    'eth0',
    'lo',
    '02:00:00:00:00:01',
    '10.0.0.2',
    '10.0.0.0/24',
    '::1',
    'fe80::1',
    '0.0.0.0/0',
    'json',
    'table',
    '-ef',
    '--help',
    'virtio-fs',
    'virtiofs',
    'kataShared',
    '/run/kata-containers/shared/containers',
    'rootfs',
    'containers/../..',
    'SIGKILL',
    'pid',
    'mount',
  ];
  return {
    name: 'agent server',
    server,
    methods,
    strings,
    answerTimeoutMs: 5_000,
    cleanup: async () => {
      await server.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
