/** In-memory fakes of the Hypervisor, the agent and the share, for fast tests of core. They record what was asked of them. */
import path from 'node:path';
import type {
  AgentClient,
  ArpNeighbor,
  ContainerResources,
  ContainerStats,
  FileContents,
  GuestDetails,
  GuestInterface,
  GuestRoute,
  HealthStatus,
  NetworkInterface,
  OciMount,
  OciProcess,
  OciSpec,
  RouteSpec,
  SandboxSpec,
} from '../../agent-client';
import { FailedPreconditionError, NotFoundError, NotImplementedError, UnavailableError } from '../../errors';
import { GUEST_SHARED_DIR, type FsShare, type GuestMount, type Mount, type VolumeSpec } from '../../fs-share';
import {
  MEMORY_HOTPLUG_BLOCK_MIB,
  type Accel,
  type AgentAddress,
  type Device,
  type Hypervisor,
  type ResizeTarget,
  type VmConfig,
  type VmExit,
  type VmSize,
} from '../../hypervisor/types';

export class FakeHypervisor implements Hypervisor {
  calls: string[] = [];
  config: VmConfig | undefined;
  running = false;
  failStart: Error | undefined;
  /** Called as QEMU would be spawned (e.g. to check what it would inherit). */
  onStart: (() => void) | undefined;
  private exitResolve!: (exit: VmExit) => void;
  private readonly exited: Promise<VmExit> = new Promise((r) => (this.exitResolve = r));
  private stopRequested = false;

  async prepare(cfg: VmConfig): Promise<void> {
    this.calls.push('prepare');
    this.config = cfg;
  }
  async start(_signal: AbortSignal): Promise<void> {
    this.calls.push('start');
    this.onStart?.();
    if (this.config?.sharedDir !== undefined)
      this.config.onSpawn?.({ name: 'virtiofsd', pid: 4343, startTime: '12344' });
    this.config?.onSpawn?.({ name: 'qemu', pid: 4242, startTime: '12345' });
    if (this.failStart) {
      this.exit({ code: 1, signal: null });
      throw this.failStart;
    }
    this.running = true;
  }
  /** The guest powering itself off, or crashing. */
  exit(how: { code: number | null; signal: NodeJS.Signals | null }): void {
    this.running = false;
    this.exitResolve({
      ...how,
      expected: this.stopRequested,
      stderrTail: '',
      consoleTail: ['[ fake ] last console line'],
    });
  }
  async stop(opts: { force: boolean }): Promise<void> {
    this.calls.push(opts.force ? 'stop(force)' : 'stop');
    this.stopRequested = true;
    if (this.running) this.exit({ code: null, signal: 'SIGKILL' });
  }
  wait(): Promise<VmExit> {
    return this.exited;
  }
  async pause(): Promise<void> {}
  async resume(): Promise<void> {}
  async addDevice(_d: Device): Promise<Device> {
    throw new NotImplementedError('fake');
  }
  /** The size resize() gave the VM (undefined until the first resize: the config's). Every target is recorded. */
  size: VmSize | undefined;
  readonly resizes: ResizeTarget[] = [];
  /** Makes the next resize() fail with this error (once). */
  failResize: Error | undefined;
  async resize(target: ResizeTarget, _signal?: AbortSignal): Promise<VmSize> {
    this.calls.push(`resize ${target.vcpus ?? '-'} ${target.memoryMiB ?? '-'}`);
    this.resizes.push({ ...target });
    if (this.failResize) {
      const err = this.failResize;
      this.failResize = undefined;
      throw err;
    }
    if (!this.running || !this.config) throw new UnavailableError('fake: QEMU is not running');
    const cfg = this.config;
    const now = this.size ?? { vcpus: cfg.vcpus, memoryMiB: cfg.memoryMiB };
    const maxVcpus = cfg.maxVcpus ?? cfg.vcpus;
    const maxMemoryMiB = cfg.maxMemoryMiB ?? cfg.memoryMiB;
    if ((target.vcpus ?? 0) > maxVcpus || (target.memoryMiB ?? 0) > maxMemoryMiB)
      throw new FailedPreconditionError(`fake: beyond the maxima (${maxVcpus} vCPUs, ${maxMemoryMiB} MiB)`);
    const vcpus = Math.max(now.vcpus, target.vcpus ?? 0);
    let memoryMiB = now.memoryMiB;
    while (memoryMiB < (target.memoryMiB ?? 0)) memoryMiB += MEMORY_HOTPLUG_BLOCK_MIB;
    this.size = { vcpus, memoryMiB: Math.min(memoryMiB, maxMemoryMiB) };
    return { ...this.size };
  }
  agentAddress(): AgentAddress {
    return { transport: 'serial', path: '/fake/agent.sock' };
  }
  consoleTail(maxLines?: number): string[] {
    return ['[ fake ] last console line'].slice(-(maxLines ?? 1));
  }
  pid(): number | undefined {
    return this.running ? 4242 : undefined;
  }
  virtiofsdPid(): number | undefined {
    return undefined;
  }
  accel(): Accel {
    return 'tcg';
  }
  async cleanup(): Promise<void> {
    this.calls.push('cleanup');
  }
}

