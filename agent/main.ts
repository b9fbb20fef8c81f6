/**
 * hull's guest agent. Inside the VM it runs as init (PID 1): it mounts the kernel filesystems and loads modules,
 * finds the agent channel the host chose (`hull.agent=serial|vsock` on the kernel command line; the serial port's
 * name can be changed with `hull.agent_port=NAME`) and serves Kata's
 * agent API over ttrpc on it. With HULL_AGENT_SOCKET set it instead serves on that unix socket and touches nothing
 * of the system (how the agent's own tests run it on the host).
 */
import { execFileSync } from 'node:child_process';
import { Server } from 'ttrpc-ts';
import { initGuest } from './init';
import { log } from './log';
import { SerialPortListener, waitForSerialPort } from './port';
import { GuestSandbox } from './sandbox';
import { registerServices } from './service';
import { BUSYBOX, kernelParams, uptimeMs } from './system';

const SERIAL_PORT_NAME = 'agent.channel.0';
const isInit = process.pid === 1;
const testSocket = process.env.HULL_AGENT_SOCKET;

function powerOff(code = 0): void {
  if (!isInit) process.exit(code);
  try {
    execFileSync(BUSYBOX, ['sync']);
    execFileSync(BUSYBOX, ['poweroff', '-f']);
  } catch (err) {
    log.error('poweroff failed', { error: (err as Error).message });
  }
  process.exit(code); // as PID 1 this panics the kernel, which (panic=-1, -no-reboot) also ends the VM
}

async function main(): Promise<void> {
  const codeStart = performance.now();
  if (isInit && !testSocket) await initGuest();
  const initMs = Math.round(performance.now() - codeStart);
  // Guest uptime when node started (what precedes it is kernel and initramfs): /proc is mounted only now.
  const startedMs = Math.round(uptimeMs() - process.uptime() * 1000);
  const transport = testSocket ? 'unix' : (kernelParams().get('hull.agent') ?? 'serial');
  const server = new Server({
    onError: (err, where) => {
      if (where.method) log.warn('request failed', { method: `${where.service}/${where.method}`, error: (err as Error).message });
    },
  });
  let readyMs = NaN;
  registerServices(server, {
    sandbox: new GuestSandbox({ setHostname: !testSocket }),
    transport,
    startedMs,
    readyMs: () => readyMs,
    isInit,
    // Leave time for the reply to reach the host before the guest goes away.
    powerOff: () => setTimeout(() => powerOff(0), 100),
  });

  if (testSocket) {
    await server.listen(testSocket);
  } else if (transport === 'serial') {
    const portName = kernelParams().get('hull.agent_port') ?? SERIAL_PORT_NAME;
    const device = await waitForSerialPort(portName, 30_000);
    new SerialPortListener(device, (stream) => server.serveStream(stream)).start();
  } else {
    throw new Error(`agent transport ${JSON.stringify(transport)} is not supported by this agent (supported: serial)`);
  }
  readyMs = uptimeMs();
  // codeMs: from node's start to the agent's first line (node bootstrap and loading the agent bundle).
  log.info('ready', { transport, startedMs, codeMs: Math.round(codeStart), initMs, readyMs, node: process.version });
}

process.on('uncaughtException', (err) => {
  log.error('uncaught exception', { error: err.stack ?? String(err) });
  powerOff(1);
});

main().catch((err: unknown) => {
  log.error('agent failed to start', { error: err instanceof Error ? err.message : String(err) });
  powerOff(1);
});
