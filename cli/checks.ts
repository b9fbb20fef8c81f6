/**
 * `hull check`: everything a pod needs on this host, each item ok / warning / fail with the reason and, unless ok,
 * the fix. A fail means pods cannot run (or would hang) as configured; a warning means they run, slower or without
 * a feature. No network access: every answer comes from the host's files, its devices and `--version` runs.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };
import { fileValues, type HullConfig } from '../core/config';
import { parseCgroupMounts } from '../core/host-cgroup';
import {
  KVM_DEVICE,
  KVM_PVM_MODULE,
  VHOST_NET_DEVICE,
  chooseAccel,
  chooseTransport,
  type HostProbe,
} from '../hypervisor/accel';
import { vmPaths } from '../hypervisor/config';
import type { Host } from './host';

export type Status = 'ok' | 'warning' | 'fail';

export interface CheckItem {
  name: string;
  status: Status;
  /** What was found (and, unless ok, why it matters). */
  detail: string;
  /** What to do, unless ok. */
  fix?: string;
}

export interface CheckContext {
  host: Host;
  config: HullConfig;
  /** The configuration file read ('defaults' when none), named in the fixes. */
  configSource: string;
  /** How long the KVM test boot may take before QEMU is killed. */
  testBootMs: number;
}

/** The test boot's deadline: a stock kernel reaches its "no root" panic well under a second under KVM. */
export const DEFAULT_TEST_BOOT_MS = 5000;
const VERSION_DEADLINE_MS = 5000;
/** TCG's cost, as measured on this project's 2-core host (README, config/configuration.toml `accel`). */
export const TCG_COST =
  'a pod VM boots in about 5 s on 2 idle cores under TCG (well under 1 s under KVM), and runs slower';
export const CONTAINERD_CONFIG = '/etc/containerd/config.toml';
export const HULL_RUNTIME_TYPE = 'io.containerd.hull.v2';
/** CRI's namespace and sandbox ids (64 hex digits): the longest folder the VM's sockets usually live in. */
const CRI_NAMESPACE = 'k8s.io';
const CRI_ID_LENGTH = 64;
const MAX_SOCKET_PATH = 107;

const where = (source: string): string => (source === 'defaults' ? 'a configuration file' : source);

/** Every check, in the order printed. */
export async function runChecks(ctx: CheckContext): Promise<CheckItem[]> {
  const items: CheckItem[] = [];
  items.push(await checkProgram(ctx, 'QEMU', ctx.config.hypervisor.path, 'path', 'qemu-system-x86'));
  items.push(
    await checkProgram(
      ctx,
      'virtiofsd',
      ctx.config.hypervisor.virtioFsDaemon,
      'virtio_fs_daemon',
      'qemu-system-common',
    ),
  );
  items.push(...(await checkGuestArtefacts(ctx)));
  items.push(await checkKvm(ctx));
  items.push(checkVsock(ctx), checkVhostNet(ctx), checkTun(ctx), checkCgroups(ctx));
  items.push(await checkIptables(ctx));
  items.push(...(await checkContainerd(ctx)));
  items.push(checkStateDir(ctx));
  return items;
}

/** The first line of `<program> --version`, or the reason it could not be run. */
export async function programVersion(
  host: Host,
  program: string,
): Promise<{ version: string } | { error: string; missing: boolean }> {
  const r = await host.run(program, ['--version'], VERSION_DEADLINE_MS);
  if (r.code === 0) return { version: (r.stdout.split('\n').find((l) => l.trim() !== '') ?? '').trim() };
  const missing = r.error === 'ENOENT';
  const why = r.error ?? `exit status ${r.code ?? r.signal}: ${r.stderr.trim().split('\n')[0] ?? ''}`;
  return { error: missing ? 'not found' : why, missing };
}

async function checkProgram(
  ctx: CheckContext,
  name: string,
  program: string,
  key: string,
  pkg: string,
): Promise<CheckItem> {
  const v = await programVersion(ctx.host, program);
  if ('version' in v) return { name, status: 'ok', detail: `${program}: ${v.version}` };
  return {
    name,
    status: 'fail',
    detail: `${program}: ${v.error}`,
    fix: `apt-get install ${pkg}, or set [hypervisor] ${key} in ${where(ctx.configSource)} to the ${name} binary`,
  };
}

interface ManifestFile {
  size: number;
  sha256: string;
}

