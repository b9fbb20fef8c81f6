/**
 * `hull list` and `hull exec` on a real sandbox made by ctr through a private containerd (real QEMU, real guest),
 * run as an operator runs them (bin/hull). The debug console is enabled in hull's configuration for the first
 * sandbox: `hull exec <id> cat /proc/version` prints the guest's kernel, and an interactive shell is driven on a
 * pty (node-pty) on the host: arithmetic, a resize seen by `stty size`, ^C of a sleep, an exit status. A sandbox
 * created with the console disabled is refused with a clear message; the shim logs every session; nothing is left
 * once the sandbox is deleted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as pty from 'node-pty';
import { BUSYBOX_IMAGE, REPO, importBusybox, startContainerd, type PrivateContainerd } from './lib/containerd';
import { guestArtifacts } from './lib/guest';
import { processesMentioning } from './lib/processes';

const RUNTIME = 'io.containerd.hull.v2';
const HULL = path.join(REPO, 'bin', 'hull');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** `hull list --json`'s entries, as read here (cli/list.ts). */
interface Entry {
  namespace: string;
  id: string;
  shim: { pid: number; alive: boolean };
  qemu: { pid: number; alive: boolean } | null;
  accel: string | null;
  vcpus: number | null;
  memoryMiB: number | null;
  containers: string[];
  debugConsole: boolean;
}

