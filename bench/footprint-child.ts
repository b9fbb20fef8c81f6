/**
 * `node [flags] footprint-child.js <module>|-`: loads the module (or nothing: node's floor), lets it settle, collects
 * garbage when node runs with --expose-gc, and prints its memory as one JSON line (bench/footprint.ts).
 */
import fs from 'node:fs';

const target = process.argv[2];
const t0 = performance.now();
// eslint-disable-next-line @typescript-eslint/no-require-imports -- what is measured is the loading of this module
if (target && target !== '-') require(target);
const loadMs = performance.now() - t0;
setTimeout(() => {
  (globalThis as { gc?: () => void }).gc?.();
  const rollup = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
  const figures = {
    loadMs,
    rssKiB: kib('Rss'),
    pssKiB: kib('Pss'),
    anonKiB: kib('Anonymous'),
    heapKiB: process.memoryUsage().heapUsed / 1024,
  };
  process.stdout.write(`${JSON.stringify(figures)}\n`, () => process.exit(0));
}, 1000);
