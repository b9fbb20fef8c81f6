/**
 * The bundle's config.json, read once per Create (and by `start`, for its annotations only). Kept to Node built-ins
 * and type-only imports so that `start` stays light.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { OciSpec } from '../agent-client';
import { InvalidArgumentError } from '../errors';

const MAX_SPEC_BYTES = 16 << 20;

export function readSpec(bundle: string): OciSpec {
  if (!path.isAbsolute(bundle))
    throw new InvalidArgumentError(`bundle ${JSON.stringify(bundle)} is not an absolute path`);
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > MAX_SPEC_BYTES)
      throw new InvalidArgumentError(`${file} is not a regular file of at most ${MAX_SPEC_BYTES} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(`cannot read the OCI spec ${file}: ${(err as Error).message}`);
  }
  try {
    const spec = JSON.parse(text) as OciSpec;
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new Error('not a JSON object');
    return spec;
  } catch (err) {
    throw new InvalidArgumentError(`the OCI spec ${file} is not valid JSON: ${(err as Error).message}`);
  }
}
