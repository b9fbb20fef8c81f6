/**
 * The agent as one CommonJS file, bundled by esbuild from its compiled output (dist/agent/main.js and what it
 * requires: ttrpc-ts, protos, protobufjs). One file loads much faster under emulation than a node_modules tree.
 * Packages with native code (NATIVE_MODULES) stay external and are copied next to the bundle when the agent
 * uses them: package.json and what its "files" list names, and of those only what loads at run time on this
 * platform (keepNativeFile), not sources, build intermediates, type definitions, tests or other platforms'
 * prebuilt binaries (node-pty ships 60 MB of those).
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
    else if (entry.isFile() || (entry.isSymbolicLink() && (await fs.stat(full).catch(() => undefined))?.isFile()))
      out.push(full);
  }
  return out;
}

/**
 * The files of an installed package that belong in the image: package.json and what its `files` list names (plain
 * paths of files or folders, as npm would pack them) plus build/Release (built at install), or every file when it
 * has no such list.
 */
async function packageFiles(dir: string): Promise<string[]> {
  const manifest = JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8')) as { files?: unknown };
  if (!Array.isArray(manifest.files)) return listFiles(dir);
  const out = [path.join(dir, 'package.json')];
  for (const entry of manifest.files) {
    if (
      typeof entry !== 'string' ||
      /[*?[\]{}!]/.test(entry) ||
      path.isAbsolute(entry) ||
      entry.split('/').includes('..')
    ) {
      throw new Error(
        `${path.join(dir, 'package.json')}: "files" entry ${JSON.stringify(entry)} is not a plain relative path`,
      );
    }
    const full = path.join(dir, entry);
    const st = await fs.stat(full).catch(() => undefined);
    if (!st)
      throw new Error(
        `${path.join(dir, 'package.json')}: "files" names ${entry}, which does not exist (is the package built?)`,
      );
    out.push(...(st.isDirectory() ? await listFiles(full) : [full]));
  }
  // What node-gyp built at install time is never in "files" (npm packs before it exists).
  const built = path.join(dir, 'build', 'Release');
  if (await fs.stat(built).catch(() => undefined)) out.push(...(await listFiles(built)));
  return [...new Set(out)].sort();
}

/** Top-level folders of a native package that are never needed at run time. */
const SKIPPED_FOLDERS = new Set([
  'src',
  'deps',
  'third_party',
  'scripts',
  'typings',
  'test',
  'tests',
  'docs',
  'node-addon-api',
  '.github',
]);
const SKIPPED_SUFFIXES = ['.map', '.ts', '.md', '.c', '.cc', '.cpp', '.h', '.gyp', '.gypi', '.mk', '.pdb', '.test.js'];

/**
 * Whether a file of a native package (path relative to the package, '/'-separated) goes into the image: its
 * package.json, licence, JavaScript and compiled modules; of build/ only build/Release (not its obj.target/ and
 * .deps/); of prebuilds/ only the folder of `platform` (e.g. linux-x64, the guest runs the host's node).
 */
export function keepNativeFile(rel: string, platform = `${process.platform}-${process.arch}`): boolean {
  const parts = rel.split('/');
  const top = parts[0]!;
  if (parts.length > 1 && SKIPPED_FOLDERS.has(top)) return false;
  if (top === 'build' && (parts[1] !== 'Release' || parts[2] === 'obj.target' || parts[2] === '.deps')) return false;
  if (top === 'prebuilds' && parts[1] !== platform) return false;
  if (/^LICEN[CS]E/i.test(parts.at(-1)!)) return true;
  return !SKIPPED_SUFFIXES.some((suffix) => rel.endsWith(suffix));
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

/** Bundles `entry` into `<outDir>/<fileName>`, native packages into `<outDir>/node_modules/`. */
export async function bundleAgent(
  entry: string,
  outDir: string,
  natives: readonly string[],
  fileName = 'main.js',
): Promise<AgentBundle> {
  await fs.access(entry).catch(() => {
    throw new Error(`agent entry point ${entry} not found: build the agent first (make build), or pass --agent <file>`);
  });
  const outfile = path.join(outDir, fileName);
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
      const rel = path.relative(src, file);
      if (!keepNativeFile(rel.split(path.sep).join('/'))) continue;
      await fs.mkdir(path.dirname(path.join(dst, rel)), { recursive: true });
      await fs.copyFile(file, path.join(dst, rel)); // follows symlinks
      inputs.push(file);
      if (file.endsWith('.node')) nativeObjects.push(path.join(dst, rel));
    }
  }
  const bytes = (await fs.stat(outfile)).size;
  return { inputs: [...new Set(inputs)].sort(), natives: [...used].sort(), nativeObjects, bytes };
}
