/**
 * Realistic messages for the golden wire test: each is a plain object (camelCase field names, as the generated
 * fromObject takes them) of a named message type. Nested Any payloads are encoded with our generated classes;
 * the same payload types also appear as cases of their own, so their bytes are checked too.
 */
import { cgroups1, events, runtimeOptions, type PackedAny } from '../../containerd';

export interface GoldenCase {
  name: string;
  side: 'containerd' | 'agent';
  /** Fully qualified message name. */
  type: string;
  value: Record<string, unknown>;
}

const BUNDLE = '/run/containerd/io.containerd.runtime.v2.task/k8s.io/3f1c9a';
const SNAPSHOT = '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots';

const runtimeOptionsValue = { typeUrl: 'hull.config.v1', configPath: '/etc/hull/configuration.toml' };

const taskExitValue = {
  containerId: '3f1c9a',
  id: '3f1c9a',
  pid: 4242,
  exitStatus: 137,
  exitedAt: { seconds: 1700000123, nanos: 456789000 },
};

const cgroupsV1Value = {
  hugetlb: [{ usage: 0, max: 0, failcnt: 0, pagesize: '2MB' }],
  pids: { current: 7, limit: 4096 },
  cpu: {
    usage: { total: 123456789012, kernel: 23456789012, user: 100000000000, perCpu: [61728394506, 61728394506] },
    throttling: { periods: 120, throttledPeriods: 3, throttledTime: 45000000 },
  },
  memory: {
    cache: 8192000,
    rss: 20480000,
    mappedFile: 4096,
    pgFault: 15000,
    hierarchicalMemoryLimit: 9223372036854771712, // 2^63 - 4096: "no limit" on cgroup v1, exact as a double
    totalRss: 20480000,
    usage: { limit: 268435456, usage: 28672000, max: 30000000, failcnt: 0 },
    swap: { limit: 9223372036854771712, usage: 28672000 },
    kernel: { usage: 1048576 },
  },
  blkio: {
    ioServiceBytesRecursive: [
      { op: 'Read', device: '', major: 253, minor: 0, value: 1048576 },
      { op: 'Write', device: '', major: 253, minor: 0, value: 4096 },
    ],
  },
  memoryOomControl: { oomKillDisable: 0, underOom: 0, oomKill: 1 },
};

function pack(typeUrl: string, bytes: Uint8Array): PackedAny {
  return { type_url: typeUrl, value: bytes };
}

