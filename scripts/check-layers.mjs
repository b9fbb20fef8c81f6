#!/usr/bin/env node
// Import-direction and cycle check. Dependencies point one way:
//   shim -> core -> hypervisor | agent-client | fs-share -> errors + log + ttrpc + protos;  agent -> ttrpc + protos + vsock.
// vsock/ (hull-vsock, AF_VSOCK sockets) sits beside ttrpc/: agent/ and agent-client/ use it (and so may integration/).
// netns/ (hull-netns, TCP listeners inside a network namespace) likewise: hypervisor/ uses it (and so may integration/).
// monitor/ (hull-monitor, the node's metrics daemon) is a program of its own: it reads the shims' sockets and CRI, so
// it needs only the lowest layers (protos for CRI's classes and the id rule).
// dbus/ (a small D-Bus client: systemd's Manager for the systemd cgroup driver) imports nothing but Node built-ins;
// core/ uses it (and so may integration/).
// cli/ (`hull`, the operator's command: check, env) is a program beside the shim: it reads the configuration
// through core/ and probes the host with hypervisor/'s accel detection; nothing imports it.
// A file may import only from the layers listed for its own folder; nothing imports shim/ from outside it;
// ttrpc/, vsock/ and netns/ import nothing but Node built-ins (each is a package of its own). Relative imports must not form a cycle.
// Exits 1 and names every offending import.
import fs from 'node:fs';
import path from 'node:path';
import { builtinModules } from 'node:module';
import ts from 'typescript';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const LOWER = ['errors', 'log', 'protos', 'ttrpc'];
const ALLOWED = {
  shim: ['shim', 'core', 'hypervisor', 'agent-client', 'fs-share', ...LOWER],
  core: ['core', 'hypervisor', 'agent-client', 'fs-share', 'dbus', ...LOWER],
  hypervisor: ['hypervisor', 'netns', ...LOWER],
  'agent-client': ['agent-client', 'vsock', ...LOWER],
  'fs-share': ['fs-share', ...LOWER],
  protos: LOWER,
  errors: ['errors'],
  log: ['log'],
  dbus: ['dbus'],
  ttrpc: ['ttrpc'],
  vsock: ['vsock'],
  netns: ['netns'],
  agent: ['agent', 'protos', 'ttrpc', 'vsock'],
  guest: ['guest', 'scripts'],
  integration: ['integration', 'core', 'dbus', 'hypervisor', 'agent-client', 'fs-share', 'vsock', 'netns', ...LOWER],
  bench: ['bench', 'integration', 'core', 'hypervisor', 'agent-client', 'fs-share', ...LOWER],
  scripts: ['scripts', ...LOWER],
  monitor: ['monitor', ...LOWER],
  cli: ['cli', 'core', 'hypervisor', ...LOWER],
};
const PACKAGE_LAYERS = { 'ttrpc-ts': 'ttrpc', 'hull-vsock': 'vsock', 'hull-netns': 'netns' };
/** Layers that are packages of their own: Node built-ins only (their tests may use their devDependencies). */
const SELF_CONTAINED = ['ttrpc', 'vsock', 'netns'];
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
// Their own tests may use their devDependencies (e.g. protobufjs to cross-check ttrpc's wire codec).
const devDeps = Object.fromEntries(
  SELF_CONTAINED.map((l) => [
    l,
    Object.keys(JSON.parse(fs.readFileSync(path.join(root, l, 'package.json'), 'utf8')).devDependencies ?? {}),
  ]),
);

function sourceFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name === 'dist' || entry.name === 'gen' || entry.name === 'out')
      continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

const layerOf = (file) => path.relative(root, file).split(path.sep)[0];

function resolveRelative(fromFile, spec) {
  const base = path.resolve(path.dirname(fromFile), spec);
  for (const candidate of [base, `${base}.ts`, base.replace(/\.js$/, '.ts'), path.join(base, 'index.ts')]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  return undefined; // generated code (protos/gen) and other non-sources
}

const problems = [];
const graph = new Map();
const files = Object.keys(ALLOWED)
  .filter((d) => fs.existsSync(path.join(root, d)))
  .flatMap((d) => sourceFiles(path.join(root, d)));
for (const file of files) {
  const layer = layerOf(file);
  const allowed = ALLOWED[layer];
  const edges = [];
  const { importedFiles } = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
  for (const { fileName: spec } of importedFiles) {
    const where = `${path.relative(root, file)} imports '${spec}'`;
    if (spec.startsWith('.')) {
      const target = path.resolve(path.dirname(file), spec);
      const targetLayer = path.relative(root, target).split(path.sep)[0];
      if (!allowed.includes(targetLayer)) problems.push(`${where}: ${layer}/ may not import from ${targetLayer}/`);
      const resolved = resolveRelative(file, spec);
      if (resolved) edges.push(resolved);
    } else if (builtins.has(spec) || builtins.has(spec.split('/')[0])) {
      continue;
    } else {
      const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      const targetLayer = PACKAGE_LAYERS[pkg];
      if (targetLayer && !allowed.includes(targetLayer)) problems.push(`${where}: ${layer}/ may not import ${pkg}`);
      const ownTest = path.relative(root, file).startsWith(path.join(layer, 'test'));
      if (SELF_CONTAINED.includes(layer) && !targetLayer && !(ownTest && devDeps[layer].includes(pkg))) {
        problems.push(`${where}: ${layer}/ depends on nothing but Node built-ins`);
      }
    }
  }
  graph.set(file, edges);
}

// Cycle detection over relative imports (iterative DFS, colours: 1 = on stack, 2 = done).
const colour = new Map();
for (const start of graph.keys()) {
  if (colour.get(start)) continue;
  const stack = [[start, 0]];
  const trail = [start];
  colour.set(start, 1);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const edges = graph.get(top[0]) ?? [];
    if (top[1] >= edges.length) {
      colour.set(top[0], 2);
      stack.pop();
      trail.pop();
      continue;
    }
    const next = edges[top[1]++];
    if (colour.get(next) === 1) {
      const cycle = trail
        .slice(trail.indexOf(next))
        .concat(next)
        .map((f) => path.relative(root, f));
      problems.push(`import cycle: ${cycle.join(' -> ')}`);
    } else if (!colour.get(next)) {
      colour.set(next, 1);
      stack.push([next, 0]);
      trail.push(next);
    }
  }
}

if (problems.length) {
  console.error(`check-layers: ${problems.length} problem(s)`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`check-layers: ${files.length} files, imports follow the layers, no cycles`);
