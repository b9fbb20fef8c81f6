/**
 * A VM cloned from a template (core/template.ts) starts with the template's kernel: its random pool, CRNG key and
 * boot_id are the template's, and so would the next /dev/urandom bytes be in every clone. ReseedRandomDev gives
 * the pool the host's random bytes and has the CRNG rekeyed from them at once: hull-reseed (guest/init/hull-reseed.c,
 * RNDADDENTROPY + RNDRESEEDCRNG: node has no ioctl). The seed is checked: 1 to MAX_SEED_BYTES bytes.
 */
import { execFile } from 'node:child_process';
import { Code, StatusError } from 'ttrpc-ts';

/** guest/config.ts GUEST_PATHS.hullReseed. */
export const HULL_RESEED = '/sbin/hull-reseed';
export const MAX_SEED_BYTES = 512;

export function checkSeed(data: Uint8Array | null | undefined): Buffer {
  const seed = Buffer.from(data ?? []);
  if (seed.length < 1 || seed.length > MAX_SEED_BYTES)
    throw new StatusError(Code.INVALID_ARGUMENT, `a seed is 1 to ${MAX_SEED_BYTES} bytes, not ${seed.length}`);
  return seed;
}

export function reseedRandom(seed: Buffer, program = HULL_RESEED, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    // spawns: none; hull-reseed, compiled from guest/init/hull-reseed.c into the image (no Debian package)
    const child = execFile(program, [], { timeout: timeoutMs }, (err, _stdout, stderr) => {
      if (err)
        reject(new StatusError(Code.INTERNAL, `reseed: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolve();
    });
    child.stdin?.end(seed);
  });
}
