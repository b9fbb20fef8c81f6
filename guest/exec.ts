/** Runs a program with an argv array (never a shell) and collects its output. */
import { execFile } from 'node:child_process';

export interface RunOptions {
  /** Resolve with the exit code instead of rejecting when the program exits non-zero. */
  allowFailure?: boolean;
  /** Environment for the program (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

const MAX_BUFFER = 256 * 1024 * 1024;

export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // spawns: wrapper; run's callers name the program
    execFile(
      command,
      args,
      { maxBuffer: MAX_BUFFER, encoding: 'utf8', env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        if (error && (code === -1 || !options.allowFailure)) {
          const detail = stderr.trim() || error.message;
          reject(new Error(`${command} ${args.join(' ')}: ${detail}`, { cause: error }));
          return;
        }
        resolve({ stdout, stderr, code });
      },
    );
  });
}

/** Runs a program and returns its stdout as bytes. */
export function runBinary(command: string, args: readonly string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // spawns: wrapper; runBinary's callers name the program
    execFile(command, args, { maxBuffer: MAX_BUFFER, encoding: 'buffer' }, (error, stdout, stderr) => {
      if (error)
        reject(
          new Error(`${command} ${args.join(' ')}: ${stderr.toString().trim() || error.message}`, { cause: error }),
        );
      else resolve(stdout);
    });
  });
}
