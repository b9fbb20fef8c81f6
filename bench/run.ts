/** `make bench`: runs every benchmark and writes each one's figures to bench/out/<name>.json. */
import os from 'node:os';
import { benchTtrpc } from './ttrpc';
import { benchGuest } from './guest';
import { benchVm } from './vm';
import { benchBoot } from './boot';
import { benchFootprint } from './footprint';
import { benchShim } from './shim';
import { benchPods } from './pods';
import { benchMetrics } from './metrics';
import { benchTracing } from './tracing';
import { benchCitizen } from './citizen';
import { benchDensity } from './density';
import { benchShare } from './share';
import { benchTemplate } from './template';
import { benchDatapath } from './datapath';
import { writeJson } from './lib/report';

const benches: Record<string, () => Promise<Record<string, unknown>>> = {
  ttrpc: benchTtrpc,
  vm: benchVm,
  boot: benchBoot,
  footprint: benchFootprint,
  guest: benchGuest,
  shim: benchShim,
  pods: benchPods,
  metrics: benchMetrics,
  tracing: benchTracing,
  citizen: benchCitizen,
  density: benchDensity,
  share: benchShare,
  template: benchTemplate,
  datapath: benchDatapath,
};

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  for (const [name, bench] of Object.entries(benches)) {
    if (only.length && !only.includes(name)) continue;
    const figures = await bench();
    const file = writeJson(`${name}.json`, {
      bench: name,
      at: new Date().toISOString(),
      host: hostFacts(),
      ...figures,
    });
    console.log(`\nwrote ${file}`);
  }
}

function hostFacts(): Record<string, unknown> {
  return { node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, kernel: os.release() };
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