describe('hull list / hull exec (bin/hull, a sandbox made by ctr, real VM)', function () {
  this.timeout(600_000);
  let ctd: PrivateContainerd;
  let original: string;

  const hull = (args: string[], input?: string): Promise<Ran> =>
    new Promise((resolve) => {
      const child = execFile(
        process.execPath,
        [HULL, ...args],
        { env: { ...ctd.env, HULL_CONFIG: ctd.hullConfig }, timeout: 120_000, maxBuffer: 4 << 20 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
      child.stdin?.end(input ?? '');
    });

  const list = async (): Promise<Entry[]> => {
    const r = await hull(['list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { sandboxes: Entry[] }).sandboxes;
  };

  /** The configuration the next sandbox is created with (the shim reads it at the sandbox's first Create). */
  const setConsole = (enabled: boolean): void =>
    fs.writeFileSync(
      ctd.hullConfig,
      original
        .replace('boot_timeout = 120', 'boot_timeout = 300')
        .replace('[agent]\n', `[agent]\ndebug_console_enabled = ${enabled}\n`),
    );

  async function runDetached(id: string): Promise<void> {
    const r = await ctd.ctr(['run', '-d', '--runtime', RUNTIME, BUSYBOX_IMAGE, id, 'sleep', '3600']);
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 600; i++) {
      const ls = await ctd.ctr(['task', 'ls']);
      if (new RegExp(`^${id}\\s+\\d+\\s+RUNNING`, 'm').test(ls.stdout)) return;
      await sleep(500);
    }
    assert.fail(`${id} is not RUNNING`);
  }

  /** Deletes sandbox `id` with ctr and checks that nothing of it is left. */
  async function deleteAndCheck(id: string): Promise<void> {
    const dir = path.join(ctd.stateDir, ctd.namespace, id);
    await ctd.ctr(['task', 'kill', '-s', 'KILL', id]);
    for (let i = 0; i < 100; i++) {
      if ((await ctd.ctr(['task', 'delete', id])).code === 0) break;
      await sleep(200);
    }
    await ctd.ctr(['container', 'delete', id]);
    for (let i = 0; i < 150 && (fs.existsSync(dir) || processesMentioning(dir).length > 0); i++) await sleep(100);
    assert.deepEqual(processesMentioning(dir), [], 'no process of the sandbox is left (QEMU, virtiofsd, shim)');
    assert.equal(fs.existsSync(dir), false, `${dir} (and its debug.sock) is removed`);
    assert.equal(
      (await list()).some((s) => s.id === id),
      false,
      'hull list no longer shows it',
    );
  }

  before(async function () {
    guestArtifacts();
    ctd = await startContainerd();
    original = fs.readFileSync(ctd.hullConfig, 'utf8');
    await importBusybox(ctd);
    setConsole(true);
    await runDetached('dbg');
  });

  after(async () => {
    await ctd?.stop();
  });

  it('hull list shows the running sandbox: live shim and QEMU, accel, size, containers, the console', async () => {
    const s = (await list()).find((x) => x.id === 'dbg');
    assert.ok(s, 'dbg is listed');
    assert.equal(s.namespace, ctd.namespace);
    assert.equal(s.shim.alive, true);
    assert.ok(s.qemu?.alive, JSON.stringify(s.qemu));
    assert.match(fs.readFileSync(`/proc/${s.qemu.pid}/cmdline`, 'latin1'), /qemu-system/);
    assert.match(fs.readFileSync(`/proc/${s.shim.pid}/cmdline`, 'latin1'), /containerd-shim-hull-v2/);
    assert.ok(s.accel === 'tcg' || s.accel === 'kvm', String(s.accel));
    assert.ok((s.vcpus ?? 0) >= 1);
    assert.ok((s.memoryMiB ?? 0) >= 128);
    assert.deepEqual(s.containers, ['dbg']);
    assert.equal(s.debugConsole, true);
    const text = await hull(['list']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^SANDBOX\s+NAMESPACE\s+SHIM\s+QEMU/m);
    assert.match(text.stdout, new RegExp(`^dbg\\s+${ctd.namespace}\\s+${s.shim.pid}\\s+${s.qemu.pid}\\s`, 'm'));
  });

  it("hull exec <id> cat /proc/version prints the guest kernel; the exit status is the command's", async () => {
    const r = await hull(['exec', 'dbg', 'cat', '/proc/version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Linux version \S+/);
    assert.notEqual(r.stdout, fs.readFileSync('/proc/version', 'utf8'), "the guest's kernel, not the host's");
    // Outside every container: the guest's own root has the agent, which no container image has.
    const out = await hull(['exec', 'dbg', 'sh', '-c', 'test -d /proc/1 && ls / && echo err >&2; exit 7']);
    assert.equal(out.code, 7, out.stderr);
    assert.match(out.stderr, /^err$/m);
    const input = await hull(['exec', 'dbg', '-T', 'sh', '-c', 'read a; echo "got $a"'], 'typed\n');
    assert.equal(input.code, 0, input.stderr);
    assert.equal(input.stdout, 'got typed\n');
  });

  it('an interactive shell on a pty: typing, resize, ^C, exit status', async () => {
    const term = pty.spawn(process.execPath, [HULL, 'exec', 'dbg'], {
      cols: 80,
      rows: 24,
      env: { ...ctd.env, HULL_CONFIG: ctd.hullConfig, TERM: 'xterm' },
    });
    let out = '';
    term.onData((d) => (out += d));
    const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
    const waitFor = async (re: RegExp, what: string, ms = 60_000): Promise<void> => {
      const until = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > until) assert.fail(`${what}: not seen in ${JSON.stringify(out.slice(-2000))}`);
        await sleep(100);
      }
    };
    try {
      // busybox's line editing asks for the cursor's position (ESC [6n) after its prompt; nothing answers here.
      await waitFor(new RegExp(`# (${String.fromCharCode(27)}\\[6n)?$`), 'the prompt');
      term.write('echo $((6*7))\r');
      await waitFor(/^42\r*$/m, '42');
      term.write('stty size\r');
      await waitFor(/^24 80\r*$/m, 'the first size');
      term.resize(100, 30);
      await sleep(500);
      term.write('stty size\r');
      await waitFor(/^30 100\r*$/m, 'the new size');
      term.write('sleep 60; echo slept $?\r');
      await sleep(1500);
      term.write('\x03');
      term.write('echo after $?\r');
      await waitFor(/^after 130\r*$/m, '^C ended the sleep (SIGINT: 130), and the shell survived');
      assert.doesNotMatch(out, /^slept/m);
      term.write('exit 5\r');
      assert.equal(await exited, 5, out);
    } finally {
      term.kill('SIGKILL');
    }
  });

  it('the shim logs every session (who, command, start, end, exit status)', () => {
    const log = fs.readFileSync(ctd.log, 'utf8');
    assert.match(log, /debug console: session starts/);
    const ends = log.split('\n').filter((l) => l.includes('debug console: session ends'));
    assert.ok(
      ends.some((l) => l.includes('/proc/version') && /exitStatus\W+0/.test(l)),
      ends.join('\n'),
    );
    assert.ok(
      ends.some((l) => /exitStatus\W+5/.test(l)),
      ends.join('\n'),
    );
    assert.ok(
      ends.every((l) => l.includes('uid')),
      'who',
    );
    assert.ok(!log.includes('6*7'), 'not what was typed');
  });

  it('a sandbox created with the console disabled is refused with a clear message', async () => {
    setConsole(false);
    try {
      await runDetached('nodbg');
    } finally {
      setConsole(true);
    }
    const s = (await list()).find((x) => x.id === 'nodbg');
    assert.equal(s?.debugConsole, false);
    assert.equal(fs.existsSync(path.join(ctd.stateDir, ctd.namespace, 'nodbg', 'debug.sock')), false);
    const r = await hull(['exec', 'nodbg', 'cat', '/proc/version']);
    assert.equal(r.code, 125);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /debug console is disabled for sandbox \S+\/nodbg.*debug_console_enabled = true/);
    const none = await hull(['exec', 'nosuch', 'true']);
    assert.equal(none.code, 125);
    assert.match(none.stderr, /no sandbox nosuch/);
    await deleteAndCheck('nodbg');
  });

  it('nothing is left after the sandbox is deleted', async () => {
    await deleteAndCheck('dbg');
  });
});
