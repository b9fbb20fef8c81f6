/**
 * The sandbox held in memory for the life of the shim daemon: one VM (booted by the first Create, which must be
 * the sandbox's own container), its share, and its containers with their processes. Every Task method of
 * containerd maps onto one method here (Kata's mapping, kata-design.md §1); shim/ only translates types.
 *
 * Container and process states are lifecycle.ts's tables; container.ts runs each container's operations one at a
 * time. The container whose id is the sandbox id owns the VM: deleting it tears the whole sandbox down.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  NotImplementedError,
  UnavailableError,
  errorMessage,
} from '../errors';
import type {
  AgentClient,
  ContainerResources,
  ContainerStats,
  GuestDebugConsole,
  GuestSpanBatch,
  OciLinuxResources,
  OciProcess,
  OciSpec,
} from '../agent-client';
import { isBindMount, shareVolumes, type FsShare } from '../fs-share';
import { MAX_MEMORY_SLOTS } from '../hypervisor/config';
import { processStartTime } from '../hypervisor/process';
import type { Hypervisor, SpawnedHelper, VmConfig, VmTemplateUse } from '../hypervisor/types';
import type { Logger } from '../log';
import { MEMORY_HOTPLUG_BLOCK_MIB, TEMPLATE_NIC_PORTS } from '../hypervisor/types';
import type { EventSink, RootfsMount, StdioPaths } from './events';
import { armedFailpoint, sigkillSelf, type Crash, type FailpointStep } from './failpoint';
import { inSpan } from './tracing';
import { PodNetwork, podNetnsPath, type ConnectPodNetwork, type PodNetworkLink } from './network';
import {
  checkNoHostNamespaces,
  checkNoIdmappedMounts,
  checkNoSharedPropagation,
  isGuestPodShm,
  podContainerSpec,
  podRole,
  podShm,
  podSizing,
  sharedDirStorage,
  shmStorage,
  sizeVm,
  type PodShm,
  type PodSizing,
} from './pod';
import { Container, type ContainerContext } from './container';
import { HostCgroup } from './host-cgroup';
import type { HealthSettings } from './health';
import { OomCoalescer } from './oom';
import { Process, type ExitInfo, type ProcessStatus } from './process';
import { ProcessIo } from './stdio';
import { Store, removeUnmounted, writeBundlePointer, type SandboxRecord } from './store';
import { SandboxVm, type AgentDialer } from './vm';
import { validateId } from '../protos/validate-id';
import {
  containerNeed,
  containersPart,
  fmtResources,
  hotplugLimits,
  memoryAfterGrowth,
  vmTarget,
  type HotplugLimits,
  type VmResources,
} from './vm-size';

const MIB = 1024 * 1024;
const fmtMiB = (bytes: number): string => (bytes % MIB === 0 ? String(bytes / MIB) : (bytes / MIB).toFixed(1));
/** Signals a Kill may carry (Linux: 1–64). */
const MAX_SIGNAL = 64;

/**
 * The FIFOs a process's output goes to: a terminal has only stdout (its stderr is the same pty). containerd's CRI
 * plugin names a stderr FIFO even then, which is left alone, as the runc shim does.
 */
function ioPaths(stdio: StdioPaths): StdioPaths {
  return stdio.terminal && stdio.stderr !== '' ? { ...stdio, stderr: '' } : stdio;
}

export interface SandboxOptions {
  namespace: string;
  id: string;
  /** The sandbox's folder: its crash-recovery record, the VM's state and the share live below it. */
  dir: string;
  /** The VM's configuration for this sandbox (from hull's configuration file). */
  vmConfig(vm: { id: string; stateDir: string; sharedDir: string }): VmConfig;
  bootTimeoutMs: number;
  hypervisor(): Hypervisor;
  share(root: string, id: string): FsShare;
  dial?: AgentDialer;
  /** Connects a pod's network namespace to the VM (default PodNetwork.connect; core's tests pass a fake). */
  connectNetwork?: ConnectPodNetwork;
  logger: Logger;
  events: EventSink;
  /** The agent's periodic health check (`[agent] health_check_interval`, `health_check_timeout`); absent = none. */
  health?: HealthSettings;
  /** At most one oom event per container per this many ms (default DEFAULT_OOM_INTERVAL_MS; tests pass less). */
  oomIntervalMs?: number;
  /** MiB the VM takes on the host beyond its guest memory (`[hypervisor] memory_overhead`), for the cgroup's memory check. */
  memoryOverheadMiB?: number;
  /** The sandbox's host cgroup from its cgroupsPath (default HostCgroup.forPath on this host; tests pass a fake cgroupfs). */
  hostCgroup?: (cgroupsPath: string) => HostCgroup;
  /** Honour the failpoint annotation (configuration `runtime.enable_failpoints`; default off). */
  failpoints?: boolean;
  /** The host's CPUs and memory, which cap the VM's size and its hot-plug room (default: this host's; tests pass figures). */
  host?: { cpus: number; memoryMiB: number };
  /** What a failpoint does (default: SIGKILL this process); core's tests pass a fake. */
  crash?: Crash;
  /** The agent may run debug console processes (`[agent] debug_console_enabled`, told at CreateSandbox). */
  debugConsole?: boolean;
  /**
   * VM templates (`[hypervisor] enable_template`, core/template.ts): the template to start this VM from, made if
   * need be; undefined = boot normally. Absent = templates off.
   */
  template?: (vm: VmConfig) => Promise<VmTemplateUse | undefined>;
}