/** A call of FakeAgent held open by a test: `entered` once the call arrived, then `release()` (or `fail(err)`) ends it. */
export class HeldCall {
  readonly entered: Promise<void>;
  private enter!: () => void;
  private settle!: (err?: Error) => void;
  private readonly released: Promise<void>;
  constructor() {
    this.entered = new Promise((r) => (this.enter = r));
    this.released = new Promise((resolve, reject) => (this.settle = (err) => (err ? reject(err) : resolve())));
  }
  /** Called by the fake: waits for the test. */
  async arrive(): Promise<void> {
    this.enter();
    await this.released;
  }
  release(): void {
    this.settle();
  }
  fail(err: Error): void {
    this.settle(err);
  }
}

/** The FakeAgent methods a test can hold open. */
export type HoldableMethod =
  | 'startContainer'
  | 'execOciProcess'
  | 'pauseContainer'
  | 'resumeContainer'
  | 'signalProcess'
  | 'removeContainer'
  | 'updateContainer'
  | 'ttyWinResize';

export class FakeAgent implements AgentClient {
  calls: string[] = [];
  sandbox: SandboxSpec | undefined;
  constructor(private readonly hv?: FakeHypervisor) {}
  private readonly holds = new Map<HoldableMethod, HeldCall[]>();
  /** Holds the next call of `method` open until the test releases it (to interleave operations deterministically). */
  hold(method: HoldableMethod): HeldCall {
    const h = new HeldCall();
    this.holds.set(method, [...(this.holds.get(method) ?? []), h]);
    return h;
  }
  private async gate(method: HoldableMethod): Promise<void> {
    await this.holds.get(method)?.shift()?.arrive();
  }

