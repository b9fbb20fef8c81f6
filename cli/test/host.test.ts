import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RealHost } from '../host';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('cli/host (RealHost)', () => {
  let root: string;
  beforeEach(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-host-'))));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('run: a program past its deadline is killed and reported as timed out', async () => {
    const h = new RealHost(root);
    const before = Date.now();
    const r = await h.run('sleep', ['30'], 300);
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.code, null);
    assert.ok(Date.now() - before < 5000, `took ${Date.now() - before} ms`);
  });

  it('run: exit status and output; a missing program is ENOENT; arguments are not a shell string', async () => {
    const h = new RealHost(root);
    assert.deepEqual({ code: (await h.run('true', [], 5000)).code, timedOut: false }, { code: 0, timedOut: false });
    const missing = await h.run(path.join(root, 'no-such-program'), ['--version'], 5000);
    assert.equal(missing.error, 'ENOENT');
    assert.equal(missing.code, null);
    // `sleep` gets one argument '0; touch x': a shell would have run touch.
    const r = await h.run('sleep', [`0; touch ${path.join(root, 'x')}`], 5000);
    assert.notEqual(r.code, 0);
    assert.equal(fs.existsSync(path.join(root, 'x')), false);
  });

  it('fixed host paths are read below the root', () => {
    fs.mkdirSync(path.join(root, 'sys/module/kvm_pvm'), { recursive: true });
    fs.mkdirSync(path.join(root, 'dev'));
    fs.writeFileSync(path.join(root, 'dev/kvm'), '');
    const h = new RealHost(root);
    assert.equal(h.exists('/sys/module/kvm_pvm'), true);
    assert.equal(h.openReadWrite('/dev/kvm'), true);
    assert.equal(h.openReadWrite('/dev/vhost-vsock'), false);
    assert.equal(h.readFile('/etc/containerd/config.toml'), undefined);
  });

  it('lowerOomScoreAdj: one step down and back where it may; false where the write fails', () => {
    fs.mkdirSync(path.join(root, 'proc/self'), { recursive: true });
    const file = path.join(root, 'proc/self/oom_score_adj');
    fs.writeFileSync(file, '0\n');
    assert.equal(new RealHost(root).lowerOomScoreAdj(), true);
    assert.equal(fs.readFileSync(file, 'utf8'), '0\n');
    fs.rmSync(file);
    fs.mkdirSync(file);
    assert.equal(new RealHost(root).lowerOomScoreAdj(), false);
  });

  it('leaves no child behind after a deadline kill', async () => {
    const h = new RealHost(root);
    const pidFile = path.join(root, 'pid');
    // node prints its pid, then waits: the kill must reach it.
    const r = await h.run(
      process.execPath,
      [
        '-e',
        `require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setTimeout(() => {}, 30000)`,
      ],
      1000,
    );
    assert.equal(r.timedOut, true);
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    assert.equal(alive(pid), false);
  });
});
