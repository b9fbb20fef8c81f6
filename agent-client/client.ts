/**
 * The agent client: Kata's grpc.AgentService and grpc.Health plus hull's Diagnostics, over our ttrpc, with hull's
 * types at the edge, a per-method deadline table and typed errors.
 */
import type { Client, CallOptions, MethodDescriptor } from 'ttrpc-ts';
import {
  CancelledError,
  DeadlineExceededError,
  InvalidArgumentError,
  ShimError,
  UnavailableError,
  errorMessage,
  guestText,
} from '../errors';
import { AgentService, HealthService, MAX_UINT64_NUMBER, grpc } from '../protos/agent';
import {
  DEBUG_CONSOLE_ENABLED,
  DEBUG_CONSOLE_METADATA,
  DiagnosticsService,
  PortForwardService,
  ProcessesService,
  TracingService,
} from '../protos/hull';
import { AgentDebugConsole, type GuestDebugConsole } from './debug-console';
import { isIdentifier } from '../protos/identifiers';
import { connectOnce, describeEndpoint, isNotYet, parseAgentEndpoint, type VsockConnector } from './channel';
import { classifyAgentError } from './errors';
import {
  BadReplyError,
  fromGrpcInterface,
  fromGrpcInterfaces,
  fromGrpcRoutes,
  toGrpcInterface,
  toGrpcNeighbor,
  toGrpcRoute,
  type ArpNeighbor,
  type GuestInterface,
  type GuestRoute,
  type NetworkInterface,
  type RouteSpec,
} from './network';
import { parsePidList, toGrpcResources } from './resources';
import { timeoutFor } from './timeouts';
import { guestKiB, parseGuestBoot } from './guest-boot';
import { timedCall } from './rpc-timing';
import { parseGuestMetrics, MAX_TEXT_BYTES, type GuestMetrics } from './guest-metrics';
import { AgentCallTracer, MAX_DRAINED_SPANS, type GuestSpanBatch } from './tracing';
import { grpcProcessFromOci, grpcSpecFromOci, type OciMount, type OciProcess, type OciSpec } from './oci';
import type {
  AgentClient,
  AgentEndpoint,
  ContainerResources,
  ContainerStats,
  FileContents,
  GuestDetails,
  HealthStatus,
  SandboxSpec,
} from './types';

export interface DialOptions {
  /** Epoch milliseconds by which the agent must have answered Health.Check (the boot deadline). */
  deadline: number;
  /** Aborts the dial, e.g. when the VM exits; a ShimError reason is rethrown as it is. */
  signal?: AbortSignal;
  /** How often an unanswered Health.Check is sent again (earlier ones stay pending). */
  probeIntervalMs?: number;
  /** How vsock streams are opened (hull-vsock by default); tests pass a fake. */
  vsockConnector?: VsockConnector;
}

