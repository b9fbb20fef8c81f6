/**
 * The one place every agent call passes through on its way out (KataAgentClient's `call`), for observers: the
 * shim's metrics (a latency histogram per method) register here. Tracing may wrap the same function: `timedCall`
 * runs `fn` and tells each observer the method, the seconds it took and whether it failed.
 */
export type AgentCallObserver = (method: string, seconds: number, failed: boolean) => void;

const observers = new Set<AgentCallObserver>();

/** Adds an observer of every agent call of this process; returns a function that removes it. */
export function observeAgentCalls(observer: AgentCallObserver): () => void {
  observers.add(observer);
  return () => observers.delete(observer);
}

export async function timedCall<T>(method: string, fn: () => Promise<T>): Promise<T> {
  if (observers.size === 0) return fn();
  const t0 = performance.now();
  let failed = true;
  try {
    const res = await fn();
    failed = false;
    return res;
  } finally {
    const seconds = (performance.now() - t0) / 1000;
    for (const o of observers) o(method, seconds, failed);
  }
}
