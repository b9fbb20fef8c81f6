/**
 * Where a sandbox's shim listens, exactly as containerd's shim library computes it (runtime/v2/shim/util_unix.go):
 * unix:///run/containerd/s/<hex sha256 of path.Join(containerd's address, namespace, group id)>. Every container of
 * a pod uses the pod's address, which is how containerd reaches the one daemon that holds the pod's VM.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { CRI_ANNOTATIONS, podRole } from '../core/pod';
import { InvalidArgumentError } from '../errors';

export const SOCKET_ROOT = '/run/containerd/s';

export function socketAddress(containerdAddress: string, namespace: string, groupId: string): string {
  const digest = crypto
    .createHash('sha256')
    .update(path.posix.join(containerdAddress, namespace, groupId))
    .digest('hex');
  return `unix://${path.posix.join(SOCKET_ROOT, digest)}`;
}

export function socketPath(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

/**
 * The sandbox a container belongs to (Kata's rule): a CRI pod container joins its pod's sandbox; a CRI sandbox
 * container, or a container without CRI annotations (`ctr run`), owns a sandbox of its own.
 */
export function sandboxOf(
  id: string,
  annotations: Record<string, string> | undefined,
): { sandboxId: string; joins: boolean } {
  if (podRole({ annotations }) !== 'container') return { sandboxId: id, joins: false };
  const sandboxId = annotations?.[CRI_ANNOTATIONS.sandboxId];
  if (!sandboxId)
    throw new InvalidArgumentError(
      `container ${id} is a CRI pod container without the ${CRI_ANNOTATIONS.sandboxId} annotation`,
    );
  return { sandboxId, joins: sandboxId !== id };
}
