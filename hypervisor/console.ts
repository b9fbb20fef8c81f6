/**
 * The guest's serial console (ttyS0). QEMU writes it to its stdout, a pipe the driver reads; nothing of it is kept
 * on disk. The guest decides how much it writes, so everything kept or forwarded here is bounded:
 *   - the last lines stay in memory (at most `maxLines` lines and `maxBytes` bytes; each line at most
 *     `maxLineBytes`, cut with guestText's "…(N bytes more)"), for boot errors and unexpected exits;
 *   - with `forward`, lines also go into the shim's log with `source: "console"`, at debug level except the kernel's
 *     error reports (guest-log.ts: ConsoleClassifier), at most `linesPerWindow` per `windowMs`; lines over that
 *     are counted and the count logged ("N guest console lines not logged") when the next window opens or the
 *     console ends.
 * Totals (bytes, lines, lines not logged) are kept for the record.
 */
import { guestText } from '../errors';
import type { Logger } from '../log';
import { BoundedLines, ConsoleClassifier, LogRate } from './guest-log';

export interface ConsoleLimits {
  maxLines: number;
  maxBytes: number;
  maxLineBytes: number;
  linesPerWindow: number;
  windowMs: number;
}

export const DEFAULT_CONSOLE_LIMITS: Readonly<ConsoleLimits> = Object.freeze({
  maxLines: 2000,
  maxBytes: 256 * 1024,
  maxLineBytes: 1024,
  linesPerWindow: 200,
  windowMs: 1000,
});

export class GuestConsole {
  readonly #limits: ConsoleLimits;
  readonly #split: BoundedLines;
  readonly #rate: LogRate;
  readonly #classifier = new ConsoleClassifier();
  /** Kept lines, oldest first, and their total length. */
  #lines: string[] = [];
  #keptBytes = 0;
  #ended = false;
  readonly totals = { bytes: 0, lines: 0, notLogged: 0 };

  constructor(
    logger: Logger,
    private readonly forward: boolean,
    limits: Partial<ConsoleLimits> = {},
    now: () => number = () => performance.now(),
  ) {
    this.#limits = { ...DEFAULT_CONSOLE_LIMITS, ...limits };
    this.#split = new BoundedLines(this.#limits.maxLineBytes, (raw, cut) => this.#line(raw, cut));
    this.#rate = new LogRate(logger, this.#limits, 'guest console lines', 'console', now);
  }

  /** Bytes QEMU wrote to the console. */
  push(chunk: Buffer): void {
    if (this.#ended) return;
    this.totals.bytes += chunk.length;
    this.#split.push(chunk);
  }

  /** The console ended (QEMU exited): the last partial line, and the count of lines not logged. */
  end(): void {
    if (this.#ended) return;
    this.#split.end();
    this.#ended = true;
    this.#rate.flush();
  }

  /** The last `n` kept lines (all kept lines by default), oldest first. */
  tail(n = this.#limits.maxLines): string[] {
    return this.#lines.slice(-n);
  }

  #line(raw: string, cut: number): void {
    if (raw.trim() === '' && cut === 0) return;
    const line = guestText(raw, this.#limits.maxLineBytes, { moreBytes: cut });
    this.totals.lines++;
    this.#keep(line);
    if (this.forward) {
      this.#rate.log(this.#classifier.classify(line), { source: 'console', line }, 'guest console');
      this.totals.notLogged = this.#rate.notLogged;
    }
  }

  #keep(line: string): void {
    this.#lines.push(line);
    this.#keptBytes += line.length;
    while (
      this.#lines.length > this.#limits.maxLines ||
      (this.#keptBytes > this.#limits.maxBytes && this.#lines.length > 1)
    ) {
      this.#keptBytes -= this.#lines.shift()!.length;
    }
  }
}