/** Sandbox.metricsView(): a moment's view for the shim's metrics. */
export interface SandboxMetricsView {
  /** QEMU and virtiofsd: pid and start time (/proc/<pid>/stat field 22), so that a reused pid is not read. */
  helpers: { name: string; pid: number; startTime?: string }[];
  vm: VmResources | undefined;
  memoryOverheadMiB: number;
  /** Milliseconds from the start of boot: QEMU running, the agent answering, the sandbox's container made. */
  boot: { qemuStartedMs: number; agentReadyMs: number; sandboxCreatedMs?: number } | undefined;
  containerIds: string[];
  agent: AgentClient | undefined;
}

export interface CreateRequest {
  id: string;
  bundle: string;
  /** containerd's config.json, parsed. */
  spec: OciSpec;
  rootfs: RootfsMount[];
  stdio: StdioPaths;
}

export interface ProcessState {
  id: string;
  execId: string;
  bundle: string;
  pid: number;
  status: ProcessStatus | 'paused';
  stdio: StdioPaths;
  exit: ExitInfo | undefined;
}

export class Sandbox {
  private readonly containers = new Map<string, Container>();
  private vm: SandboxVm | undefined;
  /** The guest spans the VM drained just before it powered off, until the shim takes them (drainGuestSpans). */
  private lastGuestSpans: GuestSpanBatch | undefined;
  private share: FsShare | undefined;
  private readonly store: Store;
  private record: SandboxRecord;
  /** Create and Delete of containers (and the VM's life) run one at a time (inside a container's own mutex). */
  private lifecycle: Promise<unknown> = Promise.resolve();
  private tornDown = false;
  private readonly oomWatch = new AbortController();
  /** A Kubernetes pod's /dev/shm (from its sandbox container), made in the guest. */
  private podShm: PodShm | undefined;
  /** A pod's network (taps in its namespace), connected before the VM boots. */
  private network: PodNetworkLink | undefined;
  /** The VM's vCPUs and memory as it has them now: its boot size, grown by hot-plug (never shrunk). */
  private vmSize: VmResources | undefined;
  /**
   * Hot-plug (`[hypervisor] default_maxvcpus`/`default_maxmemory`), set when the VM boots: the configured base, the
   * pod's annotations and the room. Undefined = no hot-plug: the VM keeps its boot size, and Update may not ask a
   * container for more.
   */
  private hotplug: { base: VmResources; pod: PodSizing; limits: HotplugLimits } | undefined;
  /** What each container asks of the VM (its cpu quota/period and memory limit): the VM's logical size. */
  private readonly needs = new Map<string, VmResources>();
  /** What each container needs from the sandbox. */
  private readonly containerContext: ContainerContext;
  /** The sandbox's cgroup on the host (its container's linux.cgroupsPath), once made; the daemon is in it. */
  private cgroup: { cg: HostCgroup; origin: string[] } | undefined;
  /** The failpoint each container's annotations armed (only when failpoints are enabled). */
  private readonly failpoints = new Map<string, FailpointStep>();

  constructor(private readonly o: SandboxOptions) {
    validateId('namespace', o.namespace);
    validateId('sandbox id', o.id);
    this.store = new Store(path.join(o.dir, 'state.json'));
    this.record = {
      version: 1,
      namespace: o.namespace,
      sandboxId: o.id,
      shimPid: process.pid,
      shimStartTime: processStartTime(process.pid),
      vmStateDir: path.join(o.dir, 'vm'),
      shareRoot: o.dir,
      shareId: 'share',
      containers: {},
      ...(o.debugConsole ? { debugConsole: true } : {}),
    };
    this.containerContext = {
      agent: () => this.agent(),
      hostPid: () => this.hostPid(),
      events: (e) => this.o.events(e),
      logger: o.logger,
      ioPaths,
      watch: (p, agentExecId) => void this.watch(p, agentExecId),
      initStarted: (id) => this.failpoint(id, 'container-started'),
    };
  }

  get id(): string {
    return this.o.id;
  }

  get recordFile(): string {
    return this.store.file;
  }

  /**
   * The spans the guest recorded since the last drain (checked by the agent client), for the shim to export; none
   * without a VM, or from an agent client that cannot drain.
   */
  async drainGuestSpans(): Promise<GuestSpanBatch | undefined> {
    if (this.vm) return this.vm.agent.drainSpans?.();
    // The VM is gone: what it drained just before it powered off (the sandbox's last Delete, a teardown), once.
    const last = this.lastGuestSpans;
    this.lastGuestSpans = undefined;
    return last;
  }

  /**
   * The guest's debug console (`hull exec`), while the VM runs: FAILED_PRECONDITION when the sandbox was not
   * created with it (the agent refuses too), when there is no VM, or when the agent client has none.
   */
  debugConsole(): GuestDebugConsole {
    if (!this.o.debugConsole)
      throw new FailedPreconditionError(`sandbox ${this.o.id} was created without the debug console`);
    const agent = this.agent();
    if (!agent.debugConsole)
      throw new FailedPreconditionError(`sandbox ${this.o.id}: the agent client has no debug console`);
    return agent.debugConsole();
  }

  /** No container left: the daemon may exit once Shutdown asks. */
  get empty(): boolean {
    return this.containers.size === 0;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lifecycle.then(fn, fn);
    this.lifecycle = next.catch(() => undefined);
    return next;
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw new NotFoundError(`container ${id}: not found`);
    return c;
  }

  private agent(): AgentClient {
    if (!this.vm) throw new FailedPreconditionError(`sandbox ${this.o.id} has no running VM`);
    return this.vm.agent;
  }

