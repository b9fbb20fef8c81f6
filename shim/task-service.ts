/**
 * containerd.task.v2.Task: thin adapters from containerd's requests onto core's Sandbox, and from core's typed
 * errors onto status codes (status.ts). The sandbox is made by the first Create, which must be for the sandbox's
 * own container; the VM boots inside that Create.
 */
import path from 'node:path';
import type { HandlerContext, ServiceImplementation } from 'ttrpc-ts';
import type { GuestSpanBatch, OciLinuxResources, OciProcess } from '../agent-client';
import { Sandbox, type SandboxEvent } from '../core';
import { podConfig } from '../core/annotations';
import { VmTemplates, templatesRoot } from '../core/template';
import { loadConfig, toVmConfig, type HullConfig } from '../core/config';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, NotImplementedError } from '../errors';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import type { Logger } from '../log';
import {
  runtimeOptions,
  taskTypes,
  TaskService,
  toTimestamp,
  TypeUrl,
  TypeUrlMismatchError,
  typeUrlMatches,
  unpackAny,
  unpackJsonAny,
  type AnyLike,
  type TimestampLike,
} from '../protos/containerd';
import { sandboxOf } from './address';
import { readSpec } from './spec';
import { metricsAny } from './metrics';
import type { EventPublisher } from './publisher';
import { toStatusError } from './status';

const Status = taskTypes.Status;

export interface TaskServiceOptions {
  namespace: string;
  /** The id the daemon was started for: its sandbox. */
  id: string;
  /** The folder holding the shim binary (guest artefacts are found relative to it). */
  binDir: string;
  logger: Logger;
  publisher: EventPublisher;
  /** Asked to exit once Shutdown finds no container left. */
  onShutdown(): void;
  /** The configuration asks for debug logs (containerd's -debug flag is the other way). */
  onDebug?(): void;
  /** The sandbox exists and its folder too (its own container was created): the daemon starts its metrics. */
  onSandbox?(sandbox: Sandbox): void;
  /** Makes the sandbox at the first Create (default: from hull's configuration, over QEMU); the fuzzer passes fakes. */
  makeSandbox?(configPath: string, events: (e: SandboxEvent) => void): Sandbox;
}

const timestamp = (d: Date | undefined): TimestampLike | null => (d ? toTimestamp(d) : null);

/** A JSON payload of containerd's (an OCI type); a wrong type or bad JSON is an InvalidArgumentError. */
function jsonAny<T>(any: AnyLike | null | undefined, typeUrl: string, what: string): T {
  try {
    return unpackJsonAny(any, typeUrl) as T;
  } catch (err) {
    if (err instanceof TypeUrlMismatchError)
      throw new InvalidArgumentError(`${what}: expected ${typeUrl}, got ${JSON.stringify(any?.type_url ?? '')}`);
    throw new InvalidArgumentError(`${what}: invalid JSON: ${(err as Error).message}`);
  }
}

export class TaskServiceImpl {
  private sandbox: Sandbox | undefined;
  private config: HullConfig | undefined;
  private shuttingDown = false;

  constructor(private readonly o: TaskServiceOptions) {}

  /** The live sandbox, or NOT_FOUND for any container id (no Create yet, or already torn down). */
  private sb(id: string): Sandbox {
    if (!this.sandbox) throw new NotFoundError(`container ${id}: not found`);
    return this.sandbox;
  }

  private publish(e: SandboxEvent): void {
    const p = this.o.publisher;
    switch (e.type) {
      case 'create':
        p.publish('TaskCreate', {
          containerId: e.containerId,
          bundle: e.bundle,
          rootfs: e.rootfs.map((m) => ({ type: m.type, source: m.source, options: m.options })),
          io: e.io,
          pid: e.pid,
        });
        break;
      case 'start':
        p.publish('TaskStart', { containerId: e.containerId, pid: e.pid });
        break;
      case 'exec-added':
        p.publish('TaskExecAdded', { containerId: e.containerId, execId: e.execId });
        break;
      case 'exec-started':
        p.publish('TaskExecStarted', { containerId: e.containerId, execId: e.execId, pid: e.pid });
        break;
      case 'exit':
        p.publish('TaskExit', {
          containerId: e.containerId,
          id: e.id,
          pid: e.pid,
          exitStatus: e.exitStatus,
          exitedAt: timestamp(e.exitedAt),
        });
        break;
      case 'delete':
        p.publish('TaskDelete', {
          containerId: e.containerId,
          id: e.containerId,
          pid: e.pid,
          exitStatus: e.exitStatus,
          exitedAt: timestamp(e.exitedAt),
        });
        break;
      case 'paused':
        p.publish('TaskPaused', { containerId: e.containerId });
        break;
      case 'resumed':
        p.publish('TaskResumed', { containerId: e.containerId });
        break;
      case 'oom':
        p.publish('TaskOOM', { containerId: e.containerId });
        break;
    }
  }

