/**
 * A pretend host for cli/'s tests: a temporary root folder with dev/, proc/, sys/ and etc/ as a test lays them out
 * (a regular file stands for a device that opens; a folder at /proc/self/oom_score_adj for a value root may not
 * lower), a guest artefact folder with its manifest.json, and a runner that answers from a table instead of running
 * programs (it records every call).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, type HullConfig } from '../../core/config';
import { RealHost, type RunResult } from '../host';

export type Answer = (args: readonly string[], deadlineMs: number) => Partial<RunResult>;

export const ok =
  (stdout: string): Answer =>
  () => ({ code: 0, stdout });
export const missing: Answer = () => ({ code: null, error: 'ENOENT' });
export const hangs: Answer = (_a, deadlineMs) => ({
  code: null,
  signal: 'SIGKILL',
  timedOut: true,
  error: `killed after ${deadlineMs} ms`,
  stdout: 'Probing EDD (edd=off to disable)... ok\n',
  elapsedMs: deadlineMs,
});
export const boots: Answer = () => ({ code: 0, stdout: 'Linux version 6.1.0 (...)\nKernel panic - not syncing\n' });

/** What a healthy Debian 12 host answers. */
export const HEALTHY: Record<string, Answer> = {
  '/usr/bin/qemu-system-x86_64': ok('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n'),
  '/usr/lib/qemu/virtiofsd': ok('virtiofsd version 7.2.22\n'),
  iptables: ok('iptables v1.8.9 (nf_tables)\n'),
  containerd: ok('containerd github.com/containerd/containerd 1.6.20~ds1\n'),
};

export const V1_MOUNTINFO = [
  '30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '',
].join('\n');

export class FakeHost extends RealHost {
  readonly calls: { program: string; args: readonly string[] }[] = [];
  readonly answers: Record<string, Answer>;
  readonly guestDir: string;

  constructor(root: string, answers: Record<string, Answer> = {}, uid = 0) {
    super(root, uid);
    this.answers = { ...HEALTHY, ...answers };
    this.guestDir = path.join(root, 'guest');
  }

  override run(program: string, args: readonly string[], deadlineMs: number): Promise<RunResult> {
    this.calls.push({ program, args });
    const answer = this.answers[program] ?? missing;
    return Promise.resolve({
      code: null,
      signal: null,
      stdout: '',
      stderr: '',
      timedOut: false,
      elapsedMs: 300,
      ...answer(args, deadlineMs),
    });
  }

  /** Creates a file (parents too) below the root. */
  put(hostPath: string, text = ''): this {
    const p = path.join(this.root, hostPath);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, text);
    return this;
  }

  mkdir(hostPath: string): this {
    fs.mkdirSync(path.join(this.root, hostPath), { recursive: true });
    return this;
  }

  /** The configuration with its guest artefacts in <root>/guest and `extra` TOML appended to its sections. */
  config(hypervisor = '', rest = ''): HullConfig {
    const g = this.guestDir;
    const text = `[hypervisor]\nkernel = "${g}/vmlinuz"\ninitrd = "${g}/initrd.img"\nimage = "${g}/rootfs.img"\n${hypervisor}\n${rest}`;
    return parseConfig(text, '/etc/hull/configuration.toml', '/usr/local/bin', () => false);
  }
}

/**
 * A host where everything a pod needs is present: KVM (no PVM), vhost devices, tun, cgroup v1 with cpu and memory,
 * containerd registering hull, root may lower oom_score_adj, and the guest artefacts with their manifest.
 */
export function healthyHost(answers: Record<string, Answer> = {}, uid = 0): FakeHost {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cli-'));
  const h = new FakeHost(root, { '/usr/bin/qemu-system-x86_64': qemuWithBoot(boots), ...answers }, uid);
  for (const d of ['/dev/kvm', '/dev/vhost-vsock', '/dev/vhost-net', '/dev/net/tun']) h.put(d);
  h.put('/proc/self/mountinfo', V1_MOUNTINFO);
  h.put('/proc/self/oom_score_adj', '0\n');
  h.put('/proc/cpuinfo', 'processor\t: 0\nflags\t\t: fpu vme vmx\n');
  h.put(
    '/etc/containerd/config.toml',
    'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]\n  runtime_type = "io.containerd.hull.v2"\n',
  );
  const files: Record<string, { size: number; sha256: string }> = {};
  for (const [name, content] of [
    ['vmlinuz', 'kernel bytes'],
    ['initrd.img', 'initrd bytes'],
    ['rootfs.img', 'image bytes'],
  ] as const) {
    h.put(`/guest/${name}`, content);
    files[name] = { size: content.length, sha256: createHash('sha256').update(content).digest('hex') };
  }
  h.put('/guest/manifest.json', JSON.stringify({ kernelRelease: '6.1.0-57-cloud-amd64', files }));
  return h;
}

/** QEMU that answers --version and boots (or hangs) under `-accel kvm`. */
export function qemuWithBoot(boot: Answer): Answer {
  return (args, deadline) =>
    args[0] === '--version' ? { code: 0, stdout: 'QEMU emulator version 7.2.22\n' } : boot(args, deadline);
}

export function removeHost(h: FakeHost): void {
  fs.rmSync(h.root, { recursive: true, force: true });
}