/** The manifest `make guest` writes next to the artefacts; undefined when absent or not a manifest. */
export function readManifest(dir: string): { files: Record<string, ManifestFile>; kernelRelease?: string } | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  } catch {
    return undefined;
  }
  const files = (doc as { files?: unknown }).files;
  if (!files || typeof files !== 'object') return undefined;
  const release = (doc as { kernelRelease?: unknown }).kernelRelease;
  return {
    files: files as Record<string, ManifestFile>,
    ...(typeof release === 'string' ? { kernelRelease: release } : {}),
  };
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Each artefact present, and equal (size, sha256) to what manifest.json next to it says `make guest` built. */
async function checkGuestArtefacts(ctx: CheckContext): Promise<CheckItem[]> {
  const hv = ctx.config.hypervisor;
  const rebuild = `run \`make guest\` (checkout) or \`make install\`, or set [hypervisor] KEY in ${where(ctx.configSource)}`;
  const items: CheckItem[] = [];
  for (const [key, file] of [
    ['kernel', hv.kernel],
    ['initrd', hv.initrd],
    ['image', hv.image],
  ] as const) {
    const name = `guest ${key}`;
    const fix = rebuild.replace('KEY', key);
    let size: number;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
      fs.accessSync(file, fs.constants.R_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist' : code ? `cannot be read (${code})` : 'is not a file';
      items.push({ name, status: 'fail', detail: `${file} ${why}`, fix });
      continue;
    }
    const manifest = readManifest(path.dirname(file));
    const want = manifest?.files[path.basename(file)];
    if (!want) {
      items.push({
        name,
        status: 'warning',
        detail: `${file}: no fingerprint for it in ${path.join(path.dirname(file), 'manifest.json')}; not checked`,
        fix: 'use the artefacts `make guest` builds, with their manifest.json next to them',
      });
      continue;
    }
    const sum = size === want.size ? await sha256File(file) : undefined;
    if (sum !== want.sha256) {
      const got =
        sum === undefined
          ? `${size} bytes, manifest ${want.size}`
          : `sha256 ${sum.slice(0, 12)}…, manifest ${want.sha256.slice(0, 12)}…`;
      items.push({
        name,
        status: 'fail',
        detail: `${file} does not match its fingerprint (${got}): changed or truncated after the build`,
        fix,
      });
      continue;
    }
    const release = key === 'kernel' && manifest?.kernelRelease ? `, Linux ${manifest.kernelRelease}` : '';
    items.push({
      name,
      status: 'ok',
      detail: `${file} (${size} bytes, sha256 ${want.sha256.slice(0, 12)}…${release})`,
    });
  }
  return items;
}

function probeOf(host: Host): HostProbe {
  return { exists: (p) => host.exists(p), openReadWrite: (p) => host.openReadWrite(p) };
}

/** Whether kvm_pvm is loaded: its /sys/module folder, or a line of /proc/modules. */
function pvmLoaded(host: Host): boolean {
  return host.exists(KVM_PVM_MODULE) || /^kvm_pvm\s/m.test(host.readFile('/proc/modules') ?? '');
}

/** This host is a VM itself (the CPU's hypervisor flag), so its KVM is nested virtualisation. */
function nestedHost(host: Host): boolean {
  return /^flags\s*:.*\bhypervisor\b/m.test(host.readFile('/proc/cpuinfo') ?? '');
}

/**
 * A short, bounded test boot: QEMU under KVM with the guest kernel and no root file system, so that a working KVM
 * reaches the kernel's "no root" panic (and, with -no-reboot, exits) within a second; QEMU is killed by its PID at
 * the deadline. The kernel's first line on the serial console ("Linux version") says it ran.
 */
