/**
 * Per-pod configuration annotations (core/annotations.ts) end to end: `ctr run --annotation` and CRI pod
 * annotations (which containerd's CRI plugin passes on only when the runtime's `pod_annotations` match them:
 * lib/containerd.ts sets that), honoured only when hull's configuration enables them, refused (INVALID_ARGUMENT
 * naming the annotation) before anything is made otherwise. hull reads its configuration at each sandbox's first
 * Create, so the tests rewrite the file between sandboxes. The CRI describe runs once per containerd generation
 * (1.x: pod_annotations under io.containerd.grpc.v1.cri, 2.x: under io.containerd.cri.v1.runtime); the ctr one, which
 * does not depend on containerd's CRI configuration, on 1.x only.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hostCgroupLayout } from '../core/host-cgroup';
import {
  BUSYBOX_IMAGE,
  CONTAINERD_GENERATIONS,
  importBusybox,
  startContainerd,
  type ContainerdGeneration,
  type PrivateContainerd,
} from './lib/containerd';
import { CriStatus, type CriError } from './lib/cri';
import { guestArtifacts } from './lib/guest';
import { processesMentioning } from './lib/processes';

const RUNTIME = 'io.containerd.hull.v2';
const VCPUS = 'io.hull.config.hypervisor.default_vcpus';
const KATA_VCPUS = 'io.katacontainers.config.hypervisor.default_vcpus';
const MEMORY = 'io.hull.config.hypervisor.default_memory';
/**
 * A 2-vCPU TCG guest has stalled past the default test boot timeout (120 s) on this loaded 2-core host: the tests
 * that boot one give it 300 s, through the per-pod boot timeout (which this also exercises).
 */
const BOOT_TIMEOUT = 'io.hull.config.agent.boot_timeout';
const ALLOW_VCPUS = 'enable_annotations = ["^default_vcpus$", "^agent.boot_timeout$"]';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The test's hull configuration: the default one of lib/containerd.ts plus `[hypervisor]` lines. */
function setHypervisor(ctd: PrivateContainerd, original: string, lines: string[]): void {
  fs.writeFileSync(ctd.hullConfig, `${original}\n[hypervisor]\n${lines.join('\n')}\n`);
}

describe('annotations: per-pod configuration through ctr run --annotation', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let original: string;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd();
    original = fs.readFileSync(ctd.hullConfig, 'utf8');
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
  });

  const run = (id: string, annotations: string[], args: string[]) =>
    ctd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      ...annotations.flatMap((a) => ['--annotation', a]),
      BUSYBOX_IMAGE,
      id,
      ...args,
    ]);

  /** Nothing of sandbox `id` is left (no VM process, no state folder), and containerd no longer lists it. */
  async function assertNothingLeft(id: string): Promise<void> {
    const sandboxDir = path.join(ctd.stateDir, ctd.namespace, id);
    await ctd.ctr(['container', 'delete', id]);
    for (let i = 0; i < 100 && (fs.existsSync(sandboxDir) || processesMentioning(sandboxDir).length > 0); i++)
      await sleep(100);
    assert.deepEqual(processesMentioning(sandboxDir), [], 'no QEMU or virtiofsd of the sandbox is left');
    assert.equal(fs.existsSync(sandboxDir), false, `${sandboxDir} is removed`);
    assert.equal((await ctd.ctr(['container', 'ls', '-q'])).stdout.split('\n').includes(id), false);
  }

  it(`without enable_annotations (the default) ${VCPUS}=2 is refused with INVALID_ARGUMENT naming it, before anything is made`, async () => {
    fs.writeFileSync(ctd.hullConfig, original);
    const r = await run('notallowed', [`${VCPUS}=2`], ['nproc']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`annotation "${VCPUS.replace(/\./g, '\\.')}" is not enabled`), r.stderr);
    assert.match(r.stderr, /invalid argument/i, r.stderr);
    await assertNothingLeft('notallowed');
  });

  it('an annotation outside the allowlist, or unknown (a QEMU path), is refused the same way', async () => {
    setHypervisor(ctd, original, ['enable_annotations = ["^default_vcpus$"]']);
    try {
      const r = await run('outside', [`${VCPUS}=2`, `${MEMORY}=1024`], ['nproc']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /annotation "io\.hull\.config\.hypervisor\.default_memory" is not enabled/, r.stderr);
      assert.match(r.stderr, /invalid argument/i);
      await assertNothingLeft('outside');
      const u = await run('unknown', ['io.katacontainers.config.hypervisor.path=/bin/sh'], ['nproc']);
      assert.notEqual(u.code, 0);
      assert.match(
        u.stderr,
        /annotation "io\.katacontainers\.config\.hypervisor\.path": hull has no such per-pod setting/,
      );
      await assertNothingLeft('unknown');
    } finally {
      fs.writeFileSync(ctd.hullConfig, original);
    }
  });

  it(`with default_vcpus enabled, ${VCPUS}=2 gives the guest 2 CPUs (nproc)`, async function () {
    if (os.availableParallelism() < 2) this.skip(); // the VM's vCPUs are capped at the host's
    setHypervisor(ctd, original, [ALLOW_VCPUS]);
    try {
      const r = await run('twocpus', [`${VCPUS}=2`, `${BOOT_TIMEOUT}=300`], ['nproc']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), '2');
    } finally {
      fs.writeFileSync(ctd.hullConfig, original);
    }
    await assertNothingLeft('twocpus');
  });
});

for (const { generation, title } of CONTAINERD_GENERATIONS) {
  describe(`annotations: per-pod configuration through CRI pod annotations (${title})`, function () {
    criAnnotationsSuite.call(this, generation);
  });
}