  /** What Health.Check answers: `hang` never answers (until the call is abandoned), like a stopped agent. */
  health: HealthStatus | 'hang' = 'serving';
  checks = 0;
  async check(options: { signal?: AbortSignal } = {}): Promise<HealthStatus> {
    this.checks++;
    if (this.health !== 'hang') return this.health;
    return new Promise((_resolve, reject) =>
      options.signal?.addEventListener('abort', () => reject(new Error('abandoned')), { once: true }),
    );
  }
  async version(): Promise<{ agentVersion: string; protocolVersion: string }> {
    return { agentVersion: 'fake', protocolVersion: 'ttrpc-1.1' };
  }
  async guestDetails(): Promise<GuestDetails> {
    return {
      kernelRelease: 'fake',
      agentVersion: 'fake',
      nodeVersion: 'v0',
      initDaemon: true,
      memBlockSizeBytes: 0,
      storageHandlers: [],
      agentStartedMs: 1,
      agentReadyMs: 2,
      initStartedMs: NaN,
      agentMainMs: NaN,
      uptimeMs: NaN,
      agentRssKiB: NaN,
      agentPssKiB: NaN,
      transport: 'serial',
      onlineCpus: this.hv?.size?.vcpus ?? this.hv?.config?.vcpus ?? 1,
      memTotalMiB: this.hv?.size?.memoryMiB ?? this.hv?.config?.memoryMiB ?? 256,
    };
  }
  async createSandbox(spec: SandboxSpec): Promise<void> {
    this.calls.push('createSandbox');
    this.sandbox = spec;
  }
  async destroySandbox(): Promise<void> {
    this.calls.push('destroySandbox');
    setTimeout(() => this.hv?.exit({ code: 0, signal: null }), 5); // the guest powers off
  }
  async setGuestDateTime(_at: Date): Promise<void> {}
  /** Every onlineCpuMem request, in order (also in `calls`). */
  readonly onlines: { nbCpus: number; cpuOnly: boolean; wait: boolean }[] = [];
  failOnline: Error | undefined;
  async onlineCpuMem(o: { nbCpus: number; cpuOnly: boolean; wait: boolean }): Promise<void> {
    this.calls.push(`onlineCpuMem ${o.nbCpus}${o.cpuOnly ? ' cpuOnly' : ''}${o.wait ? ' wait' : ''}`);
    this.onlines.push({ ...o });
    if (this.failOnline) {
      const err = this.failOnline;
      this.failOnline = undefined;
      throw err;
    }
  }
  async readSharedFile(_p: string): Promise<FileContents> {
    return { data: Buffer.alloc(0), size: 0 };
  }
  private readonly closeListeners = new Set<(err: Error) => void>();
  onClose(listener: (err: Error) => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }
  /** The connection breaking outside a shutdown (the VM died). */
  lose(err: Error): void {
    for (const l of this.closeListeners) l(err);
  }
  /** As the real client: calls in flight (output reads) fail once the connection is closed. */
  async close(): Promise<void> {
    this.calls.push('close');
    for (const p of this.procs.values()) p.disconnect();
  }
  // Network: every request recorded in order (also in `calls`); the guest's state is what was asked for last.
  readonly interfaceUpdates: NetworkInterface[] = [];
  readonly routeUpdates: RouteSpec[][] = [];
  readonly neighborsAdded: ArpNeighbor[] = [];
  /** MACs of the guest's NICs; undefined = any MAC is found. An unknown one is a NotFoundError, like the agent's. */
  guestMacs: string[] | undefined;
  /** Makes the next network call fail (then cleared). */
  failNetwork: Error | undefined;
  private readonly guestInterfaces = new Map<string, GuestInterface>();
  private guestRoutes: GuestRoute[] = [];
  private networkFailure(): void {
    const err = this.failNetwork;
    this.failNetwork = undefined;
    if (err) throw err;
  }
  async updateInterface(iface: NetworkInterface): Promise<GuestInterface> {
    this.calls.push(`updateInterface ${iface.name} ${iface.mac.toLowerCase()}`);
    this.interfaceUpdates.push(iface);
    this.networkFailure();
    const mac = iface.mac.toLowerCase();
    if (this.guestMacs && !this.guestMacs.includes(mac))
      throw new NotFoundError(`fake agent: no guest interface has MAC ${mac}`);
    const now: GuestInterface = {
      name: iface.name,
      mac,
      mtu: iface.mtu ?? 1500,
      linkType: '',
      flags: 0x1,
      up: true,
      addresses: iface.addresses.map((a) => ({
        address: a.address,
        prefixLength: a.prefixLength,
        family: a.family ?? (a.address.includes(':') ? 6 : 4),
      })),
    };
    this.guestInterfaces.set(mac, now);
    return now;
  }
  async updateRoutes(routes: readonly RouteSpec[]): Promise<GuestRoute[]> {
    this.calls.push(`updateRoutes ${routes.length}`);
    this.routeUpdates.push([...routes]);
    this.networkFailure();
    this.guestRoutes = routes.map((r) => ({
      dest: r.dest,
      device: r.device,
      scope: r.scope ?? 'universe',
      family: r.family ?? ((r.gateway ?? r.dest).includes(':') ? 6 : 4),
      onlink: r.onlink ?? false,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.source ? { source: r.source } : {}),
      ...(r.mtu ? { mtu: r.mtu } : {}),
    }));
    return this.listRoutes();
  }
  async addArpNeighbors(neighbors: readonly ArpNeighbor[]): Promise<void> {
    this.calls.push(`addArpNeighbors ${neighbors.length}`);
    this.neighborsAdded.push(...neighbors);
    this.networkFailure();
  }
  async listInterfaces(): Promise<GuestInterface[]> {
    return [...this.guestInterfaces.values()];
  }
  async listRoutes(): Promise<GuestRoute[]> {
    return this.guestRoutes.map((r) => ({ ...r }));
  }
  // Port forwarding: core/test/port-forward.test.ts drives the real agent; here nothing listens in the guest.
  async openConnection(port: number): Promise<{ id: number; address: string }> {
    this.calls.push(`openConnection ${port}`);
    throw new UnavailableError(`nothing accepts connections on port ${port} in the fake guest`);
  }
  async readConnection(id: number): Promise<Buffer> {
    throw new NotFoundError(`no forwarded connection ${id}`);
  }
  async writeConnection(id: number): Promise<void> {
    throw new NotFoundError(`no forwarded connection ${id}`);
  }
  async endConnection(id: number): Promise<void> {
    throw new NotFoundError(`no forwarded connection ${id}`);
  }
  async closeConnection(id: number): Promise<void> {
    throw new NotFoundError(`no forwarded connection ${id}`);
  }
  // Containers: recorded. Processes run until the test ends them with exitProcess(); output queued with emit().
  readonly procs = new Map<string, FakeProcess>();
  private proc(containerId: string, execId: string): FakeProcess {
    const p = this.procs.get(`${containerId}/${execId || containerId}`);
    if (!p) throw new NotFoundError(`fake process ${containerId}/${execId}: not found`);
    return p;
  }
  private addProc(containerId: string, execId: string): void {
    this.procs.set(`${containerId}/${execId}`, new FakeProcess());
  }
  /** Queues output on a process's stdout (or stderr). */
  emit(containerId: string, execId: string, data: string | Buffer, stream: 'stdout' | 'stderr' = 'stdout'): void {
    this.proc(containerId, execId).push(stream, Buffer.from(data));
  }
  /** Ends the process: its output reaches end of stream, then waitProcess answers. */
  exitProcess(containerId: string, execId: string, code: number): void {
    this.proc(containerId, execId).exit(code);
  }
  /** Ends the process while a background child of it keeps its stdout and stderr open (they never end). */
  exitProcessHoldingOutput(containerId: string, execId: string, code: number): void {
    this.proc(containerId, execId).exitHoldingOutput(code);
  }
  stdinOf(containerId: string, execId: string): { data: string; closed: boolean } {
    const p = this.proc(containerId, execId);
    return { data: Buffer.concat(p.stdin).toString(), closed: p.stdinClosed };
  }
  async createOciContainer(containerId: string, spec: OciSpec, mounts?: readonly OciMount[]): Promise<void> {
    this.calls.push(`createOciContainer ${containerId}`);
    this.lastSpec = spec;
    this.lastMounts = mounts ? [...mounts] : undefined;
    this.addProc(containerId, containerId);
  }
  lastMounts: OciMount[] | undefined;
  lastSpec: OciSpec | undefined;
  async startContainer(containerId: string): Promise<void> {
    this.calls.push(`startContainer ${containerId}`);
    await this.gate('startContainer');
  }
  async execOciProcess(containerId: string, execId: string, _spec: OciProcess): Promise<void> {
    this.calls.push(`execOciProcess ${containerId} ${execId}`);
    await this.gate('execOciProcess');
    this.addProc(containerId, execId);
  }
  async waitProcess(containerId: string, execId = ''): Promise<number> {
    return this.proc(containerId, execId).exited;
  }
  async readStdout(containerId: string, execId: string): Promise<Buffer> {
    return this.proc(containerId, execId).read('stdout');
  }
  async readStderr(containerId: string, execId: string): Promise<Buffer> {
    return this.proc(containerId, execId).read('stderr');
  }
  async writeStdin(containerId: string, execId: string, data: Uint8Array): Promise<number> {
    this.proc(containerId, execId).stdin.push(Buffer.from(data));
    return data.length;
  }
  async closeStdin(containerId: string, execId: string): Promise<void> {
    this.proc(containerId, execId).stdinClosed = true;
  }
  async ttyWinResize(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    this.calls.push(`ttyWinResize ${containerId} ${execId} ${rows}x${cols}`);
    await this.gate('ttyWinResize');
  }
  async signalProcess(containerId: string, execId: string, signal: number): Promise<void> {
    this.calls.push(`signalProcess ${containerId} ${execId} ${signal}`);
    await this.gate('signalProcess');
  }
  async statsContainer(_containerId: string): Promise<ContainerStats> {
    return {
      cpuUsageNs: 0,
      cpuUserNs: 0,
      cpuKernelNs: 0,
      memoryUsageBytes: 0,
      memoryMaxUsageBytes: 0,
      memoryLimitBytes: undefined,
      memoryStat: {},
      pids: 0,
      pidsLimit: undefined,
    };
  }
  async updateContainer(containerId: string, _resources: ContainerResources): Promise<void> {
    this.calls.push(`updateContainer ${containerId}`);
    await this.gate('updateContainer');
  }
  async listProcesses(_containerId: string): Promise<number[]> {
    return [];
  }
  async processTable(_containerId: string): Promise<string> {
    return 'UID  PID  PPID  STAT  TIME  CMD\n';
  }
  private readonly ooms: string[] = [];
  private oomWaiter: (() => void) | undefined;
  /** The guest reporting an OOM of the container: the next GetOOMEvent answers it. */
  oom(containerId: string): void {
    this.ooms.push(containerId);
    this.oomWaiter?.();
  }
  /** Answers the OOMs oom() queued, else waits (until aborted). */
  async getOOMEvent(signal?: AbortSignal): Promise<string> {
    while (this.ooms.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(new Error('aborted'));
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        this.oomWaiter = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
      });
    }
    return this.ooms.shift()!;
  }
  async pauseContainer(containerId: string): Promise<void> {
    this.calls.push(`pauseContainer ${containerId}`);
    await this.gate('pauseContainer');
  }
  async resumeContainer(containerId: string): Promise<void> {
    this.calls.push(`resumeContainer ${containerId}`);
    await this.gate('resumeContainer');
  }
  /** As the real agent (crun delete --force): the container's processes are killed, their output ends. */
  async removeContainer(containerId: string): Promise<void> {
    this.calls.push(`removeContainer ${containerId}`);
    await this.gate('removeContainer');
    for (const [key, p] of this.procs) {
      if (!key.startsWith(`${containerId}/`)) continue;
      p.exit(137);
      this.procs.delete(key);
    }
  }
}

