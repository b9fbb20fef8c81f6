/**
 * The guest's serial console (ttyS0). QEMU writes it to its stdout, a pipe the driver reads; nothing of it is kept
 * on disk. The guest decides how much it writes, so everything kept or forwarded here is bounded:
 *   - the last lines stay in memory (at most `maxLines` lines and `maxBytes` bytes; each line at most
 *     `maxLineBytes`, cut with guestText's "…(N bytes more)"), for boot errors and unexpected exits;
 *   - with `forward`, lines also go into the shim's log, at most `linesPerWindow` per `windowMs`; lines over that
 *     are counted and the count logged ("N guest console lines not logged") when the next window opens or the
 *     console ends.
 * Totals (bytes, lines, lines not logged) are kept for the record.
 */
import { StringDecoder } from 'node:string_decoder';
import { guestText } from '../errors';
import type { Logger } from '../log';

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
  readonly #decoder = new StringDecoder('utf8');
  /** Kept lines, oldest first, and their total length. */
  #lines: string[] = [];
  #keptBytes = 0;
  /** The line being received (at most maxLineBytes characters kept) and how much of it was cut. */
  #partial = '';
  #partialCut = 0;
  #windowStart = -Infinity;
  #windowLines = 0;
  /** Lines not logged since the last report. */
  #unlogged = 0;
  #ended = false;
  readonly totals = { bytes: 0, lines: 0, notLogged: 0 };

  constructor(
    private readonly logger: Logger,
    private readonly forward: boolean,
    limits: Partial<ConsoleLimits> = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#limits = { ...DEFAULT_CONSOLE_LIMITS, ...limits };
  }

  /** Bytes QEMU wrote to the console. */
  push(chunk: Buffer): void {
    if (this.#ended) return;
    this.totals.bytes += chunk.length;
    this.#take(this.#decoder.write(chunk));
  }

  /** The console ended (QEMU exited): the last partial line, and the count of lines not logged. */
  end(): void {
    if (this.#ended) return;
    this.#take(this.#decoder.end());
    if (this.#partial !== '' || this.#partialCut > 0) this.#line();
    this.#ended = true;
    this.#report();
  }

  /** The last `n` kept lines (all kept lines by default), oldest first. */
  tail(n = this.#limits.maxLines): string[] {
    return this.#lines.slice(-n);
  }

  #take(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      const piece = nl < 0 ? text.slice(start) : text.slice(start, nl);
      const room = this.#limits.maxLineBytes + 1 - this.#partial.length; // one more: guestText then sees it is long
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
    const raw = this.#partial.replace(/\r/g, '');
    const cut = this.#partialCut;
    this.#partial = '';
    this.#partialCut = 0;
    if (raw.trim() === '' && cut === 0) return;
    const line = guestText(raw, this.#limits.maxLineBytes, { moreBytes: cut });
    this.totals.lines++;
    this.#keep(line);
    if (this.forward) this.#log(line);
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

  #log(line: string): void {
    const t = this.now();
    if (t - this.#windowStart >= this.#limits.windowMs) {
      this.#report();
      this.#windowStart = t;
      this.#windowLines = 0;
    }
    if (this.#windowLines >= this.#limits.linesPerWindow) {
      this.#unlogged++;
      this.totals.notLogged++;
      return;
    }
    this.#windowLines++;
    this.logger.info({ console: line }, 'guest console');
  }

  #report(): void {
    if (this.#unlogged === 0) return;
    const n = this.#unlogged;
    this.#unlogged = 0;
    this.logger.warn(
      {
        notLogged: n,
        totalNotLogged: this.totals.notLogged,
        limit: `${this.#limits.linesPerWindow} lines per ${this.#limits.windowMs} ms`,
      },
      `${n} guest console lines not logged (the guest wrote faster than the log's limit)`,
    );
  }
}
