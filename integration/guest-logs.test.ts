/**
 * Guest logs end to end (a private containerd, the real shim, QEMU and guest): the agent's records (its own log
 * port) and the kernel console reach the shim's log, which containerd copies into its own, with their source
 * marked and at their levels; a guest flooding both is logged at a bounded rate, the rest counted, nothing kept on
 * disk, and the sandbox keeps working.
 *
 * The console flood and the kernel error line come from a privileged container writing to the guest kernel's log
 * (/dev/kmsg, made with mknod: a privileged container may); the agent flood from the guest's test-only hook
 * io.hull.debug.agent-log-flood (agent/debug-hooks.ts), honoured with `[runtime] debug_hooks = true` in a
 * configuration only this test uses. `[runtime] debug = true` puts the shim's log at debug level.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import { guestArtifacts } from './lib/guest';

const RUNTIME = 'io.containerd.hull.v2';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** pino's levels. */
const DEBUG = 20;
const WARN = 40;
const ERROR = 50;
const CONSOLE_FLOOD = 2000;
const AGENT_FLOOD = 5000;

interface ShimLine {
  level: number;
  msg: string;
  id?: string;
  runtime?: string;
  source?: string;
  line?: string;
  notLogged?: number;
  droppedInGuest?: number;
  guestLevel?: string;
  fields?: Record<string, unknown>;
}

/** Every file's size below `dir` (hull's own files: not the shared folder, where the containers' rootfs are mounted). */
function filesBelow(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory() && !(d === dir && e.name === 'share')) walk(p);
      else if (e.isFile()) out.set(p, fs.statSync(p).size);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
}

