/**
 * The long-running shim daemon of one sandbox: serves containerd.task.v2.Task and containerd.task.v3.Task on the socket `start` handed over as
 * fd 3 (or on -socket), publishes events, and exits after Shutdown once no container is left, or on SIGTERM/SIGINT
 * after tearing the sandbox down. Its socket file goes with it.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Server } from 'ttrpc-ts';
import { errorMessage } from '../errors';
import type { Logger } from '../log';
import type { AnyLike } from '../protos/containerd';
import { socketAddress, socketPath } from './address';
import { restoreDaemonEnv } from './daemon-launch';
import type { ShimFlags } from './flags';
import { openLogger } from './logger';
import { EventPublisher } from './publisher';
import { TaskServiceImpl } from './task-service';
import { startMetrics } from './metrics-wiring';
import { registerTaskServices } from './task-services';
import type { DaemonDebugConsole } from './debug-console';
import { ShimTracing } from './tracing';

const LISTEN_FD = 3;

export async function runDaemon(flags: ShimFlags, binDir: string): Promise<void> {
  restoreDaemonEnv();
  const bundle = process.cwd();
  const logger = openLogger(bundle, flags.debug, flags.id, flags.namespace);
  const sockPath = flags.socket || socketPath(socketAddress(flags.address, flags.namespace, flags.id));
  const publisher = new EventPublisher(process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`, flags.namespace, logger);
  const server = new Server({ onError: (err, where) => logger.debug({ ...where, error: errorMessage(err) }, 'ttrpc') });

  const metrics = startMetrics(logger);
  const debugConsole = lazyDebugConsole(logger);
  let exiting = false;
  const exit = async (code: number): Promise<void> => {
    if (exiting) return;
    exiting = true;
    metrics.close();
    debugConsole.close();
    await publisher.close();
    await server.shutdown({ timeoutMs: 1_000 });
    fs.rmSync(sockPath, { force: true });
    const tracingReport = {
      tracing: tracing.enabled,
      tracingSdkLoaded: ShimTracing.sdkLoaded(),
      guestSpans: tracing.counts,
    };
    await tracing.shutdown();
    const cpu = process.cpuUsage();
    logger.info(
      { code, cpuMs: (cpu.user + cpu.system) / 1000, rssBytes: process.memoryUsage.rss(), ...tracingReport },
      'shim exiting',
    );
    logger.flush();
    setTimeout(() => process.exit(code), 50).unref();
    process.exitCode = code;
  };

  const tracing = new ShimTracing(logger, {
    'service.name': 'hull-shim',
    'hull.sandbox.id': flags.id,
    'hull.namespace': flags.namespace,
  });
  const service = new TaskServiceImpl({
    namespace: flags.namespace,
    id: flags.id,
    binDir,
    logger,
    publisher,
    onShutdown: () => void exit(0),
    onDebug: () => (logger.level = 'debug'),
    onSandbox: (sandbox) => {
      metrics.serve(sandbox);
      debugConsole.serve(sandbox, service.configuration?.agent.debugConsoleEnabled === true);
    },
  });
  tracing.setGuestSpanSource(() => service.drainGuestSpans());
  // Tracing outermost, so a call's span covers the time the metrics wrapper measures.
  registerTaskServices(
    server,
    metrics.timeTaskRpcs(service.implementation()),
    {
      sandboxId: flags.id,
      enabled: () => tracing.enabled,
      // The configuration (read at the first Create) decides whether tracing is on; a bad one fails that Create.
      before: (method, req) => {
        if (method !== 'Create') return;
        try {
          tracing.start(service.configure(req as { options?: AnyLike | null }).runtime);
        } catch {
          // the Create itself reports it
        }
      },
      after: () => tracing.afterCall(),
    },
    (name, method) => logger.info({ service: name, method }, 'containerd calls the task API'),
  );

  if (flags.socket) {
    await server.listen(flags.socket);
  } else {
    const listener = net.createServer();
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen({ fd: LISTEN_FD }, () => resolve());
    });
    server.serveListener(listener);
  }

  const terminate = (signal: string): void => {
    logger.info({ signal }, 'tearing the sandbox down');
    metrics.close();
    debugConsole.close();
    void service
      .teardown()
      .catch((err: unknown) => logger.error({ error: errorMessage(err) }, 'teardown'))
      .finally(() => void exit(0));
  };
  process.once('SIGTERM', () => terminate('SIGTERM'));
  process.once('SIGINT', () => terminate('SIGINT'));
  process.on('uncaughtException', (err) => {
    logger.error(
      { error: errorMessage(err), stack: err.stack },
      'uncaught exception: the shim dies; `delete` cleans up after it',
    );
    logger.flush();
    process.exit(1);
  });
  logger.info({ socket: sockPath, bundle: path.basename(bundle) }, 'shim daemon serving');
}

/**
 * The debug console (`[agent] debug_console_enabled`, off by default): its module, its socket protocol and the
 * agent client's console are required only when a sandbox has it enabled.
 */
function lazyDebugConsole(logger: Logger): DaemonDebugConsole {
  let impl: DaemonDebugConsole | undefined;
  let closed = false;
  return {
    serve(sandbox, enabled) {
      if (!enabled || closed) return;
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: off by default
      impl ??= (require('./debug-console') as typeof import('./debug-console')).startDebugConsole(logger);
      impl.serve(sandbox, enabled);
    },
    close() {
      closed = true;
      impl?.close();
    },
  };
}
