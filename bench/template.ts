/**
 * VM templates (`[hypervisor] enable_template`, core/template.ts) against a normal boot, in the same run:
 * - the template's making (once), its guest RAM file (allocated on tmpfs) and device state;
 * - VM ready (SandboxVm.boot until the agent answered; for a clone also the reseed and the clock) and the first
 *   container (`true`, CreateSandbox with the virtio-fs share, create, start, exit), cold and cloned alternately,
 *   BENCH_TEMPLATE_RUNS each (default 3);
 * - host PSS per pod with 1 and BENCH_TEMPLATE_PODS (default 3) idle VMs at once, cold and cloned: QEMU plus
 *   virtiofsd (and its sandboxed child); for clones the template's RAM file on tmpfs counts once, shared among them;
 * - `ctr run --rm busybox true` through containerd and the shim, templates off and on (the first run with
 *   templates on makes the template and is reported apart);
 * - a CRI pod's start to its first exec (RunPodSandbox, CreateContainer, StartContainer of busybox `sleep`, until
 *   ExecSync `true` answers), templates off and on alternately (the pod's NIC hot-plugged into the clone), with the
 *   phase split of RunPodSandbox from the shim's log (network, VM start, agent, the guest's network, CreateSandbox).
 * BENCH_TEMPLATE_PARTS (default `vm,pss,ctr,cri`) picks the parts.
 * hull's default VM configuration (toVmConfig of an empty file), everything under a tmpfs folder (/dev/shm).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfig, toVmConfig } from '../core/config';
import { VmTemplates, type TemplateFiles } from '../core/template';
import { SandboxVm } from '../core/vm';
import { VirtioFsShare } from '../fs-share';
import { QemuHypervisor, type VmConfig } from '../hypervisor';
import { NOOP_LOGGER } from '../log';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from '../integration/lib/containerd';
import type { cri } from '../integration/lib/cri';
import { busyboxRootfs, collectOutput } from '../integration/lib/containers';
import { testSpec } from '../integration/lib/oci-spec';
import { OUT_DIR, median, printTable, round } from './lib/report';
import { sharedDirStorage } from '../core/pod';

const RUNS = Number(process.env.BENCH_TEMPLATE_RUNS ?? 3);
const PODS = Number(process.env.BENCH_TEMPLATE_PODS ?? 3);
const PARTS = new Set((process.env.BENCH_TEMPLATE_PARTS ?? 'vm,pss,ctr,cri').split(','));
const RUNTIME = 'io.containerd.hull.v2';
type Mode = 'cold' | 'clone';
const MIB = 1024;

interface Pod {
  vm: SandboxVm;
  hv: QemuHypervisor;
  share: VirtioFsShare;
  readyMs: number;
  id: string;
}

function pssKiB(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * A clone's guest RAM is its own file on tmpfs (hypervisor/qemu/template.ts): pages the guest has not touched since
 * the start are allocated there but mapped by no process, so PSS misses them. Its host cost is the file's allocated
 * size, and QEMU's PSS without that mapping (the pages it has faulted in are the file's, counted once).
 */
function cloneRamKiB(pid: number | undefined, memoryFile: string): { mappedPssKiB: number; allocatedKiB: number } {
  let mappedPssKiB = 0;
  if (pid) {
    let inRam = false;
    for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
      const head = /^[0-9a-f]+-[0-9a-f]+ \S{4} \S+ \S+ \d+\s*(.*)$/.exec(line);
      if (head) {
        inRam = head[1] === memoryFile;
        continue;
      }
      const m = /^Pss:\s+(\d+) kB/.exec(line);
      if (m && inRam) mappedPssKiB += Number(m[1]);
    }
  }
  return { mappedPssKiB, allocatedKiB: (fs.statSync(memoryFile).blocks * 512) / 1024 };
}

/** A process and its descendants (virtiofsd's sandboxed server). */
function treePssKiB(pid: number | undefined): number {
  if (!pid) return 0;
  let kib = pssKiB(pid);
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const children = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    for (const c of children ? children.split(/\s+/) : []) kib += treePssKiB(Number(c));
  }
  return kib;
}