export const GOLDEN_CASES: GoldenCase[] = [
  {
    name: 'task.CreateTaskRequest (overlay rootfs, runtime options)',
    side: 'containerd',
    type: 'containerd.task.v2.CreateTaskRequest',
    value: {
      id: '3f1c9a',
      bundle: BUNDLE,
      rootfs: [
        {
          type: 'overlay',
          source: 'overlay',
          options: [
            'index=off',
            `workdir=${SNAPSHOT}/42/work`,
            `upperdir=${SNAPSHOT}/42/fs`,
            `lowerdir=${SNAPSHOT}/41/fs:${SNAPSHOT}/40/fs`,
          ],
        },
      ],
      terminal: false,
      stdin: '',
      stdout: '/run/containerd/fifo/1234/3f1c9a-stdout',
      stderr: '/run/containerd/fifo/1234/3f1c9a-stderr',
      options: pack('runtimeoptions.v1.Options', runtimeOptions.Options.encode(runtimeOptionsValue).finish()),
    },
  },
  {
    name: 'runtimeoptions.v1.Options',
    side: 'containerd',
    type: 'runtimeoptions.v1.Options',
    value: runtimeOptionsValue,
  },
  {
    name: 'task.StateResponse (stopped, exited_at)',
    side: 'containerd',
    type: 'containerd.task.v2.StateResponse',
    value: {
      id: '3f1c9a',
      bundle: BUNDLE,
      pid: 4242,
      status: 3, // STOPPED
      stdout: '/run/containerd/fifo/1234/3f1c9a-stdout',
      terminal: true,
      exitStatus: 137,
      exitedAt: { seconds: 1700000123, nanos: 456789000 },
      execId: 'exec-1',
    },
  },
  {
    name: 'task.UpdateTaskRequest (JSON resources, annotations)',
    side: 'containerd',
    type: 'containerd.task.v2.UpdateTaskRequest',
    value: {
      id: '3f1c9a',
      resources: pack(
        'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
        new TextEncoder().encode('{"memory":{"limit":268435456},"cpu":{"shares":512}}'),
      ),
      annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'a1b2c3' },
    },
  },
  {
    name: 'events.TaskExit',
    side: 'containerd',
    type: 'containerd.events.TaskExit',
    value: taskExitValue,
  },
  {
    name: 'events ForwardRequest (Envelope carrying TaskExit)',
    side: 'containerd',
    type: 'containerd.services.events.ttrpc.v1.ForwardRequest',
    value: {
      envelope: {
        timestamp: { seconds: 1700000123, nanos: 500000000 },
        namespace: 'k8s.io',
        topic: '/tasks/exit',
        event: pack('containerd.events.TaskExit', events.TaskExit.encode(taskExitValue).finish()),
      },
    },
  },
  {
    name: 'cgroups v1 Metrics',
    side: 'containerd',
    type: 'io.containerd.cgroups.v1.Metrics',
    value: cgroupsV1Value,
  },
  {
    name: 'task.StatsResponse (cgroups v1 Metrics)',
    side: 'containerd',
    type: 'containerd.task.v2.StatsResponse',
    value: { stats: pack('io.containerd.cgroups.v1.Metrics', cgroups1.Metrics.encode(cgroupsV1Value).finish()) },
  },
  {
    name: 'cgroups v2 Metrics',
    side: 'containerd',
    type: 'io.containerd.cgroups.v2.Metrics',
    value: {
      pids: { current: 3, limit: 0 },
      cpu: {
        usageUsec: 1500000,
        userUsec: 1000000,
        systemUsec: 500000,
        nrPeriods: 10,
        nrThrottled: 1,
        throttledUsec: 2000,
      },
      memory: { anon: 1048576, file: 2097152, usage: 3145728, usageLimit: 268435456, swapUsage: 0, swapLimit: 0 },
      io: { usage: [{ major: 254, minor: 1, rbytes: 4096, wbytes: 8192, rios: 1, wios: 2 }] },
      hugetlb: [{ current: 0, max: 0, pagesize: '1GB' }],
      memoryEvents: { max: 2, oom: 1, oomKill: 1 },
    },
  },
  {
    name: 'task.PidsResponse (runc ProcessDetails)',
    side: 'containerd',
    type: 'containerd.task.v2.PidsResponse',
    value: {
      processes: [
        { pid: 4242 },
        {
          pid: 4300,
          info: pack(
            'containerd.runc.v1.ProcessDetails',
            new Uint8Array([0x0a, 0x06, ...new TextEncoder().encode('exec-1')]),
          ),
        },
      ],
    },
  },
  {
    name: 'ttrpc.Request (timeout, metadata)',
    side: 'containerd',
    type: 'ttrpc.Request',
    value: {
      service: 'containerd.task.v2.Task',
      method: 'State',
      payload: new Uint8Array([0x0a, 0x06, 0x33, 0x66, 0x31, 0x63, 0x39, 0x61]),
      timeoutNano: 5000000000,
      metadata: [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }],
    },
  },
  {
    name: 'agent CreateContainerRequest (OCI spec)',
    side: 'agent',
    type: 'grpc.CreateContainerRequest',
    value: {
      containerId: '3f1c9a',
      execId: '3f1c9a',
      storages: [],
      OCI: {
        Version: '1.0.2-dev',
        Process: {
          Terminal: false,
          User: { UID: 0, GID: 0, AdditionalGids: [0, 10] },
          Args: ['sh', '-c', 'sleep 3600'],
          Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=web-0'],
          Cwd: '/',
          Capabilities: {
            Bounding: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
            Effective: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
            Permitted: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
          },
          Rlimits: [{ Type: 'RLIMIT_NOFILE', Hard: 1048576, Soft: 1048576 }],
          NoNewPrivileges: true,
          OOMScoreAdj: -998,
        },
        Root: { Path: '/run/kata-containers/shared/containers/3f1c9a/rootfs', Readonly: false },
        Hostname: 'web-0',
        Mounts: [
          { destination: '/proc', source: 'proc', type: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
          {
            destination: '/dev',
            source: 'tmpfs',
            type: 'tmpfs',
            options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
          },
          {
            destination: '/etc/hosts',
            source: '/run/kata-containers/shared/containers/3f1c9a-hosts',
            type: 'bind',
            options: ['rbind', 'rprivate', 'ro'],
          },
        ],
        Annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'a1b2c3' },
        Linux: {
          Resources: {
            Devices: [{ Allow: false, Access: 'rwm' }],
            Memory: { Limit: 268435456, Swappiness: 0 },
            CPU: { Shares: 512, Quota: -1, Period: 100000 },
            Pids: { Limit: 1024 },
          },
          CgroupsPath: '/kubepods/besteffort/pod1234/3f1c9a',
          Namespaces: [{ Type: 'ipc', Path: '' }, { Type: 'uts' }, { Type: 'mount' }],
          Seccomp: {
            DefaultAction: 'SCMP_ACT_ALLOW',
            Architectures: ['SCMP_ARCH_X86_64'],
            Syscalls: [{ Names: ['kexec_load', 'reboot'], Action: 'SCMP_ACT_ERRNO', errnoret: 1 }],
          },
          MaskedPaths: ['/proc/kcore', '/proc/keys'],
          ReadonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
        },
      },
      sandboxPidns: false,
    },
  },
  {
    name: 'agent ReadStreamResponse (binary data)',
    side: 'agent',
    type: 'grpc.ReadStreamResponse',
    value: { data: new Uint8Array([0x00, 0xff, 0x1b, 0x5b, 0x33, 0x31, 0x6d, 0xc3, 0x28, 0x0a, 0x80, 0x00]) },
  },
  {
    name: 'agent CreateSandboxRequest (storages, kernel modules)',
    side: 'agent',
    type: 'grpc.CreateSandboxRequest',
    value: {
      hostname: 'web-0',
      dns: ['nameserver 10.96.0.10', 'search default.svc.cluster.local svc.cluster.local'],
      storages: [
        {
          driver: 'virtio-fs',
          source: 'kataShared',
          fstype: 'virtiofs',
          options: [],
          mountPoint: '/run/kata-containers/shared/containers/',
        },
        {
          driver: 'ephemeral',
          source: 'tmpfs',
          fstype: 'tmpfs',
          options: ['size=67108864'],
          mountPoint: '/run/kata-containers/sandbox/shm',
          fsGroup: { groupId: 2000, groupChangePolicy: 1 },
          shared: true,
        },
      ],
      sandboxPidns: true,
      sandboxId: 'a1b2c3',
      kernelModules: [{ name: 'br_netfilter', parameters: [] }],
    },
  },
  {
    name: 'agent MemAgentMemcgConfig (proto3 optional zeros)',
    side: 'agent',
    type: 'grpc.MemAgentMemcgConfig',
    value: { disabled: false, swappinessMax: 0, periodSecs: 600 },
  },
  {
    name: 'agent UpdateInterfaceRequest (types package)',
    side: 'agent',
    type: 'grpc.UpdateInterfaceRequest',
    value: {
      interface: {
        device: 'eth0',
        name: 'eth0',
        IPAddresses: [
          { family: 0, address: '10.244.1.5', mask: '24' },
          { family: 1, address: 'fd00::5', mask: '64' },
        ],
        mtu: 1450,
        hwAddr: '02:42:0a:f4:01:05',
        devicePath: '02/00',
        type: 'veth',
      },
    },
  },
  {
    name: 'agent SetGuestDateTimeRequest (int64)',
    side: 'agent',
    type: 'grpc.SetGuestDateTimeRequest',
    value: { Sec: 1700000123, Usec: 456789 },
  },
];
