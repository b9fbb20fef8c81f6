/**
 * VirtioFsShare: the host side of one sandbox's virtio-fs share, laid out like Kata's:
 *
 *   <root>/<sandboxId>/            a private bind of itself, so nothing below propagates out
 *     mounts/                      a shared bind of itself: container rootfs and volumes are mounted here
 *     shared/                      rbind of mounts/, made a slave (sees new mounts) and remounted read-only;
 *                                  this is what virtiofsd exports, the guest sees it at GUEST_SHARED_DIR
 *     private/<cid>/<name>         staging for read-only binds (bind, remount ro, bind again into mounts/)
 *
 * It keeps no state in memory: what is mounted is read from /proc/self/mountinfo, so unshare() and cleanup() work
 * the same on a fresh object after a crash. Every target is created and checked without following symlinks.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
} from '../errors';
import * as m from './mount';
import { assertNoSymlink, ensureDir, ensureFile, removeMountTargets } from './paths';
import { GUEST_SHARED_DIR, type FsShare, type GuestMount, type Mount, type VolumeSpec } from './types';
import { validateId } from '../protos/validate-id';
import { planRootfs, validateAbsolutePath, volumeName, type RootfsPlan } from './validate';

export interface VirtioFsShareOptions {
  /** The folder that holds one subfolder per sandbox, e.g. /run/hull/shared/sandboxes. */
  root: string;
  sandboxId: string;
}

const MAX_UNMOUNT_ROUNDS = 8;

export class VirtioFsShare implements FsShare {
  readonly #root: string;
  readonly #id: string;
  #realRoot: string | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: VirtioFsShareOptions) {
    this.#root = validateAbsolutePath('share root', opts.root);
    this.#id = validateId('sandbox id', opts.sandboxId);
  }

  sharedDir(): string {
    return path.join(this.#realRoot ?? this.#root, this.#id, 'shared');
  }

  async prepare(): Promise<void> {
    return this.#serial(async () => {
      await fs.mkdir(this.#root, { recursive: true, mode: 0o711 }).catch((err: unknown) => {
        throw new InternalError(`create ${this.#root}`, { cause: err });
      });
      const root = await this.#resolveRoot();
      if (root === undefined) throw new InternalError(`${this.#root} vanished`);
      const base = path.join(root, this.#id);
      const mounts = path.join(base, 'mounts');
      const shared = path.join(base, 'shared');
      await ensureDir(root, base, 0o700);
      await ensureDir(base, mounts);
      await ensureDir(base, shared);
      await ensureDir(base, path.join(base, 'private'), 0o700);

      if (!(await topMount(base))) {
        await m.bindMount(base, base);
        await m.makePropagation(base, 'private');
      }
      if (!(await topMount(mounts))) {
        await m.bindMount(mounts, mounts);
        await m.makePropagation(mounts, 'private');
        await m.makePropagation(mounts, 'shared');
      }
      const top = await topMount(shared);
      if (!top) {
        await m.bindMount(mounts, shared, { recursive: true });
        await m.makePropagation(shared, 'slave');
        await m.remountReadOnly(shared);
      } else if (!top.options.includes('ro')) {
        await m.remountReadOnly(shared); // a previous prepare() stopped half way
      }
    });
  }

  async shareRootfs(containerId: string, mounts: Mount[], bundleRootfs?: string): Promise<GuestMount> {
    validateId('container id', containerId);
    let plan: RootfsPlan;
    if (!mounts || mounts.length === 0) {
      if (bundleRootfs === undefined)
        throw new InvalidArgumentError(`container ${containerId}: no rootfs mounts and no bundle rootfs`);
      plan = {
        kind: 'bind',
        source: validateAbsolutePath('bundle rootfs', bundleRootfs, { allowComma: true }),
        recursive: true,
        readOnly: false,
      };
    } else {
      plan = planRootfs(mounts);
    }
    return this.#serial(async () => {
      const base = await this.#requirePrepared();
      if (plan.kind === 'overlay') {
        for (const dir of plan.dirs) await requireKind(dir, 'dir');
      } else {
        await requireKind(plan.source, 'dir');
      }
      const target = path.join(base, 'mounts', containerId, 'rootfs');
      await ensureDir(base, target);
      if (await topMount(target)) throw new AlreadyExistsError(`rootfs of container ${containerId} is already shared`);
      if (plan.kind === 'overlay') {
        await m.mountOverlay(plan.options, target);
      } else if (plan.readOnly) {
        await this.#bindReadOnly(base, plan.source, target, containerId, 'rootfs', true, plan.recursive);
      } else {
        await m.bindMount(plan.source, target, { recursive: plan.recursive });
      }
      return { guestPath: path.posix.join(GUEST_SHARED_DIR, containerId, 'rootfs'), readOnly: plan.readOnly };
    });
  }

  async shareVolume(containerId: string, volume: VolumeSpec): Promise<GuestMount> {
    validateId('container id', containerId);
    const source = validateAbsolutePath('volume source', volume.source, { allowComma: true });
    const name = volumeName(volume.destination);
    return this.#serial(async () => {
      const base = await this.#requirePrepared();
      const isDir = (await requireKind(source, 'any')) === 'dir';
      const target = path.join(base, 'mounts', containerId, 'volumes', name);
      if (isDir) await ensureDir(base, target);
      else await ensureFile(base, target);
      if (await topMount(target)) {
        throw new AlreadyExistsError(`volume ${volume.destination} of container ${containerId} is already shared`);
      }
      if (volume.readOnly) await this.#bindReadOnly(base, source, target, containerId, name, isDir, false);
      else await m.bindMount(source, target);
      return { guestPath: path.posix.join(GUEST_SHARED_DIR, containerId, 'volumes', name), readOnly: volume.readOnly };
    });
  }

  async unshare(containerId: string): Promise<void> {
    validateId('container id', containerId);
    return this.#serial(async () => {
      const root = await this.#resolveRoot();
      if (root === undefined) return;
      const base = path.join(root, this.#id);
      for (const sub of ['mounts', 'shared', 'private']) await unmountAll(base, path.join(base, sub, containerId));
      await removeMountTargets(base, path.join(base, 'mounts', containerId));
      await removeMountTargets(base, path.join(base, 'private', containerId));
    });
  }

  async cleanup(): Promise<void> {
    return this.#serial(async () => {
      const root = await this.#resolveRoot();
      if (root === undefined) return;
      const base = path.join(root, this.#id);
      await unmountAll(base, base);
      await removeMountTargets(base, base);
    });
  }

  /** Bind source to target read-only in a way that propagates as read-only into shared/ (Kata's private RO bind). */
  async #bindReadOnly(
    base: string,
    source: string,
    target: string,
    cid: string,
    name: string,
    isDir: boolean,
    recursive: boolean,
  ): Promise<void> {
    const staging = path.join(base, 'private', cid, name);
    if (isDir) await ensureDir(base, staging, 0o700);
    else await ensureFile(base, staging);
    try {
      await m.bindMount(source, staging, { recursive });
      await m.remountReadOnly(staging);
      await m.bindMount(staging, target, { recursive });
    } finally {
      await unmountAll(base, staging);
      await removeMountTargets(base, staging);
    }
  }

  async #requirePrepared(): Promise<string> {
    const root = await this.#resolveRoot();
    const base = root === undefined ? undefined : path.join(root, this.#id);
    if (base === undefined || !(await topMount(path.join(base, 'shared')))) {
      throw new FailedPreconditionError(`share of sandbox ${this.#id} is not prepared`);
    }
    return base;
  }

  /** The canonical root (mountinfo shows canonical paths), or undefined if it does not exist. */
  async #resolveRoot(): Promise<string | undefined> {
    try {
      this.#realRoot = await fs.realpath(this.#root);
      return this.#realRoot;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new InternalError(`resolve ${this.#root}`, { cause: err });
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }
}

