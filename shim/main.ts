/**
 * containerd-shim-hull-v2's entry point. `start` and `delete` load only what they need (start-up time is part of
 * every container start); the daemon loads the rest.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseFlags } from './flags';

function fail(err: unknown): never {
  fs.writeSync(2, `containerd-shim-hull-v2: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

/** `entry` is the file containerd executes (the launcher in bin/); its folder locates the guest artefacts. */
export async function main(entry: string, argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  let flags;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    fail(err);
  }
  if (flags.version) {
    // dist/shim/main.js in a checkout; <prefix>/lib/hull/shim.js (a bundle with its package.json) when installed.
    const file = [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, 'package.json')].find((f) =>
      fs.existsSync(f),
    );
    const pkg = file ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }) : { version: 'unknown' };
    fs.writeSync(1, `containerd-shim-hull-v2:\n  Version: ${pkg.version}\n  Runtime: io.containerd.hull.v2\n`);
    return;
  }
  try {
    if (flags.action !== 'daemon' && (!flags.namespace || !flags.id))
      throw new Error('-namespace and -id are required');
    switch (flags.action) {
      case 'start': {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
        const { start } = require('./start') as typeof import('./start');
        fs.writeSync(1, await start(flags, entry));
        process.exit(0);
        break;
      }
      case 'delete': {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
        const { deleteContainer } = require('./delete') as typeof import('./delete');
        fs.writeSync(1, await deleteContainer(flags));
        process.exit(0);
        break;
      }
      case 'daemon': {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
        const { runDaemon } = require('./daemon') as typeof import('./daemon');
        await runDaemon(flags, path.dirname(fs.realpathSync(entry)));
        break;
      }
    }
  } catch (err) {
    fail(err);
  }
}