  /** The runtime option `ConfigPath` of a Create ('' when it has none). */
  private static configPathOf(req: { options?: AnyLike | null }): string {
    if (req.options?.type_url && typeUrlMatches(req.options.type_url, TypeUrl.RuntimeOptions))
      return unpackAny(req.options, TypeUrl.RuntimeOptions, runtimeOptions.Options).configPath ?? '';
    return '';
  }

  /**
   * hull's configuration, read once (at the first Create, which names the file): before the Create's span starts,
   * so that `[runtime] enable_tracing` can trace that Create (shim/task-tracing.ts `before`).
   */
  configure(req: { options?: AnyLike | null }): HullConfig {
    if (this.config) return this.config;
    const { config, source } = loadConfig({
      configPath: TaskServiceImpl.configPathOf(req),
      env: process.env,
      binDir: this.o.binDir,
    });
    this.config = config;
    if (config.runtime.debug) this.o.onDebug?.();
    this.o.logger.info({ source }, 'configuration loaded');
    return config;
  }

  /** The spans the guest recorded since the last drain, checked; none before the VM runs. */
  drainGuestSpans(): Promise<GuestSpanBatch | undefined> {
    return this.sandbox ? this.sandbox.drainGuestSpans() : Promise.resolve(undefined);
  }

  /**
   * The sandbox, with hull's configuration as its own container's annotations change it (core/annotations.ts:
   * refused, INVALID_ARGUMENT naming the annotation, before anything is made).
   */
  private makeSandbox(req: { options?: AnyLike | null }, annotations: Record<string, string> | undefined): Sandbox {
    const pod = podConfig(this.configure(req), annotations);
    const config = pod.config;
    if (pod.applied.length > 0) {
      this.o.logger.info({ applied: pod.applied }, "the sandbox's annotations change its configuration");
      if (config.runtime.debug) this.o.onDebug?.();
    }
    return new Sandbox({
      namespace: this.o.namespace,
      id: this.o.id,
      dir: path.join(config.runtime.stateDir, this.o.namespace, this.o.id),
      vmConfig: (place) => toVmConfig(config, place),
      bootTimeoutMs: config.agent.bootTimeoutMs,
      health: { intervalMs: config.agent.healthIntervalMs, timeoutMs: config.agent.healthTimeoutMs },
      memoryOverheadMiB: config.hypervisor.memoryOverheadMiB,
      hypervisor: () => new QemuHypervisor({ logger: this.o.logger }),
      share: (root, id) => new VirtioFsShare({ root, sandboxId: id }),
      logger: this.o.logger,
      events: (e) => this.publish(e),
      failpoints: config.runtime.enableFailpoints,
      debugConsole: config.agent.debugConsoleEnabled,
      ...(config.hypervisor.enableTemplate
        ? {
            template: (vm) =>
              new VmTemplates({
                root: templatesRoot(config.runtime.stateDir),
                hypervisor: () => new QemuHypervisor({ logger: this.o.logger }),
                bootTimeoutMs: config.agent.bootTimeoutMs,
                logger: this.o.logger,
              }).acquire(vm),
          }
        : {}),
    });
  }

