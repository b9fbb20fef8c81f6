/**
 * VM start to agent ready, split into QEMU start (spawn until QMP reports it running), kernel boot (until the
 * agent's code runs: guest uptime, so firmware time before the kernel is outside it), agent start (the agent's own
 * start-up until it serves) and the rest (firmware and the host dialling the agent); the guest image's size; the
 * PSS of QEMU and virtiofsd with an idle guest. Several boots, medians reported.
 * Target: under TCG here, agent ready within 3 s.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SandboxVm } from '../core/vm';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { guestArtifacts } from '../integration/lib/guest';
import { median, printTable, round } from './lib/report';
import { sharedDirStorage } from '../core/pod';

const BOOTS = Number(process.env.BENCH_VM_BOOTS ?? 5);
const TARGET_MS = 3000;

/** Proportional set size in KiB, from /proc/<pid>/smaps_rollup. */
export function pssKiB(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** codeMs and initMs of the agent's `ready` record (its log port's tail; NaN when absent). */
export function agentReadyLine(console: string): { codeMs: number; initMs: number } {
  const m = /hull-agent info ready (\{.*\})/.exec(console);
  const fields = m ? (JSON.parse(m[1]!) as { codeMs?: number; initMs?: number }) : {};
  return { codeMs: fields.codeMs ?? NaN, initMs: fields.initMs ?? NaN };
}

interface Boot {
  total_ms: number;
  qemu_start_ms: number;
  kernel_boot_ms: number;
  agent_start_ms: number;
  /** Of agent_start: node's start and loading the agent's code, then the agent's init (mounts, modules). */
  agent_code_ms: number;
  agent_init_ms: number;
  other_ms: number;
  qemu_pss_mib: number;
  virtiofsd_pss_mib: number;
}

export async function benchVm(): Promise<Record<string, unknown>> {
  const guest = guestArtifacts();
  const boots: Boot[] = [];
  let accel = '';
  for (let i = 0; i < BOOTS; i++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-vm-'));
    fs.mkdirSync(path.join(dir, 'shared'));
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    try {
      const vm = await SandboxVm.boot(
        hv,
        {
          id: `bench${i}`,
          stateDir: path.join(dir, 'vm'),
          kernel: guest.kernel,
          initrd: guest.initrd,
          image: guest.image,
          vcpus: 1,
          memoryMiB: 512,
          accel: 'auto',
          agentTransport: 'serial',
          sharedDir: path.join(dir, 'shared'),
        },
        { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
      );
      accel = hv.accel();
      const details = await vm.agent.guestDetails();
      await vm.agent.createSandbox({
        sandboxId: `bench${i}`,
        storages: [sharedDirStorage()],
      });
      await new Promise((r) => setTimeout(r, 1000)); // idle guest
      const ready = agentReadyLine(hv.agentLogTail().join('\n'));
      const total = vm.timings.agentReadyMs;
      const qemu = vm.timings.qemuStartedMs;
      boots.push({
        total_ms: round(total),
        qemu_start_ms: round(qemu),
        kernel_boot_ms: round(details.agentStartedMs),
        agent_start_ms: round(details.agentReadyMs - details.agentStartedMs),
        agent_code_ms: ready.codeMs,
        agent_init_ms: ready.initMs,
        other_ms: round(total - qemu - details.agentReadyMs),
        qemu_pss_mib: round(pssKiB(hv.pid()) / 1024),
        virtiofsd_pss_mib: round(pssKiB(hv.virtiofsdPid()) / 1024),
      });
      await vm.shutdown({ gracefulMs: 30_000 });
    } finally {
      await hv.stop({ force: true }).catch(() => undefined);
      await hv.cleanup().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  printTable(
    `VM start to agent ready (${accel}), ${BOOTS} boots`,
    boots.map((b) => ({ ...b })),
  );
  const keys = Object.keys(boots[0]!) as (keyof Boot)[];
  const medians = Object.fromEntries(keys.map((k) => [k, round(median(boots.map((b) => b[k])))])) as unknown as Boot;
  const sizes = Object.fromEntries(
    ['vmlinuz', 'initrd.img', 'rootfs.img'].map((f) => [f, fs.statSync(path.join(path.dirname(guest.kernel), f)).size]),
  );
  const imageMiB = round(Object.values(sizes).reduce((a, b) => a + b, 0) / 2 ** 20);
  const summary = { accel, ...medians, image_mib: imageMiB, target_ms: TARGET_MS, met: medians.total_ms <= TARGET_MS };
  printTable('medians (kernel_boot = guest uptime when the agent code starts; other = firmware + host dial)', [
    summary,
  ]);
  return { accel, boots, medians, guestFiles: sizes, imageMiB, targetMs: TARGET_MS, met: summary.met };
}
