import type { GuestDebugConsole } from './debug-console';
import type { ArpNeighbor, GuestInterface, GuestRoute, NetworkInterface, RouteSpec } from './network';
import type { OciMount, OciProcess, OciSpec } from './oci';
import type { GuestMetrics } from './guest-metrics';
import type { GuestSpanBatch } from './tracing';
/** hull's own types for talking to the guest agent; generated protocol classes stay behind this edge. */

/** Where the agent listens, as the hypervisor reports it. */
export type AgentEndpoint =
  | { transport: 'serial'; path: string }
  | { transport: 'vsock'; cid: number; port: number }
  | { transport: 'unix'; path: string };

export type HealthStatus = 'serving' | 'not-serving' | 'unknown';

export interface GuestDetails {
  /** `uname -r` inside the guest. */
  kernelRelease: string;
  agentVersion: string;
  nodeVersion: string;
  /** Whether the agent runs as the guest's init (PID 1). */
  initDaemon: boolean;
  memBlockSizeBytes: number;
  storageHandlers: string[];
  /** Guest uptime in ms when the agent's code started, and when it began serving. */
  agentStartedMs: number;
  agentReadyMs: number;
  /**
   * Guest uptimes in ms, validated and in order with the two above (guest-boot.ts): the initramfs's /init started, the
   * agent's main code ran, and the guest answered; NaN when unknown.
   */
  initStartedMs: number;
  agentMainMs: number;
  uptimeMs: number;
  /** The agent process's RSS and PSS in KiB when it answered; NaN when unknown. */
  agentRssKiB: number;
  agentPssKiB: number;
  transport: string;
  /** Online CPUs and MemTotal in MiB as the guest kernel sees them (0 from an agent that does not say). */
  onlineCpus: number;
  memTotalMiB: number;
}

/** A filesystem for the agent to mount in the guest. */
export interface StorageSpec {
  /** e.g. 'virtio-fs' */
  driver: string;
  /** For virtio-fs: the share's tag. */
  source: string;
  fstype: string;
  options: string[];
  /** Absolute path in the guest, below /run/kata-containers. */
  mountPoint: string;
}

export interface SandboxSpec {
  sandboxId: string;
  hostname?: string;
  dns?: string[];
  storages: StorageSpec[];
  kernelModules?: { name: string; parameters: string[] }[];
  /** The agent may start debug console processes (`[agent] debug_console_enabled`); default no. */
  debugConsole?: boolean;
}

export interface FileContents {
  data: Buffer;
  /** The file's full size (data may be shorter). */
  size: number;
}

/**
 * Linux resources of a container (OCI's memory, CPU and pids parts). Unset fields are left as they are; -1 means
 * "no limit" for memory, memory+swap, CPU quota and pids.
 */
export interface ContainerResources {
  memoryLimitBytes?: number;
  memoryReservationBytes?: number;
  /** Memory plus swap, as in OCI. */
  memorySwapBytes?: number;
  /** cgroup v1 style shares (2-262144); the guest's crun maps them to cpu.weight. */
  cpuShares?: number;
  cpuQuotaUs?: number;
  cpuPeriodUs?: number;
  /** cpuset lists of the guest's CPUs and memory nodes, like "0-1". */
  cpus?: string;
  mems?: string;
  pidsLimit?: number;
}

/**
 * The guest side of pod networking (Kata's network RPCs), sent after boot and before CreateSandbox: each NIC
 * (found by MAC) gets its name, MTU and addresses, then the routes replace the guest's, then the neighbours.
 */
export interface NetworkAgentClient {
  /** Configures the guest NIC whose MAC is iface.mac; the NIC as it is afterwards. NotFoundError for an unknown MAC. */
  updateInterface(iface: NetworkInterface): Promise<GuestInterface>;
  /** Replaces the guest's routes (not lo's, not those the kernel made for addresses); the routes afterwards. */
  updateRoutes(routes: readonly RouteSpec[]): Promise<GuestRoute[]>;
  /** Adds (or replaces) neighbour entries, permanent unless said otherwise. */
  addArpNeighbors(neighbors: readonly ArpNeighbor[]): Promise<void>;
  listInterfaces(): Promise<GuestInterface[]>;
  /** The main table's routes, IPv4 then IPv6. */
  listRoutes(): Promise<GuestRoute[]>;
}

/**
 * TCP connections to ports on the guest's loopback, relayed over the agent channel (hull.agent.v1.PortForward):
 * the guest's network namespace is the pod's, so this is Kubernetes port forwarding's "localhost in the pod".
 */
export interface PortForwardAgentClient {
  /** Connects to 127.0.0.1:port, else [::1]:port, in the guest. UnavailableError when nothing accepts there. */
  openConnection(port: number): Promise<{ id: number; address: string }>;
  /** Up to maxBytes of what the guest's side sent, waiting for some; empty once it ended. No deadline. */
  readConnection(id: number, maxBytes?: number): Promise<Buffer>;
  /** Resolves once the guest's kernel has the bytes. */
  writeConnection(id: number, data: Uint8Array): Promise<void>;
  /** Ends the sending side only: the guest's server reads end of file, its answer still comes. */
  endConnection(id: number): Promise<void>;
  /** Closes the connection; its id is forgotten. */
  closeConnection(id: number): Promise<void>;
}

