/**
 * Which shared libraries a dynamically linked program needs, from `ldd` (glibc's, which runs the dynamic loader
 * in trace mode). The guest gets a copy of each library at the same absolute path, so the host's loader
 * configuration (multiarch directories) works unchanged in the guest.
 */
import { run } from './exec';

/**
 * Parses ldd output into absolute library paths, in order, without duplicates. The dynamic loader itself
 * ("/lib64/ld-linux-x86-64.so.2 (0x...)") is included; the vDSO ("linux-vdso.so.1 (0x...)") is not, it lives in
 * the kernel. Statically linked programs give an empty list. A library reported as "not found" is an error.
 */
export function parseLdd(output: string): string[] {
  const paths: string[] = [];
  const missing: string[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '' || /statically linked|not a dynamic executable/.test(line)) continue;
    let m = /^(\S+)\s+=>\s+not found$/.exec(line);
    if (m) {
      missing.push(m[1] ?? line);
      continue;
    }
    m = /^\S+\s+=>\s+(\/\S+)(\s+\(0x[0-9a-f]+\))?$/.exec(line) ?? /^(\/\S+)(\s+\(0x[0-9a-f]+\))?$/.exec(line);
    if (m) {
      const file = m[1] ?? '';
      if (!paths.includes(file)) paths.push(file);
      continue;
    }
    // "linux-vdso.so.1 (0x...)" and "name => (0x...)" (virtual objects) have no file.
    if (/^\S+\s+(=>\s+)?\(0x[0-9a-f]+\)$/.test(line)) continue;
    throw new Error(`ldd: cannot parse line '${line}'`);
  }
  if (missing.length) throw new Error(`ldd: shared libraries not found: ${missing.join(', ')}`);
  return paths;
}

/** The shared libraries (and loader) of an ELF program or shared object; [] when it is statically linked. */
export async function sharedLibraries(file: string): Promise<string[]> {
  // glibc's ldd exits 1 for static binaries ("not a dynamic executable"), so look at the output, not the status.
  const { stdout, stderr, code } = await run('ldd', [file], { allowFailure: true });
  if (/not a dynamic executable|statically linked/.test(stdout + stderr)) return [];
  if (code !== 0) throw new Error(`ldd ${file} failed (exit ${code}): ${stderr.trim()}`);
  return parseLdd(stdout);
}
