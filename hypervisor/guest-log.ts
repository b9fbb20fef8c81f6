/**
 * The guest's logs as the shim's log gets them. Two sources, both untrusted, both bounded:
 *   - the kernel console (ttyS0, QEMU's stdout; console.ts): `source: "console"`, debug level, except lines that are
 *     clearly errors (classifyConsoleLine: panics, Oopses, BUG:, call traces, the OOM killer, hung tasks,
 *     segfaults), which are warn or error;
 *   - the agent's own log, JSON records on a virtio-serial port of its own (AGENT_LOG_SERIAL_NAME; agent/log.ts),
 *     read by AgentLog: `source: "agent"`, debug level unless the record says warn or error.
 * Each line is cut at a byte cap (BoundedLines), and each source goes into the log at most `linesPerWindow` lines
 * per `windowMs` (LogRate): what exceeds it is counted, not stored, and the count is logged in one line when the
 * next window opens or the source ends. Lines the logger would drop anyway (debug lines at info level) are not
 * counted against the rate.
 */
import { StringDecoder } from 'node:string_decoder';
import { guestText } from '../errors';
import type { Logger } from '../log';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Splits bytes into lines of at most `maxLineBytes` (plus the count of bytes cut off each); CRs dropped. */
export class BoundedLines {
  readonly #decoder = new StringDecoder('utf8');
  #partial = '';
  #partialCut = 0;
  #ended = false;

  constructor(
    private readonly maxLineBytes: number,
    private readonly onLine: (text: string, cutBytes: number) => void,
  ) {}

  push(chunk: Buffer): void {
    if (!this.#ended) this.#take(this.#decoder.write(chunk));
  }

  /** The last partial line, if any; later pushes are ignored. */
  end(): void {
    if (this.#ended) return;
    this.#take(this.#decoder.end());
    this.#ended = true;
    if (this.#partial !== '' || this.#partialCut > 0) this.#line();
  }

  #take(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      const piece = nl < 0 ? text.slice(start) : text.slice(start, nl);
      // Characters, not bytes: one more than the cap is kept, so that guestText sees the line is long and cuts it
      // at a byte boundary.
      const room = this.maxLineBytes + 1 - this.#partial.length;
      if (piece.length <= room) this.#partial += piece;
      else {
        this.#partial += piece.slice(0, Math.max(0, room));
        this.#partialCut += Buffer.byteLength(piece.slice(Math.max(0, room)));
      }
      if (nl < 0) return;
      this.#line();
      start = nl + 1;
    }
  }

  #line(): void {
    const text = this.#partial.replace(/\r/g, '');
    const cut = this.#partialCut;
    this.#partial = '';
    this.#partialCut = 0;
    this.onLine(text, cut);
  }
}

export interface RateLimits {
  linesPerWindow: number;
  windowMs: number;
}

/**
 * At most `linesPerWindow` log lines per `windowMs` from one source; over that, lines are counted and the count is
 * logged (warn) when the window ends (a timer, unref'd), the next window opens, or the source ends (`flush`).
 */
export class LogRate {
  #windowStart = -Infinity;
  #windowLines = 0;
  #unlogged = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Every line not logged for the rate, since the start. */
  notLogged = 0;

  constructor(
    private readonly logger: Logger,
    private readonly limits: RateLimits,
    /** "guest console lines", "agent log records": the report's words. */
    private readonly what: string,
    private readonly source: string,
    private readonly now: () => number,
    /** More fields for the report (called once per report). */
    private readonly reportFields: () => object = () => ({}),
  ) {}