export async function testBoot(ctx: CheckContext): Promise<{ booted: boolean; detail: string }> {
  const hv = ctx.config.hypervisor;
  // prettier-ignore
  const args = [
    '-accel', 'kvm', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-m', '128',
    '-no-reboot', '-kernel', hv.kernel, '-append', 'console=ttyS0 earlyprintk=serial panic=-1',
  ];
  const r = await ctx.host.run(hv.path, args, ctx.testBootMs);
  if (/Linux version/.test(r.stdout))
    return { booted: true, detail: `a test boot under KVM reached the kernel in ${r.elapsedMs} ms` };
  if (r.timedOut)
    return {
      booted: false,
      detail: `a test boot under KVM printed no kernel line in ${ctx.testBootMs} ms (QEMU killed): the guest hangs`,
    };
  const why = r.error ?? `QEMU exited with ${r.code ?? r.signal}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
  return { booted: false, detail: `a test boot under KVM failed: ${why}` };
}

/** /dev/kvm: does it open, is it PVM or nested, does it really run a guest; else TCG named with its cost. */
async function checkKvm(ctx: CheckContext): Promise<CheckItem> {
  const name = 'KVM';
  const { host, config } = ctx;
  const requested = config.hypervisor.accel;
  const tcgFix = `nothing to do to run pods (TCG is the fallback); for speed, a host with hardware virtualisation`;
  if (requested === 'tcg')
    return {
      name,
      status: 'warning',
      detail: `accel = "tcg" is configured: every VM runs under TCG emulation; ${TCG_COST}`,
      fix: `set [hypervisor] accel = "auto" in ${where(ctx.configSource)} where /dev/kvm works`,
    };
  const pvm = pvmLoaded(host);
  if (!host.openReadWrite(KVM_DEVICE)) {
    const why = host.exists(KVM_DEVICE) ? 'cannot be opened read-write' : 'does not exist';
    const fix = host.exists(KVM_DEVICE)
      ? 'run the shim as root (or a user in group kvm)'
      : `load kvm_intel or kvm_amd (on a VM host: enable nested virtualisation on the outer host), or ${tcgFix}`;
    if (requested === 'kvm')
      return { name, status: 'fail', detail: `accel = "kvm" is configured but ${KVM_DEVICE} ${why}`, fix };
    return { name, status: 'warning', detail: `${KVM_DEVICE} ${why}: VMs run under TCG; ${TCG_COST}`, fix };
  }
  const boot = await testBoot(ctx);
  if (pvm) {
    const reason = `kvm_pvm is loaded (${KVM_PVM_MODULE}): /dev/kvm is PVM, a paravirtual KVM that cannot boot a stock guest kernel; ${boot.detail}`;
    if (requested === 'kvm')
      return {
        name,
        status: boot.booted ? 'warning' : 'fail',
        detail: `accel = "kvm" is configured but ${reason}`,
        fix: `set [hypervisor] accel = "auto" in ${where(ctx.configSource)} (TCG is chosen under PVM)`,
      };
    const choice = chooseAccel('auto', probeOf(host));
    return {
      name,
      status: 'warning',
      detail: `${reason}. accel = "auto" chooses ${choice.value.toUpperCase()}: ${TCG_COST}`,
      fix: `${tcgFix} (or nested virtualisation: kvm_intel/kvm_amd instead of kvm_pvm)`,
    };
  }
  const nested = nestedHost(host);
  const kind = nested ? 'nested virtualisation (this host is itself a VM)' : 'hardware virtualisation';
  if (boot.booted) return { name, status: 'ok', detail: `${KVM_DEVICE} opens; ${kind}; ${boot.detail}` };
  return {
    name,
    status: 'fail',
    detail: `${KVM_DEVICE} opens (${kind}) but ${boot.detail}; accel = "${requested}" would use KVM and pods would hang`,
    fix: nested
      ? `enable nested virtualisation on the outer host (kvm_intel nested=1 / kvm_amd nested=1), or set [hypervisor] accel = "tcg" in ${where(ctx.configSource)}`
      : `set [hypervisor] accel = "tcg" in ${where(ctx.configSource)}, or fix KVM (dmesg)`,
  };
}

function checkVsock(ctx: CheckContext): CheckItem {
  const name = 'vhost-vsock';
  try {
    const t = chooseTransport(ctx.config.agent.transport, probeOf(ctx.host));
    if (t.value === 'vsock' || ctx.config.agent.transport === 'serial') return { name, status: 'ok', detail: t.reason };
    return {
      name,
      status: 'warning',
      detail: `${t.reason} (pods work over it)`,
      fix: 'modprobe vhost_vsock',
    };
  } catch (err) {
    return {
      name,
      status: 'fail',
      detail: (err as Error).message,
      fix: 'modprobe vhost_vsock, or [agent] transport = "auto"',
    };
  }
}

function checkVhostNet(ctx: CheckContext): CheckItem {
  const name = 'vhost-net';
  if (ctx.host.openReadWrite(VHOST_NET_DEVICE))
    return { name, status: 'ok', detail: `${VHOST_NET_DEVICE} opens read-write` };
  const why = ctx.host.exists(VHOST_NET_DEVICE) ? 'cannot be opened read-write' : 'does not exist';
  const accel = safeAccel(ctx);
  if (accel !== 'kvm')
    return { name, status: 'ok', detail: `${VHOST_NET_DEVICE} ${why}; not used: the guest runs under TCG` };
  return {
    name,
    status: 'warning',
    detail: `${VHOST_NET_DEVICE} ${why}: the NICs use QEMU's own virtio-net backend (slower)`,
    fix: 'modprobe vhost_net',
  };
}

