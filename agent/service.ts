/**
 * The agent's ttrpc services: Kata's grpc.AgentService (the sandbox part, the container and process methods, and the network ones; every method not registered
 * answers UNIMPLEMENTED), grpc.Health, and hull's own hull.agent.v1.Diagnostics, hull.agent.v1.Processes and
 * hull.agent.v1.PortForward.
 */
import fs from 'node:fs';
import os from 'node:os';
import { Code, StatusError, type Server } from 'ttrpc-ts';
import { AgentService, HealthService, grpc } from '../protos/agent';
import {
  DEBUG_CONSOLE_ENABLED,
  DEBUG_CONSOLE_METADATA,
  DebugConsoleService,
  DiagnosticsService,
  PortForwardService,
  ProcessesService,
  TracingService,
} from '../protos/hull';
import type { DebugConsole } from './debug-console';
import type { DebugHooks } from './debug-hooks';
import { SHARED_ROOT } from './init';
import { log } from './log';
import { guestMetricsText } from './metrics';
import type { Reaper } from './reaper';
import type { Containers } from './container';
import type { GuestNetwork } from './network';
import type { LoopbackConnections } from './port-forward';
import type { GuestSandbox } from './sandbox';
import { inTracedCall, recorder, tracedServer } from './tracing';
import { realPathUnder } from './validate';
import { checkSeed } from './reseed';
import { selfMemoryKiB, uptimeMs } from './system';

export const AGENT_VERSION = '0.1.0';
const READ_FILE_LIMIT = 1 << 20;
/**
 * How long a traced DestroySandbox keeps the guest up for the host's last drain of its spans (the host drains right
 * after the reply, within a shorter deadline of its own): without it the spans of the sandbox's last call are lost.
 */
export const FINAL_DRAIN_WAIT_MS = 2_000;

export interface AgentContext {
  sandbox: GuestSandbox;
  containers: Containers;
  network: GuestNetwork;
  /** Connections to the pod's loopback for port forwarding. */
  portForward: LoopbackConnections;
  transport: string;
  startedMs: number;
  readyMs(): number;
  /** Guest uptimes (ms) when the initramfs's /init started and when the agent's main code ran; NaN when unknown. */
  boot?: { initStartedMs: number; agentMainMs: number };
  /** Ends the guest (power-off) once the reply has gone out. */
  powerOff(): void;
  /** The debug console (`hull exec`, debug-console.ts): refuses everything unless CreateSandbox enabled it. */
  debugConsole?: DebugConsole;
  /** Test-only fault hooks (debug-hooks.ts); absent or disabled in production. */
  debugHooks?: DebugHooks;
  isInit: boolean;
  /** Exit statuses of orphaned processes (container inits) from hull-init; undefined outside the guest. */
  reaper(): Reaper | undefined;
  /** OnlineCPUMem (hotplug.ts onlineCpuMem in the guest; refused outside it). */
  onlineCpuMem(req: grpc.IOnlineCPUMemRequest): Promise<void>;
  /** Sets the guest's clock (SetGuestDateTime), to `seconds` since the epoch (a positive integer). */
  setClock(seconds: number): Promise<void>;
  /** ReseedRandomDev: the host's seed into the pool and the CRNG rekeyed (agent/reseed.ts; refused outside the guest). */
  reseed?(seed: Buffer): Promise<void>;
}

