/**
 * A D-Bus connection over a unix socket: SASL EXTERNAL authentication (the uid, in hex of its decimal digits),
 * then messages. `call` sends a method call and resolves with the reply's body (an error reply is a DBusError with
 * the error's name); signals go to `onSignal` listeners; method calls addressed to this connection go to
 * `onMethodCall` (the fake services of tests), answered with `reply` / `replyError`. Through a bus daemon, `Hello`
 * comes first (`bus: true`); peer to peer (systemd's /run/systemd/private) there is no daemon and no Hello.
 *
 * Bounds: every call has a deadline; an incoming message larger than `maxMessageBytes` closes the connection; an
 * authentication line longer than 16 KiB too. One owner: whoever connects closes.
 */
import net from 'node:net';
import { DBusProtocolError, type DBusValue } from './marshal';
import { MessageDecoder, MessageType, NO_REPLY_EXPECTED, encodeMessage, type Message } from './message';

export const DBUS_SERVICE = 'org.freedesktop.DBus';
const DBUS_PATH = '/org/freedesktop/DBus';
const DEFAULT_MAX_MESSAGE_BYTES = 1 << 20;
const DEFAULT_CALL_TIMEOUT_MS = 25_000; // libdbus's default
const MAX_AUTH_LINE = 16 << 10;

/** The remote side answered with an error message: `errorName` is its D-Bus name (org.freedesktop.systemd1.NoSuchUnit). */
export class DBusError extends Error {
  constructor(
    readonly errorName: string,
    message: string,
  ) {
    super(`${errorName}: ${message}`);
  }
}

/** The connection itself failed: connect, authentication, protocol, deadline, or closed. `code`: errno if any. */
export class DBusConnectionError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export interface ConnectOptions {
  /** Through a bus daemon (Hello first), or peer to peer. */
  bus: boolean;
  /** Deadline of the connection and authentication (and Hello). Default 5 s. */
  timeoutMs?: number;
  maxMessageBytes?: number;
  /** The uid to authenticate as (default: this process's effective uid). */
  uid?: number;
}

export interface CallRequest {
  destination?: string;
  path: string;
  interface?: string;
  member: string;
  signature?: string;
  body?: DBusValue[];
  timeoutMs?: number;
}

export interface SignalRequest {
  destination?: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: DBusValue[];
}

export class DBusConnection {
  private serial = 0;
  private readonly pending = new Map<
    number,
    { resolve: (m: Message) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  private readonly signalListeners = new Set<(m: Message) => void>();
  private readonly closeListeners = new Set<(err: Error) => void>();
  private closedWith: Error | undefined;
  /** This connection's unique name on a bus (from Hello). */
  uniqueName: string | undefined;
  /** Method calls addressed to this connection; without a handler they get org.freedesktop.DBus.Error.UnknownMethod. */
  onMethodCall: ((m: Message) => void) | undefined;

  private constructor(
    private readonly socket: net.Socket,
    maxMessageBytes: number,
    leftover: Buffer,
  ) {
    const decoder = new MessageDecoder(maxMessageBytes);
    const take = (data: Buffer): void => {
      let messages: Message[];
      try {
        messages = decoder.push(data);
      } catch (err) {
        this.fail(new DBusConnectionError(`D-Bus protocol error: ${(err as Error).message}`));
        return;
      }
      try {
        for (const m of messages) this.dispatch(m);
      } catch (err) {
        this.fail(new DBusConnectionError(`D-Bus: a handler failed: ${(err as Error).message}`));
      }
    };
    socket.on('data', take);
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.fail(new DBusConnectionError(`D-Bus connection: ${err.message}`, err.code)),
    );
    socket.on('close', () => this.fail(new DBusConnectionError('D-Bus connection closed')));
    // On the next tick, so that whoever made the connection sets its handlers first; then the rest, in order.
    process.nextTick(() => {
      if (leftover.length > 0) take(leftover);
      socket.resume();
    });
  }

  /**
   * A connection over a socket whose server side has authenticated the peer itself (a fake service in tests: the
   * server side of SASL is not here, as Node cannot read a unix socket's peer credentials to check the uid claimed).
   */
  static overAuthenticatedSocket(
    socket: net.Socket,
    leftover = Buffer.alloc(0),
    maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
  ): DBusConnection {
    return new DBusConnection(socket, maxMessageBytes, leftover);
  }

