/**
 * VM templates (configuration `[hypervisor] enable_template`): one VM booted to agent-ready with no per-pod device,
 * paused, its device state saved beside its guest RAM; sandboxes then start from it (hypervisor/qemu/template.ts)
 * instead of booting.
 *
 * Where: `<state_dir>/_templates/` (root-only, 0700; state_dir is on tmpfs by default, /run/hull). A template is
 * kept per configuration: `<key>-<fingerprint>/` with `memory` (guest RAM), `state` (devices) and
 * `fingerprint.json`, where `key` hashes the VM configuration (size, hot-plug room, kernel/initrd/image paths,
 * accel, transport, kernel parameters, QEMU path and options) and `fingerprint` hashes the key and the identity
 * (device, inode, size, mtime) of the kernel, initrd, image and QEMU binary. So a template is never shared between
 * configurations, and a changed guest image, kernel or QEMU makes a new one; the stale one of the same key is
 * removed by the build that replaces it.
 *
 * Made lazily: the first sandbox that finds none builds it under the lock `<key>.lock/` (an atomic mkdir holding
 * the builder's pid and start time, and the template QEMU's) and then starts from it; sandboxes that find the lock
 * held boot normally meanwhile (they do not wait). A lock whose builder is gone (a SIGKILLed shim) is taken over:
 * its QEMU, if it still runs, is killed, and the half-built folder removed. `make()` builds one on demand
 * (`hull template make`, for `sandboxTemplateVm(config)`); `remove()` removes a key's templates under its lock.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, errorMessage } from '../errors';
import { MAX_MEMORY_SLOTS } from '../hypervisor/config';
import { MEMORY_HOTPLUG_BLOCK_MIB, TEMPLATE_NIC_PORTS } from '../hypervisor/types';
import type { Hypervisor, SpawnedHelper, VmConfig, VmTemplateUse } from '../hypervisor/types';
import { processStartTime } from '../hypervisor/process';
import { copySparse } from '../hypervisor';
import type { Logger } from '../log';
import { toVmConfig, type HullConfig } from './config';
import { helperRuns } from './store';
import { hotplugLimits } from './vm-size';
import { SandboxVm, type AgentDialer } from './vm';

/**
 * Bumped when what a template holds or how it is made changes: old templates are then never used. 2: the layout
 * has TEMPLATE_NIC_PORTS spare root ports for a clone's NICs (their number is in the key too).
 */
export const TEMPLATE_FORMAT = 2;
export const MEMORY_FILE = 'memory';
export const STATE_FILE = 'state';
export const FINGERPRINT_FILE = 'fingerprint.json';
const OWNER_FILE = 'owner';
/** How long the template's guest is given to see the host's agent connection close before it is paused. */
export const DISCONNECT_SETTLE_MS = 1000;
const QEMU_FILE = 'qemu';

export interface TemplateOptions {
  /** `<state_dir>/templates`. */
  root: string;
  hypervisor(): Hypervisor;
  bootTimeoutMs: number;
  logger: Logger;
  dial?: AgentDialer;
  /** Whether a folder is on tmpfs (default: statfs); tests pass their own. */
  onTmpfs?: (dir: string) => boolean;
}

/** statfs's f_type of tmpfs (and of /dev/shm). */
const TMPFS_MAGIC = 0x01021994;

export function isTmpfs(dir: string): boolean {
  return fs.statfsSync(dir).type === TMPFS_MAGIC;
}

export interface TemplateFiles {
  dir: string;
  memoryFile: string;
  stateFile: string;
}