export interface AgentClient extends ContainerAgentClient, NetworkAgentClient, PortForwardAgentClient {
  /** Health.Check; `timeoutMs` replaces the method's default deadline, `signal` abandons the call. */
  check(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<HealthStatus>;
  version(): Promise<{ agentVersion: string; protocolVersion: string }>;
  guestDetails(): Promise<GuestDetails>;
  createSandbox(spec: SandboxSpec): Promise<void>;
  /** The debug console (`hull exec`); absent from clients that have none (core's fakes). */
  debugConsole?(): GuestDebugConsole;
  /** The agent unmounts the sandbox's storages and powers the guest off after replying. */
  destroySandbox(): Promise<void>;
  setGuestDateTime(at: Date): Promise<void>;
  /** ReseedRandomDev: the guest's random pool takes `seed` (1-512 bytes) and its CRNG is rekeyed at once. */
  reseedRandomDev?(seed: Uint8Array): Promise<void>;
  /**
   * OnlineCPUMem (Kata's semantics): the agent onlines every offline CPU and (unless cpuOnly) every offline memory
   * block of the guest. `nbCpus` is how many CPUs the host just hot-added (0 = do not count); with `wait`, the agent
   * polls (bounded) until it has onlined that many, since a hot-added CPU appears in the guest a little later.
   * Call after Hypervisor.resize().
   */
  onlineCpuMem(o: { nbCpus: number; cpuOnly: boolean; wait: boolean }): Promise<void>;
  /** Reads a file of the shared folder as the guest sees it (a check of virtio-fs). */
  readSharedFile(guestPath: string, maxBytes?: number): Promise<FileContents>;
  /** Registers a listener for the agent connection's loss; returns a function that removes it. */
  onClose(listener: (err: Error) => void): () => void;
  close(): Promise<void>;
  /** The guest's memory, CPU and load figures (GetMetrics, parsed as untrusted); optional: fakes may lack it. */
  guestMetrics?(options?: { timeoutMs?: number }): Promise<GuestMetrics>;
  /** The spans the guest recorded since the last drain, checked (agent-client/tracing.ts); absent from fakes. */
  drainSpans?(options?: { timeoutMs?: number }): Promise<GuestSpanBatch>;
}

/**
 * The container and process methods of the agent (KataAgentClient has them). Kept apart from AgentClient for now
 * so that AgentClient's other implementations (core's test fakes) need not grow them yet.
 */
/** A container's resource use, from its cgroup in the guest. Limits are undefined when there is none. */
export interface ContainerStats {
  cpuUsageNs: number;
  cpuUserNs: number;
  cpuKernelNs: number;
  memoryUsageBytes: number;
  memoryMaxUsageBytes: number;
  memoryLimitBytes: number | undefined;
  /** memory.stat, key by key. */
  memoryStat: Record<string, number>;
  pids: number;
  pidsLimit: number | undefined;
}

export interface ContainerAgentClient {
  /**
   * Creates container `containerId` from containerd's OCI spec (its rootfs must already be in the share); its init
   * waits for startContainer; `mounts` replaces the spec's mounts (volume sources rewritten to the share). */
  createOciContainer(containerId: string, spec: OciSpec, mounts?: readonly OciMount[]): Promise<void>;
  /** Runs a process given as an OCI Process (containerd's exec spec) in a running container. */
  execOciProcess(containerId: string, execId: string, process: OciProcess): Promise<void>;
  startContainer(containerId: string): Promise<void>;
  /** The exit code (or 128 + signal) once the process exited and its output reached end of file. No deadline. */
  waitProcess(containerId: string, execId?: string): Promise<number>;
  /** Up to `maxBytes` of the process's output, waiting for some; empty at end of stream. No deadline. */
  readStdout(containerId: string, execId: string, maxBytes?: number): Promise<Buffer>;
  readStderr(containerId: string, execId: string, maxBytes?: number): Promise<Buffer>;
  writeStdin(containerId: string, execId: string, data: Uint8Array): Promise<number>;
  closeStdin(containerId: string, execId: string): Promise<void>;
  /** Sets the size of a terminal process's pty (rows and columns from 0 to 65535); its foreground process group gets SIGWINCH. */
  ttyWinResize(containerId: string, execId: string, rows: number, cols: number): Promise<void>;
  /** Signals the process; with execId '' every process of the container. */
  signalProcess(containerId: string, execId: string, signal: number): Promise<void>;
  statsContainer(containerId: string): Promise<ContainerStats>;
  /** Applies new limits to the container's cgroup (only the fields given). */
  updateContainer(containerId: string, resources: ContainerResources): Promise<void>;
  /** The container's processes as guest pids (Kata's ListProcesses, format "json"). */
  listProcesses(containerId: string): Promise<number[]>;
  /** A ps-like table of the container's processes (format "table"). */
  processTable(containerId: string): Promise<string>;
  /**
   * Long poll: the id of the next container whose cgroup had a process killed by the OOM killer. No deadline;
   * `signal` stops waiting (the agent then keeps the request until the connection closes).
   */
  getOOMEvent(signal?: AbortSignal): Promise<string>;
  /** Freezes / thaws every process of the container. */
  pauseContainer(containerId: string): Promise<void>;
  resumeContainer(containerId: string): Promise<void>;
  removeContainer(containerId: string): Promise<void>;
}
