/**
 * QemuHypervisor: the lifecycle of one sandbox VM. The handle holds all mutable state in one private object
 * (`#s`) and runs lifecycle operations one at a time under a mutex; wait() and the exit path never take it, and
 * stop() first aborts a start in progress so that it never waits behind a slow boot.
 *
 * It is the one owner of its child processes (QEMU and virtiofsd). A QEMU exit is recorded by exactly one code
 * path (#recordExit), whether it happens during start, after stop() or by itself (guest panic, crash). Nothing is
 * left behind: a failed start kills what it started and removes the sockets; cleanup() removes stateDir.
 *
 *   new --prepare--> prepared --start--> starting --> running <--pause/resume--> paused
 *   starting/running/paused --(stop | QEMU exits)--> stopped --cleanup--> cleaned
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  InternalError,
  NotImplementedError,
  UnavailableError,
  CancelledError,
} from '../../errors';
import {
  CID_ATTEMPTS,
  chooseAccel,
  chooseTransport,
  chooseVhostNet,
  cidCandidates,
  isCidInUse,
  realHostProbe,
  type HostProbe,
} from '../accel';
import { realFileProbe, resolveConfig, type FileProbe, type ResolvedConfig } from '../config';
import { chooseConfinement, realConfineProbe, type ConfineProbe, type QemuConfinement } from '../confine';
import { GuestConsole, type ConsoleLimits } from '../console';
import { AgentLog, type AgentLogLimits } from '../guest-log';
import { OwnedProcess } from '../process';
import { chooseRootImage, realImageProbe, type ImageProbe, type RootImage } from '../root-image';
import {
  AGENT_VSOCK_PORT,
  type Accel,
  type AgentAddress,
  type AgentTransport,
  type Device,
  type Hypervisor,
  type ResizeTarget,
  type SpawnedHelper,
  type VmConfig,
  type VmExit,
  type VmSize,
  type VmTemplateUse,
  MEMORY_HOTPLUG_BLOCK_MIB,
  TEMPLATE_NIC_PORTS,
} from '../types';
import { NOOP_LOGGER, type Logger } from '../../log';
import { Mutex, abortError, sleep } from '../util';
import { Virtiofsd, probeSandboxMode, type SandboxMode } from '../virtiofsd';
import { buildQemuArgv, QBOOT_FIRMWARE } from './cmdline';
import { copySparse, loadTemplateState, plugNics, plugVirtiofs, saveTemplateState } from './template';
import { QmpClient } from './qmp';

export interface QemuHypervisorOptions {
  logger?: Logger;
  /** Host capability probe (accel, vsock); injectable for tests. */
  hostProbe?: HostProbe;
  fileProbe?: FileProbe;
  /** Reads the root image's layout (root-image.ts); injectable for tests. */
  imageProbe?: ImageProbe;
  /** What QEMU's confinement may use here (seccomp, -runas); injectable for tests. */
  confineProbe?: ConfineProbe;
  /** virtiofsd sandbox: 'auto' probes namespace and falls back to chroot. */
  virtiofsdSandbox?: 'auto' | SandboxMode;
  /** Graceful stop: how long after QMP quit before SIGTERM, and after SIGTERM before SIGKILL. */
  quitTimeoutMs?: number;
  termTimeoutMs?: number;
  /** How long to wait for the exit after SIGKILL before reporting an InternalError. */
  killTimeoutMs?: number;
  qmpCommandTimeoutMs?: number;
  /** Bounds of the guest console kept in memory and forwarded to the log (tests pass small ones). */
  consoleLimits?: Partial<ConsoleLimits>;
  /** Bounds of the agent's log records kept in memory and forwarded to the log. */
  agentLogLimits?: Partial<AgentLogLimits>;
}

type Phase = 'new' | 'prepared' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'cleaned';

/** What start() measured. */
export interface StartTimings {
  virtiofsdReadyMs?: number;
  /** QEMU spawn -> QMP negotiated and query-status says running. */
  qmpReadyMs?: number;
  virtiofsdSandbox?: SandboxMode;
  /** Choosing the sandbox mode (the probe runs once per process; later VMs reuse its answer). */
  sandboxProbeMs?: number;
  /** A clone: copying the template's RAM file (sparse) before QEMU starts, and the bytes copied. */
  memoryCopyMs?: number;
  memoryCopyBytes?: number;
  /** A clone: migrate-incoming until the guest runs again. */
  templateLoadMs?: number;
  /** A clone: device_add of its virtio-fs device. */
  virtiofsPlugMs?: number;
  /** A clone: device_add of its NICs, and how many. */
  nicPlugMs?: number;
  nicsPlugged?: number;
}

/** All mutable state, in one place. */
interface State {
  phase: Phase;
  cfg?: ResolvedConfig;
  accel?: Accel;
  transport?: AgentTransport;
  cid?: number;
  /** vhost-net for the NICs (chosen at prepare when there is a network). */
  vhostNet?: boolean;
  /** QEMU's seccomp filter and user (chosen at prepare). */
  confinement?: QemuConfinement;
  /** How the root image is attached (chosen at prepare). */
  rootImage?: RootImage;
  argv?: string[];
  qemu?: OwnedProcess;
  /** The guest console of the current QEMU (its stdout), bounded in memory. */
  console?: GuestConsole;
  /** The agent's log records of the current QEMU (its log port's socket), and that connection. */
  agentLog?: AgentLog;
  agentLogConn?: net.Socket;
  qmp?: QmpClient;
  virtiofsd?: Virtiofsd;
  /** stop() was requested (or start aborted): the exit is expected. */
  stopRequested: boolean;
  startAbort?: AbortController;
  exit?: VmExit;
  /** Settles when the exit is recorded and virtiofsd is stopped; set once a QEMU exit is being recorded. */
  exitDone?: Promise<void>;
  timings: StartTimings;
  /** VmConfig.onSpawn: told of each helper the moment it is spawned. */
  onSpawn?: (helper: SpawnedHelper) => void;
  /** VmConfig.template, checked at prepare. */
  template?: VmTemplateUse;
}

