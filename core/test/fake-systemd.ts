/**
 * A private D-Bus bus (a real `dbus-daemon` with its own configuration and socket in a temporary folder) and a fake
 * systemd Manager on it, served with hull's own D-Bus client: it owns org.freedesktop.systemd1, answers
 * StartTransientUnit / StopUnit / ResetFailedUnit / GetUnit / the Version and ActiveState properties, emits
 * JobRemoved, and makes and removes a scope's folders on the hierarchies systemd owns of a fake cgroupfs (writing
 * the PIDs property into cgroup.procs), as systemd does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DBusConnection, type DBusValue, type Message, type Variant } from '../../dbus';

export interface PrivateBus {
  socketPath: string;
  pid: number;
  /** Kills the daemon by its pid and waits for it to go. */
  stop(): Promise<void>;
}

/** Starts `dbus-daemon` on `<dir>/bus` (its configuration in `<dir>/bus.conf`): anyone may own and send. */
export async function startPrivateBus(dir: string): Promise<PrivateBus> {
  const socketPath = path.join(dir, 'bus');
  const conf = path.join(dir, 'bus.conf');
  fs.writeFileSync(
    conf,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`,
  );
  const child: ChildProcess = spawn('dbus-daemon', [`--config-file=${conf}`, '--nofork', '--print-address=1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('\n')) {
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`dbus-daemon exited (${code}): ${stderr}`)));
  });
  assert.ok(fs.existsSync(socketPath), `dbus-daemon listens on ${socketPath}`);
  return {
    socketPath,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGKILL');
      await gone;
    },
  };
}

const MANAGER = 'org.freedesktop.systemd1.Manager';
const MANAGER_PATH = '/org/freedesktop/systemd1';

export interface StartedUnit {
  name: string;
  mode: string;
  properties: Record<string, Variant>;
  aux: DBusValue[];
  dirs: string[];
}

/** The fake systemd. `hierarchies`: the mount points of the fake cgroupfs where systemd makes a scope's folder. */
export class FakeSystemd {
  readonly calls: string[] = [];
  readonly units = new Map<string, StartedUnit>();
  /** Failed units systemd keeps loaded (StartTransientUnit: UnitExists) until ResetFailedUnit. */
  readonly failed = new Set<string>();
  readonly started: StartedUnit[] = [];
  /** The result the next start job ends with ("done" unless a test says otherwise). */
  startResult = 'done';
  /** Do not emit JobRemoved (hull must then look at the unit's ActiveState). */
  silent = false;
  /** Close the client's connection right after answering StartTransientUnit (systemd or the bus going away). */
  dropAfterStart = false;
  private job = 0;
  /** Every connection to this systemd (one on a bus; peer to peer, one per client), where JobRemoved goes. */
  private readonly conns = new Set<DBusConnection>();
  private server: net.Server | undefined;

  /** How a scope's folder goes (default rm -r for a fake cgroupfs; rmdir on the real one). */
  removeDir: (dir: string) => void = (d) => fs.rmSync(d, { recursive: true, force: true });

  private constructor(private readonly hierarchies: readonly string[]) {}

  private serve(conn: DBusConnection): void {
    this.conns.add(conn);
    conn.onMethodCall = (m) => {
      try {
        this.handle(conn, m);
      } catch (err) {
        conn.replyError(m, 'org.freedesktop.DBus.Error.Failed', (err as Error).message);
      }
    };
  }

  /**
   * systemd's private socket (/run/systemd/private): peer to peer, no bus daemon. The server side of SASL
   * EXTERNAL here is the test's (it takes the uid claimed on trust).
   */
  static async startPeer(socketPath: string, hierarchies: readonly string[]): Promise<FakeSystemd> {
    const f = new FakeSystemd(hierarchies);
    f.server = net.createServer((sock) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const eol = buf.indexOf('\r\n');
          if (eol < 0) return;
          const line = buf.subarray(0, eol).toString('latin1');
          buf = buf.subarray(eol + 2);
          if (/^\0AUTH EXTERNAL [0-9a-f]+$/.test(line)) sock.write(`OK ${'f'.repeat(32)}\r\n`);
          else if (line === 'BEGIN') {
            sock.off('data', onData);
            sock.pause();
            f.serve(DBusConnection.overAuthenticatedSocket(sock, buf));
            return;
          } else sock.write('ERROR\r\n');
        }
      };
      sock.on('data', onData);
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => f.server!.listen(socketPath, r));
    return f;
  }

  static async start(socketPath: string, hierarchies: readonly string[]): Promise<FakeSystemd> {
    const conn = await DBusConnection.connect(socketPath, { bus: true });
    const [r] = await conn.call({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'RequestName',
      signature: 'su',
      body: ['org.freedesktop.systemd1', 4], // DBUS_NAME_FLAG_DO_NOT_QUEUE
    });
    assert.equal(r, 1, 'the primary owner of org.freedesktop.systemd1');
    const f = new FakeSystemd(hierarchies);
    f.serve(conn);
    return f;
  }

  close(): void {
    for (const c of this.conns) c.close();
    this.server?.close();
  }

  private unitPath(name: string): string {
    return `${MANAGER_PATH}/unit/${name.replace(/[^A-Za-z0-9]/g, (c) => `_${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}`;
  }

  private jobDone(unit: string, result: string): string {
    const id = ++this.job;
    const job = `${MANAGER_PATH}/job/${id}`;
    if (!this.silent) {
      setImmediate(() => {
        for (const c of this.conns) {
          if (c.closed) continue;
          c.emitSignal({
            path: MANAGER_PATH,
            interface: MANAGER,
            member: 'JobRemoved',
            signature: 'uoss',
            body: [id, job, unit, result],
          });
        }
      });
    }
    return job;
  }

  private handle(conn: DBusConnection, m: Message): void {
    const body = m.body ?? [];
    this.calls.push(`${m.member} ${typeof body[0] === 'string' ? body[0] : ''}`.trim());
    const err = (name: string, text: string): void => conn.replyError(m, name, text);
    if (m.interface === 'org.freedesktop.DBus.Properties' && m.member === 'Get') {
      const [iface, prop] = body as [string, string];
      if (m.path === MANAGER_PATH && iface === MANAGER && prop === 'Version')
        return conn.reply(m, 'v', [{ signature: 's', value: '252.30-1~deb12u2' }]);
      if (prop === 'ActiveState') {
        const unit = [...this.units.values()].find((u) => this.unitPath(u.name) === m.path);
        return conn.reply(m, 'v', [{ signature: 's', value: unit ? 'active' : 'inactive' }]);
      }
      return err('org.freedesktop.DBus.Error.UnknownProperty', `${iface}.${prop}`);
    }
    if (m.interface !== MANAGER || m.path !== MANAGER_PATH)
      return err('org.freedesktop.DBus.Error.UnknownMethod', `${m.interface}.${m.member}`);
    switch (m.member) {
      case 'StartTransientUnit': {
        assert.equal(m.signature, 'ssa(sv)a(sa(sv))');
        const [name, mode, props, aux] = body as [string, string, [string, Variant][], DBusValue[]];
        if (this.units.has(name) || this.failed.has(name))
          return err('org.freedesktop.systemd1.UnitExists', `Unit ${name} already exists.`);
        const properties = Object.fromEntries(props);
        const slice = (properties.Slice?.value as string | undefined) ?? 'system.slice';
        const words = slice.slice(0, -'.slice'.length).split('-');
        const sliceDir = words.map((_w, i) => `${words.slice(0, i + 1).join('-')}.slice`).join('/');
        const dirs = this.hierarchies.map((h) => path.join(h, sliceDir, name));
        const pids = (properties.PIDs?.value ?? []) as number[];
        const u: StartedUnit = { name, mode, properties, aux, dirs };
        this.started.push(u);
        const result = this.startResult;
        if (result === 'done') {
          this.units.set(name, u);
          for (const d of dirs) {
            fs.mkdirSync(d, { recursive: true });
            fs.writeFileSync(path.join(d, 'cgroup.procs'), pids.join('\n'));
          }
        }
        conn.reply(m, 'o', [this.jobDone(name, result)]);
        if (this.dropAfterStart) setImmediate(() => conn.close());
        return;
      }
      case 'StopUnit': {
        const [name] = body as [string];
        const u = this.units.get(name);
        if (!u) return err('org.freedesktop.systemd1.NoSuchUnit', `Unit ${name} not loaded.`);
        this.units.delete(name);
        for (const d of u.dirs) this.removeDir(d);
        return conn.reply(m, 'o', [this.jobDone(name, 'done')]);
      }
      case 'ResetFailedUnit':
        this.failed.delete(body[0] as string);
        return conn.reply(m);
      case 'GetUnit': {
        const [name] = body as [string];
        if (!this.units.has(name)) return err('org.freedesktop.systemd1.NoSuchUnit', `Unit ${name} not loaded.`);
        return conn.reply(m, 'o', [this.unitPath(name)]);
      }
      default:
        return err('org.freedesktop.DBus.Error.UnknownMethod', `${m.member}`);
    }
  }
}
