/** A rootfs mount as containerd passes it in CreateTaskRequest.rootfs (overlay, bind or rbind only). */
export interface Mount {
  type: string;
  source: string;
  options: string[];
}

/** Where something shared on the host appears inside the guest. */
export interface GuestMount {
  guestPath: string;
  readOnly: boolean;
}

/** An OCI bind mount from the container spec: a host file or folder shown at `destination` in the container. */
export interface VolumeSpec {
  source: string;
  destination: string;
  readOnly: boolean;
}

/**
 * The host side of one sandbox's virtio-fs share (Kata's `ShareFs`/`ShareFsMount`). Everything a container needs is
 * mounted under the private `mounts/` tree; virtiofsd exports `shared/`, a read-only slave view of it.
 */
export interface FsShare {
  /** Create `<root>/<id>/{mounts,shared}` and the read-only shared view; idempotent. */
  prepare(): Promise<void>;
  /** The folder virtiofsd exports. */
  sharedDir(): string;
  /** Mount the container's rootfs at `mounts/<cid>/rootfs` (the snapshot mount, or a bind of `bundleRootfs`). */
  shareRootfs(containerId: string, mounts: Mount[], bundleRootfs?: string): Promise<GuestMount>;
  /** Bind a host file or folder to `mounts/<cid>/volumes/<hash>`, read-only if asked. */
  shareVolume(containerId: string, volume: VolumeSpec): Promise<GuestMount>;
  /** Unmount everything of that container (deepest first, lazily) and remove its folders; idempotent. */
  unshare(containerId: string): Promise<void>;
  /** Unmount everything under the sandbox folder and remove it; idempotent and usable after a crash. */
  cleanup(): Promise<void>;
}

/** Where the guest mounts the share (Kata's `kataGuestSharedDir`). */
export const GUEST_SHARED_DIR = '/run/kata-containers/shared/containers';