/** A clone's own copy of the template's guest RAM, in its state folder. */
export const CLONE_MEMORY_FILE = 'memory';
/** The unix socket a template VM's state is saved through (qemu/template.ts). */
const SAVE_SOCKET = 'save.sock';

export class QemuHypervisor implements Hypervisor {
  readonly #s: State = { phase: 'new', stopRequested: false, timings: {} };
  readonly #lock = new Mutex();
  readonly #log: Logger;
  readonly #opts: Required<Omit<QemuHypervisorOptions, 'logger' | 'consoleLimits' | 'agentLogLimits'>>;
  readonly #consoleLimits: Partial<ConsoleLimits>;
  readonly #agentLogLimits: Partial<AgentLogLimits>;
  readonly #exitWaiters: Array<(e: VmExit) => void> = [];
  readonly #resizeLock = new Mutex();
  /** The next hot-plugged DIMM's number (ids dimm<N>, backends dimm<N>-mem). */
  #nextDimm = 0;

  constructor(opts: QemuHypervisorOptions = {}) {
    this.#log = opts.logger ?? NOOP_LOGGER;
    this.#opts = {
      hostProbe: opts.hostProbe ?? realHostProbe,
      fileProbe: opts.fileProbe ?? realFileProbe,
      imageProbe: opts.imageProbe ?? realImageProbe,
      confineProbe: opts.confineProbe ?? realConfineProbe,
      virtiofsdSandbox: opts.virtiofsdSandbox ?? 'auto',
      quitTimeoutMs: opts.quitTimeoutMs ?? 5000,
      termTimeoutMs: opts.termTimeoutMs ?? 3000,
      killTimeoutMs: opts.killTimeoutMs ?? 5000,
      qmpCommandTimeoutMs: opts.qmpCommandTimeoutMs ?? 10_000,
    };
    this.#consoleLimits = opts.consoleLimits ?? {};
    this.#agentLogLimits = opts.agentLogLimits ?? {};
  }

  // ---- VM manager -------------------------------------------------------------------------------------------

  async prepare(cfg: VmConfig): Promise<void> {
    return this.#lock.run(async () => {
      this.#expect('prepare', ['new']);
      const c = resolveConfig(cfg, this.#opts.fileProbe);
      const accel = chooseAccel(c.accel, this.#opts.hostProbe);
      const transport = chooseTransport(c.agentTransport, this.#opts.hostProbe);
      this.#log.info({ id: c.id, accel: accel.value, why: accel.reason }, `accel: ${accel.value}`);
      this.#log.info(
        { id: c.id, transport: transport.value, why: transport.reason },
        `agent transport: ${transport.value}`,
      );
      const confinement = chooseConfinement({ seccomp: c.seccomp, qemuUser: c.qemuUser }, this.#opts.confineProbe);
      this.#log.info(
        { id: c.id, seccomp: confinement.value.seccomp, runAs: confinement.value.runAs, why: confinement.reason },
        `qemu confinement: ${confinement.value.seccomp ? 'seccomp' : 'no seccomp'}, ${confinement.value.runAs === undefined ? 'no -runas' : `runs as ${confinement.value.runAs}`}`,
      );
      const rootImage = chooseRootImage(c.rootImageDevice, c.image, this.#opts.imageProbe);
      const daxLost = c.rootImageDevice !== 'virtio-blk' && rootImage.value.device === 'virtio-blk';
      this.#log[daxLost ? 'warn' : 'info'](
        { id: c.id, rootImage: rootImage.value.device, why: rootImage.reason },
        `root image: ${rootImage.value.device}`,
      );
      fs.mkdirSync(c.paths.stateDir, { recursive: true, mode: 0o700 });
      // Leftovers of an earlier run with the same folder would confuse the socket waits.
      for (const p of [
        c.paths.qmpSocket,
        c.paths.agentSocket,
        c.paths.agentLogSocket,
        c.paths.virtiofsdSocket,
        c.paths.debugPortSocket,
      ]) {
        fs.rmSync(p, { force: true });
      }
      Object.assign(this.#s, {
        cfg: c,
        accel: accel.value,
        transport: transport.value,
        onSpawn: cfg.onSpawn,
        confinement: confinement.value,
        rootImage: rootImage.value,
      });
      if (transport.value === 'vsock') this.#s.cid = cidCandidates(c.id).next().value as number;
      if (cfg.template !== undefined) this.#s.template = checkTemplate(cfg.template, c);
      if (c.network !== undefined) {
        const vhost = chooseVhostNet(accel.value, this.#opts.hostProbe);
        this.#s.vhostNet = vhost.value;
        this.#log.info(
          { id: c.id, netns: c.network.netnsPath, nics: c.network.nics, vhostNet: vhost.value, why: vhost.reason },
          `network: ${c.network.nics.length} NIC(s) in ${c.network.netnsPath}`,
        );
      }
      this.#s.argv = this.#buildArgv();
      this.#s.phase = 'prepared';
      this.#log.debug({ id: c.id, argv: this.#s.argv }, 'qemu command line');
    });
  }

  async start(signal: AbortSignal): Promise<void> {
    return this.#lock.run(async () => {
      this.#expect('start', ['prepared']);
      if (signal.aborted) throw abortError(signal, 'start vm');
      const ac = new AbortController();
      this.#s.startAbort = ac;
      this.#s.phase = 'starting';
      try {
        await this.#boot(AbortSignal.any([signal, ac.signal]));
        this.#s.phase = 'running';
      } catch (err) {
        await this.#teardownFailedStart();
        throw err;
      } finally {
        this.#s.startAbort = undefined;
      }
    });
  }

  async stop(opts: { force: boolean }): Promise<void> {
    this.#s.stopRequested = true;
    this.#s.startAbort?.abort(new CancelledError('start vm: stop requested'));
    return this.#lock.run(async () => {
      const s = this.#s;
      if (s.phase === 'new' || s.phase === 'prepared') {
        // Never started: there is nothing to stop, and nothing will ever start (a VM starts once).
        s.phase = 'stopped';
        this.#resolveExit({ code: null, signal: null, expected: true, stderrTail: '', consoleTail: [] });
        return;
      }
      const qemu = s.qemu;
      if (s.phase === 'running' || s.phase === 'paused') {
        s.phase = 'stopping';
        if (qemu) await this.#terminate(qemu, opts.force);
      }
      if (qemu) await this.#recordExit(qemu);
      if (s.phase === 'stopping') s.phase = 'stopped';
    });
  }

  wait(): Promise<VmExit> {
    if (this.#s.exit) return Promise.resolve(this.#s.exit);
    return new Promise((resolve) => this.#exitWaiters.push(resolve));
  }

  async pause(): Promise<void> {
    return this.#lock.run(async () => {
      this.#expect('pause', ['running']);
      await this.#qmp().stop();
      this.#s.phase = 'paused';
    });
  }

  async resume(): Promise<void> {
    return this.#lock.run(async () => {
      this.#expect('resume', ['paused']);
      await this.#qmp().cont();
      this.#s.phase = 'running';
    });
  }

  /**
   * A template VM (VmConfig.template role `make`), booted and its agent ready and disconnected: pause it and save
   * its device state into `stateFile` (qemu/template.ts). The VM stays paused; stop() it after. Returns the bytes.
   */
  async saveTemplate(stateFile: string, signal: AbortSignal): Promise<number> {
    return this.#lock.run(async () => {
      this.#expect('save a template of', ['running', 'paused']);
      const { cfg, template } = this.#prepared('saveTemplate');
      if (template?.role !== 'make')
        throw new FailedPreconditionError('saveTemplate: the VM was not prepared as a template (role make)');
      const qmp = this.#qmp();
      if (this.#s.phase === 'running') await qmp.stop();
      this.#s.phase = 'paused';
      return saveTemplateState(qmp, stateFile, path.join(cfg.paths.stateDir, SAVE_SOCKET), signal);
    });
  }

  /** QMP query-status, for diagnostics and tests. */
  async queryStatus(): Promise<{ status: string; running: boolean }> {
    return this.#qmp().queryStatus();
  }

  /** Any QMP command (diagnostics now, device hotplug later). UnavailableError when QEMU is not running. */
  async qmpExecute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    return this.#qmp().execute<T>(command, args);
  }

  async cleanup(): Promise<void> {
    return this.#lock.run(async () => {
      const s = this.#s;
      if (s.phase === 'cleaned' || s.phase === 'new') return;
      if (s.qemu?.alive)
        throw new FailedPreconditionError(`cleanup: QEMU (pid ${s.qemu.pid}) is still running; stop it first`);
      if (s.qemu) await this.#recordExit(s.qemu);
      await s.virtiofsd?.stop(0);
      if (s.cfg) fs.rmSync(s.cfg.paths.stateDir, { recursive: true, force: true });
      s.phase = 'cleaned';
      // Cleaned up without ever running: nothing will run now, so no waiter may hang.
      this.#resolveExit({ code: null, signal: null, expected: true, stderrTail: '', consoleTail: [] });
    });
  }

  // ---- device manager ---------------------------------------------------------------------------------------

  async addDevice(d: Device): Promise<Device> {
    throw new NotImplementedError(`addDevice(${d.kind}): device hotplug is not implemented yet`);
  }

  /**
   * CPU hot-plug: device_add of the CPU type QEMU lists for each empty slot of query-hotpluggable-cpus, lowest
   * socket/core/thread first. Memory hot-plug: per MEMORY_HOTPLUG_BLOCK_MIB, object-add of a shared memfd backend
   * (share=on, like the boot RAM, so virtiofsd can map it) and device_add of a pc-dimm on it, at the lowest free
   * address on a MEMORY_HOTPLUG_BLOCK_MIB boundary (alignedDimmAddress). Both need the guest's
   * ACPI (q35); the guest onlines them when asked (AgentClient.onlineCpuMem). Resizes run one at a time.
   */
  async resize(target: ResizeTarget, signal?: AbortSignal): Promise<VmSize> {
    return this.#resizeLock.run(async () => {
      const s = this.#s;
      if (!s.cfg || (s.phase !== 'running' && s.phase !== 'paused'))
        throw new UnavailableError(`resize: QEMU is not running (VM ${s.phase})`);
      const c = s.cfg;
      const vcpus = checkTarget('vcpus', target.vcpus);
      const memoryMiB = checkTarget('memoryMiB', target.memoryMiB);
      if ((vcpus ?? 0) > c.maxVcpus || (memoryMiB ?? 0) > c.maxMemoryMiB)
        throw new FailedPreconditionError(
          `resize to ${vcpus ?? '-'} vCPUs / ${memoryMiB ?? '-'} MiB is beyond the VM's maxima ` +
            `(maxVcpus ${c.maxVcpus}, maxMemoryMiB ${c.maxMemoryMiB})`,
        );
      const qmp = this.#qmp();
      const check = (): void => {
        if (signal?.aborted) throw abortError(signal, 'resize');
      };
      check();
      if (vcpus !== undefined) {
        const slots = parseHotpluggableCpus(await qmp.execute<unknown>('query-hotpluggable-cpus'), c.maxVcpus);
        const free = slots.filter((slot) => !slot.plugged);
        let have = slots.length - free.length;
        for (const slot of free) {
          if (have >= vcpus) break;
          check();
          const id = `cpu-${slot.props['socket-id'] ?? 0}-${slot.props['core-id'] ?? 0}-${slot.props['thread-id'] ?? 0}`;
          await qmp.execute('device_add', { driver: slot.type, id, ...slot.props });
          have++;
          this.#log.info({ id, vcpus: have }, 'hot-plugged a vCPU');
        }
      }
      if (memoryMiB !== undefined) {
        let now = parseMemorySize(await qmp.execute<unknown>('query-memory-size-summary')) - this.#rootDeviceMiB();
        while (now < memoryMiB) {
          check();
          const n = this.#nextDimm++;
          const mem = `dimm${n}-mem`;
          await qmp.execute('object-add', {
            'qom-type': 'memory-backend-memfd',
            id: mem,
            size: MEMORY_HOTPLUG_BLOCK_MIB * MIB,
            share: true,
          });
          try {
            // An explicit address on a memory-block boundary: after a pmem root QEMU would place the DIMM right
            // behind it, where the guest cannot add it (README, "Root image through DAX").
            const addr = alignedDimmAddress(
              parseMemoryDevices(await qmp.execute<unknown>('query-memory-devices')),
              MEMORY_HOTPLUG_BLOCK_MIB * MIB,
              MEMORY_HOTPLUG_BLOCK_MIB * MIB,
            );
            await qmp.execute('device_add', {
              driver: 'pc-dimm',
              id: `dimm${n}`,
              memdev: mem,
              ...(addr === undefined ? {} : { addr }),
            });
          } catch (err) {
            await qmp.execute('object-del', { id: mem }).catch(() => undefined);
            throw err;
          }
          now += MEMORY_HOTPLUG_BLOCK_MIB;
          this.#log.info({ id: `dimm${n}`, memoryMiB: now }, 'hot-plugged a DIMM');
        }
      }
      const cpus = await qmp.execute<unknown>('query-cpus-fast');
      if (!Array.isArray(cpus) || cpus.length < 1 || cpus.length > c.maxVcpus)
        throw new UnavailableError('query-cpus-fast returned a malformed reply');
      const size = {
        vcpus: cpus.length,
        memoryMiB: parseMemorySize(await qmp.execute<unknown>('query-memory-size-summary')) - this.#rootDeviceMiB(),
      };
      if (size.memoryMiB > c.memoryMiB + c.memoryRoomMiB)
        throw new UnavailableError(`QEMU reports ${size.memoryMiB} MiB, more than the VM's room`);
      return size;
    });
  }

  // ---- utilities --------------------------------------------------------------------------------------------

  agentAddress(): AgentAddress {
    const { cfg, transport, cid } = this.#prepared('agentAddress');
    if (transport === 'vsock') return { transport: 'vsock', cid: cid ?? 0, port: AGENT_VSOCK_PORT };
    return { transport: 'serial', path: cfg.paths.agentSocket };
  }
  consoleTail(maxLines?: number): string[] {
    return this.#s.console?.tail(maxLines) ?? [];
  }
  /**
   * The agent's last log records (from its log port, as "hull-agent <level> <msg> <fields>"; records the agent
   * wrote to the console before its port was open are in consoleTail), oldest first.
   */
  agentLogTail(maxLines?: number): string[] {
    return this.#s.agentLog?.tail(maxLines) ?? [];
  }
  /**
   * Bytes and records the agent sent on its log port, how many were invalid, not logged (over the rate limit), and
   * dropped in the guest (as the agent reports it).
   */
  agentLogTotals(): { bytes: number; records: number; invalid: number; notLogged: number; droppedInGuest: number } {
    return { ...(this.#s.agentLog?.totals ?? { bytes: 0, records: 0, invalid: 0, notLogged: 0, droppedInGuest: 0 }) };
  }
  /** Bytes and lines the guest wrote to its console, and lines not logged (over the rate limit). */
  consoleTotals(): { bytes: number; lines: number; notLogged: number } {
    return { ...(this.#s.console?.totals ?? { bytes: 0, lines: 0, notLogged: 0 }) };
  }
  pid(): number | undefined {
    return this.#s.qemu?.alive ? this.#s.qemu.pid : undefined;
  }
  virtiofsdPid(): number | undefined {
    return this.#s.virtiofsd?.pid;
  }
  accel(): Accel {
    return this.#prepared('accel').accel;
  }
  /** QEMU's seccomp filter and user, as chosen for this host at prepare. */
  confinement(): QemuConfinement {
    return { ...(this.#prepared('confinement').confinement ?? { seccomp: false }) };
  }
  /** How the root image is attached, as chosen at prepare (DAX falls back to virtio-blk when the image lacks it). */
  rootImage(): RootImage {
    const r = this.#prepared('rootImage').rootImage;
    if (r === undefined) throw new FailedPreconditionError('rootImage: the VM is not prepared');
    return { ...r };
  }
  /** The argv QEMU is (or will be) started with, without argv[0]. */
  argv(): string[] {
    return [...(this.#prepared('argv').argv ?? [])];
  }
  /**
   * What is spawned: QEMU itself, or with a network `nsenter --net=<netns> -- <qemu> <argv>`. nsenter enters the
   * namespace and execs QEMU, so the pid is QEMU's and /proc/<pid>/cmdline is QEMU's argv (crash recovery matches
   * it by the state folder, which is in that argv).
   */
  command(): { file: string; args: string[] } {
    const { cfg: c, argv } = this.#prepared('command');
    const qemuArgv = argv ?? [];
    if (c.network === undefined) return { file: c.qemuPath, args: [...qemuArgv] };
    return { file: c.nsenterPath, args: [`--net=${c.network.netnsPath}`, '--', c.qemuPath, ...qemuArgv] };
  }
  timings(): StartTimings {
    return { ...this.#s.timings };
  }

  // ---- internals --------------------------------------------------------------------------------------------

  #expect(op: string, phases: Phase[]): void {
    if (!phases.includes(this.#s.phase))
      throw new FailedPreconditionError(`cannot ${op} a VM in state ${this.#s.phase}`);
  }

  #prepared(op: string): State & { cfg: ResolvedConfig; accel: Accel; transport: AgentTransport } {
    const s = this.#s;
    if (!s.cfg || !s.accel || !s.transport) throw new FailedPreconditionError(`${op}: the VM is not prepared`);
    return s as State & { cfg: ResolvedConfig; accel: Accel; transport: AgentTransport };
  }

  /** QEMU counts a pmem root device (DAX) in its plugged memory; it is not guest RAM. */
  #rootDeviceMiB(): number {
    const r = this.#s.rootImage;
    return r === undefined || r.device === 'virtio-blk' ? 0 : Math.floor(r.sizeBytes / (1024 * 1024));
  }

  #qmp(): QmpClient {
    const qmp = this.#s.qmp;
    if (!qmp || qmp.closed) throw new UnavailableError('QMP is not connected (QEMU is not running)');
    return qmp;
  }

  #buildArgv(): string[] {
    const { cfg: c, accel, transport, cid } = this.#prepared('build argv');
    return buildQemuArgv({
      id: c.id,
      accel,
      vcpus: c.vcpus,
      memoryMiB: c.memoryMiB,
      ...(c.maxVcpus > c.vcpus ? { maxVcpus: c.maxVcpus } : {}),
      ...(c.memoryRoomMiB > 0 ? { memoryRoomMiB: c.memoryRoomMiB } : {}),
      kernel: c.kernel,
      initrd: c.initrd,
      image: c.image,
      ...(this.#s.rootImage === undefined ? {} : { rootImage: this.#s.rootImage }),
      kernelParams: c.kernelParams,
      debug: c.debug,
      agent: transport === 'vsock' ? { transport, cid: cid ?? 0 } : { transport, socketPath: c.paths.agentSocket },
      agentLogSocket: c.paths.agentLogSocket,
      ...(c.debugPort ? { debugPortSocket: c.paths.debugPortSocket } : {}),
      ...(c.sharedDir === undefined ? {} : { virtiofsSocket: c.paths.virtiofsdSocket }),
      qmpSocket: c.paths.qmpSocket,
      ...(this.#opts.fileProbe.kind(QBOOT_FIRMWARE) === 'file' ? { firmware: QBOOT_FIRMWARE } : {}),
      ...(c.network === undefined ? {} : { nics: c.network.nics, vhostNet: this.#s.vhostNet ?? false }),
      ...(this.#s.confinement === undefined ? {} : { confinement: this.#s.confinement }),
      ...(c.freePageReporting ? { freePageReporting: true } : {}),
      ...(accel === 'tcg' && c.tcgTbSizeMiB > 0 ? { tcgTbSizeMiB: c.tcgTbSizeMiB } : {}),
      ...(this.#s.template === undefined
        ? {}
        : {
            template: {
              role: this.#s.template.role,
              memoryFile:
                this.#s.template.role === 'make'
                  ? this.#s.template.memoryFile
                  : path.join(c.paths.stateDir, CLONE_MEMORY_FILE),
            },
          }),
    });
  }

  /** virtiofsd (if sharing), then QEMU until QMP says running; retries another CID when vsock's is taken. */
  async #boot(signal: AbortSignal): Promise<void> {
    const s = this.#prepared('start');
    const c = s.cfg;
    if (c.sharedDir !== undefined) {
      let sandbox = this.#opts.virtiofsdSandbox;
      if (sandbox === 'auto') {
        const t0 = performance.now();
        const choice = await probeSandboxMode(c.virtiofsdPath, c.paths.stateDir, this.#log, s.onSpawn);
        s.timings.sandboxProbeMs = performance.now() - t0;
        this.#log.info({ id: c.id, sandbox: choice.value, why: choice.reason }, `virtiofsd sandbox: ${choice.value}`);
        sandbox = choice.value;
      }
      s.virtiofsd = await Virtiofsd.start(
        {
          binary: c.virtiofsdPath,
          socketPath: c.paths.virtiofsdSocket,
          sharedDir: c.sharedDir,
          sandbox,
          debug: c.debug,
          cache: c.virtiofsCache,
          extraArgs: c.virtiofsdExtraArgs,
        },
        signal,
        this.#log,
        s.onSpawn ? { onSpawn: s.onSpawn } : {},
      );
      s.timings.virtiofsdReadyMs = s.virtiofsd.readyMs;
      s.timings.virtiofsdSandbox = sandbox;
    }
    const cids = s.transport === 'vsock' ? cidCandidates(c.id) : undefined;
    cids?.next(); // the first candidate is already in the argv
    let incomingFd: number | undefined;
    const t = s.template;
    if (t?.role === 'clone') {
      const t0 = performance.now();
      const copy = path.join(c.paths.stateDir, CLONE_MEMORY_FILE);
      fs.rmSync(copy, { force: true });
      s.timings.memoryCopyBytes = copySparse(t.memoryFile, copy);
      s.timings.memoryCopyMs = performance.now() - t0;
      incomingFd = fs.openSync(t.stateFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    }
    try {
      await this.#spawnUntilReady(s, c, cids, signal, incomingFd);
    } finally {
      if (incomingFd !== undefined) fs.closeSync(incomingFd);
    }
  }

  async #spawnUntilReady(
    s: State & { cfg: ResolvedConfig },
    c: ResolvedConfig,
    cids: Generator<number> | undefined,
    signal: AbortSignal,
    incomingFd: number | undefined,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      fs.rmSync(c.paths.qmpSocket, { force: true }); // a failed attempt's socket would only be refused
      const { file, args } = this.command();
      // The console's lines go into the log at debug level, its errors at warn/error (bounded either way).
      const guestConsole = new GuestConsole(this.#log, true, this.#consoleLimits);
      s.console = guestConsole;
      // spawns: qemu-system-x86_64, nsenter; configuration qemuPath and nsenterPath (see command())
      const qemu = OwnedProcess.spawn(file, args, {
        name: 'qemu',
        logger: this.#log,
        onStdout: (chunk) => guestConsole.push(chunk),
        onStdoutEnd: () => guestConsole.end(),
        ...(s.onSpawn ? { onSpawn: s.onSpawn } : {}),
        ...(incomingFd === undefined ? {} : { extraFds: [incomingFd] }),
      });
      s.qemu = qemu;
      this.#log.info({ id: c.id, pid: qemu.pid, accel: s.accel, attempt }, 'qemu started');
      try {
        await this.#waitReady(qemu, signal);
      } catch (err) {
        if (qemu.exit && cids && attempt < CID_ATTEMPTS && isCidInUse(qemu.stderrTail())) {
          this.#log.warn({ id: c.id, cid: s.cid }, 'guest CID in use, trying another');
          s.cid = cids.next().value as number;
          s.argv = this.#buildArgv();
          s.qemu = undefined;
          continue;
        }
        throw err;
      }
      void qemu.exited
        .then(() => this.#recordExit(qemu))
        .catch((err: unknown) => {
          this.#log.error({ id: c.id, err: String(err) }, 'recording the QEMU exit failed');
        });
      return;
    }
  }

  /** Connect QMP (retrying until the socket appears) and wait for status running; QEMU exiting ends the wait. */
  async #waitReady(qemu: OwnedProcess, signal: AbortSignal): Promise<void> {
    const c = this.#prepared('start').cfg;
    const exited = new AbortController();
    void qemu.exited.then(() => exited.abort(new UnavailableError('QEMU exited during start')));
    const until = AbortSignal.any([signal, exited.signal]);
    try {
      const qmp = await QmpClient.connect(c.paths.qmpSocket, {
        signal: until,
        retryIntervalMs: 5,
        commandTimeoutMs: this.#opts.qmpCommandTimeoutMs,
        logger: this.#log,
      });
      this.#s.qmp = qmp;
      // QEMU made the log port's socket before it opened QMP's.
      this.#readAgentLog(c.paths.agentLogSocket);
      qmp.onShutdown((e) => this.#log.info({ id: c.id, ...e }, 'QEMU reports SHUTDOWN'));
      qmp.onStop(() => this.#log.debug({ id: c.id }, 'QEMU reports STOP'));
      qmp.onResume(() => this.#log.debug({ id: c.id }, 'QEMU reports RESUME'));
      if (this.#s.template?.role === 'clone') {
        const t0 = performance.now();
        await loadTemplateState(qmp, until);
        this.#s.timings.templateLoadMs = performance.now() - t0;
      }
      for (;;) {
        const st = await qmp.queryStatus();
        if (st.running) break;
        if (['shutdown', 'guest-panicked', 'internal-error', 'io-error'].includes(st.status)) {
          throw new UnavailableError(`VM is ${st.status} during start`);
        }
        await sleep(10, until);
      }
      if (this.#s.template?.role === 'clone' && c.sharedDir !== undefined) {
        const t0 = performance.now();
        await plugVirtiofs(qmp);
        this.#s.timings.virtiofsPlugMs = performance.now() - t0;
      }
      if (this.#s.template?.role === 'clone' && c.network !== undefined && c.network.nics.length > 0) {
        const t0 = performance.now();
        await plugNics(qmp, c.network.nics);
        this.#s.timings.nicPlugMs = performance.now() - t0;
        this.#s.timings.nicsPlugged = c.network.nics.length;
      }
      this.#s.timings.qmpReadyMs = performance.now() - qemu.spawnedAt;
      const t = this.#s.timings;
      this.#log.info(
        {
          id: c.id,
          pid: qemu.pid,
          qmpReadyMs: Math.round(t.qmpReadyMs ?? 0),
          ...(this.#s.template?.role === 'clone'
            ? {
                memoryCopyMs: Math.round(t.memoryCopyMs ?? 0),
                templateLoadMs: Math.round(t.templateLoadMs ?? 0),
                virtiofsPlugMs: Math.round(t.virtiofsPlugMs ?? 0),
                nicPlugMs: Math.round(t.nicPlugMs ?? 0),
              }
            : {}),
        },
        this.#s.template?.role === 'clone' ? 'VM running (cloned from its template)' : 'VM running',
      );
    } catch (err) {
      if (signal.aborted && !qemu.exit) throw abortError(signal, 'start vm');
      // A QMP failure (connection reset, handshake error) usually means QEMU is on its way out: give it a moment,
      // so that the error says why in QEMU's words rather than as a socket error.
      if (!qemu.exit && !(await qemu.waitExit(1000))) throw err;
      await qemu.exited;
      const e = qemu.exit;
      const how = e?.error
        ? `could not be spawned: ${e.error.message}`
        : e?.signal
          ? `was killed by ${e.signal}`
          : `exited with code ${e?.code}`;
      const consoleTail = this.consoleTail(10);
      throw new UnavailableError(
        `QEMU ${how} during start; stderr: ${qemu.stderrTail().trim() || '(empty)'}` +
          (consoleTail.length ? `; last console lines:\n${consoleTail.join('\n')}` : '; console: (empty)'),
        { cause: e?.error ?? err },
      );
    }
  }

  /**
   * Reads the agent's log port (QEMU's socket for it) into an AgentLog until QEMU closes it. While no one is
   * connected QEMU drops what the guest writes there (the agent then sees the port closed and writes to the console).
   */
  #readAgentLog(socketPath: string): void {
    const s = this.#s;
    const agentLog = new AgentLog(this.#log, this.#agentLogLimits);
    s.agentLog = agentLog;
    const conn = net.connect(socketPath);
    s.agentLogConn = conn;
    conn.on('data', (chunk: Buffer) => agentLog.push(chunk));
    conn.on('error', (err) => this.#log.warn({ err: err.message }, "reading the agent's log port failed"));
    conn.on('close', () => agentLog.end());
  }

  /** Undo a start that failed or was aborted: QEMU, virtiofsd, sockets. The exit (if QEMU ran) is recorded. */
  async #teardownFailedStart(): Promise<void> {
    const s = this.#s;
    const qemu = s.qemu;
    // If QEMU is still alive, we are the ones ending it (abort, deadline, failed handshake): an expected exit.
    // If it already exited on its own, that exit was not asked for.
    if (qemu?.alive || s.startAbort?.signal.aborted) s.stopRequested = true;
    if (qemu) {
      await this.#kill(qemu);
      await this.#recordExit(qemu);
    } else {
      await s.virtiofsd?.stop(0);
      this.#resolveExit({ code: null, signal: null, expected: s.stopRequested, stderrTail: '', consoleTail: [] });
    }
    const p = s.cfg?.paths;
    if (p)
      for (const f of [p.qmpSocket, p.agentSocket, p.agentLogSocket, p.virtiofsdSocket, p.debugPortSocket])
        fs.rmSync(f, { force: true });
    s.phase = 'stopped';
  }

  /** Graceful: QMP quit, then SIGTERM, then SIGKILL, each bounded. force: SIGKILL at once. */
  async #terminate(qemu: OwnedProcess, force: boolean): Promise<void> {
    if (!force) {
      const qmp = this.#s.qmp;
      if (qmp && !qmp.closed) {
        await qmp.quit({ timeoutMs: this.#opts.quitTimeoutMs }).catch((err: unknown) => {
          this.#log.warn({ pid: qemu.pid, err: String(err) }, 'QMP quit failed');
        });
      }
      if (await qemu.waitExit(this.#opts.quitTimeoutMs)) return;
      this.#log.warn({ pid: qemu.pid }, 'QEMU still running after QMP quit; sending SIGTERM');
      if (qemu.signal('SIGTERM') && (await qemu.waitExit(this.#opts.termTimeoutMs))) return;
      this.#log.warn({ pid: qemu.pid }, 'QEMU still running after SIGTERM; sending SIGKILL');
    }
    await this.#kill(qemu);
  }

  async #kill(qemu: OwnedProcess): Promise<void> {
    await qemu.kill(this.#opts.killTimeoutMs);
    if (qemu.alive)
      throw new InternalError(`QEMU pid ${qemu.pid} did not exit within ${this.#opts.killTimeoutMs} ms of SIGKILL`);
  }

  /** The one place a QEMU exit becomes a VmExit. Also closes QMP and stops virtiofsd. Runs once. */
  #recordExit(qemu: OwnedProcess): Promise<void> {
    const s = this.#s;
    s.exitDone ??= (async () => {
      const e = await qemu.exited;
      s.qmp?.close();
      s.agentLogConn?.destroy();
      const c = s.cfg;
      const exit: VmExit = {
        code: e.code,
        signal: e.signal,
        expected: s.stopRequested,
        stderrTail: qemu.stderrTail(),
        consoleTail: this.consoleTail(40),
      };
      const fields = { id: c?.id, pid: qemu.pid, code: exit.code, signal: exit.signal, expected: exit.expected };
      if (exit.expected) this.#log.info(fields, 'QEMU exited');
      else
        this.#log.warn(
          { ...fields, stderrTail: exit.stderrTail, consoleTail: exit.consoleTail.slice(-10) },
          'QEMU exited unexpectedly',
        );
      await s.virtiofsd
        ?.stop(1000)
        .catch((err: unknown) => this.#log.error({ err: String(err) }, 'stopping virtiofsd failed'));
      if (c)
        for (const f of [
          c.paths.qmpSocket,
          c.paths.agentSocket,
          c.paths.agentLogSocket,
          c.paths.virtiofsdSocket,
          c.paths.debugPortSocket,
        ])
          fs.rmSync(f, { force: true });
      if (s.phase === 'running' || s.phase === 'paused') s.phase = 'stopped';
      this.#resolveExit(exit);
    })();
    return s.exitDone;
  }

  #resolveExit(exit: VmExit): void {
    if (this.#s.exit) return;
    this.#s.exit = exit;
    for (const w of this.#exitWaiters.splice(0)) w(exit);
  }
}

/** VmConfig.template against the resolved config: absolute files, and what a template's layout cannot have. */
function checkTemplate(t: VmTemplateUse, c: ResolvedConfig): VmTemplateUse {
  const abs = (what: string, p: unknown): string => {
    if (typeof p !== 'string' || !path.isAbsolute(p) || path.normalize(p) !== p)
      throw new InvalidArgumentError(`template ${what} must be an absolute, normalised path`);
    return p;
  };
  if (t.role === 'make') {
    if (c.sharedDir !== undefined) throw new InvalidArgumentError('a template VM has no virtio-fs share');
    if (c.network !== undefined) throw new InvalidArgumentError('a template VM has no NICs');
    return { role: 'make', memoryFile: abs('memory file', t.memoryFile) };
  }
  if (t.role === 'clone') {
    if (c.network !== undefined && c.network.nics.length > TEMPLATE_NIC_PORTS)
      throw new InvalidArgumentError(
        `a VM template has room for ${TEMPLATE_NIC_PORTS} NICs, this VM has ${c.network.nics.length}: boot it cold`,
      );
    return { role: 'clone', memoryFile: abs('memory file', t.memoryFile), stateFile: abs('state file', t.stateFile) };
  }
  throw new InvalidArgumentError('template role must be make or clone');
}

function checkTarget(what: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 0)
    throw new InvalidArgumentError(`resize: ${what} ${v} must be a non-negative integer`);
  return v;
}

interface CpuSlot {
  type: string;
  plugged: boolean;
  props: Record<string, number>;
}

const CPU_PROPS = ['node-id', 'socket-id', 'die-id', 'cluster-id', 'core-id', 'thread-id'] as const;

/** query-hotpluggable-cpus, checked (QEMU's reply is read like any peer's), sorted by socket, core, thread. */
export function parseHotpluggableCpus(reply: unknown, maxVcpus: number): CpuSlot[] {
  const bad = (why: string): never => {
    throw new UnavailableError(`query-hotpluggable-cpus returned a malformed reply: ${why}`);
  };
  if (!Array.isArray(reply) || reply.length > maxVcpus) return bad('not a list of at most maxVcpus slots');
  const slots = reply.map((e: unknown): CpuSlot => {
    if (typeof e !== 'object' || e === null) return bad('a slot is not an object');
    const r = e as Record<string, unknown>;
    if (typeof r.type !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(r.type)) return bad('bad CPU type');
    if (r['vcpus-count'] !== 1) return bad('a slot is not one vCPU');
    const p = r.props;
    if (typeof p !== 'object' || p === null) return bad('no props');
    const props: Record<string, number> = {};
    for (const [k, v] of Object.entries(p)) {
      if (!(CPU_PROPS as readonly string[]).includes(k)) return bad(`unknown prop ${k.slice(0, 32)}`);
      if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 0xffff) return bad(`bad ${k}`);
      props[k] = v as number;
    }
    return { type: r.type, plugged: r['qom-path'] !== undefined, props };
  });
  const key = (sl: CpuSlot): number[] => [
    sl.props['socket-id'] ?? 0,
    sl.props['core-id'] ?? 0,
    sl.props['thread-id'] ?? 0,
  ];
  return slots.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return (ka[i] ?? 0) - (kb[i] ?? 0);
    return 0;
  });
}

/** query-memory-size-summary as MiB (boot RAM plus hot-plugged DIMMs). */
export function parseMemorySize(reply: unknown): number {
  const r = reply as { 'base-memory'?: unknown; 'plugged-memory'?: unknown } | null;
  const base = r?.['base-memory'];
  const plugged = r?.['plugged-memory'] ?? 0;
  if (!Number.isSafeInteger(base) || !Number.isSafeInteger(plugged) || (base as number) <= 0 || (plugged as number) < 0)
    throw new UnavailableError('query-memory-size-summary returned a malformed reply');
  return Math.floor(((base as number) + (plugged as number)) / (1024 * 1024));
}

const MIB = 1024 * 1024;

/** Where a memory device sits in QEMU's device memory (guest-physical bytes). */
export interface MemoryDeviceRange {
  id: string;
  addr: number;
  size: number;
}

/** The most memory devices a reply may list: DIMM slots (hypervisor/config.ts MAX_MEMORY_SLOTS) and a pmem root. */
const MAX_MEMORY_DEVICES = 512;

/**
 * query-memory-devices, checked (QEMU's reply is read like any peer's): each device's range. pc-dimm and nvdimm say
 * `addr`, virtio-pmem and virtio-mem `memaddr`; both with `size`.
 */
export function parseMemoryDevices(reply: unknown): MemoryDeviceRange[] {
  const bad = (why: string): never => {
    throw new UnavailableError(`query-memory-devices returned a malformed reply: ${why}`);
  };
  if (!Array.isArray(reply) || reply.length > MAX_MEMORY_DEVICES) return bad('not a list of memory devices');
  return reply.map((e: unknown): MemoryDeviceRange => {
    const d = (e as { data?: unknown } | null)?.data;
    if (typeof d !== 'object' || d === null) return bad('a device has no data');
    const r = d as Record<string, unknown>;
    const addr = r.addr ?? r.memaddr;
    const size = r.size;
    if (!Number.isSafeInteger(addr) || (addr as number) < 0) return bad('bad address');
    if (!Number.isSafeInteger(size) || (size as number) <= 0) return bad('bad size');
    if (!Number.isSafeInteger((addr as number) + (size as number))) return bad('range beyond 2^53');
    const id = typeof r.id === 'string' ? r.id.slice(0, 64) : '';
    return { id, addr: addr as number, size: size as number };
  });
}

/**
 * The guest-physical address for a DIMM of `sizeBytes`: the lowest multiple of `alignBytes` (the guest's memory
 * block size) at or above the first memory device that overlaps none of `devices`. Undefined when there is no
 * memory device yet: QEMU then puts the DIMM at the start of its device memory, which is 1 GiB aligned. Needed
 * because QEMU itself places a DIMM right after the last device, aligned only to its backend's page size (2 MiB):
 * behind a 146 MiB pmem root that is 0x109200000, which a guest with 128 MiB memory blocks refuses ("Block size
 * [0x8000000] unaligned hotplug range", add_memory failed). QEMU checks the address against its device memory.
 */
export function alignedDimmAddress(
  devices: readonly MemoryDeviceRange[],
  sizeBytes: number,
  alignBytes: number,
): number | undefined {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || !Number.isSafeInteger(alignBytes) || alignBytes <= 0)
    throw new InvalidArgumentError(`DIMM size ${sizeBytes} and alignment ${alignBytes} must be positive integers`);
  const sorted = [...devices].sort((a, b) => a.addr - b.addr);
  const first = sorted[0];
  if (first === undefined) return undefined;
  const up = (x: number): number => Math.ceil(x / alignBytes) * alignBytes;
  let at = up(first.addr);
  for (const d of sorted) if (at < d.addr + d.size && d.addr < at + sizeBytes) at = up(d.addr + d.size);
  return at;
}
