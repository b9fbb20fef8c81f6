/**
 * systemd's Manager over D-Bus, the few calls the systemd cgroup driver needs (runc's libcontainer/cgroups/systemd
 * way): StartTransientUnit of a scope, StopUnit, ResetFailedUnit, each followed until its job is over (the
 * JobRemoved signal, or the unit's ActiveState if no signal came in time).
 *
 * Reached as go-systemd does for root: the system bus (/run/dbus/system_bus_socket), else systemd's private socket
 * (/run/systemd/private, peer to peer). A connection lives for one operation: nothing to reconnect when the bus
 * daemon restarts, and no long-lived socket in the shim.
 */
import {
  DBusConnection,
  DBusConnectionError,
  DBusError,
  DBUS_SERVICE,
  type CallRequest,
  type DBusValue,
  type Message,
  type Variant,
} from '../dbus';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, UnavailableError, errorMessage } from '../errors';

export interface SystemdSocket {
  path: string;
  /** Through the bus daemon (Hello, AddMatch, systemd's well-known name), or peer to peer with systemd. */
  bus: boolean;
}

export const SYSTEMD_SOCKETS: readonly SystemdSocket[] = [
  { path: '/run/dbus/system_bus_socket', bus: true },
  { path: '/run/systemd/private', bus: false },
];
/**
 * The environment variable that replaces SYSTEMD_SOCKETS (tests through containerd, which passes its environment to
 * the shim; a host whose sockets are elsewhere): comma-separated `bus:<path>` (through a bus daemon) or
 * `peer:<path>` (systemd's own socket), absolute paths, at most 4.
 */
export const SYSTEMD_SOCKETS_ENV = 'HULL_SYSTEMD_SOCKETS';

/** SYSTEMD_SOCKETS, or what HULL_SYSTEMD_SOCKETS names; a malformed value is an InvalidArgumentError. */
export function systemdSockets(env: NodeJS.ProcessEnv = process.env): readonly SystemdSocket[] {
  const value = env[SYSTEMD_SOCKETS_ENV];
  if (value === undefined || value === '') return SYSTEMD_SOCKETS;
  const entries = value.split(',');
  const out = entries.map((e) => {
    // eslint-disable-next-line no-control-regex
    const m = /^(bus|peer):(\/[^\u0000-\u001f\u007f,]{1,4095})$/.exec(e);
    if (!m) return undefined;
    return { path: path.normalize(m[2]!), bus: m[1] === 'bus' };
  });
  if (entries.length > 4 || out.some((s) => s === undefined))
    throw new InvalidArgumentError(
      `${SYSTEMD_SOCKETS_ENV}=${JSON.stringify(value.slice(0, 200))}: expected up to 4 comma-separated bus:<absolute path> or peer:<absolute path>`,
    );
  return out as SystemdSocket[];
}

/** runc's bound on a unit's start and stop job. */
export const SYSTEMD_JOB_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 5_000;

const SYSTEMD = 'org.freedesktop.systemd1';
const MANAGER_PATH = '/org/freedesktop/systemd1';
const MANAGER = 'org.freedesktop.systemd1.Manager';
const PROPERTIES = 'org.freedesktop.DBus.Properties';
const UNIT = 'org.freedesktop.systemd1.Unit';

export type UnitProperty = [string, Variant];

export class SystemdManager {
  private constructor(
    private readonly conn: DBusConnection,
    readonly socket: SystemdSocket,
    /** systemd's unique name on the bus (signals from anyone else are ignored); undefined peer to peer. */
    private readonly owner: string | undefined,
    private readonly timeoutMs: number,
  ) {}

