#!/usr/bin/env node
// Generates static protobufjs code from protos/proto/**.proto (run by `make protos`, before `tsc -b`).
//
// CommonJS modules with separate protobufjs roots, so their google.protobuf copies do not collide:
//   protos/gen/containerd.{js,d.ts}  every proto except kata/, hull/, cri/  ($protobuf.roots.containerd)
//   protos/gen/agent.{js,d.ts}       kata/ only                          ($protobuf.roots.agent)
//   protos/gen/hull.{js,d.ts}        hull/: hull's own agent extension   ($protobuf.roots.hull)
//   protos/gen/cri.{js,d.ts}         cri/: Kubernetes CRI v1, for tests  ($protobuf.roots.cri)
// tsc does not copy .js files, so the generated modules are also copied to dist/protos/gen/, where the compiled
// wrappers (dist/protos/containerd.js, dist/protos/agent.js) require them.
//
// Regeneration is skipped when the hash of the inputs (every .proto, this script, the protobufjs and
// protobufjs-cli versions) matches protos/gen/.inputs-hash; the dist copies are refreshed either way.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const require = createRequire(import.meta.url);
const scriptPath = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(scriptPath), '..');
const protoDir = path.join(root, 'protos', 'proto');
const genDir = path.join(root, 'protos', 'gen');
const distGenDir = path.join(root, 'dist', 'protos', 'gen');
const stampPath = path.join(genDir, '.inputs-hash');

/** Every .proto under dir, as paths relative to protoDir with forward slashes, sorted. */
function listProtos(dir = protoDir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listProtos(full));
    else if (entry.name.endsWith('.proto')) out.push(path.relative(protoDir, full).split(path.sep).join('/'));
  }
  return out.sort();
}

function packageVersion(name) {
  return JSON.parse(fs.readFileSync(require.resolve(`${name}/package.json`), 'utf8')).version;
}

function inputsHash(protos) {
  const h = createHash('sha256');
  const add = (label, data) => h.update(`${label}\0${data.length}\0`).update(data);
  add('protobufjs', packageVersion('protobufjs'));
  add('protobufjs-cli', packageVersion('protobufjs-cli'));
  add('script', fs.readFileSync(scriptPath));
  for (const rel of protos) add(rel, fs.readFileSync(path.join(protoDir, rel)));
  return h.digest('hex');
}

const MODULES = [
  { name: 'containerd', select: (rel) => !['kata/', 'hull/', 'cri/'].some((dir) => rel.startsWith(dir)) },
  { name: 'agent', select: (rel) => rel.startsWith('kata/') },
  { name: 'hull', select: (rel) => rel.startsWith('hull/') },
  { name: 'cri', select: (rel) => rel.startsWith('cri/') },
];
const outputsOf = (name) => [`${name}.js`, `${name}.d.ts`];

/** Runs a protobufjs-cli tool; on failure throws an Error carrying the tool's stderr. */
async function run(tool, args) {
  try {
    await execFileAsync(process.execPath, [require.resolve(`protobufjs-cli/bin/${tool}`), ...args], {
      cwd: root,
      maxBuffer: 64 << 20,
    });
  } catch (err) {
    const stderr = err && typeof err === 'object' && 'stderr' in err ? String(err.stderr).trim() : String(err);
    throw new Error(`${tool} failed:\n${stderr}`);
  }
}

async function generate(mod, protos, outDir) {
  const js = path.join(outDir, `${mod.name}.js`);
  const files = protos.filter(mod.select).map((rel) => path.join(protoDir, rel));
  if (files.length === 0) throw new Error(`no .proto files for module ${mod.name}`);
  const args = [
    '-t',
    'static-module',
    '-w',
    'commonjs',
    '--force-number',
    // Nothing calls verify() or the length-delimited codecs: without them the shim and the agent load ~16% less code.
    '--no-verify',
    '--no-delimited',
    '-r',
    mod.name,
    '-p',
    protoDir,
    '-o',
    js,
    ...files,
  ];
  await run('pbjs', args);
  await run('pbts', ['-o', path.join(outDir, `${mod.name}.d.ts`), js]);
  // The module that runs: the same code without its JSDoc (pbts above needs it; V8 keeps a module's whole source in
  // the heap for as long as the process lives), every namespace, message, enum and service defined lazily (lazyDefs).
  await run('pbjs', [...args.slice(0, -files.length - 2), '--no-comments', '-o', js, ...files]);
  fs.writeFileSync(js, lazyDefs(fs.readFileSync(js, 'utf8')));
}

