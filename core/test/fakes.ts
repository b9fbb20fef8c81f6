/** In-memory fakes of the Hypervisor and the agent, for fast tests of core. They record what was asked of them. */
import type { AgentClient, ContainerSpec, ContainerStats, FileContents, GuestDetails, HealthStatus, ProcessSpec, SandboxSpec } from '../../agent-client';
import { NotImplementedError } from '../../errors';
import type { Accel, AgentAddress, Device, Hypervisor, VmConfig, VmExit } from '../../hypervisor/types';

export class FakeHypervisor implements Hypervisor {
  calls: string[] = [];
  config: VmConfig | undefined;
  running = false;
  failStart: Error | undefined;
  private exitResolve!: (exit: VmExit) => void;
  private readonly exited: Promise<VmExit> = new Promise((r) => (this.exitResolve = r));
  private stopRequested = false;

  async prepare(cfg: VmConfig): Promise<void> {
    this.calls.push('prepare');
    this.config = cfg;
  }
  async start(_signal: AbortSignal): Promise<void> {
    this.calls.push('start');
    if (this.failStart) {
      this.exit({ code: 1, signal: null });
      throw this.failStart;
    }
    this.running = true;
  }
  /** The guest powering itself off, or crashing. */
  exit(how: { code: number | null; signal: NodeJS.Signals | null }): void {
    this.running = false;
    this.exitResolve({ ...how, expected: this.stopRequested, stderrTail: '', consoleTail: ['[ fake ] last console line'] });
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
  agentAddress(): AgentAddress {
    return { transport: 'serial', path: '/fake/agent.sock' };
  }
  consoleLogPath(): string {
    return '/nonexistent/console.log';
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

export class FakeAgent implements AgentClient {
  calls: string[] = [];
  sandbox: SandboxSpec | undefined;
  constructor(private readonly hv?: FakeHypervisor) {}

  async check(): Promise<HealthStatus> {
    return 'serving';
  }
  async version(): Promise<{ agentVersion: string; protocolVersion: string }> {
    return { agentVersion: 'fake', protocolVersion: 'ttrpc-1.1' };
  }
  async guestDetails(): Promise<GuestDetails> {
    return { kernelRelease: 'fake', agentVersion: 'fake', nodeVersion: 'v0', initDaemon: true, memBlockSizeBytes: 0, storageHandlers: [], agentStartedMs: 1, agentReadyMs: 2, transport: 'serial' };
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
  async readSharedFile(_p: string): Promise<FileContents> {
    return { data: Buffer.alloc(0), size: 0 };
  }
  onClose(_listener: (err: Error) => void): () => void {
    return () => undefined;
  }
  async close(): Promise<void> {
    this.calls.push('close');
  }
  // Containers: recorded; processes exit at once with code 0 and no output.
  async createContainer(containerId: string, _spec: ContainerSpec): Promise<void> {
    this.calls.push(`createContainer ${containerId}`);
  }
  async startContainer(containerId: string): Promise<void> {
    this.calls.push(`startContainer ${containerId}`);
  }
  async execProcess(containerId: string, execId: string, _spec: ProcessSpec): Promise<void> {
    this.calls.push(`execProcess ${containerId} ${execId}`);
  }
  async waitProcess(_containerId: string): Promise<number> {
    return 0;
  }
  async readStdout(): Promise<Buffer> {
    return Buffer.alloc(0);
  }
  async readStderr(): Promise<Buffer> {
    return Buffer.alloc(0);
  }
  async writeStdin(_c: string, _e: string, data: Uint8Array): Promise<number> {
    return data.length;
  }
  async closeStdin(): Promise<void> {}
  async ttyWinResize(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    this.calls.push(`ttyWinResize ${containerId} ${execId} ${rows}x${cols}`);
  }
  async signalProcess(containerId: string, execId: string, signal: number): Promise<void> {
    this.calls.push(`signalProcess ${containerId} ${execId} ${signal}`);
  }
  async statsContainer(_containerId: string): Promise<ContainerStats> {
    return { cpuUsageNs: 0, cpuUserNs: 0, cpuKernelNs: 0, memoryUsageBytes: 0, memoryMaxUsageBytes: 0, memoryLimitBytes: undefined, memoryStat: {}, pids: 0, pidsLimit: undefined };
  }
  async pauseContainer(containerId: string): Promise<void> {
    this.calls.push(`pauseContainer ${containerId}`);
  }
  async resumeContainer(containerId: string): Promise<void> {
    this.calls.push(`resumeContainer ${containerId}`);
  }
  async removeContainer(containerId: string): Promise<void> {
    this.calls.push(`removeContainer ${containerId}`);
  }
}

export const testConfig = (): VmConfig => ({
  id: 'sb1', stateDir: '/fake/state', kernel: '/k', initrd: '/i', image: '/r', vcpus: 1, memoryMiB: 256, accel: 'auto', agentTransport: 'auto',
});
