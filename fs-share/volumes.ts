/**
 * Volumes of a container spec, prepared for the guest (Kata's ShareFile + replaceOCIMountSource): every bind mount
 * is shared with shareVolume and comes back with its source rewritten to the guest path of that share; `ro` in its
 * options makes the host bind read-only too. Other mounts (proc, tmpfs...) pass through unchanged. This is what
 * core will call before CreateContainer.
 */
import { InvalidArgumentError } from '../errors';
import type { FsShare, GuestMount } from './types';

/** An OCI mount as in the container spec (config.json). */
export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** A bind mount: type "bind", or no type ("", "none") with a bind or rbind option. */
export function isBindMount(m: OciMount): boolean {
  return (
    m.type === 'bind' || ((m.type === '' || m.type === 'none') && m.options.some((o) => o === 'bind' || o === 'rbind'))
  );
}

/** The mount as the guest must see it: source in the share, read-only if the share is. */
export function guestVolumeMount(m: OciMount, shared: GuestMount): OciMount {
  const options = m.options.filter((o) => o !== 'rw' && o !== 'ro');
  return {
    destination: m.destination,
    type: 'bind',
    source: shared.guestPath,
    options: [...options, shared.readOnly ? 'ro' : 'rw'],
  };
}

/**
 * Shares the bind mounts of `mounts` for container `containerId`, in order, and returns the mounts for the guest.
 * On a failure, what was shared stays shared: the caller's unshare(containerId) removes it.
 */
export async function shareVolumes(
  share: Pick<FsShare, 'shareVolume'>,
  containerId: string,
  mounts: readonly OciMount[],
): Promise<OciMount[]> {
  const out: OciMount[] = [];
  for (const m of mounts) {
    if (!isBindMount(m)) {
      out.push(m);
      continue;
    }
    if (m.options.includes('ro') && m.options.includes('rw'))
      throw new InvalidArgumentError(`volume ${m.destination}: both ro and rw`);
    const shared = await share.shareVolume(containerId, {
      source: m.source,
      destination: m.destination,
      readOnly: m.options.includes('ro'),
    });
    out.push(guestVolumeMount(m, shared));
  }
  return out;
}