/**
 * pbjs's static module defines everything at load: each namespace, message, enum and service is an immediately
 * invoked `X.Name = (function() { ... })();`, which V8 compiles eagerly and runs, making a class, its prototype and
 * its codecs for all ~1 500 types of a module, while a process uses a few dozen (the shim daemon: the Task API,
 * events, metrics). Each becomes `$lazy(X, "Name", function() { ... });`: a getter that runs the same function at
 * the first access and replaces itself with the result, so an unused type costs its source text only. Behaviour is
 * the same: the code of a definition only refers to other types inside functions that run later (codecs,
 * fromObject), and a property read or write sees the same value either way.
 */
export function lazyDefs(code) {
  const lines = code.split('\n');
  const open = /^(\s*)(\$?\w+)\.(\w+) = \(function\(\) \{$/;
  const closers = [];
  let count = 0;
  const out = lines.map((line) => {
    const m = open.exec(line);
    if (m) {
      closers.push(`${m[1]}})();`);
      count++;
      return `${m[1]}$lazy(${m[2]}, ${JSON.stringify(m[3])}, function() {`;
    }
    if (closers.length > 0 && line === closers[closers.length - 1]) {
      closers.pop();
      return line.replace('})();', '});');
    }
    return line;
  });
  if (closers.length > 0 || count === 0) throw new Error('lazyDefs: unexpected pbjs output');
  const root = out.findIndex((l) => l.startsWith('var $root = '));
  if (root < 0) throw new Error('lazyDefs: no $root in pbjs output');
  out.splice(root + 1, 0, LAZY_HELPER);
  return out.join('\n');
}

const LAZY_HELPER = `
// Defined at first use (scripts/gen-protos.mjs lazyDefs).
function $lazy(object, name, define) {
    function set(value) {
        $Object.defineProperty(object, name, { value: value, writable: true, enumerable: true, configurable: true });
    }
    $Object.defineProperty(object, name, {
        get: function() { var value = define(); set(value); return value; },
        set: set,
        enumerable: true,
        configurable: true
    });
}`;

/** Copies src to dst unless dst already has the same bytes. Returns true if it wrote. */
function copyIfChanged(src, dst) {
  const data = fs.readFileSync(src);
  try {
    if (fs.readFileSync(dst).equals(data)) return false;
  } catch {
    // missing: write it
  }
  const tmp = `${dst}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, dst);
  return true;
}

async function main() {
  const started = Date.now();
  const protos = listProtos();
  const hash = inputsHash(protos);
  const outputs = MODULES.flatMap((m) => outputsOf(m.name));
  let stamp = '';
  try {
    stamp = fs.readFileSync(stampPath, 'utf8').trim();
  } catch {
    // first run
  }
  const upToDate = stamp === hash && outputs.every((f) => fs.existsSync(path.join(genDir, f)));

  if (!upToDate) {
    fs.mkdirSync(genDir, { recursive: true });
    // Generate into a scratch directory and move the results in, so an interrupted run leaves no half files.
    const scratch = fs.mkdtempSync(path.join(genDir, '.tmp-'));
    try {
      // allSettled: never remove the scratch directory while the other module is still being generated.
      const results = await Promise.allSettled(MODULES.map((m) => generate(m, protos, scratch)));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      fs.rmSync(stampPath, { force: true });
      for (const f of outputs) fs.renameSync(path.join(scratch, f), path.join(genDir, f));
      fs.writeFileSync(stampPath, `${hash}\n`);
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  }

  fs.mkdirSync(distGenDir, { recursive: true });
  let copied = 0;
  for (const f of outputs) if (copyIfChanged(path.join(genDir, f), path.join(distGenDir, f))) copied++;

  const what = upToDate ? 'up to date' : `generated ${MODULES.map((m) => m.name).join(', ')}`;
  console.log(
    `gen-protos: ${protos.length} .proto files, ${what}, ${copied} file(s) copied to dist (${Date.now() - started} ms)`,
  );
}

main().catch((err) => {
  console.error(`gen-protos: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