  implementation(): ServiceImplementation<typeof TaskService> {
    const wrap =
      <Req, Res>(fn: (req: Req, ctx: HandlerContext) => Promise<Res> | Res) =>
      async (req: Req, ctx: HandlerContext): Promise<Res> => {
        try {
          return await fn(req, ctx);
        } catch (err) {
          throw toStatusError(err);
        }
      };
    const sb = (id: string | null | undefined): Sandbox => this.sb(id ?? '');
    return {
      Create: wrap(async (req) => {
        if (req.checkpoint || req.parentCheckpoint)
          throw new NotImplementedError('restoring from a checkpoint is not supported by hull');
        const id = req.id ?? '';
        const spec = readSpec(req.bundle ?? '');
        if (!this.sandbox) {
          const { sandboxId } = sandboxOf(id, spec.annotations);
          if (sandboxId !== this.o.id)
            throw new FailedPreconditionError(
              `this shim serves sandbox ${this.o.id}; container ${id} belongs to ${sandboxId}`,
            );
          this.sandbox = this.o.makeSandbox
            ? this.o.makeSandbox(TaskServiceImpl.configPathOf(req), (e) => this.publish(e))
            : this.makeSandbox(req, spec.annotations);
        } else if (this.config) {
          // The pod's containers carry its annotations too (CRI's pod_annotations): checked, not applied (the VM exists).
          podConfig(this.config, spec.annotations);
        }
        const first = id === this.o.id && this.sandbox.empty;
        const pid = await this.sandbox.create({
          id,
          bundle: req.bundle ?? '',
          spec,
          rootfs: (req.rootfs ?? []).map((m) => ({
            type: m.type ?? '',
            source: m.source ?? '',
            options: m.options ?? [],
          })),
          stdio: {
            stdin: req.stdin ?? '',
            stdout: req.stdout ?? '',
            stderr: req.stderr ?? '',
            terminal: req.terminal ?? false,
          },
        });
        if (first) this.o.onSandbox?.(this.sandbox);
        return { pid };
      }),
      Start: wrap(async (req) => ({ pid: await sb(req.id).start(req.id ?? '', req.execId ?? '') })),
      Delete: wrap(async (req) => {
        const { pid, exit } = await sb(req.id).delete(req.id ?? '', req.execId ?? '');
        return { pid, exitStatus: exit.exitStatus, exitedAt: timestamp(exit.exitedAt) };
      }),
      State: wrap((req) => {
        const s = sb(req.id).state(req.id ?? '', req.execId ?? '');
        const status = {
          created: Status.CREATED,
          running: Status.RUNNING,
          stopped: Status.STOPPED,
          paused: Status.PAUSED,
        }[s.status];
        return {
          id: s.id,
          bundle: s.bundle,
          pid: s.pid,
          status,
          stdin: s.stdio.stdin,
          stdout: s.stdio.stdout,
          stderr: s.stdio.stderr,
          terminal: s.stdio.terminal,
          exitStatus: s.exit?.exitStatus ?? 0,
          exitedAt: timestamp(s.exit?.exitedAt),
          execId: s.execId,
        };
      }),
      Pids: wrap(async (req) => ({ processes: (await sb(req.id).pids(req.id ?? '')).map((pid) => ({ pid })) })),
      Pause: wrap(async (req) => {
        await sb(req.id).pause(req.id ?? '');
        return {};
      }),
      Resume: wrap(async (req) => {
        await sb(req.id).resume(req.id ?? '');
        return {};
      }),
      Checkpoint: wrap(() => {
        throw new NotImplementedError('checkpointing a VM sandbox is not supported by hull');
      }),
      Kill: wrap(async (req) => {
        await sb(req.id).kill(req.id ?? '', req.execId ?? '', req.signal ?? 0, req.all ?? false);
        return {};
      }),
      Exec: wrap(async (req) => {
        const process = jsonAny<OciProcess>(req.spec, TypeUrl.OciProcess, 'exec spec');
        await sb(req.id).exec(req.id ?? '', req.execId ?? '', process, {
          stdin: req.stdin ?? '',
          stdout: req.stdout ?? '',
          stderr: req.stderr ?? '',
          terminal: req.terminal ?? false,
        });
        return {};
      }),
      ResizePty: wrap(async (req) => {
        await sb(req.id).resizePty(req.id ?? '', req.execId ?? '', req.width ?? 0, req.height ?? 0);
        return {};
      }),
      CloseIO: wrap(async (req) => {
        if (req.stdin) await sb(req.id).closeIO(req.id ?? '', req.execId ?? '');
        return {};
      }),
      Update: wrap(async (req) => {
        const resources = jsonAny<OciLinuxResources>(req.resources, TypeUrl.OciLinuxResources, 'resources');
        await sb(req.id).update(req.id ?? '', resources);
        return {};
      }),
      Wait: wrap(async (req) => {
        const exit = await sb(req.id).wait(req.id ?? '', req.execId ?? '');
        return { exitStatus: exit.exitStatus, exitedAt: timestamp(exit.exitedAt) };
      }),
      Stats: wrap(async (req) => ({ stats: metricsAny(await sb(req.id).stats(req.id ?? '')) })),
      Connect: wrap((req) => ({
        shimPid: process.pid,
        taskPid: this.sandbox?.taskPid(req.id ?? '') ?? 0,
        version: '',
      })),
      Shutdown: wrap(() => {
        if (this.sandbox && !this.sandbox.empty) return {};
        if (!this.shuttingDown) {
          this.shuttingDown = true;
          setImmediate(() => this.o.onShutdown());
        }
        return {};
      }),
    };
  }

  /** SIGTERM or a lost containerd: tear everything down. */
  async teardown(): Promise<void> {
    await this.sandbox?.teardown();
  }

  get configuration(): HullConfig | undefined {
    return this.config;
  }
}