  private hostPid(): number {
    return this.vm?.hypervisor.pid() ?? 0;
  }

  private save(): void {
    this.store.save(this.record);
  }

  /** A crash test's failpoint: if container `id` armed `step`, the process ends here. */
  private failpoint(id: string, step: FailpointStep): void {
    if (this.failpoints.get(id) !== step) return;
    this.o.logger.warn({ containerId: id, failpoint: step }, 'failpoint: the shim kills itself');
    (this.o.crash ?? sigkillSelf)(step);
  }

  /** A helper process was just spawned: into the record before anything else happens. */
  private recordHelper(h: SpawnedHelper): void {
    this.record.helpers = [
      ...(this.record.helpers ?? []).filter((x) => x.name !== h.name),
      { name: h.name, pid: h.pid, startTime: h.startTime },
    ];
    if (h.name === 'qemu') this.record.qemuPid = h.pid;
    if (h.name === 'virtiofsd') this.record.virtiofsdPid = h.pid;
    this.save();
  }

  async create(req: CreateRequest): Promise<number> {
    validateId('container id', req.id);
    if (!path.isAbsolute(req.bundle))
      throw new InvalidArgumentError(`bundle ${JSON.stringify(req.bundle)} is not an absolute path`);
    return this.serial(async () => {
      if (this.tornDown) throw new FailedPreconditionError(`sandbox ${this.o.id} is shut down`);
      if (this.containers.has(req.id)) throw new AlreadyExistsError(`container ${req.id}: already exists`);
      const ownsVm = req.id === this.o.id;
      if (!ownsVm && !this.vm) {
        throw new FailedPreconditionError(
          `container ${req.id} joins sandbox ${this.o.id}, whose own container does not exist`,
        );
      }
      const role = podRole(req.spec);
      const sizing = podSizing(req.spec.annotations); // checked before anything is made
      const need = containerNeed(req.spec.linux?.resources);
      checkNoHostNamespaces(req.spec, role, req.id);
      checkNoSharedPropagation(req.spec, req.id);
      checkNoIdmappedMounts(req.spec, req.id);
      const cgroupsPath = ownsVm ? req.spec.linux?.cgroupsPath : undefined;
      const cgroup = cgroupsPath ? (this.o.hostCgroup ?? HostCgroup.forPath)(cgroupsPath) : undefined;
      await cgroup?.check(); // systemd driver: systemd must answer before anything is made
      const armed = armedFailpoint(req.spec.annotations, this.o.failpoints ?? false, this.o.logger);
      // Hot-plug: the VM grows to hold this container before anything of it is made (a refusal leaves nothing).
      if (!ownsVm && this.hotplug) await this.grow(req.id, need, 'create');
      if (ownsVm && role === 'sandbox') this.podShm = podShm(req.spec);
      const spec = role ? podContainerSpec(req.spec, role, this.podShm) : req.spec;
      const mounts = (spec.mounts ?? []).map((m, i) => {
        if (typeof m?.destination !== 'string') throw new InvalidArgumentError(`mounts[${i}] has no destination`);
        const mount = {
          destination: m.destination,
          type: m.type ?? '',
          source: m.source ?? '',
          options: m.options ?? [],
        };
        if (isBindMount(mount) && !isGuestPodShm(mount) && !path.isAbsolute(mount.source))
          throw new InvalidArgumentError(
            `mount ${m.destination}: bind source ${JSON.stringify(m.source)} is not an absolute path`,
          );
        return mount;
      });

      // The record and the bundle pointer first: a crash from here on leaves what `delete` needs to clean up.
      this.record.containers[req.id] = { bundle: req.bundle };
      this.save();
      writeBundlePointer(req.bundle, this.store.file, path.dirname(path.dirname(this.o.dir)));
      if (armed) this.failpoints.set(req.id, armed);
      else this.failpoints.delete(req.id);
      this.failpoint(req.id, 'record-written');
      let io: ProcessIo | undefined;
      const t0 = performance.now();
      try {
        if (ownsVm) await this.startVm(req.spec, sizing, need, cgroup);
        const share = this.share!;
        const { root, fromHost } = await inSpan('share.container', { 'hull.container.id': req.id }, async () => ({
          root: await share.shareRootfs(req.id, req.rootfs, path.join(req.bundle, 'rootfs')),
          // Volumes: sources rewritten to the share; the pod's shm is the guest's own.
          fromHost: await shareVolumes(
            share,
            req.id,
            mounts.filter((m) => !isGuestPodShm(m)),
          ),
        }));
        const shared = mounts.map((m) => (isGuestPodShm(m) ? m : fromHost.shift()!));
        const agent = this.agent();
        const proc = new Process(req.id, '', req.stdio);
        io = await ProcessIo.open({
          agent,
          containerId: req.id,
          execId: req.id,
          stdio: ioPaths(req.stdio),
          logger: this.o.logger,
        });
        proc.io = io;
        await agent.createOciContainer(
          req.id,
          { ...spec, root: { ...spec.root, readonly: spec.root?.readonly ?? root.readOnly } },
          shared,
        );
        this.failpoint(req.id, 'container-created');
        io.start(); // the process exists in the guest: its output can be read from now on
        proc.pid = this.hostPid();
        const container = new Container(req.id, req.bundle, proc, this.containerContext);
        container.timings.createMs = performance.now() - t0;
        if (ownsVm && this.vm)
          Object.assign(container.timings, {
            bootMs: this.vm.timings.agentReadyMs,
            qemuStartedMs: this.vm.timings.qemuStartedMs,
          });
        this.containers.set(req.id, container);
        this.needs.set(req.id, need);
        this.o.events({
          type: 'create',
          containerId: req.id,
          bundle: req.bundle,
          rootfs: req.rootfs,
          io: req.stdio,
          pid: proc.pid,
        });
        return proc.pid;
      } catch (err) {
        io?.close();
        await this.undoCreate(req.id, ownsVm);
        throw err;
      }
    });
  }