/** The VM configuration a template depends on: everything but what is per sandbox. */
export function templateConfig(vm: VmConfig): Record<string, unknown> {
  const rest: Record<string, unknown> = { ...vm };
  for (const k of ['id', 'stateDir', 'sharedDir', 'network', 'nsenterPath', 'onSpawn', 'template']) delete rest[k];
  return rest;
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

const sha = (s: string): string => crypto.createHash('sha256').update(s).digest('hex').slice(0, 16);

/** The files whose change invalidates a template, and what of each is compared. */
export function fileIdentity(p: string): string {
  try {
    const st = fs.statSync(p, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs / 1_000_000n}`; // mtime in ms: what utimes restores
  } catch {
    return 'missing';
  }
}

/** `key`: the configuration; `fingerprint`: the key and the guest kernel, initrd, image and QEMU binary. */
export function templateIdentity(
  vm: VmConfig,
  identify: (p: string) => string = fileIdentity,
): { key: string; fingerprint: string; inputs: Record<string, unknown> } {
  // The spare root ports are part of the layout a clone must match: their number is in the key.
  const config = stableJson({ format: TEMPLATE_FORMAT, nicPorts: TEMPLATE_NIC_PORTS, ...templateConfig(vm) });
  const key = sha(config);
  const files: Record<string, string> = {};
  for (const p of [vm.kernel, vm.initrd, vm.image, vm.qemuPath ?? '/usr/bin/qemu-system-x86_64'])
    files[p] = identify(p);
  const inputs = {
    format: TEMPLATE_FORMAT,
    nicPorts: TEMPLATE_NIC_PORTS,
    config: JSON.parse(config) as unknown,
    files,
  };
  return { key, fingerprint: sha(stableJson({ key, files })), inputs };
}

/** Where templates live under state_dir: a name no containerd namespace can have (they start alphanumeric). */
export function templatesRoot(stateDir: string): string {
  return path.join(stateDir, '_templates');
}

/** A template folder's name, `<key>-<fingerprint>`, and a key alone. */
export const TEMPLATE_NAME = /^([0-9a-f]{16})-([0-9a-f]{16})$/;
export const TEMPLATE_KEY = /^[0-9a-f]{16}$/;

/**
 * The VM configuration a sandbox of `config` starts from a template with when its pod asks for no extra size (a
 * `ctr run` container without limits): what `hull template make` makes a template for. As Sandbox.startVm derives
 * it: the configured size, hot-plug room capped at the host, no share, no network.
 */
export function sandboxTemplateVm(
  config: HullConfig,
  host = { cpus: os.availableParallelism(), memoryMiB: Math.floor(os.totalmem() / (1024 * 1024)) },
): VmConfig {
  const vm = toVmConfig(config, { id: 'template', stateDir: '/nonexistent' });
  const limits = hotplugLimits(
    vm,
    { vcpus: vm.vcpus, memoryMiB: vm.memoryMiB },
    host,
    MEMORY_HOTPLUG_BLOCK_MIB,
    MAX_MEMORY_SLOTS,
  );
  delete vm.maxVcpus;
  delete vm.maxMemoryMiB;
  if (limits) {
    vm.maxVcpus = limits.maxVcpus;
    vm.maxMemoryMiB = limits.maxMemoryMiB;
  }
  return vm;
}

export class VmTemplates {
  constructor(private readonly o: TemplateOptions) {}

  /** The ready template for `vm`, if there is one (nothing is built). */
  find(vm: VmConfig): TemplateFiles | undefined {
    const { key, fingerprint } = templateIdentity(vm);
    const files = this.files(key, fingerprint);
    try {
      const saved = JSON.parse(fs.readFileSync(path.join(files.dir, FINGERPRINT_FILE), 'utf8')) as {
        fingerprint?: unknown;
      };
      if (saved.fingerprint !== fingerprint) return undefined;
      if (!fs.statSync(files.memoryFile).isFile() || !fs.statSync(files.stateFile).isFile()) return undefined;
      return files;
    } catch {
      return undefined;
    }
  }

  /**
   * The template for `vm` as a clone's VmConfig.template: the ready one, or one built now when there is none and
   * nobody else is building it; undefined when another process is building it (boot normally meanwhile) or the
   * build failed (logged; the sandbox boots normally).
   */
  async acquire(vm: VmConfig, signal?: AbortSignal): Promise<VmTemplateUse | undefined> {
    const found = this.find(vm);
    if (found) return { role: 'clone', memoryFile: found.memoryFile, stateFile: found.stateFile };
    try {
      const made = await this.make(vm, signal);
      return made && { role: 'clone', memoryFile: made.memoryFile, stateFile: made.stateFile };
    } catch (err) {
      this.o.logger.warn({ error: errorMessage(err) }, 'making the VM template failed; booting normally');
      return undefined;
    }
  }

  /** Builds the template for `vm` under its lock; undefined when another process holds the lock. */
  async make(vm: VmConfig, signal?: AbortSignal): Promise<TemplateFiles | undefined> {
    const { key, fingerprint, inputs } = templateIdentity(vm);
    fs.mkdirSync(this.o.root, { recursive: true, mode: 0o700 });
    fs.chmodSync(this.o.root, 0o700);
    // Guest RAM in a file: on a disk it would be written back to the disk, and each clone copied from it.
    if (!(this.o.onTmpfs ?? isTmpfs)(this.o.root))
      throw new FailedPreconditionError(
        `${this.o.root} is not on tmpfs: VM templates keep guest RAM in files there; put state_dir on tmpfs (/run is, on most hosts)`,
      );
    const lock = path.join(this.o.root, `${key}.lock`);
    if (!this.lock(lock)) {
      this.o.logger.info({ key }, 'a VM template is being made by another sandbox; booting normally');
      return undefined;
    }
    try {
      const again = this.find(vm);
      if (again) return again;
      const t0 = performance.now();
      const stateBytes = await this.build(vm, key, lock, signal);
      const files = this.files(key, fingerprint);
      fs.writeFileSync(
        path.join(lock, FINGERPRINT_FILE),
        JSON.stringify({ fingerprint, key, ...inputs, madeAt: new Date().toISOString() }, null, 2),
        { mode: 0o600 },
      );
      const building = path.join(this.o.root, `${key}-${fingerprint}.new`);
      fs.rmSync(building, { recursive: true, force: true });
      fs.mkdirSync(building, { mode: 0o700 });
      for (const f of [MEMORY_FILE, STATE_FILE, FINGERPRINT_FILE])
        fs.renameSync(path.join(lock, f), path.join(building, f));
      fs.rmSync(files.dir, { recursive: true, force: true });
      fs.renameSync(building, files.dir);
      this.removeStale(key, fingerprint);
      this.o.logger.info(
        { key, fingerprint, dir: files.dir, stateBytes, ms: Math.round(performance.now() - t0) },
        'VM template made',
      );
      return files;
    } finally {
      fs.rmSync(lock, { recursive: true, force: true });
    }
  }

  /**
   * Removes the templates of `key` (and a build's leftover `.new` folders), all or all but the one of `keep`
   * (a fingerprint), under the key's lock: never while a build holds it. Returns the names removed; undefined
   * when a build holds the lock.
   */
  remove(key: string, keep?: string): string[] | undefined {
    if (!TEMPLATE_KEY.test(key)) throw new InvalidArgumentError(`${JSON.stringify(key)} is not a template key`);
    let root: fs.Stats;
    try {
      root = fs.lstatSync(this.o.root);
    } catch {
      return [];
    }
    if (!root.isDirectory())
      throw new FailedPreconditionError(`${this.o.root} is not a folder (a symlink is not followed)`);
    const lock = path.join(this.o.root, `${key}.lock`);
    if (!this.lock(lock)) return undefined;
    const removed: string[] = [];
    try {
      for (const name of fs.readdirSync(this.o.root)) {
        if (!name.startsWith(`${key}-`) || name === `${key}-${keep}`) continue;
        fs.rmSync(path.join(this.o.root, name), { recursive: true, force: true }); // a symlink is unlinked, not followed
        removed.push(name);
      }
    } finally {
      fs.rmSync(lock, { recursive: true, force: true });
    }
    if (removed.length) this.o.logger.info({ removed }, 'removed VM templates');
    return removed.sort();
  }

  private files(key: string, fingerprint: string): TemplateFiles {
    const dir = path.join(this.o.root, `${key}-${fingerprint}`);
    return { dir, memoryFile: path.join(dir, MEMORY_FILE), stateFile: path.join(dir, STATE_FILE) };
  }

  /** Boots the template VM to agent-ready, disconnects the agent, saves, stops. Files land in `lock`. */
  private async build(vm: VmConfig, key: string, lock: string, signal?: AbortSignal): Promise<number> {
    const hv = this.o.hypervisor();
    if (!hv.saveTemplate) throw new Error('this hypervisor cannot save a template');
    const cfg: VmConfig = {
      ...(templateConfig(vm) as Omit<VmConfig, 'id' | 'stateDir'>),
      id: `template-${key}`,
      stateDir: path.join(lock, 'vm'),
      // The template VM runs only hull's own guest, never a pod, for a few seconds; it keeps root because QEMU
      // must connect to the socket its state is saved through (a -runas QEMU cannot reach this root-only folder).
      qemuUser: '',
      template: { role: 'make', memoryFile: path.join(lock, MEMORY_FILE) },
      onSpawn: (h: SpawnedHelper) => {
        if (h.name === 'qemu') fs.writeFileSync(path.join(lock, QEMU_FILE), `${h.pid} ${h.startTime}`, { mode: 0o600 });
      },
    };
    const booted = await SandboxVm.boot(hv, cfg, {
      bootTimeoutMs: this.o.bootTimeoutMs,
      logger: this.o.logger,
      ...(this.o.dial ? { dial: this.o.dial } : {}),
      ...(signal ? { signal } : {}),
    });
    try {
      // The guest's port must see the host go away before the save: its read loop then ends that connection and
      // waits for the next one (a clone's). Saved too early, a clone's first bytes would reach the template's old
      // connection (whose ttrpc stream ids the clone's client reuses) and be lost: measured, a clone's agent then
      // answered after 3-12 s instead of at once. The guest of a booted template sees it within milliseconds.
      await booted.agent.close();
      await new Promise((r) => setTimeout(r, DISCONNECT_SETTLE_MS));
      return await hv.saveTemplate(path.join(lock, STATE_FILE), signal ?? new AbortController().signal);
    } finally {
      await hv.stop({ force: true });
      await hv.cleanup();
      // Pages the guest touched and left zero stay allocated in tmpfs: a sparse copy holds only the others.
      const memory = path.join(lock, MEMORY_FILE);
      if (fs.existsSync(memory)) {
        copySparse(memory, `${memory}.sparse`);
        fs.renameSync(`${memory}.sparse`, memory);
      }
    }
  }

  /** Takes the lock (an atomic mkdir), taking over one whose builder is gone. */
  private lock(lock: string): boolean {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.mkdirSync(lock, { mode: 0o700 });
        fs.writeFileSync(path.join(lock, OWNER_FILE), `${process.pid} ${processStartTime(process.pid) ?? ''}`, {
          mode: 0o600,
        });
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (this.held(lock)) return false;
      this.takeOver(lock);
    }
    return false;
  }

  /** The lock's builder still runs (same pid and start time). A lock without an owner yet is fresh: held. */
  private held(lock: string): boolean {
    const owner = readPidFile(path.join(lock, OWNER_FILE));
    if (!owner) {
      try {
        return Date.now() - fs.statSync(lock).mtimeMs < 60_000;
      } catch {
        return false;
      }
    }
    return processStartTime(owner.pid) === owner.startTime;
  }

  private takeOver(lock: string): void {
    const qemu = readPidFile(path.join(lock, QEMU_FILE));
    // Only the QEMU that was started for this lock (its argv names the lock folder), at the recorded start time.
    if (qemu && helperRuns(qemu, lock)) {
      try {
        process.kill(qemu.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.o.logger.warn({ lock }, 'taking over a VM template lock whose builder is gone');
    fs.rmSync(lock, { recursive: true, force: true });
  }

  /** Templates of the same configuration made from older inputs. */
  private removeStale(key: string, fingerprint: string): void {
    for (const name of fs.readdirSync(this.o.root)) {
      if (name.startsWith(`${key}-`) && name !== `${key}-${fingerprint}` && !name.endsWith('.new')) {
        fs.rmSync(path.join(this.o.root, name), { recursive: true, force: true });
        this.o.logger.info({ removed: name }, 'removed a stale VM template');
      }
    }
  }
}

function readPidFile(p: string): { pid: number; startTime: string } | undefined {
  try {
    const [pid, startTime] = fs.readFileSync(p, 'utf8').trim().split(' ');
    const n = Number(pid);
    if (!Number.isSafeInteger(n) || n <= 0) return undefined;
    return { pid: n, startTime: startTime ?? '' };
  } catch {
    return undefined;
  }
}
