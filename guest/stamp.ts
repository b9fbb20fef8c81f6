/**
 * The fingerprint that decides whether the image is up to date. It covers the builder's own code, the settings it
 * was run with, the Debian package versions, and the identity (see fileIdentity) of every host file the
 * image was made from, which the previous build recorded in guest/out/stamp.json. Checking it costs one
 * dpkg-query, a stat per input and hashing the small inputs (a few MB).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

export interface Stamp {
  key: string;
  /** Host files the image was built from. */
  inputs: string[];
  /** Output file sizes, to notice a deleted or truncated output. */
  outputs: Record<string, number>;
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Stable JSON: object keys sorted, so that the same value always hashes the same. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v instanceof Map)
      return Object.fromEntries(
        [...(v as Map<string, unknown>).entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      );
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const obj = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(obj)
          .sort()
          .map((k) => [k, obj[k]]),
      );
    }
    return v;
  });
}

/** Files up to this size are identified by content, so that rewriting one unchanged (tsc does) is not a change. */
const HASH_LIMIT = 8 * 1024 * 1024;

/**
 * A file's identity: the sha256 of its content when it is small, "size:mtime:inode" when it is large (node, the
 * kernel), or "missing". Follows symlinks.
 */
export async function fileIdentity(file: string): Promise<string> {
  try {
    const st = await fs.stat(file, { bigint: true });
    if (st.isFile() && st.size <= HASH_LIMIT) return sha256(await fs.readFile(file));
    return `${st.size}:${st.mtimeNs}:${st.ino}`;
  } catch {
    return 'missing';
  }
}

export async function inputIdentities(files: readonly string[]): Promise<Record<string, string>> {
  const sorted = [...new Set(files)].sort();
  const ids = await Promise.all(sorted.map(fileIdentity));
  return Object.fromEntries(sorted.map((f, i) => [f, ids[i] ?? 'missing']));
}

/** sha256 over the contents of the builder's own compiled files (the *.js next to it, not its tests). */
export async function builderHash(dir: string): Promise<string> {
  const names = (await fs.readdir(dir)).filter((n) => n.endsWith('.js')).sort();
  const hash = createHash('sha256');
  for (const name of names)
    hash
      .update(name)
      .update('\0')
      .update(await fs.readFile(path.join(dir, name)))
      .update('\0');
  return hash.digest('hex');
}

export function stampKey(settings: unknown, identities: Record<string, string>): string {
  return sha256(canonicalJson({ settings, identities }));
}

export async function readStamp(file: string): Promise<Stamp | undefined> {
  try {
    const stamp = JSON.parse(await fs.readFile(file, 'utf8')) as Stamp;
    return typeof stamp.key === 'string' && Array.isArray(stamp.inputs) && stamp.outputs ? stamp : undefined;
  } catch {
    return undefined;
  }
}

/** True when every output recorded in the stamp exists in `dir` with the recorded size. */
export async function outputsIntact(dir: string, stamp: Stamp): Promise<boolean> {
  for (const [name, size] of Object.entries(stamp.outputs)) {
    const st = await fs.stat(path.join(dir, name)).catch(() => undefined);
    if (!st || st.size !== size) return false;
  }
  return true;
}
