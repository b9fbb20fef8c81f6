/**
 * The agent as one CommonJS file, bundled by esbuild from its compiled output (dist/agent/main.js and what it
 * requires: ttrpc-ts, protos, protobufjs). One file loads much faster under emulation than a node_modules tree.
 * Packages with native code (NATIVE_MODULES) stay external and are copied next to the bundle when the agent
 * uses them (package.json and what its "files" list names).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as esbuild from 'esbuild';

export interface AgentBundle {
  /** Host files esbuild read (absolute), for the fingerprint. */
  inputs: string[];
  /** External native packages the agent requires, copied to <outDir>/node_modules/<name>. */
  natives: string[];
  /** Copied files that are ELF shared objects (*.node), whose libraries the image also needs. */
  nativeObjects: string[];
  bytes: number;
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

/**
 * The files of an installed package that belong in the image: package.json and what its `files` list names (plain
 * paths of files or folders, as npm would pack them), or every file when it has no such list.
 */
async function packageFiles(dir: string): Promise<string[]> {
  const manifest = JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8')) as { files?: unknown };
  if (!Array.isArray(manifest.files)) return listFiles(dir);
  const out = [path.join(dir, 'package.json')];
  for (const entry of manifest.files) {
    if (typeof entry !== 'string' || /[*?[\]{}!]/.test(entry) || path.isAbsolute(entry) || entry.split('/').includes('..')) {
      throw new Error(`${path.join(dir, 'package.json')}: "files" entry ${JSON.stringify(entry)} is not a plain relative path`);
    }
    const full = path.join(dir, entry);
    const st = await fs.stat(full).catch(() => undefined);
    if (!st) throw new Error(`${path.join(dir, 'package.json')}: "files" names ${entry}, which does not exist (is the package built?)`);
    out.push(...(st.isDirectory() ? await listFiles(full) : [full]));
  }
  return [...new Set(out)].sort();
}

const BUILD_OPTIONS = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Syntax minification only: names and line structure stay readable in stack traces.
  minifySyntax: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'silent',
} as const satisfies esbuild.BuildOptions;

export async function bundleAgent(entry: string, outDir: string, natives: readonly string[]): Promise<AgentBundle> {
  await fs.access(entry).catch(() => {
    throw new Error(`agent entry point ${entry} not found: build the agent first (make build), or pass --agent <file>`);
  });
  const outfile = path.join(outDir, 'main.js');
  const workDir = path.dirname(entry);
  const external = [...natives, ...natives.map((n) => `${n}/*`)];
  const result = await esbuild.build({
    ...BUILD_OPTIONS,
    entryPoints: [entry],
    outfile,
    absWorkingDir: workDir,
    external,
    banner: { js: '// hull agent, bundled by guest/build.ts' },
  });
  for (const warning of result.warnings) console.warn(`guest: esbuild: ${warning.text}`);
  const meta = result.metafile;
  const inputs = Object.keys(meta.inputs).map((p) => path.resolve(workDir, p));
  const used = new Set<string>();
  for (const output of Object.values(meta.outputs)) {
    for (const imp of output.imports) {
      if (!imp.external) continue;
      const pkg = natives.find((n) => imp.path === n || imp.path.startsWith(`${n}/`));
      if (pkg) used.add(pkg);
    }
  }
  const nativeObjects: string[] = [];
  for (const pkg of used) {
    let pkgJson: string;
    try {
      pkgJson = require.resolve(`${pkg}/package.json`, { paths: [workDir] });
    } catch (cause) {
      throw new Error(`the agent requires native package ${pkg}, which is not installed`, { cause });
    }
    const src = path.dirname(pkgJson);
    const dst = path.join(outDir, 'node_modules', pkg);
    for (const file of await packageFiles(src)) {
      const target = path.join(dst, path.relative(src, file));
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.copyFile(file, target); // follows symlinks
      inputs.push(file);
      if (file.endsWith('.node')) nativeObjects.push(target);
    }
  }
  const bytes = (await fs.stat(outfile)).size;
  return { inputs: [...new Set(inputs)].sort(), natives: [...used].sort(), nativeObjects, bytes };
}