class Bench {
  readonly dir = fs.mkdtempSync('/dev/shm/hull-bench-tpl-');
  readonly rootfs = busyboxRootfs(path.join(this.dir, 'rootfs'), ['sh', 'true']);
  readonly base: VmConfig;
  template: TemplateFiles | undefined;
  private n = 0;

  constructor() {
    const config = parseConfig('', 'bench.toml', path.resolve(__dirname, '..', '..', 'bin'));
    this.base = toVmConfig(config, { id: 'base', stateDir: path.join(this.dir, 'base') });
  }

  async make(): Promise<{ ms: number; ramFileMiB: number; ramAllocatedMiB: number; stateKiB: number }> {
    const templates = new VmTemplates({
      root: path.join(this.dir, '_templates'),
      hypervisor: () => new QemuHypervisor({ logger: NOOP_LOGGER }),
      bootTimeoutMs: 300_000,
      logger: NOOP_LOGGER,
    });
    const t0 = performance.now();
    this.template = await templates.make(this.base);
    if (!this.template) throw new Error('no template made');
    const ms = performance.now() - t0;
    const ram = fs.statSync(this.template.memoryFile);
    return {
      ms: round(ms),
      ramFileMiB: round(ram.size / 2 ** 20),
      ramAllocatedMiB: round((ram.blocks * 512) / 2 ** 20),
      stateKiB: round(fs.statSync(this.template.stateFile).size / 1024),
    };
  }

  /** The template's RAM file on tmpfs, MiB (what all clones share on the host besides their own pages). */
  templateRamMiB(): number {
    return this.template ? (fs.statSync(this.template.memoryFile).blocks * 512) / 2 ** 20 : 0;
  }

  async boot(mode: Mode): Promise<Pod> {
    const id = `b${this.n++}`;
    const share = new VirtioFsShare({ root: path.join(this.dir, 'share', id), sandboxId: id });
    await share.prepare();
    const cfg: VmConfig = { ...this.base, id, stateDir: path.join(this.dir, 'vms', id), sharedDir: share.sharedDir() };
    if (mode === 'clone')
      cfg.template = { role: 'clone', memoryFile: this.template!.memoryFile, stateFile: this.template!.stateFile };
    const hv = new QemuHypervisor({ logger: NOOP_LOGGER });
    const t0 = performance.now();
    const vm = await SandboxVm.boot(hv, cfg, { bootTimeoutMs: 300_000, logger: NOOP_LOGGER });
    if (mode === 'clone') {
      await vm.agent.reseedRandomDev!(crypto.randomBytes(64));
      await vm.agent.setGuestDateTime(new Date());
    }
    const readyMs = performance.now() - t0;
    await vm.agent.createSandbox({
      sandboxId: id,
      storages: [sharedDirStorage()],
    });
    return { vm, hv, share, readyMs, id };
  }

  async firstContainer(pod: Pod): Promise<void> {
    await pod.share.shareRootfs('c', [], this.rootfs);
    await pod.vm.agent.createOciContainer('c', testSpec({ args: ['true'], rootReadonly: true }));
    await pod.vm.agent.startContainer('c');
    const out = await collectOutput(pod.vm.agent, 'c');
    if (out.code !== 0) throw new Error(`true exited ${out.code}: ${out.stderr}`);
    await pod.vm.agent.removeContainer('c');
    await pod.share.unshare('c');
  }

  async end(pod: Pod): Promise<void> {
    await pod.vm.shutdown({ gracefulMs: 30_000 }).catch(() => undefined);
    await pod.hv.stop({ force: true }).catch(() => undefined);
    await pod.hv.cleanup().catch(() => undefined);
    await pod.share.cleanup();
  }

