/**
 * `hull template make|list|remove` over a pretend state_dir: templates read as untrusted (symlinks never followed,
 * an oversized or mismatched fingerprint.json named), current vs stale by the configuration's key and fingerprint,
 * removal of stale ones, all or one key and never while a build holds the key's lock, and make's refusals (templates
 * off, state_dir not on tmpfs) with exit status 1.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, type HullConfig } from '../../core/config';
import { processStartTime } from '../../hypervisor/process';
import { listSandboxes } from '../list';
import { run } from '../main';
import { MAX_FINGERPRINT_BYTES, formatTemplates, listTemplates, removeTemplates, wantedTemplate } from '../template';

const HOST = { cpus: 2, memoryMiB: 8192 };

describe('cli/template (hull template)', () => {
  let tmp: string;
  let stateDir: string;
  let root: string;
  let file: string;
  let config: HullConfig;
  let wanted: { key: string; fingerprint: string };
  const opts = { host: HOST, onTmpfs: () => true };

  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-tmpl-'));
    stateDir = path.join(tmp, 'state');
    root = path.join(stateDir, '_templates');
    fs.mkdirSync(root, { recursive: true });
    file = path.join(tmp, 'configuration.toml');
    const text = `[runtime]\nstate_dir = "${stateDir}"\n[hypervisor]\nenable_template = true\n`;
    fs.writeFileSync(file, text);
    config = parseConfig(text, file, path.join(tmp, 'bin'));
    wanted = wantedTemplate(config, opts);
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A template folder as core/template.ts leaves it. */
  function template(key: string, fingerprint: string, o: { madeAt?: string; fingerprintText?: string } = {}): string {
    const dir = path.join(root, `${key}-${fingerprint}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    const mem = path.join(dir, 'memory');
    fs.writeFileSync(mem, Buffer.alloc(8192, 1));
    fs.truncateSync(mem, 64 * 1024 * 1024); // sparse: 64 MiB, a few KiB on disk
    fs.writeFileSync(path.join(dir, 'state'), Buffer.alloc(1000, 2));
    fs.writeFileSync(
      path.join(dir, 'fingerprint.json'),
      o.fingerprintText ?? JSON.stringify({ fingerprint, key, madeAt: o.madeAt ?? '2026-12-05T08:00:00.000Z' }),
    );
    return dir;
  }

  const STALE_FP = 'aaaaaaaaaaaaaaaa';
  const OTHER_KEY = 'bbbbbbbbbbbbbbbb';

  async function hull(argv: string[]): Promise<[number, string]> {
    let text = '';
    const code = await run(argv, {
      self: path.join(tmp, 'bin', 'hull'),
      env: {},
      out: (t) => (text += `${t}\n`),
      template: opts,
    });
    return [code, text];
  }

  it('list: each template with its key, fingerprint, RAM file (size and on disk), made when, current or stale', () => {
    template(wanted.key, wanted.fingerprint);
    template(wanted.key, STALE_FP, { madeAt: '2026-12-04T10:00:00Z' });
    template(OTHER_KEY, STALE_FP);
    const list = listTemplates(config, opts);
    assert.deepEqual(list.problems, []);
    assert.deepEqual(
      list.templates.map((t) => [t.key, t.fingerprint, t.current, t.problem, t.madeAt, t.stateBytes]),
      [
        [wanted.key, wanted.fingerprint, true, null, '2026-12-05T08:00:00.000Z', 1000],
        [wanted.key, STALE_FP, false, null, '2026-12-04T10:00:00.000Z', 1000],
        [OTHER_KEY, STALE_FP, false, null, '2026-12-05T08:00:00.000Z', 1000],
      ].sort((a, b) => String(a[0]).localeCompare(String(b[0])) || String(a[1]).localeCompare(String(b[1]))),
    );
    const t = list.templates.find((x) => x.current)!;
    assert.equal(t.memory!.sizeBytes, 64 * 1024 * 1024);
    assert.ok(t.memory!.allocatedBytes < 1024 * 1024, `sparse: ${t.memory!.allocatedBytes} bytes on disk`);
    const text = formatTemplates(list);
    assert.match(text, new RegExp(`^${wanted.key}  ${wanted.fingerprint}  0 MiB / 64 MiB .* yes$`, 'm'));
    assert.match(text, new RegExp(`^${wanted.key}  ${STALE_FP} .* no \\(stale\\)$`, 'm'));
  });

  it('list: symlinks are never followed; an oversized, symlinked or mismatched fingerprint.json is named', () => {
    const outside = path.join(tmp, 'outside');
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'fingerprint.json'), JSON.stringify(wanted));
    fs.symlinkSync(outside, path.join(root, `${OTHER_KEY}-${STALE_FP}`));
    const linked = template(wanted.key, wanted.fingerprint);
    fs.rmSync(path.join(linked, 'fingerprint.json'));
    fs.symlinkSync(path.join(outside, 'fingerprint.json'), path.join(linked, 'fingerprint.json'));
    template(wanted.key, STALE_FP, { fingerprintText: ' '.repeat(MAX_FINGERPRINT_BYTES + 1) });
    template(OTHER_KEY, 'cccccccccccccccc', { fingerprintText: JSON.stringify({ key: OTHER_KEY, fingerprint: 'x' }) });
    fs.writeFileSync(path.join(root, 'junk'), '');
    const list = listTemplates(config, opts);
    const by = (fp: string): string | null | undefined => list.templates.find((t) => t.fingerprint === fp)?.problem;
    assert.match(by(wanted.fingerprint)!, /fingerprint\.json: .*ELOOP|symbolic link/);
    assert.equal(
      list.templates.find((t) => t.fingerprint === wanted.fingerprint)!.current,
      false,
      'broken: not current',
    );
    assert.match(by(STALE_FP)!, /more than 65536/);
    assert.match(by('cccccccccccccccc')!, /names another template/);
    assert.deepEqual(list.problems, [
      `${path.join(root, `${OTHER_KEY}-${STALE_FP}`)}: a symlink, not followed`,
      `${path.join(root, 'junk')}: not a template`,
    ]);

    // state_dir's _templates itself a symlink: not followed, nothing listed or removed through it.
    fs.rmSync(root, { recursive: true });
    fs.symlinkSync(outside, root);
    const l2 = listTemplates(config, opts);
    assert.deepEqual(l2.templates, []);
    assert.deepEqual(l2.problems, [`${root}: a symlink, not followed`]);
    assert.throws(() => removeTemplates(config, { key: OTHER_KEY }, opts), /not a folder/);
    assert.ok(fs.existsSync(path.join(outside, 'fingerprint.json')));
  });

  it('hull list does not take the templates folder for a namespace', () => {
    template(wanted.key, wanted.fingerprint);
    assert.deepEqual(listSandboxes(stateDir).problems, []);
  });

  it('remove: the stale ones by default (and a build leftover), all with --all, one key; exit statuses', async () => {
    template(wanted.key, wanted.fingerprint);
    template(wanted.key, STALE_FP);
    template(OTHER_KEY, STALE_FP);
    fs.mkdirSync(path.join(root, `${OTHER_KEY}-cccccccccccccccc.new`));
    let [code, text] = await hull(['template', 'remove', '--config', file]);
    assert.equal(code, 0, text);
    assert.deepEqual(fs.readdirSync(root), [`${wanted.key}-${wanted.fingerprint}`]);
    assert.match(text, new RegExp(`removed ${wanted.key}-${STALE_FP}`));
    assert.match(text, new RegExp(`removed ${OTHER_KEY}-cccccccccccccccc\\.new`));

    [code, text] = await hull(['template', 'remove', OTHER_KEY, '--config', file]);
    assert.equal(code, 1, 'no template of that key');
    assert.match(text, /no template of key bbbbbbbbbbbbbbbb/);
    [code, text] = await hull(['template', 'remove', 'nothex', '--config', file]);
    assert.equal(code, 1);
    assert.match(text, /is not a template key/);
    [code] = await hull(['template', 'remove', '--all', OTHER_KEY, '--config', file]);
    assert.equal(code, 2, 'usage error');

    [code, text] = await hull(['template', 'remove', wanted.key, '--config', file]);
    assert.equal(code, 0, text);
    assert.deepEqual(fs.readdirSync(root), []);

    template(wanted.key, wanted.fingerprint);
    template(OTHER_KEY, STALE_FP);
    [code, text] = await hull(['template', 'remove', '--all', '--config', file]);
    assert.equal(code, 0, text);
    assert.deepEqual(fs.readdirSync(root), []);
  });

  it('remove: never a template whose key a running build holds the lock of; a dead builder’s lock is taken over', async () => {
    template(wanted.key, STALE_FP);
    template(OTHER_KEY, STALE_FP);
    const lock = path.join(root, `${wanted.key}.lock`);
    fs.mkdirSync(lock);
    fs.writeFileSync(path.join(lock, 'owner'), `${process.pid} ${processStartTime(process.pid)}`);
    const list = listTemplates(config, opts);
    assert.deepEqual(list.builds, [{ key: wanted.key, pid: process.pid, alive: true }]);
    assert.match(formatTemplates(list), new RegExp(`building: ${wanted.key} \\(pid ${process.pid}\\)`));
    let [code, text] = await hull(['template', 'remove', '--all', '--config', file]);
    assert.equal(code, 1, text);
    assert.match(text, new RegExp(`${wanted.key} is being built now \\(its lock is held\\): not removed`));
    assert.deepEqual(
      fs.readdirSync(root).sort(),
      [`${wanted.key}-${STALE_FP}`, `${wanted.key}.lock`],
      'the other key went',
    );

    // The builder is gone (a pid with another start time): its lock is taken over and the template removed.
    fs.writeFileSync(path.join(lock, 'owner'), `${process.pid} 1`);
    assert.deepEqual(listTemplates(config, opts).builds, [{ key: wanted.key, pid: process.pid, alive: false }]);
    [code, text] = await hull(['template', 'remove', '--all', '--config', file]);
    assert.equal(code, 0, text);
    assert.deepEqual(fs.readdirSync(root), []);
  });

  it('make refuses, exit 1, when templates are off or state_dir is not on tmpfs; nothing is made', async () => {
    fs.rmSync(root, { recursive: true });
    const off = path.join(tmp, 'off.toml');
    fs.writeFileSync(off, `[runtime]\nstate_dir = "${stateDir}"\n`);
    let [code, text] = await hull(['template', 'make', '--config', off]);
    assert.equal(code, 1);
    assert.match(text, /VM templates are off in .*off\.toml: set \[hypervisor\] enable_template = true/);

    let asked = '';
    let out = '';
    code = await run(['template', 'make', '--config', file], {
      self: path.join(tmp, 'bin', 'hull'),
      env: {},
      out: (t) => (out += t),
      template: {
        host: HOST,
        onTmpfs: (d) => {
          asked = d;
          return false;
        },
        hypervisor: () => assert.fail('no VM may be started'),
      },
    });
    assert.equal(code, 1);
    assert.match(out, new RegExp(`state_dir ${stateDir} is not on tmpfs`));
    assert.equal(asked, stateDir, 'the nearest folder that exists is asked');
    assert.deepEqual(fs.readdirSync(stateDir), [], 'nothing made');

    [code, text] = await hull(['template', 'make', '--json', '--config', file]);
    assert.equal(code, 2, text);
    [code, text] = await hull(['template', 'frobnicate']);
    assert.equal(code, 2);
    assert.match(text, /template needs make, list or remove, not "frobnicate"/);
  });

  it('make: an up-to-date template is found, not made again (directory, key, fingerprint, time)', async () => {
    const dir = template(wanted.key, wanted.fingerprint);
    const [code, text] = await hull(['template', 'make', '--config', file]);
    assert.equal(code, 0, text);
    assert.match(text, new RegExp(`^up to date: ${dir}$`, 'm'));
    assert.match(text, new RegExp(`^key: +${wanted.key}$`, 'm'));
    assert.match(text, new RegExp(`^fingerprint: +${wanted.fingerprint}$`, 'm'));
    assert.match(text, /^took: +\d+\.\d s$/m);
  });
});
