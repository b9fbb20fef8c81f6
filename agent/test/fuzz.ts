/** The agent server's long fuzzing run (`make fuzz`): `node dist/agent/test/fuzz.js [--iterations N] [--seed N]`. */
import { formatResult, fuzzArgs, fuzzServer } from 'ttrpc-ts';
import { agentTarget } from './fuzz-target';

async function main(): Promise<void> {
  const { iterations, seed } = fuzzArgs(process.argv.slice(2));
  process.on('warning', (w) => {
    console.error(`process warning: ${w.name}: ${w.message}`);
    process.exitCode = 1;
  });
  const target = agentTarget();
  try {
    console.log(
      formatResult(await fuzzServer(target, { iterations, seed, onProgress: (n) => console.error(`agent: ${n}`) })),
    );
  } finally {
    await target.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