  /** Logs (obj, msg) at `level` if the rate allows (true); otherwise counts it (false). */
  log(level: LogLevel, obj: object, msg: string): boolean {
    if (this.logger.isLevelEnabled && !this.logger.isLevelEnabled(level)) return true;
    const t = this.now();
    if (t - this.#windowStart >= this.limits.windowMs) {
      this.flush();
      this.#windowStart = t;
      this.#windowLines = 0;
    }
    if (this.#windowLines >= this.limits.linesPerWindow) {
      this.#unlogged++;
      this.notLogged++;
      if (this.#timer === undefined) {
        this.#timer = setTimeout(() => this.flush(), Math.max(0, this.#windowStart + this.limits.windowMs - t));
        this.#timer.unref();
      }
      return false;
    }
    this.#windowLines++;
    this.logger[level](obj, msg);
    return true;
  }

  /** Logs the count of lines not logged since the last report, if any. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#unlogged === 0) return;
    const n = this.#unlogged;
    this.#unlogged = 0;
    this.logger.warn(
      {
        source: this.source,
        notLogged: n,
        totalNotLogged: this.notLogged,
        limit: `${this.limits.linesPerWindow} lines per ${this.limits.windowMs} ms`,
        ...this.reportFields(),
      },
      `${n} ${this.what} not logged (the guest wrote faster than the log's limit)`,
    );
  }
}

// ---- the kernel console -------------------------------------------------------------------------------------

/** printk's time prefix, "[    1.234567] ". */
const PRINTK_TIME = /^\[\s*\d+\.\d+\]\s?/;

/** Lines that start a kernel error report, most severe first: [pattern, level]. */
const CONSOLE_ERRORS: ReadonlyArray<readonly [RegExp, LogLevel]> = [
  [/Kernel panic - not syncing/, 'error'],
  [/\bOops\b/, 'error'],
  [/\bBUG:/, 'error'],
  [/general protection fault/, 'error'],
  [/Call Trace:/, 'error'],
  [/invoked oom-killer/, 'error'],
  [/Out of memory( and no killable processes)?:/, 'error'],
  [/Memory cgroup out of memory:/, 'error'],
  [/oom-kill:/, 'error'],
  [/INFO: task .* blocked for more than \d+ seconds/, 'error'],
  [/rcu_\w+ (self-)?detected stalls?/, 'error'],
  [/\bsegfault at\b/, 'warn'],
  [/\bWARNING: CPU: \d+ PID: \d+/, 'warn'],
  [/\btraps: .* (trap|general protection)/, 'warn'],
];

/** The lines that follow an error report's first line (registers, stack frames, module lists) and belong to it. */
const REPORT_CONTINUATION = [
  /^\s*(\? )?[\w.$]+\+0x[0-9a-f]+\/0x[0-9a-f]+/, // a stack frame: " ? do_syscall_64+0x5b/0x80 [mod]"
  /^\s*<\/?(TASK|IRQ|NMI|EOI)>/,
  /^\s*(RIP|RSP|RAX|RDX|RBP|R10|R13|FS|CS|CR2|DR0|DR3|Code|PKRU|Hardware name|Modules linked in|CPU: \d+ PID|Workqueue|Tainted|Mem-Info|Node \d|Call Trace|Kernel Offset|---\[ end)\b/,
  /^\s*(RIP|RSP|RAX|RDX|RBP|R10|R13|FS|CS|CR2|DR0|DR3):/,
  /^\s*\[\s*pid\s*\]|^\s*\[\s*\d+\]\s+\d+\s+\d+/, // the OOM killer's task table
  /^\s*(active_anon|free|Free swap|Total swap|\d+ pages)/,
  /^\s*(task:|Tasks state|oom-kill:constraint)/,
];

/**
 * Classifies kernel console lines: an error report's first line by CONSOLE_ERRORS, and the lines after it that
 * belong to the report (REPORT_CONTINUATION) at the same level; every other line is debug. The guest can write
 * anything to its console, so a "panic" line may be forged: it is still only a console line, rate-limited.
 */
export class ConsoleClassifier {
  /** The level of the report being continued, if any. */
  #report: LogLevel | undefined;

  classify(line: string): LogLevel {
    const text = line.replace(PRINTK_TIME, '');
    for (const [re, level] of CONSOLE_ERRORS) {
      if (re.test(text)) {
        this.#report = level;
        return level;
      }
    }
    if (this.#report !== undefined && REPORT_CONTINUATION.some((re) => re.test(text))) return this.#report;
    this.#report = undefined;
    return 'debug';
  }
}

/** One console line's level, without context (a report's first line). */
export function classifyConsoleLine(line: string): LogLevel {
  return new ConsoleClassifier().classify(line);
}

// ---- the agent's log ----------------------------------------------------------------------------------------

/** The virtio-serial port the agent writes its log records to (a sibling of the agent channel's port). */
export const AGENT_LOG_SERIAL_NAME = 'agent.log.0';
/** A record's line: at most this many bytes (the agent keeps its records under it; agent/log.ts). */
export const AGENT_RECORD_MAX_BYTES = 4096;
/** A record's message and each string field: at most this many bytes once cleaned. */
const RECORD_TEXT_MAX_BYTES = 1024;
const RECORD_MAX_FIELDS = 32;
/** A record in the in-memory tail: at most this many bytes. */
const TAIL_LINE_MAX_BYTES = 2048;
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
/** The agent's report of records it dropped itself (its queue for the port was full): agent/log.ts. */
export const AGENT_DROPPED_MSG = 'log records dropped (the host did not read them in time)';

export interface AgentRecord {
  /** The level the record claims (debug for an invalid record). */
  level: LogLevel;
  msg: string;
  /** The record's fields, checked: at most 32 names of [A-Za-z][A-Za-z0-9_.-]*, values cleaned and capped. */
  fields: Record<string, string | number | boolean | null>;
  /** Why the line is not a valid record (it is then logged as text, at debug level). */
  invalid?: string;
}

/**
 * One line of the agent's log, as the guest sent it (untrusted): a JSON object with `level` (one of debug, info,
 * warn, error), `msg` (a string) and optionally `fields` (an object). Anything else is an invalid record whose text
 * (cleaned, capped) is kept as its message at debug level. `cutBytes`: bytes the reader already cut off the line.
 */
export function parseAgentRecord(line: string, cutBytes = 0): AgentRecord {
  const invalid = (why: string): AgentRecord => ({
    level: 'debug',
    msg: guestText(line, RECORD_TEXT_MAX_BYTES, { moreBytes: cutBytes }),
    fields: {},
    invalid: why,
  });
  if (cutBytes > 0 || Buffer.byteLength(line) > AGENT_RECORD_MAX_BYTES)
    return invalid(`longer than ${AGENT_RECORD_MAX_BYTES} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return invalid('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return invalid('not a JSON object');
  const r = v as Record<string, unknown>;
  if (typeof r.level !== 'string' || !(LEVELS as readonly string[]).includes(r.level)) return invalid('no valid level');
  if (typeof r.msg !== 'string') return invalid('no message');
  const fields: AgentRecord['fields'] = {};
  if (r.fields !== undefined) {
    if (typeof r.fields !== 'object' || r.fields === null || Array.isArray(r.fields))
      return invalid('fields is not an object');
    const entries = Object.entries(r.fields);
    if (entries.length > RECORD_MAX_FIELDS) return invalid(`more than ${RECORD_MAX_FIELDS} fields`);
    for (const [k, val] of entries) {
      if (!FIELD_NAME.test(k)) return invalid('a field name is not [A-Za-z][A-Za-z0-9_.-]{0,63}');
      fields[k] =
        val === null || typeof val === 'boolean' || (typeof val === 'number' && Number.isFinite(val))
          ? val
          : guestText(typeof val === 'string' ? val : JSON.stringify(val), RECORD_TEXT_MAX_BYTES);
    }
  }
  return { level: r.level as LogLevel, msg: guestText(r.msg, RECORD_TEXT_MAX_BYTES), fields };
}

/** The shim log's level for a record: debug unless it is a warning or an error. */
export function agentRecordLevel(r: AgentRecord): LogLevel {
  return r.level === 'warn' || r.level === 'error' ? r.level : 'debug';
}

/** Records as text for the in-memory tail: "hull-agent <level> <msg> <fields as JSON>" (the agent's stderr format). */
export function formatAgentRecord(r: AgentRecord): string {
  const extra = Object.keys(r.fields).length ? ` ${JSON.stringify(r.fields)}` : '';
  return r.invalid ? `hull-agent invalid record (${r.invalid}): ${r.msg}` : `hull-agent ${r.level} ${r.msg}${extra}`;
}

/** A drop report counts at most this many records (more than the agent could drop between two reports). */
const MAX_DROP_REPORT = 1_000_000;

export interface AgentLogLimits extends RateLimits {
  /** Records kept in memory (agentLogTail). */
  maxLines: number;
}

export const DEFAULT_AGENT_LOG_LIMITS: Readonly<AgentLogLimits> = Object.freeze({
  maxLines: 200,
  linesPerWindow: 200,
  windowMs: 1000,
});

/**
 * The agent's log records from its port, into the shim's log (`source: "agent"`) and a short tail in memory (the
 * last `maxLines`, each at most 1 KiB of message plus its fields) for errors and tests.
 */
export class AgentLog {
  readonly #lines: BoundedLines;
  readonly #rate: LogRate;
  readonly #limits: AgentLogLimits;
  #tail: string[] = [];
  /** `droppedInGuest`: what the agent says it dropped (its drop reports, each a count; untrusted, capped). */
  readonly totals = { bytes: 0, records: 0, invalid: 0, notLogged: 0, droppedInGuest: 0 };
  /** Dropped in the guest, from drop reports that were themselves over the rate: told in the next report. */
  #unreportedDrops = 0;

  constructor(logger: Logger, limits: Partial<AgentLogLimits> = {}, now: () => number = () => performance.now()) {
    this.#limits = { ...DEFAULT_AGENT_LOG_LIMITS, ...limits };
    this.#rate = new LogRate(logger, this.#limits, 'agent log records', 'agent', now, () => {
      const n = this.#unreportedDrops;
      this.#unreportedDrops = 0;
      return n > 0 ? { droppedInGuest: n } : {};
    });
    this.#lines = new BoundedLines(AGENT_RECORD_MAX_BYTES, (text, cut) => this.#record(text, cut));
  }

  push(chunk: Buffer): void {
    this.totals.bytes += chunk.length;
    this.#lines.push(chunk);
  }

  /** The port closed (QEMU exited): the last partial record, and the count of records not logged. */
  end(): void {
    this.#lines.end();
    this.#rate.flush();
  }

  tail(n = this.#limits.maxLines): string[] {
    return this.#tail.slice(-n);
  }

  #record(text: string, cut: number): void {
    if (text.trim() === '' && cut === 0) return;
    const r = parseAgentRecord(text, cut);
    this.totals.records++;
    if (r.invalid) this.totals.invalid++;
    this.#tail.push(guestText(formatAgentRecord(r), TAIL_LINE_MAX_BYTES));
    if (this.#tail.length > this.#limits.maxLines) this.#tail.shift();
    const obj = r.invalid
      ? { source: 'agent', invalidRecord: r.invalid }
      : { source: 'agent', ...(r.level === 'info' ? { guestLevel: 'info' } : {}), fields: r.fields };
    const logged = this.#rate.log(agentRecordLevel(r), obj, r.msg);
    this.totals.notLogged = this.#rate.notLogged;
    const dropped = r.msg === AGENT_DROPPED_MSG ? r.fields.dropped : undefined;
    if (typeof dropped === 'number' && Number.isSafeInteger(dropped) && dropped > 0 && dropped <= MAX_DROP_REPORT) {
      this.totals.droppedInGuest += dropped;
      if (!logged) this.#unreportedDrops += dropped;
    }
  }
}