  /** Host PSS per pod (MiB) with `n` idle pods of `mode` at once. */
  async pss(mode: Mode, n: number): Promise<Record<string, number>> {
    const pods: Pod[] = [];
    try {
      for (const p of await Promise.allSettled(Array.from({ length: n }, () => this.boot(mode))))
        if (p.status === 'fulfilled') pods.push(p.value);
        else throw p.reason;
      await new Promise((r) => setTimeout(r, 5_000)); // idle: the boot's freed pages reported back
      const qemu = pods.reduce((s, p) => s + pssKiB(p.hv.pid()), 0) / n / MIB;
      const virtiofsd = pods.reduce((s, p) => s + treePssKiB(p.hv.virtiofsdPid()), 0) / n / MIB;
      const ram = { mapped: 0, allocated: 0 };
      if (mode === 'clone')
        for (const p of pods) {
          const r = cloneRamKiB(p.hv.pid(), path.join(this.dir, 'vms', p.id, 'memory'));
          ram.mapped += r.mappedPssKiB;
          ram.allocated += r.allocatedKiB;
        }
      const unmapped = (ram.allocated - ram.mapped) / n / MIB; // the clone's RAM file pages QEMU has not mapped
      const templateShare = mode === 'clone' ? this.templateRamMiB() / n : 0;
      return {
        qemuPssMiB: round(qemu),
        cloneRamFileMiB: round(ram.allocated / n / MIB),
        cloneRamUnmappedMiB: round(unmapped),
        virtiofsdMiB: round(virtiofsd),
        templateShareMiB: round(templateShare),
        perPodMiB: round(qemu + unmapped + virtiofsd + templateShare),
      };
    } finally {
      await Promise.all(pods.map((p) => this.end(p)));
    }
  }

