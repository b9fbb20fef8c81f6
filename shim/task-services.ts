/**
 * Registers the Task handlers under both task API services: containerd.task.v2.Task (containerd 1.6, 1.7, and 2.x
 * when `start` announced version 2) and containerd.task.v3.Task (containerd 2.x after version 3). Their messages are
 * the same on the wire (protos/proto/containerd/task/v3/shim.proto), so one set of handlers serves both; each service
 * gets its own tracing wrapper, whose spans name the service containerd called.
 */
import type { Server, ServiceImplementation } from 'ttrpc-ts';
import { TASK_SERVICE, TASK_SERVICE_V3, TaskService, TaskServiceV3 } from '../protos/containerd';
import { traceTaskService, type TaskTracingOptions } from './task-tracing';

export type TaskHandlers = ServiceImplementation<typeof TaskService>;

export const TASK_SERVICES = [
  { definition: TaskService, name: TASK_SERVICE },
  { definition: TaskServiceV3, name: TASK_SERVICE_V3 },
] as const;

export function registerTaskServices(
  server: Server,
  handlers: TaskHandlers,
  tracing: Omit<TaskTracingOptions, 'service'>,
  /** Called once per service, at its first call: which task API containerd speaks. */
  onFirstCall?: (service: string, method: string) => void,
): void {
  for (const { definition, name } of TASK_SERVICES) {
    let called = false;
    server.register(
      definition,
      traceTaskService(handlers, {
        ...tracing,
        service: name,
        before: (method, req) => {
          if (!called) {
            called = true;
            onFirstCall?.(name, method);
          }
          tracing.before?.(method, req);
        },
      }),
    );
  }
}
