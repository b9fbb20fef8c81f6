/**
 * OOM events for GetOOMEvent (Kata semantics: a long poll answered with the id of a container whose cgroup had a
 * process killed by the OOM killer). Each container's cgroup v2 `memory.events` is watched with inotify
 * (fs.watch): the kernel notifies that file whenever one of its counters changes, so an idle container costs
 * nothing and a kill is seen at once. Polling would wake the guest for every container at every interval, which
 * under TCG emulation is not free, and would still be late by up to an interval. Where fs.watch cannot watch the
 * file, it falls back to reading it every POLL_MS.
 *
 * When `oom_kill` grows, the container's id is queued once. A waiting GetOOMEvent gets it at once, else it waits
 * in the queue (bounded: the oldest is dropped). Waiters are served newest first: ttrpc has no cancel message, so
 * a caller that gave up leaves its request pending here until the connection closes, and the poll a caller sends
 * next is the newest; serving the oldest first would hand events to callers that are gone.
 */
import fs from 'node:fs';
import { Code, StatusError } from 'ttrpc-ts';
import { log } from './log';
import { parseKeyValues } from './stats';

export const POLL_MS = 1000;
export const MAX_QUEUED = 1024;

interface Watch {
  file: string;
  killed: number;
  watcher: fs.FSWatcher | undefined;
  timer: NodeJS.Timeout | undefined;
}

interface Waiter {
  resolve(id: string): void;
}

export class OomEvents {
  private readonly watches = new Map<string, Watch>();
  private readonly queue: string[] = [];
  private readonly waiters: Waiter[] = [];

  /** Starts watching container `cid`'s memory.events (a missing file: no watch, logged). */
  watch(cid: string, eventsFile: string): void {
    this.unwatch(cid, false);
    const killed = readOomKills(eventsFile);
    if (killed === undefined) {
      log.warn('no memory.events to watch for OOM kills', { id: cid, file: eventsFile });
      return;
    }
    const w: Watch = { file: eventsFile, killed, watcher: undefined, timer: undefined };
    this.watches.set(cid, w);
    try {
      w.watcher = fs.watch(eventsFile, { persistent: false }, () => this.check(cid, w));
      w.watcher.on('error', () => this.poll(cid, w));
    } catch (err) {
      log.warn('inotify watch failed, polling memory.events', { id: cid, error: (err as Error).message });
      this.poll(cid, w);
    }
  }

  /** Stops watching; with `finalCheck`, reads the file once more first (a kill just before removal still counts). */
  unwatch(cid: string, finalCheck = true): void {
    const w = this.watches.get(cid);
    if (!w) return;
    if (finalCheck) this.check(cid, w);
    this.stop(cid, w);
  }

  /**
   * The next container id with an OOM kill; waits for one. Rejects when `signal` aborts: DEADLINE_EXCEEDED at the
   * request's deadline, else CANCELLED (the connection closed).
   */
  next(signal?: AbortSignal): Promise<string> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    const aborted = (): StatusError =>
      (signal?.reason as Error | undefined)?.name === 'TimeoutError'
        ? new StatusError(Code.DEADLINE_EXCEEDED, 'GetOOMEvent: deadline exceeded')
        : new StatusError(Code.CANCELLED, 'GetOOMEvent was cancelled');
    return new Promise<string>((resolve, reject) => {
      if (signal?.aborted) {
        reject(aborted());
        return;
      }
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(aborted());
      };
      const waiter: Waiter = {
        resolve: (id) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(id);
        },
      };
      this.waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** How many containers are watched and events queued (tests, diagnostics). */
  get size(): { watched: number; queued: number; waiting: number } {
    return { watched: this.watches.size, queued: this.queue.length, waiting: this.waiters.length };
  }

  close(): void {
    for (const [cid, w] of this.watches) this.stop(cid, w);
  }

  private check(cid: string, w: Watch): void {
    if (this.watches.get(cid) !== w) return; // a late notification for a watch that ended
    const killed = readOomKills(w.file);
    if (killed === undefined) {
      this.stop(cid, w); // the cgroup is gone
      return;
    }
    if (killed <= w.killed) return;
    w.killed = killed;
    log.info('container OOM kill', { id: cid, oomKills: killed });
    this.emit(cid);
  }

  private emit(cid: string): void {
    const waiter = this.waiters.pop();
    if (waiter) {
      waiter.resolve(cid);
      return;
    }
    if (this.queue.length >= MAX_QUEUED)
      log.warn('OOM event dropped: nobody asked for events', { id: this.queue.shift() });
    this.queue.push(cid);
  }

  private poll(cid: string, w: Watch): void {
    w.watcher?.close();
    w.watcher = undefined;
    if (!w.timer) w.timer = setInterval(() => this.check(cid, w), POLL_MS).unref();
  }

  private stop(cid: string, w: Watch): void {
    w.watcher?.close();
    if (w.timer) clearInterval(w.timer);
    w.watcher = undefined;
    w.timer = undefined;
    if (this.watches.get(cid) === w) this.watches.delete(cid);
  }
}

/** memory.events' oom_kill counter, or undefined when the file cannot be read. */
export function readOomKills(file: string): number | undefined {
  try {
    return parseKeyValues(fs.readFileSync(file, 'utf8')).oom_kill ?? 0;
  } catch {
    return undefined;
  }
}