  /**
   * The first of `sockets` where systemd answers (its Manager's Version property); FailedPrecondition naming every
   * socket tried and why, when none does.
   */
  static async connect(
    sockets: readonly SystemdSocket[] = systemdSockets(),
    timeoutMs = SYSTEMD_JOB_TIMEOUT_MS,
  ): Promise<SystemdManager> {
    const tried: string[] = [];
    const connectMs = Math.min(CONNECT_TIMEOUT_MS, timeoutMs);
    for (const socket of sockets) {
      let conn: DBusConnection | undefined;
      try {
        conn = await DBusConnection.connect(socket.path, { bus: socket.bus, timeoutMs: connectMs });
        let owner: string | undefined;
        if (socket.bus) {
          const [name] = await conn.call({
            destination: DBUS_SERVICE,
            path: '/org/freedesktop/DBus',
            interface: DBUS_SERVICE,
            member: 'GetNameOwner',
            signature: 's',
            body: [SYSTEMD],
            timeoutMs: connectMs,
          });
          owner = text(name, 'GetNameOwner');
        }
        const m = new SystemdManager(conn, socket, owner, timeoutMs);
        await m.managerCall({
          path: MANAGER_PATH,
          interface: PROPERTIES,
          member: 'Get',
          signature: 'ss',
          body: [MANAGER, 'Version'],
          timeoutMs: connectMs,
        });
        return m;
      } catch (err) {
        conn?.close();
        tried.push(`${socket.path} (${errorMessage(err)})`);
      }
    }
    throw new FailedPreconditionError(`systemd cannot be reached over D-Bus: tried ${tried.join(', ')}`);
  }

  close(): void {
    this.conn.close();
  }

  /**
   * StartTransientUnit(unit, "replace", properties, []) and its job followed to the end. A unit of that name left
   * over (UnitExists) is reset (ResetFailedUnit) and the start tried once more, as runc does. A job that ends other
   * than "done" is a FailedPrecondition naming its result.
   */
  async startTransientUnit(unit: string, properties: readonly UnitProperty[]): Promise<void> {
    const start = (): Promise<void> =>
      this.followJob(unit, 'start', () =>
        this.managerCall({
          path: MANAGER_PATH,
          interface: MANAGER,
          member: 'StartTransientUnit',
          signature: 'ssa(sv)a(sa(sv))',
          body: [unit, 'replace', [...properties], []],
        }),
      );
    try {
      await start();
    } catch (err) {
      if (!(err instanceof DBusError && err.errorName === `${SYSTEMD}.UnitExists`)) throw this.classify(err, unit);
      await this.resetFailedUnit(unit).catch(() => undefined);
      await start().catch((e: unknown) => {
        throw this.classify(e, unit);
      });
    }
  }

  /** StopUnit(unit, "replace") and its job followed; a unit systemd no longer has is stopped already. */
  async stopUnit(unit: string): Promise<void> {
    try {
      await this.followJob(unit, 'stop', () =>
        this.managerCall({
          path: MANAGER_PATH,
          interface: MANAGER,
          member: 'StopUnit',
          signature: 'ss',
          body: [unit, 'replace'],
        }),
      );
    } catch (err) {
      if (!(err instanceof DBusError && err.errorName === `${SYSTEMD}.NoSuchUnit`)) throw this.classify(err, unit);
    }
    await this.resetFailedUnit(unit).catch(() => undefined); // a failed unit stays loaded until reset
  }

  async resetFailedUnit(unit: string): Promise<void> {
    await this.managerCall({
      path: MANAGER_PATH,
      interface: MANAGER,
      member: 'ResetFailedUnit',
      signature: 's',
      body: [unit],
    });
  }

  /** The unit's ActiveState, or undefined when systemd has no such unit loaded. */
  async activeState(unit: string): Promise<string | undefined> {
    let unitPath: DBusValue | undefined;
    try {
      [unitPath] = await this.managerCall({
        path: MANAGER_PATH,
        interface: MANAGER,
        member: 'GetUnit',
        signature: 's',
        body: [unit],
      });
    } catch (err) {
      if (err instanceof DBusError && err.errorName === `${SYSTEMD}.NoSuchUnit`) return undefined;
      throw err;
    }
    const [v] = await this.managerCall({
      path: text(unitPath, 'GetUnit'),
      interface: PROPERTIES,
      member: 'Get',
      signature: 'ss',
      body: [UNIT, 'ActiveState'],
    });
    return text((v as Variant | undefined)?.value, 'ActiveState');
  }

