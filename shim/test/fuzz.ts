/** The shim's long fuzzing run (`make fuzz`): `node dist/shim/test/fuzz.js [--iterations N] [--seed N]`. */
import { formatResult, fuzzArgs, fuzzServer } from 'ttrpc-ts';
import { shimTarget } from './fuzz-target';

async function main(): Promise<void> {
  const { iterations, seed } = fuzzArgs(process.argv.slice(2));
  process.on('warning', (w) => {
    console.error(`process warning: ${w.name}: ${w.message}`);
    process.exitCode = 1;
  });
  const target = shimTarget();
  try {
    console.log(
      formatResult(await fuzzServer(target, { iterations, seed, onProgress: (n) => console.error(`shim: ${n}`) })),
    );
  } finally {
    await target.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
