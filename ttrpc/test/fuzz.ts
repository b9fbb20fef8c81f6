/**
 * The long fuzzing run of ttrpc-ts (`make fuzz`): `node ttrpc/dist/test/fuzz.js [--iterations N] [--seed N]` runs N
 * byte streams through the frame decoder and N frames through the echo server, and prints one line per target.
 */
import { formatResult, fuzzArgs, fuzzDecoder, fuzzServer } from '../src/fuzz';
import { echoTarget } from './fuzz-target';

async function main(): Promise<void> {
  const { iterations, seed } = fuzzArgs(process.argv.slice(2));
  process.on('warning', (w) => {
    console.error(`process warning: ${w.name}: ${w.message}`);
    process.exitCode = 1;
  });
  const progress = (what: string) => (n: number) => console.error(`${what}: ${n}`);
  console.log(formatResult(fuzzDecoder({ iterations, seed, onProgress: progress('decoder') })));
  const target = echoTarget();
  console.log(formatResult(await fuzzServer(target, { iterations, seed, onProgress: progress('echo server') })));
  await target.server.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