  /**
   * Runs `enqueue` (a call answering a job's object path) and waits for that job's JobRemoved (listened to before
   * the call, so an early signal is not missed). No signal within the deadline: the unit's ActiveState decides.
   */
  private async followJob(unit: string, what: 'start' | 'stop', enqueue: () => Promise<DBusValue[]>): Promise<void> {
    const results = new Map<string, string>();
    let wake: (() => void) | undefined;
    const stop = this.conn.onSignal((m: Message) => {
      if (m.interface !== MANAGER || m.member !== 'JobRemoved' || m.path !== MANAGER_PATH) return;
      if (this.owner !== undefined && m.sender !== this.owner) return;
      const [, job, , result] = m.body ?? [];
      if (typeof job === 'string' && typeof result === 'string') {
        results.set(job, result);
        wake?.();
      }
    });
    try {
      if (this.socket.bus) {
        await this.managerCall({
          destination: DBUS_SERVICE,
          path: '/org/freedesktop/DBus',
          interface: DBUS_SERVICE,
          member: 'AddMatch',
          signature: 's',
          body: [`type='signal',sender='${SYSTEMD}',path='${MANAGER_PATH}',interface='${MANAGER}',member='JobRemoved'`],
        });
      }
      const [job] = await enqueue();
      const jobPath = text(job, what === 'start' ? 'StartTransientUnit' : 'StopUnit');
      let offClose: (() => void) | undefined;
      const result = await new Promise<string | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(undefined), this.timeoutMs);
        const check = (): void => {
          if (!results.has(jobPath)) return;
          clearTimeout(timer);
          resolve(results.get(jobPath));
        };
        wake = check;
        // A connection lost while waiting: no signal can come; the state query below then says so at once.
        offClose = this.conn.onClose(() => {
          clearTimeout(timer);
          resolve(undefined);
        });
        check();
      }).finally(() => offClose?.());
      if (result === undefined) {
        const state = await this.activeState(unit);
        const ok = what === 'start' ? state === 'active' : state === undefined || state === 'inactive';
        if (!ok)
          throw new FailedPreconditionError(
            `systemd did not ${what} unit ${unit} within ${this.timeoutMs} ms (its state: ${state ?? 'not loaded'})`,
          );
        return;
      }
      if (result !== 'done') {
        if (what === 'start') await this.resetFailedUnit(unit).catch(() => undefined);
        throw new FailedPreconditionError(`systemd could not ${what} unit ${unit}: its job ended "${result}"`);
      }
    } finally {
      stop();
    }
  }

  /** A call to systemd (its well-known name through a bus) under the job bound unless the request has its own. */
  private managerCall(req: CallRequest): Promise<DBusValue[]> {
    return this.conn.call({
      ...req,
      destination: req.destination ?? (this.socket.bus ? SYSTEMD : undefined),
      timeoutMs: req.timeoutMs ?? this.timeoutMs,
    });
  }

  private classify(err: unknown, unit: string): Error {
    if (err instanceof FailedPreconditionError) return err;
    if (err instanceof DBusError)
      return new FailedPreconditionError(`systemd refused unit ${unit}: ${err.message}`, { cause: err });
    if (err instanceof DBusConnectionError)
      return new UnavailableError(`systemd (${this.socket.path}), unit ${unit}: ${err.message}`, { cause: err });
    return err as Error;
  }
}

/** A string systemd (or the bus) answered, checked. */
function text(v: DBusValue | undefined, what: string): string {
  if (typeof v !== 'string') throw new DBusConnectionError(`${what} answered without a string`);
  return v;
}

/** One operation on systemd's Manager: connected, done, closed. */
export async function withSystemd<T>(
  sockets: readonly SystemdSocket[] | undefined,
  timeoutMs: number | undefined,
  fn: (m: SystemdManager) => Promise<T>,
): Promise<T> {
  const m = await SystemdManager.connect(sockets, timeoutMs);
  try {
    return await fn(m);
  } finally {
    m.close();
  }
}
