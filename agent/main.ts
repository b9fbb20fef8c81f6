/**
 * hull's guest agent. Inside the VM it is the guest's init daemon together with hull-init (guest/init/hull-init.c),
 * which is PID 1, starts the agent, reaps orphans and reports their exit statuses on fd 3 (see reaper.ts), and
 * powers the VM off when the agent exits. The agent mounts the kernel filesystems and loads modules,
 * finds the agent channel the host chose (`hull.agent=serial|vsock` on the kernel command line; the serial port's
 * name can be changed with `hull.agent_port=NAME`; `hull.agent=serial,vsock` serves on both, which lets a test
 * whose host speaks serial reach the vsock listener from inside the guest) and serves Kata's
 * agent API over ttrpc on it. With HULL_AGENT_SOCKET set it instead serves on that unix socket and touches nothing
 * of the system (how the agent's own tests run it on the host). With HULL_AGENT_LOAD_ONLY set it only loads its
 * modules and does not start: how the image build makes the bundle's code cache (guest/agent-loader.ts).
 */
import { Code, Server, StatusError } from 'ttrpc-ts';
import { initGuest, loadVsockModules, networkReady } from './init';
import { checkOnlineRequest, onlineCpuMem } from './hotplug';
import { GuestNetwork } from './network';
import { AGENT_LOG_PORT_NAME, log, openLogPort } from './log';
import { SerialPortListener, waitForSerialPort } from './port';
import { openHullInitReaper, underHullInit, type Reaper } from './reaper';
import { Containers } from './container';
import { GuestSandbox, VIRTIOFS_DRIVER_DIR } from './sandbox';
import { LoopbackConnections } from './port-forward';
import { DebugHooks, debugHooksEnabled } from './debug-hooks';
import { registerServices } from './service';
import { DebugConsole } from './debug-console';
import { reseedRandom } from './reseed';
import { agentChannels, initStartedMs, kernelParams, run, uptimeMs } from './system';

const SERIAL_PORT_NAME = 'agent.channel.0';
const CHANNELS = ['serial', 'vsock'];
const testSocket = process.env.HULL_AGENT_SOCKET;
/** Started by hull-init (HULL_INIT=1 and fd 3 is its pipe): exiting is how the agent powers the guest off. */
const underInit = !testSocket && underHullInit();
/** The guest's init daemon: under hull-init, or (an image without it) node itself as PID 1. */
const isInit = underInit || process.pid === 1;
/** What the guest's loader (guest/agent-loader.ts) did with the bundle's V8 code cache; undefined without the loader. */
const codeCache = (globalThis as Record<symbol, string | undefined>)[Symbol.for('hull.agent.codeCache')];
/** Exit statuses of the guest's orphans (container init processes), from hull-init; opened once the agent serves. */
let reaper: Reaper | undefined;

function powerOff(code = 0): void {
  if (underInit) {
    // hull-init syncs and powers off on SIGUSR2. Exiting alone is not enough: node's exit joins libuv's thread
    // pool, where the serial port's read can block forever (hull-init would power off too, were the exit to end).
    try {
      process.kill(process.ppid, 'SIGUSR2');
    } catch (err) {
      log.error('asking hull-init to power off failed', { error: (err as Error).message });
    }
    process.exit(code);
  }
  // Outside the guest (test mode) this just ends the agent; as PID 1 it would panic the kernel, which (panic=-1,
  // QEMU -no-reboot) ends the VM too.
  process.exit(code);
}

/**
 * Opens the log port (agent.log.0) once the guest has it; until then, and if it never comes, the log is the
 * console (stderr). It appears with the agent channel's port, a moment into boot.
 */
async function openLogPortWhenReady(): Promise<void> {
  try {
    openLogPort(await waitForSerialPort(AGENT_LOG_PORT_NAME, 10_000));
  } catch (err) {
    log.warn('no log port; logging to the console', { error: (err as Error).message });
  }
}

