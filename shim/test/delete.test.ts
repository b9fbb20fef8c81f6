import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Server } from 'ttrpc-ts';
import { Store, writeBundlePointer, type SandboxRecord } from '../../core';
import { task, TaskService } from '../../protos/containerd';
import { socketAddress, socketPath } from '../address';
import { deleteContainer } from '../delete';
import { parseFlags, type ShimFlags } from '../flags';

/** A sandbox id no other process's command line contains by chance. */
const SANDBOX = `sbdel${process.pid}x${Date.now()}`;

describe('shim delete (no daemon needed)', () => {
  let tmp: string;
  let flags: (id: string, bundle: string) => ShimFlags;
  const children: ChildProcess[] = [];
  const stderrWrite = fs.writeSync;
  let warnings: string[];
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-delete-'));
    const address = path.join(tmp, 'containerd.sock');
    flags = (id, bundle) =>
      parseFlags([
        '-namespace',
        'ns1',
        '-address',
        address,
        '-publish-binary',
        '/usr/bin/containerd',
        '-id',
        id,
        '-bundle',
        bundle,
        'delete',
      ]);
    // delete writes its warnings to fd 2: keep them for the assertions, out of the test report.
    warnings = [];
    (fs as { writeSync: unknown }).writeSync = (fd: number, data: unknown, ...rest: unknown[]): number => {
      if (fd === 2 && typeof data === 'string') {
        warnings.push(data);
        return data.length;
      }
      return (stderrWrite as (...a: unknown[]) => number)(fd, data, ...rest);
    };
  });
  afterEach(() => {
    (fs as { writeSync: unknown }).writeSync = stderrWrite;
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function bundle(id: string): string {
    const b = path.join(tmp, 'bundles', id);
    fs.mkdirSync(b, { recursive: true });
    return b;
  }

  function decode(bytes: Uint8Array): { pid: number; exitStatus: number; exitedAtMs: number } {
    const r = task.DeleteResponse.decode(bytes);
    return {
      pid: r.pid ?? 0,
      exitStatus: r.exitStatus ?? 0,
      exitedAtMs: Number(r.exitedAt?.seconds ?? 0) * 1000 + Math.floor((r.exitedAt?.nanos ?? 0) / 1e6),
    };
  }

  function saveRecord(extra: Partial<SandboxRecord> = {}): { file: string; record: SandboxRecord } {
    const dir = path.join(tmp, 'state', 'ns1', SANDBOX);
    const file = path.join(dir, 'state.json');
    const record: SandboxRecord = {
      version: 1,
      namespace: 'ns1',
      sandboxId: SANDBOX,
      shimPid: process.pid, // alive, but its command line does not name the sandbox: a dead shim's recycled pid
      vmStateDir: path.join(dir, 'vm'),
      shareRoot: dir,
      shareId: 'share',
      qemuPid: 4242_4242,
      containers: { [SANDBOX]: { bundle: bundle(SANDBOX) }, c2: { bundle: bundle('c2') } },
      ...extra,
    };
    new Store(file).save(record);
    for (const { bundle: b } of Object.values(record.containers)) writeBundlePointer(b, file, path.join(tmp, 'state'));
    return { file, record };
  }

  it('a bundle without a pointer: a valid DeleteResponse, exit status 137 (128+SIGKILL), exited now', async () => {
    const before = Date.now();
    const r = decode(await deleteContainer(flags('c1', bundle('c1'))));
    assert.equal(r.pid, 0);
    assert.equal(r.exitStatus, 137);
    assert.ok(r.exitedAtMs >= before - 1000 && r.exitedAtMs <= Date.now() + 1000, 'exited_at is now');
    assert.deepEqual(warnings, []);
  });

  it('a missing bundle is no error either', async () => {
    const r = decode(await deleteContainer(flags('c1', path.join(tmp, 'gone'))));
    assert.equal(r.exitStatus, 137);
  });

  it('a dead shim: a pod container is only dropped from the record; the VM pid is reported', async () => {
    const { file, record } = saveRecord();
    const r = decode(await deleteContainer(flags('c2', record.containers.c2!.bundle)));
    assert.equal(r.pid, 4242_4242);
    assert.equal(r.exitStatus, 137);
    assert.deepEqual(Store.load(file)?.containers, { [SANDBOX]: record.containers[SANDBOX] });
    assert.deepEqual(warnings, []);
  });

  it('a dead shim: the sandbox container removes the record, the state folder and the stale socket', async () => {
    const { file, record } = saveRecord();
    const sock = socketPath(socketAddress(path.join(tmp, 'containerd.sock'), 'ns1', SANDBOX));
    fs.mkdirSync(path.dirname(sock), { recursive: true });
    fs.writeFileSync(sock, ''); // stands for the socket file the dead daemon left
    try {
      decode(await deleteContainer(flags(SANDBOX, record.containers[SANDBOX]!.bundle)));
      assert.equal(fs.existsSync(file), false);
      assert.equal(fs.existsSync(path.dirname(file)), false);
      assert.equal(fs.existsSync(sock), false);
      assert.deepEqual(warnings, []);
    } finally {
      fs.rmSync(sock, { force: true });
    }
  });

  it('a container the record does not know is left alone', async () => {
    const { file, record } = saveRecord();
    const other = bundle('c9');
    writeBundlePointer(other, file, path.join(tmp, 'state'));
    decode(await deleteContainer(flags('c9', other)));
    assert.deepEqual(Store.load(file), record);
  });

  it('a live shim: asks it to Kill (all, SIGKILL) and Delete the container', async () => {
    // The daemon's pid must be alive with the sandbox id in its command line, as the real daemon's cwd/argv has.
    const daemon = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)', SANDBOX], { stdio: 'ignore' });
    children.push(daemon);
    await new Promise((r) => daemon.once('spawn', r));
    const { record } = saveRecord({ shimPid: daemon.pid });
    const sock = socketPath(socketAddress(path.join(tmp, 'containerd.sock'), 'ns1', SANDBOX));
    const calls: string[] = [];
    const server = new Server();
    server.register(TaskService, {
      Kill: (req, ctx) => {
        calls.push(
          `Kill ${req.id} ${req.signal} all=${req.all} ns=${ctx.metadata['containerd-namespace-ttrpc']?.join()}`,
        );
        return {};
      },
      Delete: (req) => {
        calls.push(`Delete ${req.id}`);
        return { pid: 1, exitStatus: 0 };
      },
    });
    fs.mkdirSync(path.dirname(sock), { recursive: true });
    await server.listen(sock);
    try {
      const r = decode(await deleteContainer(flags('c2', record.containers.c2!.bundle)));
      assert.equal(r.exitStatus, 137);
      assert.deepEqual(calls, ['Kill c2 9 all=true ns=ns1', 'Delete c2']);
      assert.deepEqual(warnings, []);
    } finally {
      await server.close();
      fs.rmSync(sock, { force: true });
    }
  });

  it('a live shim that does not answer: a warning on stderr, still a DeleteResponse', async () => {
    const daemon = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)', SANDBOX], { stdio: 'ignore' });
    children.push(daemon);
    await new Promise((r) => daemon.once('spawn', r));
    const { record } = saveRecord({ shimPid: daemon.pid });
    const r = decode(await deleteContainer(flags('c2', record.containers.c2!.bundle)));
    assert.equal(r.exitStatus, 137);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      new RegExp(`^hull delete c2: the shim daemon \\(pid ${daemon.pid}\\) did not delete it: `),
    );
  });
});