  /** Boots the VM; one started from a template that fails to start is booted again normally (logged). */
  private async bootVm(config: VmConfig): Promise<SandboxVm> {
    const boot = (): Promise<SandboxVm> =>
      SandboxVm.boot(this.o.hypervisor(), config, {
        bootTimeoutMs: this.o.bootTimeoutMs,
        logger: this.o.logger,
        dial: this.o.dial,
        health: this.o.health,
      });
    if (!config.template) return boot();
    try {
      return await boot();
    } catch (err) {
      this.o.logger.warn({ error: errorMessage(err) }, 'starting the VM from its template failed; booting normally');
      delete config.template;
      return boot();
    }
  }

  private async startVm(
    spec: OciSpec,
    podSized: PodSizing,
    own: VmResources,
    cgroup: HostCgroup | undefined,
  ): Promise<void> {
    const id = this.o.id;
    const share = this.o.share(this.record.shareRoot, this.record.shareId);
    this.share = share;
    const host = this.o.host ?? {
      cpus: os.availableParallelism(),
      memoryMiB: Math.floor(os.totalmem() / (1024 * 1024)),
    };
    const configured = this.o.vmConfig({
      id: this.o.id,
      stateDir: this.record.vmStateDir,
      sharedDir: share.sharedDir(),
    });
    const hotplugWanted = (configured.maxVcpus ?? 0) > 0 || (configured.maxMemoryMiB ?? 0) > 0;
    // With hot-plug, the sandbox's own container counts like any other (a `ctr run` container's limits size its
    // VM); without, the VM is sized from the pod's annotations only, as before hot-plug.
    const sizing = hotplugWanted ? extras(containersPart(podSized, [own])) : podSized;
    const sized = sizeVm(configured, sizing, host);
    for (const c of sized.capped) this.o.logger.warn({ capped: c }, 'the pod asks for more than the host has');
    const config = sized.vm;
    if (cgroup) this.checkMemoryFits(cgroup, config.memoryMiB, sizing.extraMemoryMiB);
    const boot = { vcpus: config.vcpus, memoryMiB: config.memoryMiB };
    const limits = hotplugLimits(configured, boot, host, MEMORY_HOTPLUG_BLOCK_MIB, MAX_MEMORY_SLOTS);
    delete config.maxVcpus;
    delete config.maxMemoryMiB;
    if (limits) {
      config.maxVcpus = limits.maxVcpus;
      config.maxMemoryMiB = limits.maxMemoryMiB;
      this.hotplug = { base: { vcpus: configured.vcpus, memoryMiB: configured.memoryMiB }, pod: podSized, limits };
      this.o.logger.info(
        { boot, maxVcpus: limits.maxVcpus, maxMemoryMiB: limits.maxMemoryMiB },
        'hot-plug: the VM may grow as its containers come',
      );
    }
    await inSpan('share.prepare', { 'hull.sandbox.id': id }, () => share.prepare());
    this.failpoint(id, 'share-prepared');
    this.vmSize = boot;
    if (cgroup) await this.joinCgroup(cgroup);
    const netns = podNetnsPath(spec);
    if (netns) {
      this.network = await inSpan('network.connect', { 'hull.sandbox.id': id }, () =>
        (this.o.connectNetwork ?? PodNetwork.connect)(netns, (netnsPath, taps) => {
          this.record.network = { netnsPath, taps };
          this.save();
        }),
      );
      this.failpoint(id, 'taps-made');
      const vmNetwork = this.network.vmNetwork();
      if (vmNetwork) config.network = vmNetwork;
      this.o.logger.info(this.network.describe(), 'pod network connected');
    }
    // Each helper process is in the record from the moment it exists, not only once the VM has booted.
    config.onSpawn = (h) => {
      this.recordHelper(h);
      if (h.name === 'qemu') this.failpoint(id, 'qemu-spawned');
      if (h.name === 'virtiofsd') this.failpoint(id, 'virtiofsd-spawned');
    };
    // A clone's NICs are hot-plugged on the template's spare root ports: a VM with more NICs boots normally.
    const nics = config.network?.nics.length ?? 0;
    if (this.o.template && nics > TEMPLATE_NIC_PORTS)
      this.o.logger.info(
        { nics, templateNicPorts: TEMPLATE_NIC_PORTS },
        `the pod has ${nics} NICs, a VM template room for ${TEMPLATE_NIC_PORTS}: booting normally`,
      );
    else if (this.o.template) {
      const template = await inSpan('vm.template', { 'hull.sandbox.id': id }, () => this.o.template!(config));
      if (template) config.template = template;
    }
    this.vm = await this.bootVm(config);
    if (config.template) await cloneIdentity(this.vm.agent);
    this.failpoint(id, 'agent-dialled');
    this.vm.onLost((err) => this.vmLost(err));
    const [network, agent] = [this.network, this.vm.agent];
    if (network)
      await inSpan('network.configure_guest', { 'hull.sandbox.id': id }, () => network.configureGuest(agent));
    this.record.vm = { accel: this.vm.hypervisor.accel(), vcpus: boot.vcpus, memoryMiB: boot.memoryMiB };
    this.save();
    await this.vm.agent.createSandbox({
      sandboxId: this.o.id,
      debugConsole: this.o.debugConsole === true,
      hostname: spec.hostname ?? '',
      storages: [sharedDirStorage(), ...(this.podShm ? [shmStorage(this.podShm)] : [])],
    });
    this.failpoint(id, 'sandbox-created');
    void this.watchOom(this.vm.agent, this.oomWatch.signal);
    if (this.network) {
      // Not fatal: the pod runs without it, and the log says why (no iptables, no nat in the kernel).
      await this.network.forwardLocalhost(this.vm.agent, this.o.logger).then(
        () =>
          this.o.logger.info(
            { netns: netns },
            'port forwarding: localhost in the pod network namespace reaches the guest',
          ),
        (err: unknown) =>
          this.o.logger.warn({ error: errorMessage(err) }, 'port forwarding is not available for this pod'),
      );
    }
  }