  /** Connects to `socketPath`, authenticates, and on a bus says Hello. */
  static async connect(socketPath: string, o: ConnectOptions): Promise<DBusConnection> {
    const timeoutMs = o.timeoutMs ?? 5_000;
    const uid = o.uid ?? process.geteuid?.() ?? 0;
    const socket = net.createConnection({ path: socketPath });
    let conn: DBusConnection | undefined;
    const timer = setTimeout(
      () =>
        socket.destroy(new DBusConnectionError(`${socketPath}: no D-Bus answer within ${timeoutMs} ms`, 'ETIMEDOUT')),
      timeoutMs,
    );
    try {
      const leftover = await authenticate(socket, uid);
      conn = new DBusConnection(socket, o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES, leftover);
      if (o.bus) {
        const [name] = await conn.call({
          destination: DBUS_SERVICE,
          path: DBUS_PATH,
          interface: DBUS_SERVICE,
          member: 'Hello',
          timeoutMs,
        });
        if (typeof name !== 'string') throw new DBusConnectionError('Hello answered without a name');
        conn.uniqueName = name;
      }
      return conn;
    } catch (err) {
      socket.destroy();
      const e = err as NodeJS.ErrnoException;
      if (err instanceof DBusConnectionError || err instanceof DBusError) throw err;
      throw new DBusConnectionError(`${socketPath}: ${e.message}`, e.code);
    } finally {
      clearTimeout(timer);
    }
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  close(): void {
    this.fail(new DBusConnectionError('D-Bus connection closed'));
  }

  /** Sends a method call; resolves with the reply's body, rejects with DBusError (an error reply) or DBusConnectionError. */
  call(req: CallRequest): Promise<DBusValue[]> {
    return new Promise<Message>((resolve, reject) => {
      if (this.closedWith) return reject(this.closedWith);
      const serial = this.nextSerial();
      const timeoutMs = req.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
      const timer = setTimeout(() => {
        this.pending.delete(serial);
        reject(new DBusConnectionError(`${req.member}: no reply within ${timeoutMs} ms`, 'ETIMEDOUT'));
      }, timeoutMs);
      this.pending.set(serial, { resolve, reject, timer });
      try {
        this.send({ type: MessageType.MethodCall, serial, ...req });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(serial);
        reject(err instanceof Error ? err : new DBusConnectionError(String(err)));
      }
    }).then((m) => {
      if (m.type === MessageType.Error) {
        const text = typeof m.body?.[0] === 'string' ? m.body[0] : '';
        throw new DBusError(m.errorName!, text);
      }
      return m.body ?? [];
    });
  }

  /** Listens to every signal this connection receives; returns the function that stops listening. */
  onSignal(listener: (m: Message) => void): () => void {
    this.signalListeners.add(listener);
    return () => this.signalListeners.delete(listener);
  }

  /** Called once when the connection closes, for whatever reason; returns the function that stops listening. */
  onClose(listener: (err: Error) => void): () => void {
    if (this.closedWith) {
      const err = this.closedWith;
      queueMicrotask(() => listener(err));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  emitSignal(s: SignalRequest): void {
    this.send({ type: MessageType.Signal, serial: this.nextSerial(), ...s });
  }

  reply(call: Message, signature = '', body: DBusValue[] = []): void {
    if (((call.flags ?? 0) & NO_REPLY_EXPECTED) !== 0) return;
    this.send({
      type: MessageType.MethodReturn,
      serial: this.nextSerial(),
      replySerial: call.serial,
      destination: call.sender,
      signature,
      body,
    });
  }

  replyError(call: Message, errorName: string, text: string): void {
    if (((call.flags ?? 0) & NO_REPLY_EXPECTED) !== 0) return;
    this.send({
      type: MessageType.Error,
      serial: this.nextSerial(),
      replySerial: call.serial,
      destination: call.sender,
      errorName,
      signature: 's',
      body: [text],
    });
  }

  private nextSerial(): number {
    this.serial = this.serial >= 0xffffffff ? 1 : this.serial + 1;
    return this.serial;
  }

  private send(m: Message): void {
    if (this.closedWith) throw this.closedWith;
    this.socket.write(encodeMessage(m));
  }

  private dispatch(m: Message): void {
    if (m.type === MessageType.MethodReturn || m.type === MessageType.Error) {
      const p = this.pending.get(m.replySerial!);
      if (!p) return; // a late reply to a call that timed out
      this.pending.delete(m.replySerial!);
      clearTimeout(p.timer);
      p.resolve(m);
    } else if (m.type === MessageType.Signal) {
      for (const l of [...this.signalListeners]) l(m);
    } else if (this.onMethodCall) {
      this.onMethodCall(m);
    } else {
      this.replyError(m, 'org.freedesktop.DBus.Error.UnknownMethod', `no method ${m.member ?? ''} here`);
    }
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.socket.destroy();
    for (const l of [...this.closeListeners]) l(err);
    this.closeListeners.clear();
  }
}

/**
 * SASL EXTERNAL (the specification's "Authentication Protocol"): a NUL byte, `AUTH EXTERNAL <hex uid>`, `OK <guid>`,
 * `BEGIN`. Resolves with any bytes the server sent after its OK line.
 */
function authenticate(socket: net.Socket, uid: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let text = Buffer.alloc(0);
    const done = (err: Error | undefined, rest?: Buffer): void => {
      socket.pause(); // nothing is lost before the connection's own listener takes over
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(rest!);
    };
    const onError = (err: NodeJS.ErrnoException): void => done(err);
    const onClose = (): void =>
      done(new DBusConnectionError('the D-Bus server closed the connection during authentication'));
    const onData = (data: Buffer): void => {
      text = Buffer.concat([text, data]);
      const eol = text.indexOf('\r\n');
      if (eol < 0) {
        if (text.length > MAX_AUTH_LINE) done(new DBusProtocolError('D-Bus authentication line too long'));
        return;
      }
      const line = text.subarray(0, eol).toString('latin1');
      if (/^OK [0-9a-fA-F]{32}$/.test(line)) {
        socket.write('BEGIN\r\n');
        done(undefined, text.subarray(eol + 2));
      } else {
        done(new DBusConnectionError(`D-Bus authentication refused: ${JSON.stringify(line.slice(0, 120))}`, 'EACCES'));
      }
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    const hexUid = Buffer.from(String(uid), 'ascii').toString('hex');
    socket.write(Buffer.concat([Buffer.from([0]), Buffer.from(`AUTH EXTERNAL ${hexUid}\r\n`, 'ascii')]));
  });
}