/** Default read size of readStdout/readStderr, and the largest accepted. */
const READ_CHUNK = 1 << 20;
/** Caps on what the guest reports (its text is untrusted): one detail string, the process table (ps output). */
const DETAIL_MAX_BYTES = 256;
const PROCESS_TABLE_MAX_BYTES = 64 * 1024;
/** The most CPUs one OnlineCPUMem may ask the guest to online (QEMU's x86 q35 limit is 288). */
export const MAX_ONLINE_CPUS = 288;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class KataAgentClient implements AgentClient {
  private readonly tracer = new AgentCallTracer();

  private constructor(private readonly client: Client) {}

  /**
   * Connects to the agent and waits until it answers Health.Check with SERVING. On a virtio-serial port the host
   * side (QEMU's socket) accepts at once and holds what is written until the guest opens the port, so a probe sent
   * early is answered as soon as the agent reads it: no polling delay is added to boot. Over vsock, connecting
   * fails until the agent listens (see channel.ts for what is retried), then the probe is answered at once.
   * `endpoint` may also be a string: `vsock://<cid>:<port>`, or a unix socket path.
   */
  static async dial(endpoint: AgentEndpoint | string, options: DialOptions): Promise<KataAgentClient> {
    const target = typeof endpoint === 'string' ? parseAgentEndpoint(endpoint) : endpoint;
    const started = Date.now();
    const failure = (): ShimError | undefined => {
      const reason: unknown = options.signal?.reason;
      if (options.signal?.aborted)
        return reason instanceof ShimError
          ? reason
          : new CancelledError('dialing the agent was cancelled', { cause: reason });
      if (Date.now() >= options.deadline)
        return new DeadlineExceededError(
          `the agent did not answer within ${options.deadline - started} ms (boot deadline)`,
        );
      return undefined;
    };
    for (;;) {
      const stop = failure();
      if (stop) throw stop;
      let client: Client;
      try {
        const timeoutMs = Math.max(1, Math.min(1000, options.deadline - Date.now()));
        client = await connectOnce(target, {
          timeoutMs,
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.vsockConnector ? { vsockConnector: options.vsockConnector } : {}),
        });
      } catch (err) {
        if (isNotYet(target, err)) {
          await sleep(20);
          continue;
        }
        throw new UnavailableError(`connect to the agent at ${describeEndpoint(target)}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      const agent = new KataAgentClient(client);
      try {
        await agent.probe(options);
        return agent;
      } catch (err) {
        client.close();
        if (err instanceof UnavailableError && !failure()) continue; // the channel closed: dial again
        throw err;
      }
    }
  }

  /** Sends Health.Check, and again every probeIntervalMs, until one answers SERVING, the deadline, or abort. */
  private probe(options: DialOptions): Promise<void> {
    const interval = options.probeIntervalMs ?? 2000;
    return new Promise<void>((resolve, reject) => {
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(deadlineTimer);
        options.signal?.removeEventListener('abort', onAbort);
        controller.abort();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = (): void => {
        const reason: unknown = options.signal?.reason;
        finish(
          reason instanceof ShimError
            ? reason
            : new CancelledError('dialing the agent was cancelled', { cause: reason }),
        );
      };
      const deadlineTimer = setTimeout(
        () => finish(new DeadlineExceededError(`the agent did not answer Health.Check before the boot deadline`)),
        Math.max(0, options.deadline - Date.now()),
      );
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const send = (): void => {
        this.client
          .call(HealthService.Check, {}, { deadline: options.deadline, signal: controller.signal })
          .then((res) => {
            if (res.status === grpc.HealthCheckResponse.ServingStatus.SERVING) finish();
          })
          .catch((err: unknown) => {
            const classified = classifyAgentError(err, 'Check');
            if (classified instanceof UnavailableError) finish(classified);
          });
        timer = setTimeout(send, interval);
      };
      send();
    });
  }

  private async call<Req, Res>(
    desc: MethodDescriptor<Req, Res>,
    request: Req,
    options: CallOptions = {},
  ): Promise<Res> {
    const timeoutMs = timeoutFor(desc.method);
    const traced = this.tracer.begin(desc.service, desc.method, request);
    if (traced) options = { ...options, metadata: { ...options.metadata, traceparent: traced.traceparent } };
    try {
      const res = await timedCall(desc.method, () =>
        this.client.call(desc, request, timeoutMs ? { timeoutMs, ...options } : options),
      );
      if (traced) this.tracer.end(traced.span);
      return res;
    } catch (err) {
      const classified = classifyAgentError(err, desc.method);
      if (traced) this.tracer.end(traced.span, classified);
      throw classified;
    }
  }

  /**
   * The spans the agent recorded since the last drain (hull.agent.v1.Tracing), checked: only spans of traces this
   * client handed the guest, capped (agent-client/tracing.ts). No call at all when no traced call went to the guest
   * since the last drain.
   */
  async drainSpans(options: { timeoutMs?: number } = {}): Promise<GuestSpanBatch> {
    if (!this.tracer.takeDrainNeed()) return { spans: [], dropped: 0, refused: 0 };
    const sentMs = Date.now();
    const res = await this.call(
      TracingService.DrainSpans,
      { maxSpans: MAX_DRAINED_SPANS },
      options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs },
    );
    return this.tracer.check(res, Date.now(), sentMs);
  }

  async check(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<HealthStatus> {
    const res = await this.call(
      HealthService.Check,
      {},
      {
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
    );
    switch (res.status) {
      case grpc.HealthCheckResponse.ServingStatus.SERVING:
        return 'serving';
      case grpc.HealthCheckResponse.ServingStatus.NOT_SERVING:
        return 'not-serving';
      default:
        return 'unknown';
    }
  }

  async version(): Promise<{ agentVersion: string; protocolVersion: string }> {
    const res = await this.call(HealthService.Version, {});
    return { agentVersion: res.agentVersion ?? '', protocolVersion: res.grpcVersion ?? '' };
  }

  async guestDetails(): Promise<GuestDetails> {
    const [details, info] = await Promise.all([
      this.call(AgentService.GetGuestDetails, { memBlockSize: true, memHotplugProbe: false }),
      this.call(DiagnosticsService.GuestInfo, {}),
    ]);
    return {
      kernelRelease: guestText(info.kernelRelease ?? '', DETAIL_MAX_BYTES),
      agentVersion: guestText(details.agentDetails?.version ?? '', DETAIL_MAX_BYTES),
      nodeVersion: guestText(info.nodeVersion ?? '', DETAIL_MAX_BYTES),
      initDaemon: details.agentDetails?.initDaemon ?? false,
      memBlockSizeBytes: Number(details.memBlockSizeBytes ?? 0),
      storageHandlers: (details.agentDetails?.storageHandlers ?? [])
        .slice(0, 64)
        .map((h) => guestText(h, DETAIL_MAX_BYTES)),
      ...parseGuestBoot(info),
      agentRssKiB: guestKiB(info.agentRssKib),
      agentPssKiB: guestKiB(info.agentPssKib),
      transport: guestText(info.transport ?? '', DETAIL_MAX_BYTES),
      onlineCpus: info.onlineCpus ?? 0,
      memTotalMiB: info.memTotalMib ?? 0,
    };
  }

  /** The guest's memory, CPU and load figures (GetMetrics), parsed as untrusted (guest-metrics.ts). */
  async guestMetrics(options: { timeoutMs?: number } = {}): Promise<GuestMetrics> {
    const res = await this.call(AgentService.GetMetrics, {}, options.timeoutMs ? { timeoutMs: options.timeoutMs } : {});
    return parseGuestMetrics((res.metrics ?? '').slice(0, MAX_TEXT_BYTES));
  }

  async createSandbox(spec: SandboxSpec): Promise<void> {
    await this.call(
      AgentService.CreateSandbox,
      {
        sandboxId: spec.sandboxId,
        hostname: spec.hostname ?? '',
        dns: spec.dns ?? [],
        storages: spec.storages.map((s) => ({
          driver: s.driver,
          source: s.source,
          fstype: s.fstype,
          options: s.options,
          mountPoint: s.mountPoint,
        })),
        kernelModules: (spec.kernelModules ?? []).map((m) => ({ name: m.name, parameters: m.parameters })),
      },
      // Kata's CreateSandboxRequest has no field for it: hull's metadata (agent/debug-console.ts).
      spec.debugConsole ? { metadata: { [DEBUG_CONSOLE_METADATA]: DEBUG_CONSOLE_ENABLED } } : {},
    );
  }

  /** The debug console's calls (hull.agent.v1.DebugConsole); the agent refuses them unless CreateSandbox enabled it. */
  debugConsole(): GuestDebugConsole {
    return new AgentDebugConsole((desc, request, options) => this.call(desc, request, options));
  }

  async destroySandbox(): Promise<void> {
    await this.call(AgentService.DestroySandbox, {});
  }

  async setGuestDateTime(at: Date): Promise<void> {
    const ms = at.getTime();
    await this.call(AgentService.SetGuestDateTime, { Sec: Math.floor(ms / 1000), Usec: (ms % 1000) * 1000 });
  }

  async reseedRandomDev(seed: Uint8Array): Promise<void> {
    await this.call(AgentService.ReseedRandomDev, { data: seed });
  }

  async readSharedFile(guestPath: string, maxBytes = 1 << 20): Promise<FileContents> {
    const res = await this.call(DiagnosticsService.ReadFile, { path: guestPath, maxBytes });
    const data = Buffer.from(res.data ?? []);
    // The guest is not trusted: never accept more than was asked for.
    if (data.length > maxBytes)
      throw classifyAgentError(
        new Error(`ReadFile returned ${data.length} bytes, more than the ${maxBytes} asked for`),
        'ReadFile',
      );
    return { data, size: Number(res.size ?? 0) };
  }

  async createOciContainer(containerId: string, spec: OciSpec, mounts?: readonly OciMount[]): Promise<void> {
    // Kata's convention: the init process's exec id is the container id (an empty exec id means every process).
    await this.call(AgentService.CreateContainer, {
      containerId,
      execId: containerId,
      OCI: grpcSpecFromOci(spec, mounts),
      storages: [],
      devices: [],
      sharedMounts: [],
    });
  }

  async execOciProcess(containerId: string, execId: string, process: OciProcess): Promise<void> {
    await this.call(AgentService.ExecProcess, { containerId, execId, process: grpcProcessFromOci(process) });
  }

  async startContainer(containerId: string): Promise<void> {
    await this.call(AgentService.StartContainer, { containerId });
  }

  async waitProcess(containerId: string, execId = ''): Promise<number> {
    const res = await this.call(AgentService.WaitProcess, { containerId, execId });
    const status = res.status ?? 0;
    if (!Number.isInteger(status) || status < 0 || status > 255)
      throw classifyAgentError(new Error(`WaitProcess returned exit status ${status}`), 'WaitProcess');
    return status;
  }

  readStdout(containerId: string, execId: string, maxBytes = READ_CHUNK): Promise<Buffer> {
    return this.readStream(AgentService.ReadStdout, containerId, execId, maxBytes);
  }

  readStderr(containerId: string, execId: string, maxBytes = READ_CHUNK): Promise<Buffer> {
    return this.readStream(AgentService.ReadStderr, containerId, execId, maxBytes);
  }

  private async readStream(
    desc: typeof AgentService.ReadStdout,
    containerId: string,
    execId: string,
    maxBytes: number,
  ): Promise<Buffer> {
    const len = Math.max(1, Math.min(Math.floor(maxBytes), READ_CHUNK));
    const res = await this.call(desc, { containerId, execId, len });
    const data = Buffer.from(res.data ?? []);
    // The guest is not trusted: never accept more than was asked for.
    if (data.length > len)
      throw classifyAgentError(
        new Error(`${desc.method} returned ${data.length} bytes, more than the ${len} asked for`),
        desc.method,
      );
    return data;
  }

  async writeStdin(containerId: string, execId: string, data: Uint8Array): Promise<number> {
    const res = await this.call(AgentService.WriteStdin, { containerId, execId, data });
    const written = Number(res.len ?? 0);
    if (!Number.isInteger(written) || written < 0 || written > data.length)
      throw classifyAgentError(
        new Error(`WriteStdin reported ${written} bytes written of ${data.length}`),
        'WriteStdin',
      );
    return written;
  }

  async openConnection(port: number): Promise<{ id: number; address: string }> {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new InvalidArgumentError(`port ${port} is not a TCP port (1-65535)`);
    const res = await this.call(PortForwardService.OpenConnection, { port });
    const id = Number(res.connectionId ?? 0);
    const address = res.address ?? '';
    if (!Number.isInteger(id) || id < 1 || id > 0xffffffff || (address !== '127.0.0.1' && address !== '::1')) {
      throw classifyAgentError(
        new Error(`OpenConnection answered connection ${id} at ${JSON.stringify(address.slice(0, 64))}`),
        'OpenConnection',
      );
    }
    return { id, address };
  }

  async readConnection(id: number, maxBytes = READ_CHUNK): Promise<Buffer> {
    const max = Math.max(1, Math.min(Math.floor(maxBytes), READ_CHUNK));
    const res = await this.call(PortForwardService.ReadConnection, { connectionId: id, maxBytes: max });
    const data = Buffer.from(res.data ?? []);
    // The guest is not trusted: never more than was asked for, and never data with end of file.
    if (data.length > max || (res.eof && data.length > 0) || (!res.eof && data.length === 0)) {
      throw classifyAgentError(
        new Error(`ReadConnection answered ${data.length} bytes (eof ${Boolean(res.eof)}) to a read of at most ${max}`),
        'ReadConnection',
      );
    }
    return data;
  }

  async writeConnection(id: number, data: Uint8Array): Promise<void> {
    for (let off = 0; off < data.length; off += READ_CHUNK) {
      await this.call(PortForwardService.WriteConnection, {
        connectionId: id,
        data: data.subarray(off, off + READ_CHUNK),
      });
    }
  }

  async endConnection(id: number): Promise<void> {
    await this.call(PortForwardService.CloseConnection, { connectionId: id, writeOnly: true });
  }

  async closeConnection(id: number): Promise<void> {
    await this.call(PortForwardService.CloseConnection, { connectionId: id, writeOnly: false });
  }

  async closeStdin(containerId: string, execId: string): Promise<void> {
    await this.call(AgentService.CloseStdin, { containerId, execId });
  }

  async ttyWinResize(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    for (const [what, n] of [
      ['rows', rows],
      ['columns', cols],
    ] as const) {
      if (!Number.isInteger(n) || n < 0 || n > 0xffff)
        throw new InvalidArgumentError(`terminal ${what} ${n} is not an integer from 0 to 65535`);
    }
    await this.call(AgentService.TtyWinResize, { containerId, execId, row: rows, column: cols });
  }

  async signalProcess(containerId: string, execId: string, signal: number): Promise<void> {
    await this.call(AgentService.SignalProcess, { containerId, execId, signal });
  }

  async statsContainer(containerId: string): Promise<ContainerStats> {
    const res = await this.call(AgentService.StatsContainer, { containerId });
    const cg = res.cgroupStats;
    const limit = (n: number | null | undefined): number | undefined =>
      !n || n >= MAX_UINT64_NUMBER ? undefined : Number(n);
    const memoryStat: Record<string, number> = {};
    for (const [k, v] of Object.entries(cg?.memoryStats?.stats ?? {})) memoryStat[k] = Number(v);
    return {
      cpuUsageNs: Number(cg?.cpuStats?.cpuUsage?.totalUsage ?? 0),
      cpuUserNs: Number(cg?.cpuStats?.cpuUsage?.usageInUsermode ?? 0),
      cpuKernelNs: Number(cg?.cpuStats?.cpuUsage?.usageInKernelmode ?? 0),
      memoryUsageBytes: Number(cg?.memoryStats?.usage?.usage ?? 0),
      memoryMaxUsageBytes: Number(cg?.memoryStats?.usage?.maxUsage ?? 0),
      memoryLimitBytes: limit(cg?.memoryStats?.usage?.limit),
      memoryStat,
      pids: Number(cg?.pidsStats?.current ?? 0),
      pidsLimit: limit(cg?.pidsStats?.limit),
    };
  }

  async updateContainer(containerId: string, resources: ContainerResources): Promise<void> {
    await this.call(AgentService.UpdateContainer, { containerId, resources: toGrpcResources(resources) });
  }

  async listProcesses(containerId: string): Promise<number[]> {
    const res = await this.call(ProcessesService.ListProcesses, { containerId, format: 'json', args: [] });
    const pids = parsePidList(res.processList ?? new Uint8Array());
    if (!pids)
      throw classifyAgentError(
        new Error('ListProcesses returned something other than a list of pids'),
        'ListProcesses',
      );
    return pids;
  }

  async processTable(containerId: string): Promise<string> {
    const res = await this.call(ProcessesService.ListProcesses, { containerId, format: 'table', args: [] });
    return guestText(Buffer.from(res.processList ?? []).toString('utf8'), PROCESS_TABLE_MAX_BYTES, { multiline: true });
  }

  async getOOMEvent(signal?: AbortSignal): Promise<string> {
    const res = await this.call(AgentService.GetOOMEvent, {}, { signal });
    const id = res.containerId ?? '';
    // The guest is not trusted: a container id follows containerd's identifier rule, as every id hull sends does.
    if (!isIdentifier(id))
      throw classifyAgentError(
        new Error(`GetOOMEvent returned a bad container id ${JSON.stringify(id.slice(0, 64))}`),
        'GetOOMEvent',
      );
    return id;
  }

  async onlineCpuMem(o: { nbCpus: number; cpuOnly: boolean; wait: boolean }): Promise<void> {
    if (!Number.isInteger(o.nbCpus) || o.nbCpus < 0 || o.nbCpus > MAX_ONLINE_CPUS)
      throw new InvalidArgumentError(`nbCpus ${o.nbCpus} must be an integer in [0, ${MAX_ONLINE_CPUS}]`);
    await this.call(AgentService.OnlineCPUMem, { nbCpus: o.nbCpus, cpuOnly: o.cpuOnly, wait: o.wait });
  }

  async pauseContainer(containerId: string): Promise<void> {
    await this.call(AgentService.PauseContainer, { containerId });
  }

  async resumeContainer(containerId: string): Promise<void> {
    await this.call(AgentService.ResumeContainer, { containerId });
  }

  async removeContainer(containerId: string): Promise<void> {
    await this.call(AgentService.RemoveContainer, { containerId, timeout: 0 });
  }

  async updateInterface(iface: NetworkInterface): Promise<GuestInterface> {
    const res = await this.call(AgentService.UpdateInterface, { interface: toGrpcInterface(iface) });
    return this.reply('UpdateInterface', () => fromGrpcInterface(res));
  }

  async updateRoutes(routes: readonly RouteSpec[]): Promise<GuestRoute[]> {
    const res = await this.call(AgentService.UpdateRoutes, { routes: { Routes: routes.map(toGrpcRoute) } });
    return this.reply('UpdateRoutes', () => fromGrpcRoutes(res.Routes));
  }

  async addArpNeighbors(neighbors: readonly ArpNeighbor[]): Promise<void> {
    await this.call(AgentService.AddARPNeighbors, { neighbors: { ARPNeighbors: neighbors.map(toGrpcNeighbor) } });
  }

  async listInterfaces(): Promise<GuestInterface[]> {
    const res = await this.call(AgentService.ListInterfaces, {});
    return this.reply('ListInterfaces', () => fromGrpcInterfaces(res.Interfaces));
  }

  async listRoutes(): Promise<GuestRoute[]> {
    const res = await this.call(AgentService.ListRoutes, {});
    return this.reply('ListRoutes', () => fromGrpcRoutes(res.Routes));
  }

  /** Converts a reply from the guest; a malformed one is classified like any agent failure. */
  private reply<T>(method: string, convert: () => T): T {
    try {
      return convert();
    } catch (err) {
      if (err instanceof BadReplyError)
        throw classifyAgentError(new Error(`${method} returned a bad reply: ${err.message}`), method);
      throw err;
    }
  }

  onClose(listener: (err: Error) => void): () => void {
    return this.client.onClose((cause) => listener(new UnavailableError('the agent connection closed', { cause })));
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