export function registerServices(plain: Server, ctx: AgentContext): void {
  // Every handler runs in a guest span when the host's call carries a sampled traceparent (agent/tracing.ts).
  const server = tracedServer(plain);
  server.register(AgentService, {
    CreateSandbox: async (req, call) => {
      await ctx.sandbox.create(req);
      ctx.debugConsole?.configure(call.metadata[DEBUG_CONSOLE_METADATA]?.[0] === DEBUG_CONSOLE_ENABLED);
      return {};
    },
    CreateContainer: async (req) => {
      await ctx.containers.create(req);
      ctx.debugHooks?.created(req.containerId ?? '', req.OCI?.Annotations);
      return {};
    },
    StartContainer: async (req) => {
      await ctx.containers.start(req);
      ctx.debugHooks?.started(req.containerId ?? '');
      return {};
    },
    RemoveContainer: async (req) => {
      await ctx.containers.remove(req);
      ctx.debugHooks?.removed(req.containerId ?? '');
      return {};
    },
    ExecProcess: async (req) => {
      await ctx.containers.exec(req);
      return {};
    },
    SignalProcess: async (req) => {
      await ctx.containers.signal(req);
      return {};
    },
    StatsContainer: (req) => ({ cgroupStats: ctx.containers.stats(req), networkStats: [] }),
    GetMetrics: () => ({ metrics: guestMetricsText() }),
    PauseContainer: async (req) => {
      await ctx.containers.pause(req);
      return {};
    },
    ResumeContainer: async (req) => {
      await ctx.containers.resume(req);
      return {};
    },
    UpdateContainer: async (req) => {
      await ctx.containers.update(req);
      return {};
    },
    // Long poll: ends with an event, or CANCELLED when the connection closes.
    GetOOMEvent: async (_req, call) => ({ containerId: await ctx.containers.oomEvents.next(call.signal) }),
    WaitProcess: async (req) => ({ status: await ctx.containers.wait(req) }),
    ReadStdout: async (req) => ({ data: await ctx.containers.read(req, 'stdout') }),
    ReadStderr: async (req) => ({ data: await ctx.containers.read(req, 'stderr') }),
    WriteStdin: async (req) => ({ len: await ctx.containers.write(req) }),
    CloseStdin: (req) => {
      ctx.containers.closeStdin(req);
      return {};
    },
    TtyWinResize: (req) => {
      ctx.containers.resize(req);
      return {};
    },
    UpdateInterface: (req) => ctx.network.updateInterface(req),
    UpdateRoutes: (req) => ctx.network.updateRoutes(req),
    AddARPNeighbors: async (req) => {
      await ctx.network.addArpNeighbors(req);
      return {};
    },
    ListInterfaces: () => ctx.network.listInterfaces(),
    ListRoutes: () => ctx.network.listRoutes(),
    DestroySandbox: async () => {
      ctx.portForward.closeAll();
      ctx.debugConsole?.closeAll();
      await ctx.sandbox.destroy();
      // Traced: this call's span (recorded as the handler returns) goes in the host's next drain, which follows
      // the reply; the power-off waits for that drain, bounded. Untraced: there is nothing to drain.
      if (inTracedCall()) void recorder.nextDrain(FINAL_DRAIN_WAIT_MS).then(() => ctx.powerOff());
      else ctx.powerOff();
      return {};
    },
    GetGuestDetails: (req) => ({
      memBlockSizeBytes: req.memBlockSize ? memoryBlockSize() : 0,
      supportMemHotplugProbe: false,
      agentDetails: {
        version: AGENT_VERSION,
        initDaemon: ctx.isInit,
        deviceHandlers: [],
        storageHandlers: ctx.sandbox.storageHandlers,
        supportsSeccomp: true,
        extraFeatures: [],
      },
    }),
    OnlineCPUMem: async (req) => {
      await ctx.onlineCpuMem(req);
      return {};
    },
    ReseedRandomDev: async (req) => {
      const seed = checkSeed(req.data);
      if (!ctx.reseed) throw new StatusError(Code.UNIMPLEMENTED, 'ReseedRandomDev is not available here');
      await ctx.reseed(seed);
      return {};
    },
    SetGuestDateTime: async (req) => {
      const sec = Number(req.Sec ?? 0);
      if (!Number.isInteger(sec) || sec <= 0) throw new StatusError(Code.INVALID_ARGUMENT, `invalid time ${sec}`);
      await ctx.setClock(sec);
      return {};
    },
  });

  server.register(HealthService, {
    Check: () => ({ status: grpc.HealthCheckResponse.ServingStatus.SERVING }),
    Version: () => ({ grpcVersion: 'ttrpc-1.1', agentVersion: AGENT_VERSION }),
  });

  server.register(ProcessesService, {
    ListProcesses: (req) => ({ processList: ctx.containers.listProcesses(req) }),
  });

  server.register(PortForwardService, {
    OpenConnection: (req) => ctx.portForward.open(req),
    // Long poll: answers with data, or eof once the guest's side ended.
    ReadConnection: (req) => ctx.portForward.read(req),
    WriteConnection: async (req) => {
      await ctx.portForward.write(req);
      return {};
    },
    CloseConnection: (req) => {
      ctx.portForward.close(req);
      return {};
    },
  });

  server.register(DiagnosticsService, {
    GuestInfo: () => ({
      kernelRelease: os.release(),
      agentVersion: AGENT_VERSION,
      nodeVersion: process.version,
      agentStartedMs: ctx.startedMs,
      agentReadyMs: ctx.readyMs(),
      transport: ctx.transport,
      onlineCpus: os.cpus().length,
      memTotalMib: Math.floor(os.totalmem() / (1024 * 1024)),
      ...guestBootInfo(ctx),
    }),
    ReadFile: (req) => {
      const real = realPathUnder(`${SHARED_ROOT}/shared`, req.path ?? '', 'path');
      const fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        const stat = fs.fstatSync(fd);
        if (!stat.isFile()) throw new StatusError(Code.INVALID_ARGUMENT, `${req.path} is not a regular file`);
        const want = Math.min(req.maxBytes || READ_FILE_LIMIT, READ_FILE_LIMIT, stat.size);
        const data = Buffer.alloc(want);
        const n = fs.readSync(fd, data, 0, want, 0);
        return { data: data.subarray(0, n), size: stat.size };
      } finally {
        fs.closeSync(fd);
      }
    },
  });
  const debug = ctx.debugConsole;
  if (debug)
    server.register(DebugConsoleService, {
      StartProcess: (req) => debug.start(req),
      // Long polls: output (empty at end of file), and the exit once the output ended (bounded).
      ReadOutput: async (req) => ({ data: await debug.read(req) }),
      WaitProcess: async (req) => ({ status: await debug.wait(req) }),
      WriteInput: async (req) => ({ len: await debug.write(req) }),
      CloseInput: (req) => {
        debug.closeInput(req);
        return {};
      },
      ResizeTerminal: (req) => {
        debug.resize(req);
        return {};
      },
      SignalProcess: (req) => {
        debug.signal(req);
        return {};
      },
      RemoveProcess: (req) => {
        debug.remove(req);
        return {};
      },
    });
  // The spans recorded so far; the host checks them before it exports them.
  plain.register(TracingService, { DrainSpans: (req) => recorder.drain(req.maxSpans ?? 0) });
  log.info('services registered', { services: server.registry.serviceNames });
}

function memoryBlockSize(): number {
  try {
    return parseInt(fs.readFileSync('/sys/devices/system/memory/block_size_bytes', 'utf8').trim(), 16);
  } catch {
    return 0;
  }
}

/** GuestInfo's boot and footprint figures; a figure that is not known is 0 (proto3's absent). */
function guestBootInfo(ctx: AgentContext): Record<string, number> {
  const known = (n: number | undefined): number => (n !== undefined && Number.isFinite(n) && n >= 0 ? n : 0);
  const mem = selfMemoryKiB();
  return {
    initStartedMs: known(ctx.boot?.initStartedMs),
    agentMainMs: known(ctx.boot?.agentMainMs),
    uptimeMs: known(uptimeMs()),
    agentRssKib: known(mem.rssKiB),
    agentPssKib: known(mem.pssKiB),
  };
}
