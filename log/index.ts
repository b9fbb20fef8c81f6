/**
 * log/: the structured logger interface every host layer takes (a pino-compatible subset: the shim passes its pino
 * logger, tests and tools NOOP_LOGGER). It sits at the bottom of the layers beside errors/ and imports nothing.
 */

/** Structured logger (pino-compatible subset). */
export interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  /** Whether a line at this level would be written (pino's); absent = every level is. */
  isLevelEnabled?(level: 'debug' | 'info' | 'warn' | 'error'): boolean;
}

export const NOOP_LOGGER: Logger = Object.freeze({
  info: () => undefined,
  warn: () => undefined,
  debug: () => undefined,
  error: () => undefined,
});
