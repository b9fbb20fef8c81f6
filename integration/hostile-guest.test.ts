/**
 * A guest that misbehaves, end to end (a private containerd, the real shim, QEMU and guest): a hung agent or a hung
 * VM is noticed by the shim's health check, its tasks exit 255, and deleting them leaves nothing behind.
 *
 * The agent hang uses the guest's test-only hook (agent/debug-hooks.ts): with `[runtime] debug_hooks = true` in a
 * configuration only this test uses, the annotation io.hull.debug.agent-stop-after-ms makes the agent SIGSTOP itself
 * that long after the container starts. (The agent runs in the guest's own pid namespace, which no container can
 * join: hull always gives containers their own, so the hook is the only way in.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { processAlive, Store } from '../core';
import { mountsUnder } from '../fs-share';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import { guestArtifacts } from './lib/guest';
import { processesMentioning } from './lib/processes';

const RUNTIME = 'io.containerd.hull.v2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The health check this test configures: a check every second, the VM lost after 10 s without an answer. */
const HEALTH_INTERVAL_S = 1;
const HEALTH_TIMEOUT_S = 10;

describe('hostile guest: a hung agent or VM is noticed, its tasks exit 255, delete leaves nothing', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let config: string;
  /** QEMU pids this test stopped: continued and killed at the end if the test failed before hull killed them. */
  const stopped: { pid: number; marker: string }[] = [];

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd();
    await importBusybox(ctd);
    config = path.join(ctd.dir, 'liveness.toml');
    fs.writeFileSync(
      config,
      [
        '[agent]',
        'boot_timeout = 120',
        `health_check_interval = ${HEALTH_INTERVAL_S}`,
        `health_check_timeout = ${HEALTH_TIMEOUT_S}`,
        '[runtime]',
        `state_dir = "${ctd.stateDir}"`,
        'debug = true',
        'debug_hooks = true',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    for (const { pid, marker } of stopped) {
      if (processesMentioning(marker).some((p) => p.startsWith(`${pid} `))) {
        process.kill(pid, 'SIGKILL');
      }
    }
    await ctd?.stop();
  });

  async function taskStatus(id: string): Promise<string | undefined> {
    const r = await ctd.ctr(['task', 'ls']);
    const line = r.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id);
    return line?.trim().split(/\s+/)[2];
  }

  /** Polls `ctr task ls` until the task has the status; returns how long that took. */
  async function waitStatus(id: string, status: string, ms: number): Promise<number> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if ((await taskStatus(id)) === status) return Date.now() - t0;
      await sleep(200);
    }
    return assert.fail(`task ${id} did not become ${status} within ${ms} ms (now ${String(await taskStatus(id))})`);
  }

  async function assertNothingLeft(id: string): Promise<void> {
    const sandboxDir = path.join(ctd.stateDir, ctd.namespace, id);
    for (let i = 0; i < 100 && (fs.existsSync(sandboxDir) || processesMentioning(sandboxDir).length > 0); i++)
      await sleep(100);
    assert.deepEqual(processesMentioning(sandboxDir), [], 'no QEMU, virtiofsd or shim of the sandbox is left');
    assert.deepEqual(processesMentioning(`-id ${id} `), [], 'no shim of the sandbox is left');
    assert.deepEqual(
      (await mountsUnder(ctd.dir)).map((m) => m.mountPoint).filter((m) => m.includes(`/${id}`)),
      [],
      'no mount is left',
    );
    assert.equal(fs.existsSync(sandboxDir), false, `${sandboxDir} is removed`);
  }

  /** `ctr task delete` (ctr 1.6 warns of a non-zero exit status) then `ctr container rm`; nothing of the sandbox left. */
  async function deleteAndCheck(id: string): Promise<void> {
    const del = await ctd.ctr(['task', 'delete', id]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stderr, /exit code 255\b/, 'the task exited with 255');
    const rm = await ctd.ctr(['container', 'rm', id]);
    assert.equal(rm.code, 0, rm.stderr);
    await assertNothingLeft(id);
  }

  function shimLogMentions(text: string): boolean {
    return fs.readFileSync(ctd.log, 'utf8').includes(text);
  }

  it('the agent stopped (SIGSTOP) inside the guest: noticed within interval + timeout, exit 255, QEMU killed', async () => {
    const id = 'agent-stop';
    const r = await ctd.ctr([
      'run',
      '-d',
      '--runtime',
      RUNTIME,
      '--runtime-config-path',
      config,
      '--annotation',
      'io.hull.debug.agent-stop-after-ms=1000',
      BUSYBOX_IMAGE,
      id,
      'sleep',
      '600',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const record = Store.load(path.join(ctd.stateDir, ctd.namespace, id, 'state.json'));
    assert.ok(record?.qemuPid && processAlive(record.qemuPid));
    // The hook fires 1 s after start; then at most interval + timeout (+ one check's slack) before the exit.
    const tookMs = await waitStatus(id, 'STOPPED', 120_000);
    console.log(
      `      agent stopped -> task STOPPED after ${(tookMs / 1000).toFixed(1)} s (hook 1 s, interval ${HEALTH_INTERVAL_S} s, timeout ${HEALTH_TIMEOUT_S} s)`,
    );
    assert.ok(tookMs >= HEALTH_TIMEOUT_S * 1000, `not before the timeout (${tookMs} ms)`);
    assert.equal(processAlive(record.qemuPid), false, 'QEMU is killed as soon as the hang is noticed');
    assert.ok(shimLogMentions('has not answered a health check'), 'the shim log says why');
    await deleteAndCheck(id);
  });

  it('QEMU stopped (SIGSTOP) on the host: the whole VM hangs, the health check notices, exit 255', async () => {
    const id = 'qemu-stop';
    const r = await ctd.ctr([
      'run',
      '-d',
      '--runtime',
      RUNTIME,
      '--runtime-config-path',
      config,
      BUSYBOX_IMAGE,
      id,
      'sleep',
      '600',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const sandboxDir = path.join(ctd.stateDir, ctd.namespace, id);
    const record = Store.load(path.join(sandboxDir, 'state.json'));
    assert.ok(record?.qemuPid && processAlive(record.qemuPid));
    await sleep(3_000); // a few healthy checks first
    assert.equal(await taskStatus(id), 'RUNNING');
    stopped.push({ pid: record.qemuPid, marker: sandboxDir });
    process.kill(record.qemuPid, 'SIGSTOP');
    const tookMs = await waitStatus(id, 'STOPPED', 120_000);
    console.log(
      `      QEMU stopped -> task STOPPED after ${(tookMs / 1000).toFixed(1)} s (interval ${HEALTH_INTERVAL_S} s, timeout ${HEALTH_TIMEOUT_S} s)`,
    );
    assert.ok(tookMs >= (HEALTH_TIMEOUT_S - HEALTH_INTERVAL_S) * 1000, `not before the timeout (${tookMs} ms)`);
    assert.equal(processAlive(record.qemuPid), false, 'the stopped QEMU is killed');
    await deleteAndCheck(id);
  });
});