/** The topmost mount exactly at p, if any. */
async function topMount(p: string): Promise<m.MountInfo | undefined> {
  return (await m.mountsUnder(p)).filter((x) => x.mountPoint === p).pop();
}

async function requireKind(p: string, want: 'dir' | 'any'): Promise<'dir' | 'other'> {
  let st;
  try {
    st = await fs.stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new NotFoundError(`${p} does not exist`, { cause: err });
    throw new InternalError(`stat ${p}`, { cause: err });
  }
  if (want === 'dir' && !st.isDirectory()) throw new FailedPreconditionError(`${p} is not a folder`);
  return st.isDirectory() ? 'dir' : 'other';
}

/** Lazily unmount everything at or below dir (inside base), deepest first, until mountinfo shows nothing there. */
async function unmountAll(base: string, dir: string): Promise<void> {
  for (let round = 0; round < MAX_UNMOUNT_ROUNDS; round++) {
    const list = await m.mountsUnder(dir);
    if (list.length === 0) return;
    for (const info of m.deepestFirst(list)) {
      if (info.mountPoint !== base) await assertNoSymlink(base, info.mountPoint);
      try {
        await m.unmount(info.mountPoint);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err; // already gone, e.g. by propagation from mounts/
      }
    }
  }
  const left = await m.mountsUnder(dir);
  if (left.length > 0)
    throw new FailedPreconditionError(`mounts remain under ${dir}: ${left.map((x) => x.mountPoint).join(', ')}`);
}
