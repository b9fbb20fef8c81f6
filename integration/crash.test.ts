/**
 * Crash-safe creation, step by step: with failpoints enabled in hull's configuration, the OCI annotation
 * `io.hull.failpoint=<step>` makes the shim daemon SIGKILL itself right after that creation step. containerd then
 * runs the shim's `delete` (and, for pods, the kubelet's StopPodSandbox + RemovePodSandbox), which must leave
 * nothing: no QEMU, virtiofsd or shim process, no mount below the state folder, no state folder, no shim socket,
 * no tap and no nat rule in the pod's network namespace.
 *
 * One private containerd per describe: ctr for every step of a lone container, CRI for the pod-only step (taps)
 * and for a crash while a pod's second container starts (containerd then runs `delete` for both of the pod's
 * containers at once: they share one record).
 *
 * Against both containerd generations: containerd 1.x every step; containerd 2.x (whose recovery runs the same
 * `delete`, the steps differing only in what hull has made) the earliest and the latest step under ctr, and the
 * whole CRI describe (its pod sandbox controller is new code).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FAILPOINT_ANNOTATION, FAILPOINT_STEPS, type SandboxRecord } from '../core';
import { hostCgroupLayout } from '../core/host-cgroup';
import { mountsUnder } from '../fs-share';
import {
  BUSYBOX_IMAGE,
  CONTAINERD_GENERATIONS,
  importBusybox,
  startContainerd,
  type ContainerdGeneration,
  type PrivateContainerd,
} from './lib/containerd';
import { cri, removePodSandboxAfterShimDeath } from './lib/cri';
import { guestArtifacts } from './lib/guest';
import { processesMentioning } from './lib/processes';

const RUNTIME = 'io.containerd.hull.v2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** containerd's shim socket address rule (runtime/v2/shim/util_unix.go), computed independently of shim/. */
const shimSocket = (address: string, ns: string, id: string): string =>
  `/run/containerd/s/${crypto
    .createHash('sha256')
    .update(path.posix.join(address, ns, id))
    .digest('hex')}`;

