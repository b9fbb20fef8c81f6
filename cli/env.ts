/**
 * `hull env`: what a bug report needs. The effective configuration (the file found and how, every key with its
 * value and where it came from: the file or the built-in default), the path of every artefact, the versions of the
 * programs hull runs, and host facts. Nothing is changed and nothing is booted.
 */
import os from 'node:os';
import path from 'node:path';
import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };
import { CONFIG_KEYS, fileValues, type FileValue, type HullConfig } from '../core/config';
import { parseCgroupMounts } from '../core/host-cgroup';
import { chooseAccel, chooseTransport, type HostProbe } from '../hypervisor/accel';
import { programVersion, readManifest } from './checks';
import type { Host } from './host';

export interface KeyReport {
  value: FileValue;
  /** The file that set it, or 'default'. */
  from: string;
}

export interface EnvReport {
  configuration: {
    /** The file read, or null when none exists and the built-in defaults apply. */
    file: string | null;
    /** How the file was chosen: --config, HULL_CONFIG, or the default path. */
    chosenBy: string;
    keys: Record<string, Record<string, KeyReport>>;
  };
  artefacts: Record<string, string>;
  versions: Record<string, string>;
  host: Record<string, string | number>;
}

export interface EnvContext {
  host: Host;
  config: HullConfig;
  /** The file read, or undefined for the built-in defaults. */
  file: string | undefined;
  /** Its text, to tell the keys it sets from the defaults. */
  text: string | undefined;
  chosenBy: string;
  binDir: string;
  hullVersion: string;
}

/** The keys the file's text sets, as "section.key". */
export function keysSet(text: string | undefined): Set<string> {
  if (text === undefined) return new Set();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const doc = (require('smol-toml') as typeof SmolToml).parse(text) as Record<string, Record<string, unknown>>;
  return new Set(Object.entries(doc).flatMap(([s, t]) => Object.keys(t).map((k) => `${s}.${k}`)));
}

export async function describeEnv(ctx: EnvContext): Promise<EnvReport> {
  const values = fileValues(ctx.config) as Record<string, Record<string, FileValue>>;
  const set = keysSet(ctx.text);
  const keys: EnvReport['configuration']['keys'] = {};
  for (const [section, names] of Object.entries(CONFIG_KEYS)) {
    keys[section] = {};
    for (const key of names)
      keys[section][key] = {
        value: values[section]![key]!,
        from: set.has(`${section}.${key}`) ? ctx.file! : 'default',
      };
  }
  const hv = ctx.config.hypervisor;
  const guestDir = path.dirname(hv.kernel);
  const artefacts = {
    shim: path.join(ctx.binDir, 'containerd-shim-hull-v2'),
    qemu: hv.path,
    virtiofsd: hv.virtioFsDaemon,
    kernel: hv.kernel,
    initrd: hv.initrd,
    image: hv.image,
    manifest: path.join(guestDir, 'manifest.json'),
  };
  const versions: Record<string, string> = { hull: ctx.hullVersion, node: process.version };
  for (const [name, program] of [
    ['qemu', hv.path],
    ['virtiofsd', hv.virtioFsDaemon],
    ['containerd', 'containerd'],
  ] as const) {
    const v = await programVersion(ctx.host, program);
    versions[name] = 'version' in v ? v.version : `(${v.error})`;
  }
  versions.guestKernel = readManifest(guestDir)?.kernelRelease ?? '(no manifest.json)';
  const probe: HostProbe = { exists: (p) => ctx.host.exists(p), openReadWrite: (p) => ctx.host.openReadWrite(p) };
  const reason = (f: () => { value: string; reason: string }): string => {
    try {
      const c = f();
      return `${c.value}: ${c.reason}`;
    } catch (err) {
      return `error: ${(err as Error).message}`;
    }
  };
  let cgroup: string;
  try {
    cgroup = `v${parseCgroupMounts(ctx.host.readFile('/proc/self/mountinfo') ?? '').version}`;
  } catch (err) {
    cgroup = (err as Error).message;
  }
  return {
    configuration: { file: ctx.file ?? null, chosenBy: ctx.chosenBy, keys },
    artefacts,
    versions,
    host: {
      kernel: os.release(),
      arch: os.arch(),
      cpus: os.cpus().length,
      memoryMiB: Math.round(os.totalmem() / 1048576),
      cgroup,
      uid: ctx.host.uid,
      accel: reason(() => chooseAccel(hv.accel, probe)),
      agentTransport: reason(() => chooseTransport(ctx.config.agent.transport, probe)),
    },
  };
}

/** The report as text: one `section.key = value   (from)` line per key, then the rest. */
export function formatEnv(r: EnvReport): string {
  const lines = [`configuration: ${r.configuration.file ?? '(none: built-in defaults)'} (${r.configuration.chosenBy})`];
  for (const [section, keys] of Object.entries(r.configuration.keys))
    for (const [key, k] of Object.entries(keys))
      lines.push(`  ${`${section}.${key} = ${JSON.stringify(k.value)}`.padEnd(64)} (${k.from})`);
  for (const [title, rec] of [
    ['artefacts', r.artefacts],
    ['versions', r.versions],
    ['host', r.host],
  ] as const) {
    lines.push(`${title}:`);
    for (const [k, v] of Object.entries(rec)) lines.push(`  ${k.padEnd(15)} ${v}`);
  }
  return lines.join('\n');
}
