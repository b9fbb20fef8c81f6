/**
 * containerd-shim-hull-v2's entry point. `start` and `delete` load only what they need (start-up time is part of
 * every container start); the daemon loads the rest.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseFlags } from './flags';

/** hull's version, from package.json: dist/shim/main.js in a checkout, <prefix>/lib/hull/shim.js when installed. */
function hullVersion(): string {
  const file = [path.join(__dirname, '..', '..', 'package.json'), path.join(__dirname, 'package.json')].find((f) =>
    fs.existsSync(f),
  );
  return file ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version : 'unknown';
}

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
    fs.writeSync(1, `containerd-shim-hull-v2:\n  Version: ${hullVersion()}\n  Runtime: io.containerd.hull.v2\n`);
    return;
  }
  if (flags.info) {
    // Before any other flag is looked at, as containerd's shims do: containerd runs `<shim> -info` alone.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
    const { runtimeInfo } = require('./info') as typeof import('./info');
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
    const { readStdin } = require('./stdin') as typeof import('./stdin');
    const out = runtimeInfo(hullVersion(), await readStdin());
    for (let off = 0; off < out.length;) off += fs.writeSync(1, out, off);
    process.exit(0);
  }
  try {
    if (flags.action !== 'daemon' && (!flags.namespace || !flags.id))
      throw new Error('-namespace and -id are required');
    switch (flags.action) {
      case 'start': {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: each action loads only its own modules
        const { start } = require('./start') as typeof import('./start');
        const out = await start(flags, entry);
        for (let off = 0; off < out.length;) off += fs.writeSync(1, out, off);
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
