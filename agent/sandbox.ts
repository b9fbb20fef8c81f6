/**
 * The guest side of a sandbox: its id, host name and the storages (virtio-fs share, later volumes) mounted for it.
 * One sandbox per VM; CreateSandbox twice is ALREADY_EXISTS.
 */
import fs from 'node:fs';
import { Code, StatusError } from 'ttrpc-ts';
import type { grpc } from '../protos/agent';
import { SANDBOX_SHM, SHARED_ROOT, modulesReady } from './init';
import { log } from './log';
import { mount, run, unmount } from './system';
import { guestSpan } from './tracing';
import {
  hostname as validHostname,
  invalid,
  moduleName,
  mountOptions,
  pathUnder,
  plainName,
  identifier,
} from './validate';

interface MountedStorage {
  driver: string;
  mountPoint: string;
}

/**
 * Storage drivers this agent mounts, and the filesystem type each one uses. `ephemeral` is Kata's name for a tmpfs
 * made in the guest: the pod's /dev/shm, which the pod's containers bind from SANDBOX_SHM.
 */
const STORAGE_DRIVERS: Record<string, string> = { 'virtio-fs': 'virtiofs', ephemeral: 'tmpfs' };
/** Options an ephemeral storage may carry; its size must be given. */
const EPHEMERAL_OPTIONS = /^(?:size=[0-9]{1,20}[kmg]?|mode=[0-7]{3,4}|nosuid|nodev|noexec)$/;

export class GuestSandbox {
  private id: string | undefined;
  private readonly storages: MountedStorage[] = [];

  /**
   * `virtiofsDriverDir`: the virtiofs driver's sysfs folder; a virtio-fs storage waits (up to
   * VIRTIOFS_WAIT_MS) for a device bound there before it mounts: in a VM cloned from a template the host hot-plugs
   * the device just before CreateSandbox, and the guest's PCIe hot-plug takes a moment. Absent: no wait (tests).
   */
  constructor(private readonly options: { setHostname: boolean; virtiofsDriverDir?: string } = { setHostname: true }) {}

  get sandboxId(): string | undefined {
    return this.id;
  }

  get storageHandlers(): string[] {
    return Object.keys(STORAGE_DRIVERS);
  }

  async create(req: grpc.ICreateSandboxRequest): Promise<void> {
    if (this.id !== undefined) throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${this.id} already exists`);
    const id = identifier(req.sandboxId ?? '', 'sandbox id');
    const host = req.hostname ? validHostname(req.hostname) : undefined;
    const modules = (req.kernelModules ?? []).map((m) => ({
      name: moduleName(m.name ?? ''),
      parameters: (m.parameters ?? []).map(moduleParameter),
    }));
    // Validate every storage before mounting any.
    const storages = (req.storages ?? []).map(checkStorage);
    for (const d of req.dns ?? [])
      if (!/^[A-Za-z0-9 .:_-]{1,256}$/.test(d)) throw invalid(`dns entry ${JSON.stringify(d)} is not valid`);

    await modulesReady; // virtiofs and overlay load in the background after boot
    for (const m of modules) await run('modprobe', [m.name, ...m.parameters]);
    if (host && this.options.setHostname) fs.writeFileSync('/proc/sys/kernel/hostname', host);
    try {
      for (const s of storages) {
        if (s.driver === 'virtio-fs' && this.options.virtiofsDriverDir)
          await waitForDevice(this.options.virtiofsDriverDir, VIRTIOFS_WAIT_MS);
        await guestSpan(`mount ${s.fstype}`, { 'hull.mount.point': s.mountPoint }, () =>
          mount(s.fstype, s.source, s.mountPoint, s.options),
        );
        this.storages.push({ driver: s.driver, mountPoint: s.mountPoint });
      }
    } catch (err) {
      await this.unmountAll();
      throw err;
    }
    this.id = id;
    log.info('sandbox created', { id, storages: this.storages.map((s) => s.mountPoint) });
  }

  /** Unmounts what the sandbox mounted, newest first. Safe to call twice. */
  async destroy(): Promise<void> {
    await this.unmountAll();
    this.id = undefined;
  }

  private async unmountAll(): Promise<void> {
    while (this.storages.length) {
      const s = this.storages.pop()!;
      try {
        await unmount(s.mountPoint);
      } catch (err) {
        log.warn('unmount failed', { mountPoint: s.mountPoint, error: (err as Error).message });
      }
    }
  }
}

interface CheckedStorage {
  driver: string;
  fstype: string;
  source: string;
  mountPoint: string;
  options: string[];
}

function checkStorage(s: grpc.IStorage): CheckedStorage {
  const driver = s.driver ?? '';
  const fstype = STORAGE_DRIVERS[driver];
  if (!fstype)
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `storage driver ${JSON.stringify(driver)} is not supported (supported: ${Object.keys(STORAGE_DRIVERS).join(', ')})`,
    );
  if (s.fstype && s.fstype !== fstype) throw invalid(`storage driver ${driver} mounts ${fstype}, not ${s.fstype}`);
  if (driver === 'ephemeral') {
    if (s.source !== 'shm' || s.mountPoint !== SANDBOX_SHM)
      throw invalid(`an ephemeral storage is the pod's shm: source "shm" at ${SANDBOX_SHM}`);
    const options = s.options ?? [];
    for (const o of options)
      if (!EPHEMERAL_OPTIONS.test(o))
        throw invalid(`ephemeral storage option ${JSON.stringify(o.slice(0, 64))} is not allowed`);
    if (!options.some((o) => o.startsWith('size='))) throw invalid('an ephemeral storage needs a size= option');
    return { driver, fstype, source: 'shm', mountPoint: SANDBOX_SHM, options: [...options] };
  }
  return {
    driver,
    fstype,
    source: plainName(s.source ?? '', 'virtio-fs tag'),
    mountPoint: pathUnder(SHARED_ROOT, s.mountPoint ?? '', 'storage mount point'),
    options: mountOptions(s.options ?? []),
  };
}

/** The virtiofs driver's folder in sysfs: a bound device appears as a `virtioN` link in it. */
export const VIRTIOFS_DRIVER_DIR = '/sys/bus/virtio/drivers/virtiofs';
export const VIRTIOFS_WAIT_MS = 10_000;

/** Resolves once `driverDir` lists a bound virtio device, or after `timeoutMs` (the mount then says what is wrong). */
export async function waitForDevice(driverDir: string, timeoutMs: number, pollMs = 20): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(driverDir);
    } catch {
      // the driver is not loaded yet
    }
    if (names.some((n) => /^virtio[0-9]+$/.test(n))) return;
    if (Date.now() >= until) {
      log.warn('no virtio-fs device appeared', { driverDir, timeoutMs });
      return;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

function moduleParameter(p: string): string {
  if (!/^[A-Za-z0-9_]{1,64}=[A-Za-z0-9_.,:-]{0,256}$/.test(p))
    throw invalid(`kernel module parameter ${JSON.stringify(p)} is not valid`);
  return p;
}
