/**
 * What each virtio-fs cache mode costs: small-file work in a container's rootfs, in a hull VM per mode (`auto`,
 * `always`, `never`, through core's configuration and toVmConfig, the VM booted like a pod's by core's SandboxVm)
 * against runc on the host file system (`runc run` of the same busybox rootfs and OCI spec, no containerd).
 * The script runs inside the container with shell built-ins only (no fork per file): create N files (echo >),
 * read them back (read <), stat them (test -e), then delete them (one rm); each phase is timed with /proc/uptime
 * (10 ms resolution), median of BENCH_SHARE_RUNS runs (default 3) of BENCH_SHARE_FILES files (default 500; runc
 * does 20 times as many, its phases being below the timer's resolution otherwise), reported per file in µs.
 * Under TCG the guest's own CPU cost (the shell loop, emulated) is part of every hull figure, so the VM of `auto`
 * also runs the script on a tmpfs inside the guest (no virtio-fs): the difference is what the share costs.
 * Written to bench/out/share.json.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseConfig, toVmConfig } from '../core/config';
import { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { busyboxRootfs, collectOutput } from '../integration/lib/containers';
import { testSpec } from '../integration/lib/oci-spec';
import { median, printTable, round } from './lib/report';
import { sharedDirStorage } from '../core/pod';

const execFileAsync = promisify(execFile);
const RUNC = '/usr/sbin/runc';
const MODES = ['auto', 'always', 'never'] as const;
const PHASES = ['create', 'read', 'stat', 'delete'] as const;
type Phase = (typeof PHASES)[number];

function script(files: number): string {
  return [
    't() { read u _ < /proc/uptime; echo -n "$u "; }',
    'mkdir -p /bench && cd /bench',
    't',
    `i=0; while [ $i -lt ${files} ]; do echo "data $i" > f$i; i=$((i+1)); done`,
    't',
    `i=0; while [ $i -lt ${files} ]; do read l < f$i; i=$((i+1)); done`,
    't',
    `i=0; while [ $i -lt ${files} ]; do [ -e f$i ] || exit 3; i=$((i+1)); done`,
    't',
    'rm -f f*',
    't',
    'echo',
  ].join('\n');
}

/** µs per file of each phase. */
function phases(out: string, files: number): Record<Phase, number> {
  const t = out.trim().split(/\s+/).map(Number);
  if (t.length !== 5 || t.some((x) => !Number.isFinite(x))) throw new Error(`bad timing output: ${out}`);
  return Object.fromEntries(PHASES.map((p, i) => [p, round(((t[i + 1]! - t[i]!) * 1e6) / files, 1)])) as Record<
    Phase,
    number
  >;
}

function medians(runs: Record<Phase, number>[]): Record<Phase, number> {
  return Object.fromEntries(PHASES.map((p) => [p, median(runs.map((r) => r[p]))])) as Record<Phase, number>;
}

async function hullMode(
  dir: string,
  mode: (typeof MODES)[number],
  files: number,
  runs: number,
  tmpfs = false,
): Promise<{ share: Record<Phase, number>; tmpfs?: Record<Phase, number> }> {
  const id = `benchshare${mode}`;
  const rootfs = busyboxRootfs(path.join(dir, `rootfs-${mode}`), ['sh', 'mkdir', 'rm']);
  const share = new VirtioFsShare({ root: path.join(dir, 'share'), sandboxId: id });
  await share.prepare();
  const config = parseConfig(
    `[hypervisor]\nvirtio_fs_cache = "${mode}"\n`,
    'bench',
    path.resolve(__dirname, '..', '..', 'bin'),
  );
  const vmConfig = toVmConfig(config, { id, stateDir: path.join(dir, `vm-${mode}`), sharedDir: share.sharedDir() });
  const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
  let vm: SandboxVm | undefined;
  try {
    vm = await SandboxVm.boot(hv, vmConfig, { bootTimeoutMs: 180_000, logger: NOOP_LOGGER });
    await vm.agent.createSandbox({
      sandboxId: id,
      storages: [sharedDirStorage()],
    });
    const runAll = async (onTmpfs: boolean): Promise<Record<Phase, number>> => {
      const results: Record<Phase, number>[] = [];
      for (let r = 0; r < runs; r++) {
        const cid = `c${onTmpfs ? 't' : ''}${r}`;
        await share.shareRootfs(cid, [], rootfs);
        try {
          const mounts = onTmpfs
            ? [{ destination: '/bench', type: 'tmpfs', source: 'tmpfs', options: ['size=64m'] }]
            : [];
          await vm!.agent.createOciContainer(cid, testSpec({ args: ['sh', '-c', script(files)], mounts }));
          await vm!.agent.startContainer(cid);
          const out = await collectOutput(vm!.agent, cid);
          await vm!.agent.removeContainer(cid);
          if (out.code !== 0) throw new Error(`container exited ${out.code}: ${out.stderr}`);
          results.push(phases(out.stdout, files));
        } finally {
          await share.unshare(cid);
        }
      }
      return medians(results);
    };
    const onShare = await runAll(false);
    return tmpfs ? { share: onShare, tmpfs: await runAll(true) } : { share: onShare };
  } finally {
    if (vm) await vm.shutdown({ gracefulMs: 30_000 });
    await share.cleanup();
  }
}

async function runcBaseline(dir: string, files: number, runs: number) {
  const bundle = path.join(dir, 'runc-bundle');
  busyboxRootfs(path.join(bundle, 'rootfs'), ['sh', 'mkdir', 'rm']);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(testSpec({ args: ['sh', '-c', script(files)] })));
  const results: Record<Phase, number>[] = [];
  for (let r = 0; r < runs; r++) {
    const id = `hull-bench-share-${process.pid}-${r}`;
    const { stdout } = await execFileAsync(
      RUNC,
      ['--root', path.join(dir, 'runc-state'), 'run', '--bundle', bundle, id],
      {
        timeout: 120_000,
      },
    );
    results.push(phases(stdout, files));
  }
  return medians(results);
}

export async function benchShare(): Promise<Record<string, unknown>> {
  const files = Number(process.env.BENCH_SHARE_FILES ?? 500);
  const runs = Number(process.env.BENCH_SHARE_RUNS ?? 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-bench-share-'));
  const out: Record<string, Record<Phase, number>> = {};
  try {
    out.runc = await runcBaseline(dir, files * 20, runs);
    for (const mode of MODES) {
      const r = await hullMode(dir, mode, files, runs, mode === 'auto');
      out[`hull cache=${mode}`] = r.share;
      if (r.tmpfs) out['hull, guest tmpfs (no virtio-fs)'] = r.tmpfs;
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(
    `small files in the container's rootfs: µs per file (${files} files, runc ${files * 20}), median of ${runs} runs`,
    Object.entries(out).map(([what, ms]) => ({ what, ...ms })),
  );
  return { files, runcFiles: files * 20, runs, usPerFile: out };
}