  /**
   * Refuses a VM that its cgroup's memory limit (kubelet's pod limit) cannot hold, guest memory plus the host
   * overhead: it would be OOM-killed on the host later. kubelet's limit is the containers' limits (which grew the
   * guest) plus the RuntimeClass's overhead.podFixed.memory, so that overhead must cover the base guest and hull's.
   */
  private checkMemoryFits(cgroup: HostCgroup, guestMiB: number, fromPodMiB: number): void {
    const limit = cgroup.memoryLimitBytes();
    const overheadMiB = this.o.memoryOverheadMiB ?? 0;
    const neededMiB = guestMiB + overheadMiB;
    if (limit === undefined || neededMiB * MIB <= limit) return;
    const podFixedMiB = neededMiB - fromPodMiB;
    throw new InvalidArgumentError(
      `pod sandbox ${this.o.id}: its cgroup ${cgroup.path} has a memory limit of ${fmtMiB(limit)} MiB, less than the VM needs: ` +
        `${guestMiB} MiB of guest memory${fromPodMiB > 0 ? ` (${fromPodMiB} MiB of it from the pod's containers)` : ''} + ${overheadMiB} MiB of host overhead ` +
        `(QEMU, virtiofsd and the shim: [hypervisor] memory_overhead) = ${neededMiB} MiB. The VM would be OOM-killed on the host, so it is not started: ` +
        `set the RuntimeClass's overhead.podFixed.memory to at least ${podFixedMiB}Mi (the guest's base memory and the host overhead), ` +
        "which kubelet adds to the pod's cgroup limit",
    );
  }

  /**
   * Hot-plug: grows the VM to the pod's target with container `id` asking for `need` (Kata's updateResources):
   * resize, then the guest onlines what was added. Run inside the Create/Delete chain. Beyond the maxima a create
   * grows as far as they allow (a limit above what the VM can have only caps nothing, as Kata does) while an Update
   * is refused with the figures; a growth the pod's cgroup cannot hold (guest memory + memory_overhead above its
   * memory limit) is refused with both numbers: the VM would be OOM-killed on the host.
   */
  private async grow(id: string, need: VmResources, op: 'create' | 'update'): Promise<void> {
    const hp = this.hotplug!;
    const vm = this.vm;
    const now = this.vmSize;
    if (!vm || !now) throw new FailedPreconditionError(`sandbox ${this.o.id} has no running VM`);
    const needs = new Map(this.needs).set(id, need);
    const wanted = vmTarget(hp.base, hp.pod, needs.values());
    const max = { vcpus: hp.limits.maxVcpus, memoryMiB: hp.limits.maxMemoryMiB };
    const target = { vcpus: Math.min(wanted.vcpus, max.vcpus), memoryMiB: Math.min(wanted.memoryMiB, max.memoryMiB) };
    if (target.vcpus < wanted.vcpus || target.memoryMiB < wanted.memoryMiB) {
      const part = containersPart(hp.pod, needs.values());
      const l = hp.limits;
      const why =
        `the pod's VM would need ${fmtResources(wanted)} (base ${fmtResources(hp.base)} + the containers' ${fmtResources(part)}), ` +
        `more than its maximum of ${fmtResources(max)} ([hypervisor] default_maxvcpus = ${l.configuredVcpus}, ` +
        `default_maxmemory = ${l.configuredMemoryMiB}, capped at the host's ${l.hostCpus} CPUs and ${l.hostMemoryMiB} MiB and at least the boot size)`;
      if (op === 'update')
        throw new FailedPreconditionError(`container ${id}: the update asks for more than the VM can have: ${why}`);
      this.o.logger.warn({ containerId: id, wanted, max }, `hot-plug: ${why}; the VM grows to its maximum`);
    }
    if (target.vcpus <= now.vcpus && target.memoryMiB <= now.memoryMiB) return;
    const memoryAfter = memoryAfterGrowth(now.memoryMiB, target.memoryMiB, MEMORY_HOTPLUG_BLOCK_MIB);
    this.checkGrowthFits(id, now.memoryMiB, memoryAfter);
    const got = await vm.hypervisor.resize({
      vcpus: Math.max(target.vcpus, now.vcpus),
      memoryMiB: Math.max(target.memoryMiB, now.memoryMiB),
    });
    this.vmSize = { vcpus: got.vcpus, memoryMiB: got.memoryMiB };
    if (this.record.vm) {
      this.record.vm = { ...this.record.vm, ...this.vmSize };
      this.save();
    }
    await vm.agent.onlineCpuMem({
      nbCpus: Math.max(0, got.vcpus - now.vcpus),
      cpuOnly: got.memoryMiB <= now.memoryMiB,
      wait: true,
    });
    this.o.logger.info(
      { containerId: id, op, from: now, to: this.vmSize, target },
      `hot-plug: the VM grew from ${fmtResources(now)} to ${fmtResources(this.vmSize)}`,
    );
  }

  /** Refuses a growth that would take the VM past its cgroup's memory limit (guest memory + the host overhead). */
  private checkGrowthFits(id: string, nowMiB: number, guestMiB: number): void {
    const cg = this.cgroup?.cg;
    const limit = cg?.memoryLimitBytes();
    if (!cg || limit === undefined || guestMiB <= nowMiB) return;
    const overheadMiB = this.o.memoryOverheadMiB ?? 0;
    const neededMiB = guestMiB + overheadMiB;
    if (neededMiB * MIB <= limit) return;
    throw new FailedPreconditionError(
      `container ${id}: the pod's VM would grow to ${guestMiB} MiB of guest memory (from ${nowMiB} MiB, in ${MEMORY_HOTPLUG_BLOCK_MIB} MiB DIMMs) + ` +
        `${overheadMiB} MiB of host overhead ([hypervisor] memory_overhead) = ${neededMiB} MiB, more than the memory limit of its cgroup ${cg.path}, ` +
        `${fmtMiB(limit)} MiB: the VM would be OOM-killed on the host, so it does not grow. Raise the pod's memory limit ` +
        "(the containers' limits, or the RuntimeClass's overhead.podFixed.memory)",
    );
  }

  /**
   * Makes the sandbox's cgroup and moves this daemon into it, before QEMU and virtiofsd are spawned: they inherit
   * it, and what they allocate is charged to it from the first page. The record names it first (a crash from here
   * on leaves what `delete` needs). The daemon serves this one sandbox, so staying there until teardown is right.
   */
  private async joinCgroup(cg: HostCgroup): Promise<void> {
    this.record.cgroup = [...cg.dirs];
    if (cg.unit) this.record.systemdUnit = cg.unit;
    this.save();
    this.cgroup = { cg, origin: cg.origin(process.pid) }; // teardown removes what join() made, even a part
    await cg.join(process.pid);
    this.o.logger.info(
      { cgroup: cg.path, dirs: cg.dirs.length, ...(cg.unit ? { systemdUnit: cg.unit } : {}) },
      "the shim daemon joined the sandbox's cgroup: QEMU and virtiofsd start in it",
    );
  }

  /** Kata's OOM watcher: one GetOOMEvent long poll at a time; the answers coalesced per container (core/oom.ts). */
  private async watchOom(agent: AgentClient, signal: AbortSignal): Promise<void> {
    const publish = (id: string): void => {
      if (this.containers.has(id)) this.o.events({ type: 'oom', containerId: id });
    };
    const oom = new OomCoalescer(publish, this.o.logger, this.o.oomIntervalMs);
    signal.addEventListener('abort', () => oom.stop(), { once: true });
    while (!signal.aborted) {
      try {
        const id = await agent.getOOMEvent(signal);
        if (this.containers.has(id)) oom.report(id);
      } catch (err) {
        if (signal.aborted || this.tornDown || err instanceof UnavailableError || err instanceof NotImplementedError)
          return;
        this.o.logger.warn({ error: errorMessage(err) }, 'GetOOMEvent failed; asking again in a second');
        await new Promise((r) => setTimeout(r, 1_000).unref());
      }
    }
  }

  /** The VM is lost outside a shutdown (its agent connection broke, or it hung and was killed): every process is gone with it. */
  private vmLost(err: Error): void {
    if (this.tornDown) return;
    this.o.logger.error(
      { error: errorMessage(err) },
      'lost the VM: every process of the sandbox is reported as exited',
    );
    for (const c of this.containers.values()) {
      for (const p of [c.init, ...c.execs.values()]) this.finish(p, 255);
    }
  }

  private async undoCreate(id: string, ownsVm: boolean): Promise<void> {
    const log = (what: string) => (e: unknown) =>
      this.o.logger.warn({ id, error: errorMessage(e) }, `undoing a failed create: ${what}`);
    if (this.vm && !ownsVm) await this.vm.agent.removeContainer(id).catch(() => undefined);
    if (ownsVm) {
      await this.teardown().catch(log('tear the sandbox down'));
    } else {
      await this.share?.unshare(id).catch(log('unshare'));
      delete this.record.containers[id];
      this.save();
    }
  }

  async start(id: string, execId: string): Promise<number> {
    return this.container(id).start(execId);
  }

  /**
   * Waits for the process in the guest (the agent answers at the exit once its pipes ended, or 2 s later when a
   * child holds them), then for what the agent holds of its output to reach the FIFOs (bounded, core/stdio.ts
   * drained()), then publishes its exit. The stdio stays open until the process is deleted.
   */
  private async watch(p: Process, agentExecId: string): Promise<void> {
    let status = 255;
    try {
      status = await this.agent().waitProcess(p.containerId, agentExecId);
    } catch (err) {
      if (!this.tornDown)
        this.o.logger.warn(
          { id: p.containerId, execId: p.execId, error: errorMessage(err) },
          'waiting for a process failed',
        );
    }
    await p.io?.drained();
    this.finish(p, status);
  }

  private finish(p: Process, status: number): void {
    if (!p.markStopped(status)) return;
    this.o.events({
      type: 'exit',
      containerId: p.containerId,
      id: p.execId || p.containerId,
      pid: p.pid,
      exitStatus: status,
      exitedAt: p.exit!.exitedAt,
    });
  }

  async exec(id: string, execId: string, spec: OciProcess, stdio: StdioPaths): Promise<void> {
    validateId('exec id', execId);
    await this.container(id).exec(execId, spec, stdio);
  }

  state(id: string, execId: string): ProcessState {
    const c = this.container(id);
    const p = c.process(execId);
    p.check('state');
    const status = p.state as ProcessState['status']; // not deleted: check('state') says so
    return { id, execId, bundle: c.bundle, pid: p.pid, status, stdio: p.stdio, exit: p.exit };
  }

  wait(id: string, execId: string): Promise<ExitInfo> {
    return this.container(id).process(execId).wait();
  }

  async kill(id: string, execId: string, signal: number, all: boolean): Promise<void> {
    if (!Number.isInteger(signal) || signal < 1 || signal > MAX_SIGNAL)
      throw new InvalidArgumentError(`signal ${signal} is out of range`);
    const c = this.container(id);
    if (all && execId !== '') throw new InvalidArgumentError('kill --all applies to a container, not to an exec');
    await c.kill(execId, signal, all);
  }

  async delete(id: string, execId: string): Promise<{ pid: number; exit: ExitInfo }> {
    const c = this.container(id);
    if (execId !== '') return c.deleteExec(execId);
    return c.locked('delete', '', (p) =>
      this.serial(async () => {
        p.markStopped(0); // never started: no exit event
        p.io?.close();
        for (const e of c.execs.values()) e.io?.close();
        if (id === this.o.id) {
          await this.teardown();
        } else if (!this.tornDown) {
          await this.agent()
            .removeContainer(id)
            .catch((err: unknown) => {
              if (!(err instanceof NotFoundError)) throw err;
            });
          await this.share?.unshare(id);
          delete this.record.containers[id];
          this.save();
          this.giveBack(id);
        } // else the sandbox was torn down under the container: VM, share and record are gone already
        this.containers.delete(id);
        this.o.logger.info({ containerId: id, ...c.timings }, 'container timings');
        const exit = p.markDeleted();
        this.o.events({
          type: 'delete',
          containerId: id,
          pid: p.pid,
          exitStatus: exit.exitStatus,
          exitedAt: exit.exitedAt,
        });
        return { pid: p.pid, exit };
      }),
    );
  }

  /**
   * Ends the sandbox: every process reported exited, the VM shut down (the agent unmounts and powers off), the
   * share unmounted, the record and folders removed. Idempotent.
   */
  async teardown(): Promise<void> {
    this.tornDown = true;
    this.oomWatch.abort();
    for (const c of this.containers.values()) {
      for (const p of [c.init, ...c.execs.values()]) if (p.status !== 'created') this.finish(p, 137);
    }
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      await fn().catch((err: unknown) => {
        problems.push(`${what}: ${errorMessage(err)}`);
        this.o.logger.warn({ error: errorMessage(err) }, `sandbox teardown: ${what}`);
      });
    };
    const vm = this.vm;
    this.vm = undefined;
    if (vm) {
      await step('shut the VM down', () => vm.shutdown({ gracefulMs: 5_000 }));
      this.lastGuestSpans = vm.takeLastSpans();
    }
    const network = this.network;
    this.network = undefined;
    if (network) await step("remove the pod network's taps and port forwarding", () => network.disconnect());
    const cgroup = this.cgroup;
    if (cgroup) {
      await step("remove the sandbox's cgroup", async () => {
        cgroup.cg.restore(process.pid, cgroup.origin); // the daemon leaves it first (it may serve a while longer)
        await cgroup.cg.remove();
        this.cgroup = undefined;
        delete this.record.cgroup;
        delete this.record.systemdUnit;
      });
    }
    if (this.share) await step('unmount the share', () => this.share!.cleanup());
    if (problems.length === 0) {
      this.store.remove();
      await step('remove the sandbox folder', async () => removeUnmounted(this.o.dir));
    }
    if (problems.length > 0) throw new InternalError(`sandbox ${this.o.id} teardown: ${problems.join('; ')}`);
  }

