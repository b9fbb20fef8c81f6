/**
 * Where a pod's boot time goes, phase by phase, and the agent's footprint in the guest. Each run boots a VM and starts
 * one container in it; the phases, in order:
 *
 * - qemu_start: prepare, spawn QEMU, until QMP reports it running (host clock).
 * - firmware: until the guest kernel's uptime origin (SeaBIOS and the kernel's loading and decompression, plus the
 *   kernel's first moments before its clock starts), placed on the host's clock by one GuestInfo round trip: the
 *   guest's uptime when it answered against the host's send and receive times (their midpoint).
 * - kernel: guest uptime when the initramfs's /init started (the first user-space program).
 * - init: until node started (the initramfs's modules, the root disk, switch_root, hull-init).
 * - node_start: until the agent's main code ran (node's bootstrap, the bundle loaded with its code cache).
 * - agent_ready: until the agent served (its init: mounts, modules, the serial port).
 * - host_dial: until the host's dial and Health.Check completed (what is left of the host-measured boot).
 * - first_container: CreateContainer + StartContainer of busybox `sh -c 'echo up; exec sleep 1000'` (rootfs shared
 *   first) until its `up` reaches the host.
 *
 * qemu_cpu_ms: QEMU's CPU time until then, the boot's work (under TCG it barely depends on the host's load, which
 * the wall-clock phases do on a shared machine).
 *
 * The guest's phases come from its GuestInfo (agent-client/guest-boot.ts validates them). Also: the agent's RSS and
 * PSS at idle (sandbox created) and with the container running, the bundle and code cache sizes. Medians of
 * BENCH_BOOT_RUNS (default 3). BENCH_BOOT_COMPARE=<folder with vmlinuz, initrd.img, rootfs.img> boots that image too,
 * alternating with guest/out run by run, so a change is judged against the previous image in the same run.
 * BENCH_BOOT_ROOT_IMAGES=virtio-blk,nvdimm,virtio-pmem boots each image with each way of attaching its root image
 * (hypervisor/root-image.ts), alternating too; default virtio-blk only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor, ROOT_IMAGE_DEVICES, type RootImageDevice } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import type { AgentClient } from '../agent-client';
import { busyboxRootfs } from '../integration/lib/containers';
import { GUEST_OUT, guestArtifacts } from '../integration/lib/guest';
import { testSpec } from '../integration/lib/oci-spec';
import { median, printTable, round } from './lib/report';
import { sharedDirStorage } from '../core/pod';

const RUNS = Number(process.env.BENCH_BOOT_RUNS ?? 3);
const COMPARE = process.env.BENCH_BOOT_COMPARE;
const ROOT_IMAGES = (process.env.BENCH_BOOT_ROOT_IMAGES ?? 'virtio-blk').split(',') as RootImageDevice[];
const SANDBOX = 'benchboot';
/** USER_HZ: /proc's clock ticks per second (100 on Linux's x86 and arm). */
const CLOCK_TICKS = 100;

interface Image {
  name: string;
  rootImageDevice: RootImageDevice;
  kernel: string;
  initrd: string;
  image: string;
}

export interface BootRun {
  qemu_start_ms: number;
  firmware_ms: number;
  kernel_ms: number;
  init_ms: number;
  node_start_ms: number;
  agent_ready_ms: number;
  host_dial_ms: number;
  /** Host-measured: boot start until the agent answered (the sum of the phases above). */
  boot_total_ms: number;
  /** QEMU's CPU time (user + system) until the agent answered: the boot's work, less sensitive to the host's load. */
  qemu_cpu_ms: number;
  first_container_ms: number;
  agent_rss_idle_mib: number;
  agent_pss_idle_mib: number;
  agent_rss_1c_mib: number;
  agent_pss_1c_mib: number;
}

/** The guest's points on the host's clock, as phases (ms). */
export function bootPhases(
  host: { qemuStartedMs: number; agentReadyMs: number; sentMs: number; receivedMs: number },
  guest: { initStartedMs: number; agentStartedMs: number; agentMainMs: number; agentReadyMs: number; uptimeMs: number },
): Pick<
  BootRun,
  | 'qemu_start_ms'
  | 'firmware_ms'
  | 'kernel_ms'
  | 'init_ms'
  | 'node_start_ms'
  | 'agent_ready_ms'
  | 'host_dial_ms'
  | 'boot_total_ms'
> {
  const kernelAt = (host.sentMs + host.receivedMs) / 2 - guest.uptimeMs; // the guest's uptime 0, host clock
  return {
    qemu_start_ms: host.qemuStartedMs,
    firmware_ms: kernelAt - host.qemuStartedMs,
    kernel_ms: guest.initStartedMs,
    init_ms: guest.agentStartedMs - guest.initStartedMs,
    node_start_ms: guest.agentMainMs - guest.agentStartedMs,
    agent_ready_ms: guest.agentReadyMs - guest.agentMainMs,
    host_dial_ms: host.agentReadyMs - (kernelAt + guest.agentReadyMs),
    boot_total_ms: host.agentReadyMs,
  };
}

async function waitForOutput(agent: AgentClient, cid: string, want: string): Promise<void> {
  let seen = '';
  while (!seen.includes(want)) {
    const chunk = await agent.readStdout(cid, '');
    if (chunk.length === 0) throw new Error(`container ${cid} closed its stdout before '${want}' (got '${seen}')`);
    seen += chunk.toString('utf8');
  }
}

