import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Code, StatusError } from 'ttrpc-ts';
import { killCgroup } from '../container';
import { toRuntimeSpec } from '../oci';
import { ContainerProcess, OutputBuffer } from '../process';

const code = (c: Code) => (e: unknown) => e instanceof StatusError && e.code === c;

describe('container output buffering', () => {
  it('blocks a read until there is data, splits chunks, and answers empty at end of file', async () => {
    const pipe = new PassThrough();
    const out = new OutputBuffer(pipe);
    const first = out.read(3);
    pipe.write('hello');
    assert.equal((await first).toString(), 'hel');
    assert.equal((await out.read(100)).toString(), 'lo');
    pipe.end();
    await out.ended();
    assert.equal((await out.read(10)).length, 0);
  });

  it('pauses the pipe at its cap and resumes when read', async () => {
    const pipe = new PassThrough();
    const out = new OutputBuffer(pipe, 4);
    pipe.write('abcdef');
    await new Promise((r) => setImmediate(r));
    assert.equal(pipe.isPaused(), true);
    assert.equal((await out.read(6)).toString(), 'abcdef');
    assert.equal(pipe.isPaused(), false);
  });

  it('answers WaitProcess only after the exit and end of file on stdout and stderr', async () => {
    const [stdout, stderr] = [new PassThrough(), new PassThrough()];
    const p = new ContainerProcess('e1', null, stdout, stderr);
    p.started(1234, Promise.resolve(7));
    let done = false;
    const waited = p.wait().then((c) => ((done = true), c));
    stdout.end('tail');
    await new Promise((r) => setImmediate(r));
    assert.equal(done, false, 'stderr is still open');
    stderr.end();
    assert.equal(await waited, 7);
    assert.equal((await p.stdout.read(10)).toString(), 'tail', 'output stays buffered after the exit');
  });

  it('answers WaitProcess within the drain bound when a background child holds stdout; its output keeps flowing', async () => {
    const [stdout, stderr] = [new PassThrough(), new PassThrough()];
    const p = new ContainerProcess('e1', null, stdout, stderr);
    let exit!: (code: number) => void;
    p.started(1234, new Promise((resolve) => (exit = resolve)));
    stdout.write('started\n');
    stderr.end();
    const t0 = Date.now();
    const waited = p.wait(200);
    await new Promise((r) => setTimeout(r, 300));
    exit(0); // the child still holds stdout: it never ends
    assert.equal(await waited, 0);
    assert.ok(Date.now() - t0 >= 480, 'the bound counts from the exit, not from the call');
    assert.equal(await p.wait(200), 0, 'a second WaitProcess answers at once');
    assert.equal((await p.stdout.read(100)).toString(), 'started\n', 'what was written before the exit is there');
    stdout.write('later\n');
    assert.equal((await p.stdout.read(100)).toString(), 'later\n', "the child's output is still read after the exit");
    p.close();
    assert.equal((await p.stdout.read(100)).length, 0, 'close() ends it');
  });

  it('answers WaitProcess at end of file, before the drain bound, when no child holds the pipes', async () => {
    const [stdout, stderr] = [new PassThrough(), new PassThrough()];
    const p = new ContainerProcess('e1', null, stdout, stderr);
    p.started(1234, Promise.resolve(3));
    const t0 = Date.now();
    const waited = p.wait(10_000);
    stdout.end('bye');
    stderr.end();
    assert.equal(await waited, 3);
    assert.ok(Date.now() - t0 < 5_000, 'not held until the bound');
  });
});

describe("killCgroup (a container sharing the pod's pid namespace whose init exited)", () => {
  it('kills the cgroup through cgroup.kill, and does nothing without a cgroup', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-kill-'));
    try {
      fs.writeFileSync(path.join(dir, 'cgroup.kill'), '');
      killCgroup('c1', dir);
      assert.equal(fs.readFileSync(path.join(dir, 'cgroup.kill'), 'utf8'), '1');
      assert.doesNotThrow(() => killCgroup('c2', path.join(dir, 'missing')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

interface ConvertedSpec {
  root: unknown;
  process: { user: unknown };
  mounts: unknown;
  linux: { namespaces: unknown; cgroupsPath: string; resources: unknown };
  hooks?: unknown;
}

describe('OCI spec conversion', () => {
  const base = {
    Process: { Args: ['sh'], Env: ['A=1'], Cwd: '/', User: { UID: 1, GID: 2 } },
    Root: { Path: '/host/rootfs', Readonly: true },
  };

  it("keeps the process and kernel mounts, drops network, joined namespaces (the guest's are the pod's) and hooks", () => {
    const spec = toRuntimeSpec(
      {
        ...base,
        Mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }],
        Hooks: { Prestart: [{ Path: '/bin/evil' }] },
        Linux: {
          Namespaces: [{ Type: 'pid' }, { Type: 'network', Path: '/proc/1/ns/net' }, { Type: 'ipc', Path: '/x' }],
          Resources: { Memory: { Limit: 1 << 26 } },
        },
      },
      'c1',
      '/run/kata-containers/shared/containers/c1/rootfs',
    ) as unknown as ConvertedSpec;
    assert.deepEqual(spec.root, { path: '/run/kata-containers/shared/containers/c1/rootfs', readonly: true });
    assert.deepEqual(spec.process.user, { uid: 1, gid: 2 });
    assert.deepEqual(spec.mounts, [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }]);
    assert.deepEqual(spec.linux.namespaces, [{ type: 'pid' }, { type: 'mount' }]);
    assert.equal(spec.linux.cgroupsPath, '/hull/c1');
    assert.deepEqual(spec.linux.resources, { memory: { limit: 1 << 26 } });
    assert.equal(spec.hooks, undefined);
  });

  it('refuses bad args, env and paths', () => {
    assert.throws(
      () => toRuntimeSpec({ ...base, Process: { ...base.Process, Args: [] } }, 'c', '/r'),
      code(Code.INVALID_ARGUMENT),
    );
    assert.throws(
      () => toRuntimeSpec({ ...base, Process: { ...base.Process, Env: ['novalue'] } }, 'c', '/r'),
      code(Code.INVALID_ARGUMENT),
    );
    assert.throws(
      () => toRuntimeSpec({ ...base, Process: { ...base.Process, Cwd: 'rel' } }, 'c', '/r'),
      code(Code.INVALID_ARGUMENT),
    );
    assert.throws(
      () => toRuntimeSpec({ ...base, Mounts: [{ destination: '../x', type: 'tmpfs' }] }, 'c', '/r'),
      code(Code.INVALID_ARGUMENT),
    );
    assert.throws(() => toRuntimeSpec(null, 'c', '/r'), code(Code.INVALID_ARGUMENT));
    // A bind mount of a host path (not in the share): refused, no longer dropped (volumes.test.ts has the rest).
    assert.throws(
      () =>
        toRuntimeSpec(
          { ...base, Mounts: [{ destination: '/data', type: 'bind', source: '/var/lib/host', options: ['rbind'] }] },
          'c',
          '/r',
        ),
      code(Code.INVALID_ARGUMENT),
    );
  });
});