  async pause(id: string): Promise<void> {
    return this.container(id).pause();
  }

  async resume(id: string): Promise<void> {
    return this.container(id).resume();
  }

  async closeIO(id: string, execId: string): Promise<void> {
    return this.container(id).closeIO(execId);
  }

  async resizePty(id: string, execId: string, width: number, height: number): Promise<void> {
    const c = this.container(id);
    if (!c.process(execId).stdio.terminal) throw new FailedPreconditionError(`process ${execId || id} has no terminal`);
    await c.resizePty(execId, width, height);
  }

  /** A deleted container's share of the VM is given back logically: the VM itself does not shrink. */
  private giveBack(id: string): void {
    const need = this.needs.get(id);
    this.needs.delete(id);
    const hp = this.hotplug;
    if (!hp || !need || (need.vcpus === 0 && need.memoryMiB === 0)) return;
    const logical = vmTarget(hp.base, hp.pod, this.needs.values());
    this.o.logger.info(
      { containerId: id, gaveBack: need, logical, vm: this.vmSize },
      `hot-plug: container ${id} gave back ${fmtResources(need)}; the pod now needs ${fmtResources(logical)}, ` +
        'the VM keeps what it has (hull does not unplug vCPUs or memory): later containers fit in it first',
    );
  }

  /**
   * containerd's Update (CRI UpdateContainerResources, Kubernetes' in-place pod resize): the limits inside the
   * guest, applied by crun there. With hot-plug the VM first grows to the pod's new target (refused beyond its
   * maxima or its cgroup, with the figures), under the container's mutex and then the Create/Delete chain.
   */
  async update(id: string, resources: OciLinuxResources): Promise<void> {
    const c = this.container(id);
    const wanted = toContainerResources(resources);
    if (this.hotplug) {
      await c.locked('update', '', () =>
        this.serial(async () => {
          const need = containerNeed(resources, this.needs.get(id));
          await this.grow(id, need, 'update');
          await this.agent().updateContainer(id, wanted);
          if (this.containers.get(id) === c) this.needs.set(id, need);
        }),
      );
      return;
    }
    const size = this.vmSize;
    if (size) {
      const cpus =
        wanted.cpuQuotaUs && wanted.cpuQuotaUs > 0 && wanted.cpuPeriodUs ? wanted.cpuQuotaUs / wanted.cpuPeriodUs : 0;
      const memMiB =
        wanted.memoryLimitBytes && wanted.memoryLimitBytes > 0 ? wanted.memoryLimitBytes / (1024 * 1024) : 0;
      if (cpus > size.vcpus || memMiB > size.memoryMiB) {
        throw new FailedPreconditionError(
          `container ${id}: the update asks for ${cpus > size.vcpus ? `${cpus.toFixed(2)} CPUs` : ''}${cpus > size.vcpus && memMiB > size.memoryMiB ? ' and ' : ''}${memMiB > size.memoryMiB ? `${Math.ceil(memMiB)} MiB` : ''}, ` +
            `more than the pod's VM has (${size.vcpus} vCPUs, ${size.memoryMiB} MiB, sized when the pod started); hull does not hot-plug CPUs or memory`,
        );
      }
    }
    await c.update(wanted);
  }

