/**
 * The agent's log. Once the host's log port (virtio-serial `agent.log.0`, AGENT_LOG_PORT_NAME) is open, every record
 * goes there as one JSON line `{"level","msg","fields"}` of at most RECORD_MAX_BYTES bytes, and the host puts it into
 * the shim's log with `source: "agent"` (hypervisor/guest-log.ts). Before the port is open (early boot), when the
 * host is not connected to it (the write fails with ENODEV) or once it failed, records go to stderr, which is the
 * guest console, as "hull-agent <level> <msg> <fields as JSON>".
 *
 * The port is opened non-blocking: a host that stops reading must never stall the agent. A record that does not
 * fit waits in a small queue (QUEUE_MAX records), retried every RETRY_MS; past that the oldest are dropped and
 * counted, and the count goes out as a record of its own once the port takes records again.
 */
import fs from 'node:fs';

type Fields = Record<string, unknown>;
export type Level = 'debug' | 'info' | 'warn' | 'error';

/** The virtio-serial port's name (AGENT_LOG_SERIAL_NAME in hypervisor/guest-log.ts). */
export const AGENT_LOG_PORT_NAME = 'agent.log.0';
/** The message of the record that counts dropped records (AGENT_DROPPED_MSG on the host). */
export const DROPPED_MSG = 'log records dropped (the host did not read them in time)';
/** A record's line, newline included, is at most this long (AGENT_RECORD_MAX_BYTES on the host). */
export const RECORD_MAX_BYTES = 4096;
/** Each string field and the message are cut to this many characters first. */
const TEXT_MAX_CHARS = 1024;
const QUEUE_MAX = 256;
const RETRY_MS = 50;

/** Cuts long strings; anything a record cannot carry as JSON becomes its String(). */
function boundedFields(fields: Fields): Fields {
  const out: Fields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (typeof v === 'string') out[k] = v.length > TEXT_MAX_CHARS ? `${v.slice(0, TEXT_MAX_CHARS)}…` : v;
    else if (v === null || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
    else if (v === undefined) continue;
    else {
      let json: string | undefined;
      try {
        json = JSON.stringify(v);
      } catch {
        json = undefined; // a cycle, a BigInt inside
      }
      json ??= typeof v === 'bigint' ? v.toString() : `[${typeof v}]`;
      out[k] = json.length > TEXT_MAX_CHARS ? `${json.slice(0, TEXT_MAX_CHARS)}…` : json;
    }
  }
  return out;
}

/** One record as its JSON line (newline included), never longer than RECORD_MAX_BYTES. */
export function formatRecord(level: Level, msg: string, fields?: Fields): Buffer {
  const m = msg.length > TEXT_MAX_CHARS ? `${msg.slice(0, TEXT_MAX_CHARS)}…` : msg;
  const f = fields && Object.keys(fields).length ? boundedFields(fields) : undefined;
  let line = Buffer.from(`${JSON.stringify(f ? { level, msg: m, fields: f } : { level, msg: m })}\n`);
  if (line.length > RECORD_MAX_BYTES) {
    // Too many fields: say so rather than cut JSON in two.
    line = Buffer.from(
      `${JSON.stringify({
        level,
        msg: m,
        fields: {
          fieldsCut: true,
          fieldNames: Object.keys(f ?? {})
            .join(',')
            .slice(0, 512),
        },
      })}\n`,
    );
  }
  if (line.length > RECORD_MAX_BYTES) line = Buffer.from(`${JSON.stringify({ level, msg: m.slice(0, 256) })}\n`);
  return line;
}

function toStderr(level: Level, msg: string, fields?: Fields): void {
  const extra = fields && Object.keys(fields).length ? ` ${JSON.stringify(boundedFields(fields))}` : '';
  process.stderr.write(`hull-agent ${level} ${msg}${extra}\n`);
}

/** The log port while it is open; the queue of lines that did not fit yet; records dropped since the last report. */
interface QueuedRecord {
  line: Buffer;
  level: Level;
  msg: string;
  fields?: Fields;
}