function safeAccel(ctx: CheckContext): 'kvm' | 'tcg' {
  try {
    return chooseAccel(ctx.config.hypervisor.accel, probeOf(ctx.host)).value;
  } catch {
    return 'tcg';
  }
}

/** The kernel modules pods need beyond KVM and vhost: tun, for each pod's taps. */
function checkTun(ctx: CheckContext): CheckItem {
  const name = 'kernel modules';
  if (ctx.host.openReadWrite('/dev/net/tun'))
    return { name, status: 'ok', detail: "tun: /dev/net/tun opens (the pods' taps)" };
  return {
    name,
    status: 'fail',
    detail: 'tun: /dev/net/tun does not open: no pod can have a network interface',
    fix: 'modprobe tun',
  };
}

/** The cgroup controllers hull's host cgroup uses: memory (the pod's limit check) and cpu. */
function checkCgroups(ctx: CheckContext): CheckItem {
  const name = 'cgroups';
  const fix = 'mount the cgroup hierarchies with the memory and cpu controllers (systemd does by default)';
  let layout;
  try {
    layout = parseCgroupMounts(ctx.host.readFile('/proc/self/mountinfo') ?? '');
  } catch (err) {
    return { name, status: 'fail', detail: (err as Error).message, fix };
  }
  const have = new Set(layout.hierarchies.flatMap((h) => h.controllers));
  if (layout.version === 2)
    for (const c of (ctx.host.readFile(path.join(layout.hierarchies[0]!.mountPoint, 'cgroup.controllers')) ?? '').split(
      /\s+/,
    ))
      if (c) have.add(c);
  const missing = ['cpu', 'memory'].filter((c) => !have.has(c));
  const detail = `cgroup v${layout.version}; controllers ${[...have]
    .filter((c) => !c.startsWith('name='))
    .sort()
    .join(', ')}`;
  if (missing.length) return { name, status: 'warning', detail: `${detail}; missing ${missing.join(', ')}`, fix };
  return { name, status: 'ok', detail };
}

async function checkIptables(ctx: CheckContext): Promise<CheckItem> {
  const name = 'iptables (nat)';
  const r = await ctx.host.run('iptables', ['-w', '5', '-t', 'nat', '-S'], VERSION_DEADLINE_MS);
  if (r.code === 0) {
    const v = await programVersion(ctx.host, 'iptables');
    return {
      name,
      status: 'ok',
      detail: `the nat table is readable (${'version' in v ? v.version : 'version unknown'})`,
    };
  }
  const why =
    r.error === 'ENOENT'
      ? 'iptables is not installed'
      : `iptables -t nat -S failed: ${r.error ?? r.stderr.trim().split('\n')[0]}`;
  return {
    name,
    status: 'warning',
    detail: `${why}: pods run, but port forwarding (localhost ports, hostPort) does not`,
    fix: r.error === 'ENOENT' ? 'apt-get install iptables' : 'run as root; modprobe iptable_nat (or nf_tables)',
  };
}

