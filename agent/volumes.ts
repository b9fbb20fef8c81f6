/**
 * Volumes: the bind mounts of a container spec. The host shares each volume into the sandbox's virtio-fs share and
 * rewrites the mount's source to where the guest sees it (Kata's model: a path below
 * /run/kata-containers/shared/containers). The agent keeps such a mount only if its source resolves strictly inside
 * the share (see resolveUnder: no `..`, no symlink leading out) and hands crun the resolved, symlink-free path; any
 * other bind mount is refused, naming it. The destination inside the container is crun's to resolve: it confines
 * it to the rootfs (a symlink in the rootfs cannot send the mount outside; integration/containers.test.ts checks it).
 *
 * What remains: a source inside a tree the guest can write (a writable rootfs or volume of another container) could
 * be swapped for a symlink between this check and crun's mount. The volume roots the host creates are mount points
 * in the share's read-only folders, so their own path cannot be changed from the guest.
 */
import path from 'node:path';
import type { grpc } from '../protos/agent';
import { invalid, resolveUnder } from './validate';

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/**
 * Options kept on a volume. Propagation back into the guest (shared, rshared) is refused: a container's mounts must
 * not appear outside it.
 */
const BIND_OPTIONS = new Set([
  'bind',
  'rbind',
  'ro',
  'rw',
  'nosuid',
  'suid',
  'nodev',
  'dev',
  'noexec',
  'exec',
  'relatime',
  'norelatime',
  'noatime',
  'atime',
  'strictatime',
  'nostrictatime',
  'nodiratime',
  'diratime',
  'private',
  'rprivate',
  'slave',
  'rslave',
]);
const MAX_OPTIONS = 32;

/** A bind mount: type "bind", or no type ("", "none") with a bind or rbind option. */
export function isBindMount(m: grpc.IMount): boolean {
  const type = m.type ?? '';
  return (
    type === 'bind' ||
    ((type === '' || type === 'none') && (m.options ?? []).some((o) => o === 'bind' || o === 'rbind'))
  );
}

/**
 * The checked volume mount for crun; `sharedRoot` is where the guest mounts the share. `guestSources` are mounts the
 * agent made itself (the pod's shm), which a volume may name exactly.
 */
export function volumeMount(
  m: grpc.IMount,
  index: number,
  sharedRoot: string,
  guestSources: ReadonlySet<string> = new Set(),
): OciMount {
  const rawDestination = typeof m.destination === 'string' ? m.destination : '';
  const name = rawDestination ? `volume ${JSON.stringify(rawDestination.slice(0, 256))}` : `volume ${index}`;
  if (
    !path.posix.isAbsolute(rawDestination) ||
    path.posix.normalize(rawDestination) !== rawDestination ||
    (rawDestination.length > 1 && rawDestination.endsWith('/')) ||
    rawDestination.includes('\0') ||
    rawDestination.length > 4096
  ) {
    throw invalid(`${name}: the destination is not an absolute normalized path`);
  }
  const options = m.options ?? [];
  if (options.length > MAX_OPTIONS) throw invalid(`${name}: more than ${MAX_OPTIONS} options`);
  for (const o of options) {
    if (typeof o !== 'string' || !BIND_OPTIONS.has(o))
      throw invalid(`${name}: option ${JSON.stringify(String(o).slice(0, 64))} is not allowed on a volume`);
  }
  if (options.includes('ro') && options.includes('rw')) throw invalid(`${name}: both ro and rw`);
  const source = typeof m.source === 'string' ? m.source : '';
  if (source.includes('\0') || source.length > 4096) throw invalid(`${name}: the source is not a valid path`);
  if (guestSources.has(source)) {
    const keep = options.includes('bind') || options.includes('rbind') ? [...options] : ['rbind', ...options];
    return { destination: rawDestination, type: 'bind', source, options: keep };
  }
  if (!source.startsWith(`${sharedRoot}/`) || path.posix.normalize(source) !== source) {
    throw invalid(
      `${name}: the source ${JSON.stringify(source.slice(0, 256))} is not a normalized path inside the shared folder ${sharedRoot} (share the volume first)`,
    );
  }
  const resolved = resolveUnder(sharedRoot, source, `${name}: source`);
  const keep = options.includes('bind') || options.includes('rbind') ? [...options] : ['rbind', ...options];
  return { destination: rawDestination, type: 'bind', source: resolved, options: keep };
}