  dispose(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function ctrRun(): Promise<Record<string, unknown>> {
  const ctd = await startContainerd({ namespace: 'bench' });
  const state = fs.mkdtempSync('/dev/shm/hbt-');
  try {
    await importBusybox(ctd);
    const configs = {} as Record<'off' | 'on', string>;
    for (const mode of ['off', 'on'] as const) {
      configs[mode] = path.join(ctd.dir, `template-${mode}.toml`);
      fs.writeFileSync(
        configs[mode],
        ['[runtime]', `state_dir = "${state}"`, '[hypervisor]', `enable_template = ${mode === 'on'}`, ''].join('\n'),
      );
    }
    const run = async (mode: 'off' | 'on', i: number): Promise<number> => {
      const t0 = performance.now();
      const r = await ctd.ctr([
        'run',
        '--rm',
        '--runtime',
        RUNTIME,
        '--runtime-config-path',
        configs[mode],
        BUSYBOX_IMAGE,
        `bench-tpl-${mode}-${i}`,
        'true',
      ]);
      if (r.code !== 0) throw new Error(`ctr run (${mode}) exited ${r.code}: ${r.stderr}`);
      return performance.now() - t0;
    };
    const firstOnMs = await run('on', 0); // makes the template, then starts from it
    const made = fs.readdirSync(path.join(state, '_templates'));
    const wall: Record<'off' | 'on', number[]> = { off: [], on: [] };
    for (let i = 1; i <= RUNS; i++) for (const mode of ['off', 'on'] as const) wall[mode].push(await run(mode, i));
    return {
      firstWithTemplateMs: round(firstOnMs),
      templatesMade: made,
      offMedianMs: round(median(wall.off)),
      onMedianMs: round(median(wall.on)),
      all: wall,
    };
  } finally {
    await ctd.stop();
    fs.rmSync(state, { recursive: true, force: true });
  }
}

/**
 * The shim's log records (JSON lines in containerd's log, `time` in ms since the epoch) that mark a pod start's
 * phases, in the order they come: `<key>: <msg prefix>`.
 */
const PHASE_MARKS = [
  ['shimServingMs', 'shim daemon serving'],
  ['networkConnectedMs', 'pod network connected'],
  ['qemuSpawnedMs', 'qemu started'],
  ['vmRunningMs', 'VM running'],
  ['agentReadyMs', 'VM booted, agent ready'],
  ['interfaceUpdatedMs', 'interface updated'],
  ['routesUpdatedMs', 'routes updated'],
  ['sandboxCreatedMs', 'sandbox created'],
  // The pod's own (pause) container, within RunPodSandbox.
  ['sandboxContainerCreatedMs', 'container created'],
  ['sandboxContainerStartedMs', 'container started'],
] as const;

/**
 * The shim's records for sandbox `id` in containerd's log (from byte `from` on): when each phase mark first came,
 * in ms after `t0` (a Date.now()), and the clone's own timings (RAM copy, state load, plug times) from its
 * `VM running (cloned from its template)` record.
 */
function shimPhases(ctd: PrivateContainerd, id: string, from: number, t0: number): Record<string, number> {
  const out: Record<string, number> = {};
  const text = fs.readFileSync(ctd.log).subarray(from).toString('utf8');
  for (const line of text.split('\n')) {
    if (!line.startsWith('{') || !line.includes(id)) continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (r.id !== id || typeof r.time !== 'number' || typeof r.msg !== 'string') continue;
    for (const [key, mark] of PHASE_MARKS) if (out[key] === undefined && r.msg.startsWith(mark)) out[key] = r.time - t0;
    if (r.msg === 'VM running (cloned from its template)')
      for (const k of ['memoryCopyMs', 'templateLoadMs', 'virtiofsPlugMs', 'nicPlugMs', 'qmpReadyMs'])
        if (typeof r[k] === 'number') out[k] = r[k];
  }
  return out;
}

/**
 * CRI pod start to first exec, templates off and on alternately on one private containerd (1.x): the shim of each
 * pod reads hull.toml at its start, so the file is rewritten before each RunPodSandbox. The first pod with
 * templates on makes the template (reported apart).
 */
async function criPodStart(): Promise<Record<string, unknown>> {
  const state = fs.mkdtempSync('/dev/shm/h'); // short: a CRI id is 64 hex digits, the VM sockets live below
  const ctd = await startContainerd({ cri: true, generation: 1 });
  const client = ctd.cri!.client;
  const live = new Set<string>();
  try {
    await importBusybox(ctd);
    const setMode = (mode: 'off' | 'on'): void =>
      fs.writeFileSync(
        ctd.hullConfig,
        [
          '[runtime]',
          `state_dir = "${state}"`,
          'debug = true',
          '[agent]',
          'boot_timeout = 120',
          '[hypervisor]',
          `enable_template = ${mode === 'on'}`,
          '',
        ].join('\n'),
      );
    let seq = 0;
    const start = async (mode: 'off' | 'on'): Promise<Record<string, number>> => {
      setMode(mode);
      const name = `tpl-${mode}-${seq++}`;
      const logDirectory = path.join(ctd.cri!.logRoot, name);
      fs.mkdirSync(logDirectory, { recursive: true });
      const config: cri.IPodSandboxConfig = {
        metadata: { name, uid: `bench-${process.pid}-${name}`, namespace: 'bench' },
        hostname: name,
        logDirectory,
        linux: {},
      };
      const logFrom = fs.statSync(ctd.log).size;
      const wall0 = Date.now();
      const t0 = performance.now();
      const id = await ctd.cri!.runPod(config, 'hull');
      live.add(id);
      const t1 = performance.now();
      const { containerId } = await client.createContainer({
        podSandboxId: id,
        sandboxConfig: config,
        config: {
          metadata: { name: 'main' },
          image: { image: BUSYBOX_IMAGE },
          command: ['sleep', '3600'],
          logPath: 'main.log',
        },
      });
      const t2 = performance.now();
      await client.startContainer(containerId);
      const t3 = performance.now();
      for (;;) {
        const r = await client.execSync({ containerId, cmd: ['true'], timeout: 10 }).catch(() => undefined);
        if (r?.exitCode === 0) break;
        if (performance.now() - t0 > 300_000) throw new Error(`pod ${name}: exec never ran`);
        await new Promise((res) => setTimeout(res, 20));
      }
      const t4 = performance.now();
      const phases = shimPhases(ctd, id, logFrom, wall0);
      await client.stopPodSandbox(id);
      await client.removePodSandbox(id);
      live.delete(id);
      return {
        totalMs: t4 - t0,
        runPodSandboxMs: t1 - t0,
        createContainerMs: t2 - t1,
        startContainerMs: t3 - t2,
        firstExecMs: t4 - t3,
        ...phases,
      };
    };
    const first = await start('on'); // makes the template, then starts from it
    const times: Record<'off' | 'on', Record<string, number>[]> = { off: [], on: [] };
    for (let i = 0; i < RUNS; i++) for (const mode of ['off', 'on'] as const) times[mode].push(await start(mode));
    const medians = (xs: Record<string, number>[]): Record<string, number> =>
      Object.fromEntries(
        [...new Set(xs.flatMap((x) => Object.keys(x)))].map((k) => [
          k,
          round(median(xs.map((x) => x[k]!).filter((v) => Number.isFinite(v)))),
        ]),
      );
    const out = {
      runs: RUNS,
      firstWithTemplate: Object.fromEntries(Object.entries(first).map(([k, v]) => [k, round(v)])),
      offMedianMs: medians(times.off),
      onMedianMs: medians(times.on),
      all: times,
    };
    printTable(
      'CRI pod start to first exec (ms, medians): templates off vs on',
      (['off', 'on'] as const).map((m) => ({
        templates: m,
        ...(m === 'off' ? out.offMedianMs : out.onMedianMs),
      })),
    );
    return out;
  } finally {
    await Promise.allSettled(
      [...live].map(async (id) => {
        await client.stopPodSandbox(id);
        await client.removePodSandbox(id);
      }),
    );
    // For a look at where the time went: containerd's log with the shims' records.
    fs.mkdirSync(OUT_DIR, { recursive: true });
    fs.copyFileSync(ctd.log, path.join(OUT_DIR, 'template-cri-containerd.log'));
    await ctd.stop();
    fs.rmSync(state, { recursive: true, force: true });
  }
}

export async function benchTemplate(): Promise<Record<string, unknown>> {
  const b = new Bench();
  try {
    const figures: Record<string, unknown> = { runs: RUNS, parts: [...PARTS] };
    const rows: Record<string, string | number>[] = [];
    if (PARTS.has('vm') || PARTS.has('pss')) figures.template = await b.make();
    if (PARTS.has('vm')) {
      const ready: Record<Mode, number[]> = { cold: [], clone: [] };
      const first: Record<Mode, number[]> = { cold: [], clone: [] };
      for (let i = 0; i < RUNS; i++) {
        for (const mode of ['cold', 'clone'] as const) {
          const pod = await b.boot(mode);
          try {
            ready[mode].push(pod.readyMs);
            const t0 = performance.now();
            await b.firstContainer(pod);
            first[mode].push(pod.readyMs + (performance.now() - t0));
          } finally {
            await b.end(pod);
          }
        }
      }
      const vmReadyMs = { cold: round(median(ready.cold)), clone: round(median(ready.clone)), all: ready };
      const toFirst = { cold: round(median(first.cold)), clone: round(median(first.clone)), all: first };
      Object.assign(figures, { vmReadyMs, toFirstContainerExitMs: toFirst });
      rows.push({ what: 'VM ready (agent answered)', cold: vmReadyMs.cold, clone: vmReadyMs.clone });
      rows.push({ what: 'to the first container (true) exited', cold: toFirst.cold, clone: toFirst.clone });
    }
    if (PARTS.has('pss')) {
      const pss: Record<string, unknown> = {};
      for (const n of [...new Set([1, PODS])])
        for (const mode of ['cold', 'clone'] as const) pss[`${mode}x${n}`] = await b.pss(mode, n);
      figures.hostPssPerPod = pss;
      printTable(
        'host PSS per idle pod (MiB)',
        Object.entries(pss).map(([k, v]) => ({ pods: k, ...(v as Record<string, number>) })),
      );
    }
    if (PARTS.has('ctr')) {
      const ctr = await ctrRun();
      figures.ctrRunTrue = ctr;
      rows.push({
        what: 'ctr run --rm busybox true',
        cold: ctr.offMedianMs as number,
        clone: ctr.onMedianMs as number,
      });
      console.log(`first ctr run with templates on (makes it): ${String(ctr.firstWithTemplateMs)} ms`);
    }
    if (PARTS.has('cri')) {
      const pods = await criPodStart();
      figures.criPodStartToFirstExec = pods;
      rows.push({
        what: 'CRI pod start to first exec',
        cold: (pods.offMedianMs as Record<string, number>).totalMs!,
        clone: (pods.onMedianMs as Record<string, number>).totalMs!,
      });
    }
    printTable('VM templates: cold boot vs clone (ms, medians)', rows);
    return figures;
  } finally {
    b.dispose();
  }
}