/** hull shim processes (daemon, start or delete) for sandbox `id`. */
function shimsOf(id: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      if (argv.some((a) => path.basename(a) === 'containerd-shim-hull-v2') && argv[argv.indexOf('-id') + 1] === id)
        out.push(`${pid} ${argv.join(' ').slice(0, 160)}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Runs `argv` inside the network namespace `netns` (nsenter), returning stdout. */
function inNetns(netns: string, argv: string[]): string {
  // spawns: nsenter, ip, iptables
  const r = spawnSync('nsenter', [`--net=${netns}`, '--', ...argv], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nsenter ${argv.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Nothing of sandbox `id` is left on the host (waits up to 30 s for containerd's `delete` to finish). */
async function assertNothingLeft(ctd: PrivateContainerd, id: string, step: string): Promise<void> {
  const sandboxDir = path.join(ctd.stateDir, ctd.namespace, id);
  const left = (): boolean =>
    fs.existsSync(sandboxDir) || processesMentioning(sandboxDir).length > 0 || shimsOf(id).length > 0;
  for (let i = 0; i < 300 && left(); i++) await sleep(100);
  assert.deepEqual(processesMentioning(sandboxDir), [], `${step}: no QEMU or virtiofsd of the sandbox is left`);
  assert.deepEqual(shimsOf(id), [], `${step}: no shim process of the sandbox is left`);
  assert.deepEqual(
    (await mountsUnder(ctd.stateDir)).map((m) => m.mountPoint),
    [],
    `${step}: no mount below the state folder`,
  );
  assert.equal(fs.existsSync(sandboxDir), false, `${step}: ${sandboxDir} is removed`);
  const sock = shimSocket(ctd.address, ctd.namespace, id);
  assert.equal(fs.existsSync(sock), false, `${step}: the shim's socket ${sock} is removed`);
  // The sandbox's host cgroup (ctr's default cgroupsPath is /<namespace>/<id>; CRI's pods here have none).
  const cgroups = hostCgroupLayout()
    .hierarchies.map((h) => path.join(h.mountPoint, ctd.namespace, id))
    .filter((d) => fs.existsSync(d));
  assert.deepEqual(cgroups, [], `${step}: the sandbox's cgroup is removed`);
}

/** No tap of hull's and no port-forwarding rule left in `netns` (if the namespace still exists). */
function assertNetnsClean(netns: string | undefined, step: string): void {
  if (!netns || !fs.existsSync(netns)) return;
  const links = inNetns(netns, ['ip', '-o', 'link', 'show']);
  assert.doesNotMatch(links, /tap\d+_hull/, `${step}: no tap left in ${netns}`);
  const nat = inNetns(netns, ['iptables', '-w', '-t', 'nat', '-S']);
  assert.doesNotMatch(nat, /hull-port-forward/, `${step}: no port-forwarding rule left in ${netns}`);
}

/** The ctr steps containerd 2.x runs: containerd's side is the same `delete` after each (CI time). */
const GENERATION2_STEPS: readonly string[] = ['record-written', 'container-started'];

for (const { generation, title } of CONTAINERD_GENERATIONS) {
  describe(`crash-safe creation: the shim SIGKILLed right after each creation step (${title})`, function () {
    crashSuite.call(this, generation);
  });
}

function crashSuite(this: Mocha.Suite, generation: ContainerdGeneration): void {
  this.timeout(900_000);

  describe("a container run with ctr, then containerd's delete", () => {
    let ctd: PrivateContainerd;
    before(async () => {
      guestArtifacts();
      ctd = await startContainerd({ failpoints: true, generation });
      await importBusybox(ctd);
    });
    after(async () => {
      await ctd?.stop();
    });

    const steps = FAILPOINT_STEPS.filter((s) => s !== 'taps-made');
    for (const step of generation === 1 ? steps : steps.filter((s) => GENERATION2_STEPS.includes(s))) {
      it(`${step}: ctr run fails, and containerd's delete leaves no process, mount, folder or socket`, async () => {
        const id = `fp-${step}`;
        const r = await ctd.ctr([
          'run',
          '-d',
          '--runtime',
          RUNTIME,
          '--annotation',
          `${FAILPOINT_ANNOTATION}=${step}`,
          BUSYBOX_IMAGE,
          id,
          'sleep',
          '600',
        ]);
        assert.notEqual(r.code, 0, `ctr run must fail when the shim dies after ${step}: ${r.stdout}${r.stderr}`);
        // containerd has run the shim's `delete` (or does now); the task and container records go as a user would remove them.
        await ctd.ctr(['task', 'delete', '-f', id]);
        await ctd.ctr(['container', 'delete', id]);
        await assertNothingLeft(ctd, id, step);
      });
    }

    it('without the annotation nothing crashes (the failpoints are opt-in per container)', async () => {
      const r = await ctd.ctr(['run', '--rm', '--runtime', RUNTIME, BUSYBOX_IMAGE, 'fp-none', 'true']);
      assert.equal(r.code, 0, r.stderr);
      await assertNothingLeft(ctd, 'fp-none', 'none');
    });
  });

  describe('a pod through CRI, then StopPodSandbox + RemovePodSandbox', () => {
    let ctd: PrivateContainerd;
    let client: NonNullable<PrivateContainerd['cri']>['client'];
    before(async () => {
      guestArtifacts();
      ctd = await startContainerd({ cri: true, failpoints: true, generation });
      await importBusybox(ctd);
      client = ctd.cri!.client;
    });
    after(async () => {
      await ctd?.stop();
    });

    function podConfig(name: string, annotations: Record<string, string> = {}): cri.IPodSandboxConfig {
      const logDirectory = path.join(ctd.cri!.logRoot, name);
      fs.mkdirSync(logDirectory, { recursive: true });
      return {
        metadata: { name, uid: crypto.randomUUID(), namespace: 'hulltest', attempt: 0 },
        hostname: name,
        logDirectory,
        annotations,
        linux: {},
      };
    }

    /** While `during` runs: every sandbox folder that appears below the state folder, and the netns its record names. */
    async function watchRecords<T>(
      during: () => Promise<T>,
    ): Promise<{ result: PromiseSettledResult<T>; sandboxes: Map<string, string | undefined> }> {
      const root = path.join(ctd.stateDir, ctd.namespace);
      const sandboxes = new Map<string, string | undefined>();
      const poll = (): void => {
        for (const id of fs.existsSync(root) ? fs.readdirSync(root) : []) {
          try {
            const r = JSON.parse(fs.readFileSync(path.join(root, id, 'state.json'), 'utf8')) as SandboxRecord;
            sandboxes.set(id, r.network?.netnsPath ?? sandboxes.get(id));
          } catch {
            if (!sandboxes.has(id)) sandboxes.set(id, undefined);
          }
        }
      };
      const timer = setInterval(poll, 10);
      try {
        const [result] = await Promise.allSettled([during()]);
        return { result, sandboxes };
      } finally {
        clearInterval(timer);
        poll();
      }
    }

    /**
     * Stops and removes every pod named `name` that CRI still lists, retrying RemovePodSandbox as the kubelet does
     * (containerd 2.x marks the dead shim's containers exited on its own schedule: lib/cri.ts); at once on 1.x.
     */
    async function stopAndRemovePods(name: string): Promise<void> {
      for (const p of (await client.listPodSandbox()).items.filter((i) => i.metadata?.name === name)) {
        await stopAndRemove(p.id!);
      }
    }

    async function stopAndRemove(pod: string): Promise<void> {
      await client.stopPodSandbox(pod);
      const calls = await removePodSandboxAfterShimDeath(client, pod);
      if (generation === 1) assert.equal(calls, 1, 'containerd 1.x removes the pod at the first RemovePodSandbox');
    }

    it('taps-made: RunPodSandbox fails, and nothing is left (no tap, no VM, no folder)', async () => {
      const config = podConfig('fp-taps', { [FAILPOINT_ANNOTATION]: 'taps-made' });
      const { result, sandboxes } = await watchRecords(() => ctd.cri!.runPod(config, 'hull'));
      assert.equal(result.status, 'rejected', 'RunPodSandbox must fail when the shim dies after making the taps');
      assert.equal(sandboxes.size, 1, `one sandbox folder appeared: ${[...sandboxes.keys()].join(', ')}`);
      const [id, netns] = [...sandboxes][0]!;
      assert.ok(netns, "the record named the pod's network namespace");
      await stopAndRemovePods('fp-taps');
      await assertNothingLeft(ctd, id, 'taps-made');
      assertNetnsClean(netns, 'taps-made');
    });

    it("container-started in a running pod: both containers' deletes at once, then Stop+Remove leave nothing", async () => {
      const config = podConfig('fp-pod');
      const pod = await ctd.cri!.runPod(config, 'hull');
      const netns = (await client.sandboxInfo(pod))?.runtimeSpec?.linux?.namespaces?.find(
        (n) => n.type === 'network',
      )?.path;
      assert.ok(netns && fs.existsSync(netns), 'the pod has a network namespace');
      assert.match(inNetns(netns, ['ip', '-o', 'link', 'show']), /tap0_hull/, 'the pod has its tap while it runs');
      const { containerId } = await client.createContainer({
        podSandboxId: pod,
        sandboxConfig: config,
        config: {
          metadata: { name: 'crasher' },
          image: { image: BUSYBOX_IMAGE },
          command: ['sleep', '600'],
          logPath: 'crasher.log',
          annotations: { [FAILPOINT_ANNOTATION]: 'container-started' },
        },
      });
      await assert.rejects(client.startContainer(containerId), 'StartContainer fails: the shim died');
      // containerd runs `delete` for the sandbox's task and the container's task, which share the pod's record.
      const until = Date.now() + 60_000;
      while ((await client.podSandboxStatus(pod)).status!.state !== cri.PodSandboxState.SANDBOX_NOTREADY) {
        if (Date.now() > until) assert.fail('the pod is still READY 60 s after its shim died');
        await sleep(250);
      }
      const sandboxDir = path.join(ctd.stateDir, ctd.namespace, pod);
      for (let i = 0; i < 300 && (fs.existsSync(sandboxDir) || processesMentioning(sandboxDir).length > 0); i++)
        await sleep(100);
      assertNetnsClean(netns, 'container-started (before StopPodSandbox)');
      await stopAndRemove(pod);
      await assertNothingLeft(ctd, pod, 'container-started (pod)');
      assert.equal(fs.existsSync(netns), false, 'CRI removed the netns');
    });
  });
}