interface PortState {
  fd: number;
  queue: QueuedRecord[];
  dropped: number;
  retry?: NodeJS.Timeout;
}

/** Where records go: the log port when open, else stderr. Injectable writes for tests. */
export class AgentLogger {
  #port: PortState | undefined;

  constructor(
    private readonly writeSync: (fd: number, buf: Buffer) => number = (fd, buf) => fs.writeSync(fd, buf),
    private readonly fallback: (level: Level, msg: string, fields?: Fields) => void = toStderr,
  ) {}

  /** Records go to this open, non-blocking port from now on. */
  usePort(fd: number): void {
    this.#port = { fd, queue: [], dropped: 0 };
  }

  get portOpen(): boolean {
    return this.#port !== undefined;
  }

  /** Records queued for the port, and dropped since the last report (for tests). */
  get pending(): { queued: number; dropped: number } {
    return { queued: this.#port?.queue.length ?? 0, dropped: this.#port?.dropped ?? 0 };
  }

  write(level: Level, msg: string, fields?: Fields): void {
    const port = this.#port;
    if (!port) {
      this.fallback(level, msg, fields);
      return;
    }
    port.queue.push({ line: formatRecord(level, msg, fields), level, msg, ...(fields ? { fields } : {}) });
    while (port.queue.length > QUEUE_MAX) {
      port.queue.shift();
      port.dropped++;
    }
    this.#flush();
  }

  #flush(): void {
    const port = this.#port;
    if (!port || port.retry) return;
    for (;;) {
      // The count of dropped records goes first, and is cleared only once it is out (never queued: it would be
      // dropped itself).
      const report = port.dropped > 0;
      const next: QueuedRecord | undefined = report
        ? {
            line: formatRecord('warn', DROPPED_MSG, { dropped: port.dropped }),
            level: 'warn',
            msg: DROPPED_MSG,
            fields: { dropped: port.dropped },
          }
        : port.queue[0];
      if (!next) return;
      let written: number;
      try {
        written = this.writeSync(port.fd, next.line);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          // The host is slow: try again a little later.
          port.retry = setTimeout(() => {
            port.retry = undefined;
            this.#flush();
          }, RETRY_MS);
          port.retry.unref();
          return;
        }
        if (code === 'ENODEV' || code === 'EPIPE') {
          // The host is not connected to the port (yet, or any more): this record goes to the console.
          if (report) port.dropped = 0;
          else port.queue.shift();
          this.fallback(next.level, next.msg, next.fields);
          continue;
        }
        // Anything else: the port is unusable; everything goes to the console from now on.
        this.#port = undefined;
        try {
          fs.closeSync(port.fd);
        } catch {
          // already gone
        }
        this.fallback('warn', 'the log port failed; logging to the console', { error: (err as Error).message });
        if (report) this.fallback(next.level, next.msg, next.fields);
        for (const r of port.queue) this.fallback(r.level, r.msg, r.fields);
        return;
      }
      if (report) port.dropped = 0;
      else port.queue.shift();
      // A partial write (virtio-console takes up to 32 KiB at once, so not expected): the rest goes next.
      if (written < next.line.length) port.queue.unshift({ ...next, line: next.line.subarray(written) });
    }
  }
}

const logger = new AgentLogger();

/** Opens the log port (its device node) for the logger, non-blocking; a failure leaves the logger on stderr. */
export function openLogPort(device: string): void {
  try {
    logger.usePort(fs.openSync(device, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY));
  } catch (err) {
    logger.write('warn', 'cannot open the log port; logging to the console', {
      device,
      error: (err as Error).message,
    });
  }
}

export const log = {
  debug: (msg: string, fields?: Fields): void => logger.write('debug', msg, fields),
  info: (msg: string, fields?: Fields): void => logger.write('info', msg, fields),
  warn: (msg: string, fields?: Fields): void => logger.write('warn', msg, fields),
  error: (msg: string, fields?: Fields): void => logger.write('error', msg, fields),
};