async function checkContainerd(ctx: CheckContext): Promise<CheckItem[]> {
  const name = 'containerd';
  const v = await programVersion(ctx.host, 'containerd');
  const items: CheckItem[] = [];
  if (!('version' in v)) {
    items.push({ name, status: 'fail', detail: `containerd: ${v.error}`, fix: 'apt-get install containerd' });
  } else items.push({ name, status: 'ok', detail: v.version });
  const text = ctx.host.readFile(CONTAINERD_CONFIG);
  const fragment = `add to ${CONTAINERD_CONFIG} (as \`make install\` prints), then restart containerd: [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull] runtime_type = "${HULL_RUNTIME_TYPE}"`;
  let cri: Record<string, unknown> = {};
  let registered = false;
  if (text === undefined) {
    items.push({
      name: 'containerd runtime',
      status: 'warning',
      detail: `${CONTAINERD_CONFIG} does not exist: hull is not registered`,
      fix: fragment,
    });
  } else {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const toml = require('smol-toml') as typeof SmolToml;
    try {
      const doc = toml.parse(text) as { plugins?: Record<string, Record<string, unknown>> };
      cri = doc.plugins?.['io.containerd.grpc.v1.cri'] ?? {};
    } catch (err) {
      items.push({
        name: 'containerd runtime',
        status: 'fail',
        detail: `${CONTAINERD_CONFIG}: ${(err as Error).message.split('\n')[0]}`,
        fix: 'correct its TOML syntax',
      });
      return items;
    }
    const runtimes = ((cri.containerd as Record<string, unknown> | undefined)?.runtimes ?? {}) as Record<
      string,
      { runtime_type?: unknown; options?: { ConfigPath?: unknown } }
    >;
    const hull = Object.entries(runtimes).filter(([, r]) => r?.runtime_type === HULL_RUNTIME_TYPE);
    if (hull.length === 0)
      items.push({
        name: 'containerd runtime',
        status: 'warning',
        detail: `${CONTAINERD_CONFIG} registers no runtime of type ${HULL_RUNTIME_TYPE}`,
        fix: fragment,
      });
    else {
      registered = true;
      const [handler, r] = hull[0]!;
      const configPath = typeof r.options?.ConfigPath === 'string' ? r.options.ConfigPath : undefined;
      const differs = configPath !== undefined && ctx.configSource !== 'defaults' && configPath !== ctx.configSource;
      items.push({
        name: 'containerd runtime',
        status: differs ? 'warning' : 'ok',
        detail: `handler "${handler}" (${HULL_RUNTIME_TYPE})${configPath ? `, ConfigPath ${configPath}` : ''}${differs ? `: not the file checked here (${ctx.configSource})` : ''}`,
        ...(differs ? { fix: `run HULL_CONFIG=${configPath} hull check` } : {}),
      });
    }
  }
  // CRI gives containers negative oom_score_adj values unless restrict_oom_score_adj: where root may not lower it,
  // every CRI pod fails. A fail once hull is registered; before that, part of setting containerd up (a warning).
  const name2 = 'restrict_oom_score_adj';
  if (ctx.host.uid !== 0 && cri.restrict_oom_score_adj !== true) {
    items.push({
      name: name2,
      status: 'warning',
      detail: `not checked: hull check runs as uid ${ctx.host.uid}, and only root's answer tells`,
      fix: 'run hull check as root',
    });
  } else if (ctx.host.lowerOomScoreAdj()) {
    items.push({ name: name2, status: 'ok', detail: 'not needed: root may lower oom_score_adj here' });
  } else if (cri.restrict_oom_score_adj === true) {
    items.push({ name: name2, status: 'ok', detail: 'root may not lower oom_score_adj here, and it is set' });
  } else {
    items.push({
      name: name2,
      status: registered ? 'fail' : 'warning',
      detail: 'root may not lower oom_score_adj on this host: CRI fails every pod unless restrict_oom_score_adj = true',
      fix: `set [plugins."io.containerd.grpc.v1.cri"] restrict_oom_score_adj = true in ${CONTAINERD_CONFIG}`,
    });
  }
  return items;
}

/** The longest state_dir whose VM sockets, below <state_dir>/k8s.io/<64-hex id>/vm/, fit in a unix socket path. */
export function maxStateDirBytes(): number {
  const vmDir = path.join('/', CRI_NAMESPACE, 'x'.repeat(CRI_ID_LENGTH), 'vm');
  const p = vmPaths(vmDir);
  const longest = Math.max(
    ...[p.qmpSocket, p.agentSocket, p.agentLogSocket, p.virtiofsdSocket].map((s) => Buffer.byteLength(s)),
  );
  return MAX_SOCKET_PATH - longest;
}

function checkStateDir(ctx: CheckContext): CheckItem {
  const name = 'state_dir';
  const dir = fileValues(ctx.config).runtime.state_dir as string;
  const max = maxStateDirBytes();
  const len = Buffer.byteLength(dir);
  if (len <= max) return { name, status: 'ok', detail: `${dir}: ${len} bytes (at most ${max})` };
  return {
    name,
    status: 'fail',
    detail: `${dir}: ${len} bytes; a CRI pod's VM sockets (<state_dir>/${CRI_NAMESPACE}/<64-hex id>/vm/*.sock) exceed the ${MAX_SOCKET_PATH}-byte unix socket path`,
    fix: `set [runtime] state_dir in ${where(ctx.configSource)} to a path of at most ${max} bytes (default /run/hull)`,
  };
}