export const testConfig = (): VmConfig => ({
  id: 'sb1',
  stateDir: '/fake/state',
  kernel: '/k',
  initrd: '/i',
  image: '/r',
  vcpus: 1,
  memoryMiB: 256,
  accel: 'auto',
  agentTransport: 'auto',
});

/** A process of FakeAgent: output queues per stream, an exit the test triggers. */
export class FakeProcess {
  readonly stdin: Buffer[] = [];
  stdinClosed = false;
  private readonly queues = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  private readonly waiting = { stdout: [] as (() => void)[], stderr: [] as (() => void)[] };
  private ended = false;
  private disconnected = false;
  private resolveExit!: (code: number) => void;
  readonly exited: Promise<number> = new Promise((r) => (this.resolveExit = r));

  push(stream: 'stdout' | 'stderr', data: Buffer): void {
    this.queues[stream].push(data);
    this.wake(stream);
  }
  exit(code: number): void {
    this.ended = true;
    this.wake('stdout');
    this.wake('stderr');
    this.resolveExit(code);
  }
  exitHoldingOutput(code: number): void {
    this.resolveExit(code);
  }
  /** The agent's connection closed: reads fail. */
  disconnect(): void {
    this.disconnected = true;
    this.wake('stdout');
    this.wake('stderr');
  }
  async read(stream: 'stdout' | 'stderr'): Promise<Buffer> {
    while (this.queues[stream].length === 0 && !this.ended && !this.disconnected)
      await new Promise<void>((r) => this.waiting[stream].push(r));
    if (this.queues[stream].length === 0 && !this.ended) throw new UnavailableError('fake agent: connection closed');
    return this.queues[stream].shift() ?? Buffer.alloc(0);
  }
  private wake(stream: 'stdout' | 'stderr'): void {
    for (const w of this.waiting[stream].splice(0)) w();
  }
}

