/**
 * The Task service's handlers, each timed: the one place a Task RPC is wrapped on its way in (daemon.ts), for
 * observers such as the metrics' latency histogram. Tracing may wrap the same function. Wait (until the process
 * exits) is timed like the others; the histogram is per method.
 */
export type TaskCallObserver = (method: string, seconds: number, failed: boolean) => void;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Handlers = Record<string, (...args: any[]) => unknown>;

export function timeTaskRpcs<T extends Handlers>(handlers: T, observe: TaskCallObserver): T {
  const out: Handlers = {};
  for (const [method, handler] of Object.entries(handlers)) {
    out[method] = async (...args: unknown[]): Promise<unknown> => {
      const t0 = performance.now();
      let failed = true;
      try {
        const res = await handler(...args);
        failed = false;
        return res;
      } finally {
        observe(method, (performance.now() - t0) / 1000, failed);
      }
    };
  }
  return out as T;
}