async function bootOnce(image: Image, run: number, rootfs: string, dir: string): Promise<BootRun> {
  const runDir = fs.mkdtempSync(path.join(dir, 'run-'));
  const share = new VirtioFsShare({ root: path.join(runDir, 'share'), sandboxId: SANDBOX });
  await share.prepare();
  const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
  let vm: SandboxVm | undefined;
  try {
    const t0 = performance.now();
    vm = await SandboxVm.boot(
      hv,
      {
        id: `${SANDBOX}${run}`,
        stateDir: path.join(runDir, 'vm'),
        kernel: image.kernel,
        initrd: image.initrd,
        image: image.image,
        rootImageDevice: image.rootImageDevice,
        vcpus: 1,
        memoryMiB: 512,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: share.sharedDir(),
      },
      { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
    );
    const sentMs = performance.now() - t0;
    const qemuCpuMs = cpuMs(hv.pid());
    const details = await vm.agent.guestDetails();
    const receivedMs = performance.now() - t0;
    const phases = bootPhases({ ...vm.timings, sentMs, receivedMs }, details);
    await vm.agent.createSandbox({
      sandboxId: SANDBOX,
      storages: [sharedDirStorage()],
    });
    await new Promise((r) => setTimeout(r, 2000)); // idle: the agent's background start-up work is done
    const idle = await vm.agent.guestDetails();
    const c0 = performance.now();
    await share.shareRootfs('first', [], rootfs);
    await vm.agent.createOciContainer(
      'first',
      testSpec({ args: ['sh', '-c', 'echo up; exec sleep 1000'], rootReadonly: true, hostname: 'first' }),
    );
    await vm.agent.startContainer('first');
    await waitForOutput(vm.agent, 'first', 'up');
    const firstContainerMs = performance.now() - c0;
    await new Promise((r) => setTimeout(r, 1000));
    const one = await vm.agent.guestDetails();
    return {
      ...phases,
      qemu_cpu_ms: qemuCpuMs,
      first_container_ms: firstContainerMs,
      agent_rss_idle_mib: idle.agentRssKiB / 1024,
      agent_pss_idle_mib: idle.agentPssKiB / 1024,
      agent_rss_1c_mib: one.agentRssKiB / 1024,
      agent_pss_1c_mib: one.agentPssKiB / 1024,
    };
  } finally {
    if (vm) await vm.shutdown({ gracefulMs: 30_000 }).catch(() => undefined);
    await hv.stop({ force: true }).catch(() => undefined);
    await hv.cleanup().catch(() => undefined);
    await share.cleanup();
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

/** A process's CPU time (utime + stime) in ms, from /proc/<pid>/stat; NaN when it cannot be read. */
export function cpuMs(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

function imageAt(name: string, folder: string, rootImageDevice: RootImageDevice = 'virtio-blk'): Image {
  const files = {
    kernel: path.join(folder, 'vmlinuz'),
    initrd: path.join(folder, 'initrd.img'),
    image: path.join(folder, 'rootfs.img'),
  };
  for (const f of Object.values(files)) if (!fs.existsSync(f)) throw new Error(`${f} is missing`);
  return { name, rootImageDevice, ...files };
}

function agentSizes(folder: string): Record<string, number> {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(folder, 'manifest.json'), 'utf8')) as {
      agent?: { bundleBytes?: number; codeCacheBytes?: number };
    };
    return {
      bundle_kib: round((m.agent?.bundleBytes ?? NaN) / 1024),
      code_cache_kib: round((m.agent?.codeCacheBytes ?? NaN) / 1024),
    };
  } catch {
    return { bundle_kib: NaN, code_cache_kib: NaN };
  }
}

export async function benchBoot(): Promise<Record<string, unknown>> {
  guestArtifacts(); // says 'run make guest' when it is missing
  for (const d of ROOT_IMAGES) if (!ROOT_IMAGE_DEVICES.includes(d)) throw new Error(`unknown root image device ${d}`);
  const named = (name: string, d: RootImageDevice): string => (ROOT_IMAGES.length > 1 ? `${name}/${d}` : name);
  const images = ROOT_IMAGES.flatMap((d) => [
    imageAt(named('current', d), GUEST_OUT, d),
    ...(COMPARE ? [imageAt(named('compare', d), path.resolve(COMPARE), d)] : []),
  ]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-boot-'));
  const runs = new Map<string, BootRun[]>(images.map((i) => [i.name, []]));
  try {
    const rootfs = busyboxRootfs(path.join(dir, 'rootfs'), ['sh', 'sleep']);
    for (let r = 0; r < RUNS; r++) {
      // Alternating, so that the machine's load falls on every image alike.
      for (const image of r % 2 ? [...images].reverse() : images)
        runs.get(image.name)!.push(await bootOnce(image, r, rootfs, dir));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const medians: Record<string, Record<string, number>> = {};
  for (const image of images) {
    const rs = runs.get(image.name)!;
    printTable(
      `boot phases, ${image.name} image, each run (ms; agent memory MiB)`,
      rs.map((b) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, round(v)]))),
    );
    const keys = Object.keys(rs[0]!) as (keyof BootRun)[];
    medians[image.name] = {
      ...Object.fromEntries(keys.map((k) => [k, round(median(rs.map((b) => b[k])))])),
      ...agentSizes(path.dirname(image.kernel)),
    };
  }
  printTable(
    `medians of ${RUNS} (firmware: QMP running until the guest's uptime origin; host_dial: the agent serving until the host's dial completed)`,
    images.map((i) => ({ image: i.name, ...medians[i.name]! })),
  );
  return {
    runs: RUNS,
    images: images.map((i) => ({ name: i.name, folder: path.dirname(i.kernel) })),
    medians,
    samples: Object.fromEntries(
      [...runs].map(([k, v]) => [
        k,
        v.map((b) => Object.fromEntries(Object.entries(b).map(([n, x]) => [n, round(x)]))),
      ]),
    ),
  };
}
