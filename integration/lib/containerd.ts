/**
 * A private containerd for one test run: its own root, state, sockets and configuration under a temporary folder,
 * hull's checkout `bin/` first on its PATH (so `io.containerd.hull.v2` resolves to bin/containerd-shim-hull-v2),
 * and hull's configuration (HULL_CONFIG) pointing its state below the same folder. `ctr` runs with argv arrays.
 * Also: a busybox OCI image made from Debian's busybox-static, imported with `ctr image import`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { mountsUnder } from '../../fs-share';
import { busyboxRootfs } from './containers';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const BUSYBOX_IMAGE = 'docker.io/hull/busybox:test';
const APPLETS = ['sh', 'cat', 'echo', 'sleep', 'uname', 'head', 'dd', 'stty', 'true', 'false', 'ls', 'ps', 'sha256sum', 'wc', 'read', 'hostname', 'id', 'env', 'kill', 'tr', 'yes'];

export interface CtrResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface PrivateContainerd {
  dir: string;
  address: string;
  namespace: string;
  stateDir: string;
  process: ChildProcess;
  log: string;
  /** Runs ctr and collects its output (`input` goes to its stdin). */
  ctr(args: readonly string[], opts?: { input?: string | Buffer; timeoutMs?: number; stdoutFile?: string }): Promise<CtrResult>;
  /** ctr's arguments for this containerd (address and namespace first), and the environment tests run it with. */
  ctrArgs(args: readonly string[]): string[];
  env: NodeJS.ProcessEnv;
  /** Spawns ctr and returns the child (for tests that talk to it while it runs). */
  spawnCtr(args: readonly string[]): ChildProcess;
  stop(): Promise<void>;
}

function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > until) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

export async function startContainerd(opts: { hullConfig?: string; namespace?: string } = {}): Promise<PrivateContainerd> {
  // Short: containerd's sockets and hull's VM sockets live below it.
  const dir = fs.mkdtempSync('/tmp/hct-');
  const address = path.join(dir, 'c.sock');
  const stateDir = path.join(dir, 'hull');
  const log = path.join(dir, 'containerd.log');
  const namespace = opts.namespace ?? 'hulltest';
  fs.writeFileSync(
    path.join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[debug]',
      '  level = "debug"',
      '',
    ].join('\n'),
  );
  const hullConfig = path.join(dir, 'hull.toml');
  fs.writeFileSync(hullConfig, opts.hullConfig ?? ['[runtime]', `state_dir = "${stateDir}"`, 'debug = true', '[agent]', 'boot_timeout = 120', ''].join('\n'));
  const env = { ...process.env, PATH: `${path.join(REPO, 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`, HULL_CONFIG: hullConfig };
  const logFd = fs.openSync(log, 'a');
  const child = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { env, stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  let exited = false;
  child.once('exit', () => (exited = true));
  await waitFor(() => exited || fs.existsSync(address), 20_000, 'containerd to listen');
  if (exited) throw new Error(`containerd exited at start:\n${fs.readFileSync(log, 'utf8').slice(-3000)}`);

  const ctrArgs = (args: readonly string[]): string[] => ['--address', address, '--namespace', namespace, ...args];
  const ctr: PrivateContainerd['ctr'] = (args, o = {}) =>
    new Promise((resolve, reject) => {
      const p = spawn('ctr', ctrArgs(args), { env, stdio: ['pipe', o.stdoutFile ? fs.openSync(o.stdoutFile, 'w') : 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      p.stdout?.on('data', (c: Buffer) => out.push(c));
      p.stderr?.on('data', (c: Buffer) => err.push(c));
      const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 240_000);
      p.once('error', reject);
      p.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      });
      if (o.input !== undefined) p.stdin?.end(o.input);
      else p.stdin?.end();
    });
  const spawnCtr = (args: readonly string[]): ChildProcess => spawn('ctr', ctrArgs(args), { env, stdio: ['pipe', 'pipe', 'pipe'] });

  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      await waitFor(() => exited, 15_000, 'containerd to exit').catch(() => child.kill('SIGKILL'));
    }
    // Snapshot mounts containerd may have left (it unmounts on task delete; a failed test may not get there).
    for (const m of (await mountsUnder(dir)).reverse()) spawnSync('umount', ['-l', m.mountPoint]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { dir, address, namespace, stateDir, process: child, log, ctr, ctrArgs, env, spawnCtr, stop };
}

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Builds an OCI image archive of a busybox rootfs (Debian's busybox-static) and imports it as BUSYBOX_IMAGE. */
export async function importBusybox(ctd: PrivateContainerd): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-img-'));
  try {
    const rootfs = busyboxRootfs(path.join(work, 'rootfs'), APPLETS);
    fs.writeFileSync(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    fs.writeFileSync(path.join(rootfs, 'etc', 'group'), 'root:x:0:\n');
    const layerTar = path.join(work, 'layer.tar');
    const tar = spawnSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
    if (tar.status !== 0) throw new Error(`tar: ${tar.stderr.toString()}`);
    const layer = fs.readFileSync(layerTar);
    const layerDigest = sha256(layer);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
        rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      }),
    );
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
      }),
    );
    const layout = path.join(work, 'layout');
    const blobs = path.join(layout, 'blobs', 'sha256');
    fs.mkdirSync(blobs, { recursive: true });
    fs.writeFileSync(path.join(blobs, layerDigest), layer);
    fs.writeFileSync(path.join(blobs, sha256(config)), config);
    fs.writeFileSync(path.join(blobs, sha256(manifest)), manifest);
    fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha256(manifest)}`, size: manifest.length, annotations: { 'io.containerd.image.name': BUSYBOX_IMAGE, 'org.opencontainers.image.ref.name': 'test' } }],
      }),
    );
    const archive = path.join(work, 'image.tar');
    const t2 = spawnSync('tar', ['-C', layout, '-cf', archive, '.']);
    if (t2.status !== 0) throw new Error(`tar: ${t2.stderr.toString()}`);
    const r = await ctd.ctr(['image', 'import', archive]);
    if (r.code !== 0) throw new Error(`ctr image import: ${r.stderr}`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
