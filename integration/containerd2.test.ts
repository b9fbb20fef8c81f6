/**
 * containerd 2.x's side of the shim contract with a real containerd 2 (integration/lib/containerd `generation: 2`):
 * `-info` is consumed (ctr's inspect-runtime, containerd's idmap check), `start` announces task API v3 and
 * containerd speaks it (containerd's "connecting to shim" line says version=3, the shim logs the service
 * containerd called), a container runs in its VM, and an idmapped mount is refused with the reason. The same
 * idmapped mount with containerd 1.6, which does not ask `-info`, reaches hull's Create and is refused there.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import { guestArtifacts } from './lib/guest';
import { processesMentioning } from './lib/processes';

const RUNTIME = 'io.containerd.hull.v2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** containerd's log from `offset` on (each test reads only what it caused). */
const logSince = (ctd: PrivateContainerd, offset: number): string =>
  fs.readFileSync(ctd.log).subarray(offset).toString();

/** Waits (bounded) until nothing of sandbox `id` is left in containerd's state folder. */
async function waitGone(ctd: PrivateContainerd, id: string): Promise<void> {
  const dir = path.join(ctd.stateDir, ctd.namespace, id);
  for (let i = 0; i < 100 && fs.existsSync(dir); i++) await sleep(100);
  assert.equal(fs.existsSync(dir), false, `${dir} is removed`);
}

describe('containerd 2.x: -info, task API v3, idmapped mounts', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let src: string;

  before(async function () {
    guestArtifacts(); // names `make guest` if the image is missing
    ctd = await startContainerd({ generation: 2 });
    await importBusybox(ctd);
    src = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-idmap-'));
  });

  after(async () => {
    await ctd?.stop();
    if (src) fs.rmSync(src, { recursive: true, force: true });
  });

  it('`ctr plugins inspect-runtime` shows the RuntimeInfo hull prints for -info (features decoded by containerd)', async () => {
    const offset = fs.statSync(ctd.log).size;
    const r = await ctd.ctr(['plugins', 'inspect-runtime', '--runtime', RUNTIME]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as {
      Name: string;
      Version: { Version: string };
      Features: {
        ociVersionMin: string;
        linux: {
          namespaces: string[];
          mountExtensions: { idmap: { enabled: boolean } };
          seccomp: { enabled: boolean };
        };
      };
    };
    assert.equal(info.Name, RUNTIME);
    assert.equal(info.Version.Version, '0.1.0');
    assert.equal(info.Features.ociVersionMin, '1.0.0');
    assert.deepEqual(info.Features.linux.mountExtensions, { idmap: { enabled: false } });
    assert.ok(info.Features.linux.namespaces.includes('pid'));
    assert.ok(info.Features.linux.seccomp.enabled);
    assert.doesNotMatch(logSince(ctd, offset), /failed to load runtime info|failed to run .*-info/);
  });

  it('containerd 2 negotiates task API v3 with hull and a container runs in its VM', async () => {
    const offset = fs.statSync(ctd.log).size;
    const r = await ctd.ctr(['run', '--rm', '--runtime', RUNTIME, BUSYBOX_IMAGE, 'v3', 'uname', '-r']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), guestArtifacts().manifest.kernelRelease);
    await waitGone(ctd, 'v3');
    const log = logSince(ctd, offset);
    // containerd's own account (core/runtime/v2/shim.go makeConnection), from what `start` printed.
    assert.match(log, /msg="connecting to shim v3"[^\n]*protocol=ttrpc[^\n]*version=3/);
    // The shim's (its log reaches containerd's through the bundle's log FIFO): the service containerd called.
    assert.match(
      log,
      /containerd calls the task API[^\n]*containerd\.task\.v3\.Task|containerd\.task\.v3\.Task[^\n]*containerd calls the task API/,
    );
    assert.doesNotMatch(log, /containerd\.task\.v2\.Task/);
    assert.doesNotMatch(log, /failed to load runtime info/);
  });

  it('an idmapped mount is refused by containerd 2 from -info (idmap disabled) before Create: no VM, no shim left', async () => {
    const offset = fs.statSync(ctd.log).size;
    const r = await ctd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--mount',
      `type=bind,src=${src},dst=/data,options=rbind:idmap`,
      BUSYBOX_IMAGE,
      'idmap2',
      'true',
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /idmap mounts not supported: entry `mountExtensions\.idmap\.Enabled`/);
    const log = logSince(ctd, offset);
    assert.doesNotMatch(log, /failed to run .*-info/);
    // containerd 2.1 starts the shim, then checks the features, and never calls Create.
    assert.doesNotMatch(log, /"method":"Create"/);
    await ctd.ctr(['container', 'delete', 'idmap2']);
    const shims = (): string[] => processesMentioning('-id idmap2');
    for (let i = 0; i < 100 && shims().length > 0; i++) await sleep(100);
    assert.deepEqual(shims(), [], 'no shim daemon of idmap2 is left');
    assert.deepEqual(processesMentioning(path.join(ctd.stateDir, ctd.namespace, 'idmap2')), [], 'no VM');
  });
});