async function main(): Promise<void> {
  const codeStart = performance.now();
  if (isInit && !testSocket) await initGuest();
  const logPortReady = testSocket ? Promise.resolve() : openLogPortWhenReady();
  const initMs = Math.round(performance.now() - codeStart);
  // Guest uptime when node started (what precedes it is kernel and initramfs): /proc is mounted only now.
  const startedMs = Math.round(uptimeMs() - process.uptime() * 1000);
  // The boot's user-space figures (GuestInfo): when the initramfs's /init started, and when this code ran.
  const boot = { initStartedMs: initStartedMs(), agentMainMs: Math.round(startedMs + codeStart) };
  const transport = testSocket ? 'unix' : agentChannels().join(',');
  const server = new Server({
    onError: (err, where) => {
      if (where.method)
        log.warn('request failed', { method: `${where.service}/${where.method}`, error: (err as Error).message });
    },
  });
  let readyMs = NaN;
  registerServices(server, {
    sandbox: new GuestSandbox({
      setHostname: !testSocket,
      ...(testSocket ? {} : { virtiofsDriverDir: VIRTIOFS_DRIVER_DIR }),
    }),
    containers: new Containers(() => reaper),
    // Outside the guest (HULL_AGENT_SOCKET) the agent must not touch the host's network.
    network: testSocket
      ? new GuestNetwork(() =>
          Promise.reject(
            new StatusError(Code.FAILED_PRECONDITION, 'network configuration is done only inside the guest'),
          ),
        )
      : new GuestNetwork(undefined, () => networkReady),
    portForward: new LoopbackConnections(),
    transport,
    startedMs,
    boot,
    readyMs: () => readyMs,
    isInit,
    reaper: () => reaper,
    // Nor online the host's CPUs and memory.
    onlineCpuMem: testSocket
      ? async (req) => {
          checkOnlineRequest(req);
          throw new StatusError(Code.FAILED_PRECONDITION, 'CPUs and memory are onlined only inside the guest');
        }
      : async (req) => {
          const r = await onlineCpuMem(req);
          log.info('onlined hot-plugged CPUs and memory', { cpus: r.cpus, memoryBlocks: r.memoryBlocks });
        },
    // Outside the guest the agent must not set the host's clock either.
    setClock: testSocket
      ? () => Promise.reject(new StatusError(Code.FAILED_PRECONDITION, 'the clock is set only inside the guest'))
      : async (sec) => void (await run('date', ['-u', '-s', `@${sec}`])),
    ...(testSocket ? {} : { reseed: (seed: Buffer) => reseedRandom(seed) }),
    // Leave time for the reply to reach the host before the guest goes away.
    powerOff: () => setTimeout(() => powerOff(0), 100),
    debugHooks: new DebugHooks(!testSocket && debugHooksEnabled()),
    // Outside the guest it refuses to run anything (the host's processes are not the guest's).
    debugConsole: new DebugConsole({ inGuest: !testSocket }),
  });

  if (testSocket) {
    await server.listen(testSocket);
  } else {
    const channels = agentChannels();
    const unknown = channels.filter((c) => !CHANNELS.includes(c));
    if (unknown.length)
      throw new Error(
        `agent transport ${JSON.stringify(transport)} is not supported by this agent (supported: ${CHANNELS.join(', ')})`,
      );
    await Promise.all(
      channels.map(async (channel) => {
        if (channel === 'vsock') {
          // Loaded only for this channel: hull-vsock's native module is not worth its load time on a serial boot.
          const [{ AGENT_VSOCK_PORT, VsockListener }] = await Promise.all([import('./vsock.js'), loadVsockModules()]);
          VsockListener.start(AGENT_VSOCK_PORT, (stream) => server.serveStream(stream));
          return;
        }
        const portName = kernelParams().get('hull.agent_port') ?? SERIAL_PORT_NAME;
        const device = await waitForSerialPort(portName, 30_000);
        new SerialPortListener(device, (stream) => server.serveStream(stream)).start();
      }),
    );
  }
  // Not before the agent's main on the same clock (/proc/uptime has 10 ms steps; boot.agentMainMs is finer).
  readyMs = Math.max(uptimeMs(), boot.agentMainMs);
  // Off the boot's critical path: statuses wait in the pipe (and in hull-init) until it is read.
  if (underInit) reaper = openHullInitReaper();
  // The ready line goes to the log port when there is one.
  await logPortReady;
  // codeMs: from node's start to the agent's first line (node bootstrap and loading the agent bundle).
  log.info('ready', {
    transport,
    startedMs,
    codeMs: Math.round(codeStart),
    initMs,
    readyMs,
    node: process.version,
    codeCache,
  });
  if (codeCache === 'rejected')
    log.warn(
      "V8 rejected the agent code cache (another node or other V8 flags than the image build's): the bundle was compiled instead",
    );
}

if (!process.env.HULL_AGENT_LOAD_ONLY) {
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception', { error: err.stack ?? String(err) });
    powerOff(1);
  });

  main().catch((err: unknown) => {
    log.error('agent failed to start', { error: err instanceof Error ? err.message : String(err) });
    powerOff(1);
  });
}
