/**
 * The daemon's metrics in one place: the registry, the Task and agent RPC observers, and the unix socket served
 * once the sandbox exists (its state folder then exists too). Closing is idempotent.
 */
import path from 'node:path';
import { observeAgentCalls } from '../agent-client';
import type { Sandbox } from '../core';
import { errorMessage } from '../errors';
import type { Logger } from '../log';
import { METRICS_SOCKET, MetricsServer } from './metrics-server';
import { ShimMetrics } from './prometheus';
import { timeTaskRpcs } from './rpc-timing';

export interface DaemonMetrics {
  timeTaskRpcs<T extends Parameters<typeof timeTaskRpcs>[0]>(handlers: T): T;
  serve(sandbox: Sandbox): void;
  close(): void;
}

export function startMetrics(logger: Logger): DaemonMetrics {
  const metrics = new ShimMetrics();
  const stopObserving = observeAgentCalls(metrics.observeAgentCall);
  let server: MetricsServer | undefined;
  let closed = false;
  return {
    timeTaskRpcs: (handlers) => timeTaskRpcs(handlers, metrics.observeTaskCall),
    serve(sandbox) {
      if (server || closed) return;
      metrics.setSandbox(() => sandbox.metricsView());
      const socket = path.join(path.dirname(sandbox.recordFile), METRICS_SOCKET);
      MetricsServer.listen(socket, metrics).then(
        (s) => {
          if (closed) return s.close();
          server = s;
          logger.info({ socket }, 'metrics served');
        },
        (err: unknown) => logger.warn({ error: errorMessage(err), socket }, 'metrics not served'),
      );
    },
    close() {
      closed = true;
      stopObserving();
      server?.close();
      server = undefined;
    },
  };
}