  /**
   * What the shim's metrics read when scraped (nothing is sampled in between): the helper processes (QEMU,
   * virtiofsd) by pid, the VM's size, its boot phases, the containers and the agent (undefined without a VM).
   */
  metricsView(): SandboxMetricsView {
    const own = this.containers.get(this.o.id);
    return {
      helpers: (this.record.helpers ?? []).map((h) => ({ name: h.name, pid: h.pid, startTime: h.startTime })),
      vm: this.vmSize ? { ...this.vmSize } : undefined,
      memoryOverheadMiB: this.o.memoryOverheadMiB ?? 0,
      boot: this.vm
        ? {
            qemuStartedMs: this.vm.timings.qemuStartedMs,
            agentReadyMs: this.vm.timings.agentReadyMs,
            ...(own ? { sandboxCreatedMs: own.timings.createMs } : {}),
          }
        : undefined,
      containerIds: [...this.containers.keys()],
      agent: this.vm?.agent,
    };
  }

  async stats(id: string): Promise<ContainerStats> {
    this.container(id).init.check('stats'); // reads only: no need to wait for an operation in flight
    return this.agent().statsContainer(id);
  }

  /** The container's processes as the guest numbers them (host pids would all be QEMU's). */
  async pids(id: string): Promise<number[]> {
    if (!this.container(id).init.check('pids')) return [];
    return this.agent().listProcesses(id);
  }

