/**
 * Where a sandbox's shim listens, exactly as containerd's shim library computes it (runtime/v2/shim/util_unix.go):
 * unix:///run/containerd/s/<hex sha256 of path.Join(containerd's address, namespace, group id)>. Every container of
 * a pod uses the pod's address, which is how containerd reaches the one daemon that holds the pod's VM.
 */
import crypto from 'node:crypto';
import path from 'node:path';
import { InvalidArgumentError } from '../errors';

export const SOCKET_ROOT = '/run/containerd/s';

export function socketAddress(containerdAddress: string, namespace: string, groupId: string): string {
  const digest = crypto.createHash('sha256').update(path.posix.join(containerdAddress, namespace, groupId)).digest('hex');
  return `unix://${path.posix.join(SOCKET_ROOT, digest)}`;
}

export function socketPath(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

/** CRI's annotations on every OCI spec of a pod. */
export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';

/**
 * The sandbox a container belongs to (Kata's rule): a CRI pod container joins its pod's sandbox; a CRI sandbox
 * container, or a container without CRI annotations (`ctr run`), owns a sandbox of its own.
 */
export function sandboxOf(id: string, annotations: Record<string, string> | undefined): { sandboxId: string; joins: boolean } {
  const type = annotations?.[CONTAINER_TYPE_ANNOTATION];
  if (type === 'container') {
    const sandboxId = annotations?.[SANDBOX_ID_ANNOTATION];
    if (!sandboxId) throw new InvalidArgumentError(`container ${id} is a CRI pod container without the ${SANDBOX_ID_ANNOTATION} annotation`);
    return { sandboxId, joins: sandboxId !== id };
  }
  if (type !== undefined && type !== 'sandbox') throw new InvalidArgumentError(`unknown ${CONTAINER_TYPE_ANNOTATION} ${JSON.stringify(type)}`);
  return { sandboxId: id, joins: false };
}