describe('containerd 2.x over CRI: a pod and its container on task API v3', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd({ generation: 2, cri: true });
    await importBusybox(ctd);
  });

  after(async () => {
    await ctd?.stop();
  });

  it("the sandbox's start and the joining container's start both announce v3; exec reaches the guest", async () => {
    const client = ctd.cri!.client;
    const offset = fs.statSync(ctd.log).size;
    const logDirectory = path.join(ctd.cri!.logRoot, 'v3pod');
    fs.mkdirSync(logDirectory, { recursive: true });
    const config = {
      metadata: { name: 'v3pod', uid: crypto.randomUUID(), namespace: 'hulltest', attempt: 0 },
      hostname: 'v3pod',
      logDirectory,
      portMappings: [],
    };
    const { podSandboxId: pod } = await client.runPodSandbox({ config, runtimeHandler: 'hull' });
    try {
      const { containerId } = await client.createContainer({
        podSandboxId: pod,
        sandboxConfig: config,
        config: {
          metadata: { name: 'sleeper' },
          image: { image: BUSYBOX_IMAGE },
          command: ['sleep', '3600'],
          logPath: 'sleeper.log',
        },
      });
      await client.startContainer(containerId);
      const r = await client.execSync({ containerId, cmd: ['uname', '-r'], timeout: 60 });
      assert.equal(r.exitCode, 0, Buffer.from(r.stderr).toString());
      assert.equal(Buffer.from(r.stdout).toString().trim(), guestArtifacts().manifest.kernelRelease);
      const log = logSince(ctd, offset);
      for (const id of [pod, containerId])
        assert.match(log, new RegExp(`msg="connecting to shim ${id}"[^\\n]*protocol=ttrpc[^\\n]*version=3`), id);
      assert.doesNotMatch(log, /containerd\.task\.v2\.Task/);
    } finally {
      await client.stopPodSandbox(pod);
      await client.removePodSandbox(pod);
    }
    await waitGone(ctd, pod);
  });
});

describe('containerd 1.6: an idmapped mount reaches hull, which refuses it at Create with the reason', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let src: string;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd({ generation: 1 });
    await importBusybox(ctd);
    src = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-idmap-'));
  });

  after(async () => {
    await ctd?.stop();
    if (src) fs.rmSync(src, { recursive: true, force: true });
  });

  it('INVALID_ARGUMENT naming virtio-fs and the guest kernel, before a VM boots; 1.6 gets a bare address', async () => {
    const offset = fs.statSync(ctd.log).size;
    const r = await ctd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--mount',
      `type=bind,src=${src},dst=/data,options=rbind:idmap`,
      BUSYBOX_IMAGE,
      'idmap1',
      'true',
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /container idmap1: mount "\/data" is idmapped \(idmap\), which hull cannot do: /);
    assert.match(r.stderr, /virtio-fs/);
    const log = logSince(ctd, offset);
    assert.doesNotMatch(log, /qemu/i, 'no VM was started');
    // containerd 1.6 read start's bare address (a JSON answer would have failed to connect) and called v2.
    assert.match(
      log,
      /containerd calls the task API[^\n]*containerd\.task\.v2\.Task|containerd\.task\.v2\.Task[^\n]*containerd calls the task API/,
    );
    await ctd.ctr(['container', 'delete', 'idmap1']);
    await waitGone(ctd, 'idmap1');
  });
});