  /** Connect: the init's pid (0 before the VM runs). */
  taskPid(id: string): number {
    return this.container(id).init.pid;
  }
}

/** The extra vCPUs and MiB of `r` as sizeVm takes them. */
const extras = (r: VmResources): PodSizing => ({ extraVcpus: r.vcpus, extraMemoryMiB: r.memoryMiB });

/** OCI LinuxResources (JSON from containerd) as the agent client takes them; zero and absent mean "not set". */
export function toContainerResources(r: OciLinuxResources): ContainerResources {
  const out: ContainerResources = {};
  const set = (key: keyof ContainerResources, v: unknown, what: string): void => {
    if (v === undefined || v === null || v === 0) return;
    if (typeof v !== 'number' || !Number.isSafeInteger(v))
      throw new InvalidArgumentError(`resources: ${what} ${JSON.stringify(v)} is not an integer`);
    (out as Record<string, number>)[key] = v;
  };
  set('memoryLimitBytes', r.memory?.limit, 'memory.limit');
  set('memoryReservationBytes', r.memory?.reservation, 'memory.reservation');
  set('memorySwapBytes', r.memory?.swap, 'memory.swap');
  set('cpuShares', r.cpu?.shares, 'cpu.shares');
  set('cpuQuotaUs', r.cpu?.quota, 'cpu.quota');
  set('cpuPeriodUs', r.cpu?.period, 'cpu.period');
  set('pidsLimit', r.pids?.limit, 'pids.limit');
  if (r.cpu?.cpus) out.cpus = String(r.cpu.cpus);
  if (r.cpu?.mems) out.mems = String(r.cpu.mems);
  return out;
}

/**
 * A VM cloned from a template has the template's kernel random state and clock: the agent takes fresh seed bytes
 * (its CRNG is rekeyed from them at once, agent/reseed.ts) and the host's time. Its identity (sandbox id, host
 * name) comes with CreateSandbox, as in any VM.
 */
async function cloneIdentity(agent: AgentClient): Promise<void> {
  await inSpan('vm.clone_identity', {}, async () => {
    if (!agent.reseedRandomDev) throw new UnavailableError('this agent cannot reseed its random pool');
    await agent.reseedRandomDev(crypto.randomBytes(64));
    await agent.setGuestDateTime(new Date());
  });
}