/** The CRI half, per containerd generation: its pod_annotations/container_annotations pass hull's annotations on. */
function criAnnotationsSuite(this: Mocha.Suite, generation: ContainerdGeneration): void {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let original: string;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd({ cri: true, generation });
    original = fs.readFileSync(ctd.hullConfig, 'utf8');
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
  });

  function podConfig(name: string, annotations: Record<string, string>, cgroupParent?: string) {
    const logDirectory = path.join(ctd.cri!.logRoot, name);
    fs.mkdirSync(logDirectory, { recursive: true });
    return {
      metadata: { name, uid: crypto.randomUUID(), namespace: 'hulltest', attempt: 0 },
      hostname: name,
      logDirectory,
      annotations,
      linux: cgroupParent ? { cgroupParent } : {},
    };
  }

  const hullFolders = (): string[] => {
    const dir = path.join(ctd.stateDir, ctd.namespace);
    return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
  };

  it(`a pod annotation outside the allowlist (${MEMORY}) is refused by RunPodSandbox (INVALID_ARGUMENT naming it), leaving nothing`, async () => {
    setHypervisor(ctd, original, ['enable_annotations = ["^default_vcpus$"]']);
    const client = ctd.cri!.client;
    const before = hullFolders();
    try {
      await assert.rejects(
        ctd.cri!.runPod(podConfig('refused', { [VCPUS]: '2', [MEMORY]: '1024' }), 'hull'),
        (e: CriError) => {
          assert.equal(e.code, CriStatus.INVALID_ARGUMENT, e.message);
          assert.match(e.details, /annotation "io\.hull\.config\.hypervisor\.default_memory" is not enabled/);
          return true;
        },
      );
    } finally {
      fs.writeFileSync(ctd.hullConfig, original);
    }
    const left = (): string[] => [
      ...processesMentioning(ctd.stateDir),
      ...hullFolders().filter((f) => !before.includes(f)),
    ];
    for (let i = 0; i < 100 && left().length > 0; i++) await sleep(100);
    assert.deepEqual(left(), [], 'no VM process and no state folder of the refused pod');
    assert.deepEqual((await client.listPodSandbox()).items, [], 'CRI keeps no pod');
  });

  it(`Kata's ${KATA_VCPUS}=2, enabled, gives the pod's guest 2 CPUs (nproc in a container)`, async function () {
    if (os.availableParallelism() < 2) this.skip();
    setHypervisor(ctd, original, [ALLOW_VCPUS]);
    const client = ctd.cri!.client;
    const config = podConfig('twocpus', { [KATA_VCPUS]: '2', [BOOT_TIMEOUT]: '300' });
    let pod: string;
    try {
      pod = await ctd.cri!.runPod(config, 'hull');
    } finally {
      fs.writeFileSync(ctd.hullConfig, original);
    }
    try {
      const { containerId } = await client.createContainer({
        podSandboxId: pod,
        sandboxConfig: config,
        config: {
          metadata: { name: 'c' },
          image: { image: BUSYBOX_IMAGE },
          command: ['sleep', '3600'],
          logPath: 'c.log',
        },
      });
      await client.startContainer(containerId);
      const r = await client.execSync({ containerId, cmd: ['nproc'], timeout: 60 });
      assert.equal(r.exitCode, 0, Buffer.from(r.stderr).toString());
      assert.equal(Buffer.from(r.stdout).toString().trim(), '2');
    } finally {
      await client.stopPodSandbox(pod);
      await client.removePodSandbox(pod);
    }
  });

  it(`an enabled ${MEMORY} still has to fit the pod's cgroup: 1024 MiB + the overhead in a 1000 MiB limit is refused, nothing left`, async () => {
    const layout = hostCgroupLayout();
    const memoryHier = layout.hierarchies.find((h) =>
      layout.version === 2 ? h.version === 2 : h.version === 1 && h.controllers.includes('memory'),
    );
    assert.ok(memoryHier, 'a memory cgroup hierarchy');
    const parent = `hull-annot-${crypto.randomBytes(4).toString('hex')}`;
    const leftover = (): string[] =>
      layout.hierarchies.flatMap((h) =>
        fs.existsSync(path.join(h.mountPoint, parent))
          ? fs
              .readdirSync(path.join(h.mountPoint, parent), { withFileTypes: true })
              .filter((e) => e.isDirectory())
              .map((e) => path.join(h.mountPoint, parent, e.name))
          : [],
      );
    for (const h of layout.hierarchies) fs.mkdirSync(path.join(h.mountPoint, parent));
    try {
      fs.writeFileSync(
        path.join(memoryHier.mountPoint, parent, layout.version === 2 ? 'memory.max' : 'memory.limit_in_bytes'),
        String(1000 * 1024 * 1024),
      );
      setHypervisor(ctd, original, ['enable_annotations = ["^default_memory$"]']);
      try {
        await assert.rejects(
          ctd.cri!.runPod(podConfig('cg-memory', { [MEMORY]: '1024' }, `/${parent}`), 'hull'),
          (e: CriError) => {
            assert.equal(e.code, CriStatus.INVALID_ARGUMENT, e.message);
            assert.match(e.details, /memory limit of 1000 MiB, less than the VM needs: 1024 MiB of guest memory \+/);
            return true;
          },
        );
      } finally {
        fs.writeFileSync(ctd.hullConfig, original);
      }
      for (let i = 0; i < 100 && leftover().length > 0; i++) await sleep(100);
      assert.deepEqual(leftover(), [], 'no sandbox cgroup is left');
      assert.deepEqual(processesMentioning(ctd.stateDir), [], 'no VM process is left');
    } finally {
      for (const d of leftover()) fs.rmdirSync(d);
      for (const h of layout.hierarchies) fs.rmdirSync(path.join(h.mountPoint, parent));
    }
  });
}