describe('guest logs: agent records and kernel console lines in the shim log, marked, levelled, rate-limited', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let config: string;

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd();
    await importBusybox(ctd);
    config = path.join(ctd.dir, 'guest-logs.toml');
    fs.writeFileSync(
      config,
      [
        '[agent]',
        'boot_timeout = 120',
        '[runtime]',
        `state_dir = "${ctd.stateDir}"`,
        'debug = true',
        'debug_hooks = true',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await ctd?.stop();
  });

  /** The shim's JSON lines for sandbox `id` in containerd's log. */
  function shimLines(id: string): ShimLine[] {
    const out: ShimLine[] = [];
    for (const l of fs.readFileSync(ctd.log, 'utf8').split('\n')) {
      if (!l.startsWith('{')) continue;
      try {
        const j = JSON.parse(l) as ShimLine;
        if (j.runtime === 'hull' && j.id === id) out.push(j);
      } catch {
        // a line cut by the copy, or containerd's own
      }
    }
    return out;
  }

  it('source agent and source console at their levels; a flood of both counted, not stored; the sandbox keeps working', async () => {
    const id = 'guest-logs';
    const script = [
      'busybox mknod /dev/hullkmsg c 1 11',
      'echo "<3>hull-test: BUG: an error report for the guest-logs test" > /dev/hullkmsg',
      `i=0; while [ $i -lt ${CONSOLE_FLOOD} ]; do echo "<6>hull-test flood $i" > /dev/hullkmsg; i=$((i+1)); done`,
      'echo "<6>hull-test flood done" > /dev/hullkmsg',
      'touch /tmp/flood-done',
      'sleep 600',
    ].join('; ');
    const r = await ctd.ctr([
      'run',
      '-d',
      '--privileged',
      '--runtime',
      RUNTIME,
      '--runtime-config-path',
      config,
      '--annotation',
      `io.hull.debug.agent-log-flood=${AGENT_FLOOD}`,
      BUSYBOX_IMAGE,
      id,
      'sh',
      '-c',
      script,
    ]);
    assert.equal(r.code, 0, r.stderr);
    try {
      // The container says when its flood is over; the summaries follow within a window (1 s).
      const t0 = Date.now();
      let n = 0;
      const done = async (): Promise<boolean> =>
        (await ctd.ctr(['task', 'exec', '--exec-id', `poll${n++}`, id, 'test', '-f', '/tmp/flood-done'])).code === 0;
      while (!(await done()) && Date.now() - t0 < 240_000) await sleep(1000);
      assert.ok(Date.now() - t0 < 240_000, 'the console flood ended within 240 s');
      // The agent floods while the container does, in batches: wait until every record is logged or counted.
      const agentAccounted = (): number =>
        shimLines(id).reduce(
          (n, l) =>
            l.source !== 'agent'
              ? n
              : l.msg === 'debug hook: log flood'
                ? n + 1
                : /agent log records not logged/.test(l.msg)
                  ? n + (l.notLogged ?? 0) + (l.droppedInGuest ?? 0)
                  : l.msg.startsWith('log records dropped')
                    ? n + Number(l.fields?.dropped ?? 0)
                    : n,
          0,
        );
      for (let last = -1, since = Date.now(); agentAccounted() < AGENT_FLOOD && Date.now() - since < 15_000;) {
        const now = agentAccounted();
        if (now !== last) [last, since] = [now, Date.now()];
        await sleep(1000);
      }
      await sleep(2000);
      const exec = await ctd.ctr(['task', 'exec', '--exec-id', 'after', id, 'sh', '-c', 'echo still-working']);
      assert.equal(exec.code, 0, exec.stderr);
      assert.equal(exec.stdout.trim(), 'still-working', 'the sandbox keeps working after the floods');

      const lines = shimLines(id);
      const agent = lines.filter((l) => l.source === 'agent');
      const consoleLines = lines.filter((l) => l.source === 'console' && l.line !== undefined);
      const ready = agent.find((l) => l.msg === 'ready');
      assert.ok(ready, 'the agent\'s "ready" record is in the shim log');
      assert.equal(ready.level, DEBUG, 'an info record is logged at debug level');
      assert.equal(ready.guestLevel, 'info');
      assert.equal(ready.fields?.transport, 'serial');
      const warnRecord = agent.find((l) => l.msg === 'debug hook: the agent floods its log');
      assert.equal(warnRecord?.level, WARN, 'a warn record is logged at warn level');

      assert.ok(
        consoleLines.some((l) => l.level === DEBUG && /Linux version/.test(l.line ?? '')),
        'a kernel boot line with source console at debug level',
      );
      const bug = consoleLines.find((l) => /hull-test: BUG: an error report/.test(l.line ?? ''));
      assert.equal(bug?.level, ERROR, 'a kernel error report at error level');
      assert.equal(
        agent.some((l) => /BUG: an error report/.test(l.msg)) || consoleLines.some((l) => l.msg !== 'guest console'),
        false,
        'console lines never appear as agent records',
      );

      const consoleFlood = consoleLines.filter((l) => /hull-test flood \d+/.test(l.line ?? '')).length;
      const consoleNotLogged = lines
        .filter((l) => l.source === 'console' && /guest console lines not logged/.test(l.msg))
        .reduce((n, l) => n + (l.notLogged ?? 0), 0);
      const agentFlood = agent.filter((l) => l.msg === 'debug hook: log flood').length;
      const agentNotLogged = lines
        .filter((l) => l.source === 'agent' && /agent log records not logged/.test(l.msg))
        .reduce((n, l) => n + (l.notLogged ?? 0), 0);
      const agentDropped =
        agent
          .filter((l) => l.msg.startsWith('log records dropped'))
          .reduce((n, l) => n + Number(l.fields?.dropped ?? 0), 0) +
        agent.reduce((n, l) => n + (l.droppedInGuest ?? 0), 0);
      process.stdout.write(
        `      console flood: ${consoleFlood} of ${CONSOLE_FLOOD} lines logged, ${consoleNotLogged} counted; ` +
          `agent flood: ${agentFlood} of ${AGENT_FLOOD} records logged, ${agentNotLogged} counted, ${agentDropped} dropped in the guest\n`,
      );
      assert.ok(consoleFlood < CONSOLE_FLOOD, 'not every console flood line was logged');
      assert.ok(consoleNotLogged > 0, 'the console lines over the limit are counted');
      assert.ok(agentFlood < AGENT_FLOOD, 'not every agent flood record was logged');
      assert.ok(agentNotLogged > 0, 'the agent records over the limit are counted');
      assert.ok(
        agentAccounted() >= AGENT_FLOOD,
        'every flood record is logged or counted (here or as dropped in the guest)',
      );

      const files = filesBelow(path.join(ctd.stateDir, ctd.namespace, id));
      const big = [...files].filter(([, size]) => size > 64 * 1024);
      assert.deepEqual(big, [], 'no big file in the sandbox state folder (no console file)');
      assert.deepEqual(
        [...files.keys()].filter((f) => /console|agent-log/.test(path.basename(f))),
        [],
        'no console or agent log file',
      );
    } finally {
      await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
      for (let i = 0; i < 60; i++) {
        const d = await ctd.ctr(['task', 'delete', id]);
        if (d.code === 0 || /not found/.test(d.stderr)) break;
        await sleep(500);
      }
      await ctd.ctr(['container', 'rm', id]);
    }
  });
});