type ShareMethod = 'prepare' | 'shareRootfs' | 'shareVolume' | 'unshare' | 'cleanup';

/** FsShare in memory: records calls (`shareRootfs c1`, `unshare c1`, ...); `fail[method]` makes that method throw. */
export class FakeShare implements FsShare {
  calls: string[] = [];
  readonly fail: Partial<Record<ShareMethod, Error>> = {};
  constructor(
    readonly root: string,
    readonly id: string,
  ) {}

  private call(method: ShareMethod, what: string): void {
    this.calls.push(what);
    const err = this.fail[method];
    if (err) throw err;
  }
  async prepare(): Promise<void> {
    this.call('prepare', 'prepare');
  }
  sharedDir(): string {
    return path.join(this.root, this.id, 'shared');
  }
  async shareRootfs(containerId: string, _mounts: Mount[], _bundleRootfs?: string): Promise<GuestMount> {
    this.call('shareRootfs', `shareRootfs ${containerId}`);
    return { guestPath: `${GUEST_SHARED_DIR}/${containerId}/rootfs`, readOnly: false };
  }
  async shareVolume(containerId: string, volume: VolumeSpec): Promise<GuestMount> {
    this.call('shareVolume', `shareVolume ${containerId} ${volume.source}${volume.readOnly ? ' ro' : ''}`);
    return { guestPath: `${GUEST_SHARED_DIR}/${containerId}/volumes${volume.destination}`, readOnly: volume.readOnly };
  }
  async unshare(containerId: string): Promise<void> {
    this.call('unshare', `unshare ${containerId}`);
  }
  async cleanup(): Promise<void> {
    this.call('cleanup', 'cleanup');
  }
}
