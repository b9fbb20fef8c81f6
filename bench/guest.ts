/**
 * Containers inside a running VM (one boot for all rows): create+start+wait of `true` (host share of the rootfs,
 * CreateContainer, StartContainer, WaitProcess with output drained), its removal, an exec round trip (`true` in a
 * running container), and stdout throughput from the guest to the host (32 MiB from /dev/zero through ReadStdout).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput, drainStream } from '../integration/lib/containers';
import { guestArtifacts } from '../integration/lib/guest';
import { median, printTable, round } from './lib/report';
import { testSpec, testProcess } from '../integration/lib/oci-spec';
import { sharedDirStorage } from '../core/pod';

const RUNS = Number(process.env.BENCH_GUEST_RUNS ?? 8);
const THROUGHPUT_BYTES = 32 << 20;
const SANDBOX = 'benchguest';

export async function benchGuest(): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-guest-'));
  const rootfs = busyboxRootfs(path.join(dir, 'rootfs'), ['sh', 'true', 'sleep', 'head']);
  const share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: SANDBOX });
  await share.prepare();
  const guest = guestArtifacts();
  const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
  let vm: SandboxVm | undefined;
  try {
    vm = await SandboxVm.boot(
      hv,
      {
        id: SANDBOX,
        stateDir: path.join(dir, 'vm'),
        kernel: guest.kernel,
        initrd: guest.initrd,
        image: guest.image,
        vcpus: 1,
        memoryMiB: 512,
        accel: 'auto',
        agentTransport: 'serial',
        sharedDir: share.sharedDir(),
      },
      { bootTimeoutMs: 120_000, logger: NOOP_LOGGER },
    );
    const agent = vm.agent;
    await agent.createSandbox({
      sandboxId: SANDBOX,
      storages: [sharedDirStorage()],
    });

    const start = async (cid: string, args: string[]): Promise<void> => {
      await share.shareRootfs(cid, [], rootfs);
      await agent.createOciContainer(cid, testSpec({ args, rootReadonly: true, hostname: cid }));
      await agent.startContainer(cid);
    };
    const remove = async (cid: string): Promise<void> => {
      await agent.removeContainer(cid);
      await share.unshare(cid);
    };

    const runTrue: number[] = [];
    const removal: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const cid = `true-${i}`;
      const t0 = performance.now();
      await start(cid, ['true']);
      const { code } = await collectOutput(agent, cid);
      runTrue.push(performance.now() - t0);
      if (code !== 0) throw new Error(`true exited with ${code}`);
      const t1 = performance.now();
      await remove(cid);
      removal.push(performance.now() - t1);
    }

    await start('sleeper', ['sleep', '1000']);
    const exec: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      await agent.execOciProcess('sleeper', `e${i}`, testProcess({ args: ['true'] }));
      const { code } = await collectOutput(agent, 'sleeper', `e${i}`);
      exec.push(performance.now() - t0);
      if (code !== 0) throw new Error(`exec true exited with ${code}`);
    }
    await agent.signalProcess('sleeper', '', 9);
    await collectOutput(agent, 'sleeper');
    await remove('sleeper');

    await start('stream', ['head', '-c', String(THROUGHPUT_BYTES), '/dev/zero']);
    let bytes = 0;
    const t0 = performance.now();
    await Promise.all([
      drainStream(
        () => agent.readStdout('stream', ''),
        (c) => (bytes += c.length),
      ),
      drainStream(
        () => agent.readStderr('stream', ''),
        () => undefined,
      ),
    ]);
    const seconds = (performance.now() - t0) / 1000;
    await agent.waitProcess('stream');
    await remove('stream');
    if (bytes !== THROUGHPUT_BYTES) throw new Error(`read ${bytes} of ${THROUGHPUT_BYTES} bytes`);

    const figures = {
      accel: hv.accel(),
      create_start_wait_true_ms: round(median(runTrue)),
      remove_ms: round(median(removal)),
      exec_round_trip_ms: round(median(exec)),
      stdout_mb_per_s: round(bytes / 1e6 / seconds),
    };
    printTable(`containers in a running VM (${figures.accel}), medians of ${RUNS}`, [figures]);
    return {
      runs: RUNS,
      figures,
      samples: {
        runTrue: runTrue.map((x) => round(x)),
        removal: removal.map((x) => round(x)),
        exec: exec.map((x) => round(x)),
      },
    };
  } finally {
    if (vm) await vm.shutdown({ gracefulMs: 30_000 }).catch(() => undefined);
    await hv.stop({ force: true }).catch(() => undefined);
    await hv.cleanup().catch(() => undefined);
    await share.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
