/**
 * The newc writer: entries round-trip through our reader, and busybox cpio (an independent implementation) lists
 * and extracts them with the right types, modes, symlink targets and contents.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NewcWriter, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../cpio';
import { readNewc } from './lib/newc-reader';

const hasBusybox = spawnSync('busybox', ['cpio', '--help'], { encoding: 'utf8' }).error === undefined;

function sample(): Buffer {
  return new NewcWriter({ mtime: 1700000000 })
    .directory('bin')
    .file('bin/busybox', Buffer.from('\x7fELF fake'), 0o755)
    .symlink('bin/sh', 'busybox')
    .file('lib/modules/virtio.ko', Buffer.alloc(1001, 7)) // parents created automatically
    .charDevice('dev/console', 5, 1)
    .directory('tmp', 0o1777)
    .file('init', '#!/bin/sh\necho hi\n', 0o755)
    .file('empty', Buffer.alloc(0))
    .finish();
}

describe('guest cpio (newc) writer', () => {
  it('round-trips entries with types, modes, symlinks, devices and data', () => {
    const entries = readNewc(sample());
    const byName = new Map(entries.map((e) => [e.name, e]));
    assert.deepEqual(
      entries.map((e) => e.name),
      [
        'bin',
        'bin/busybox',
        'bin/sh',
        'lib',
        'lib/modules',
        'lib/modules/virtio.ko',
        'dev',
        'dev/console',
        'tmp',
        'init',
        'empty',
      ],
    );
    assert.equal(byName.get('bin')!.mode, S_IFDIR | 0o755);
    assert.equal(byName.get('bin')!.nlink, 2);
    assert.equal(byName.get('lib/modules')!.mode & S_IFMT, S_IFDIR);
    assert.equal(byName.get('tmp')!.mode, S_IFDIR | 0o1777);
    assert.equal(byName.get('bin/busybox')!.mode, S_IFREG | 0o755);
    assert.equal(byName.get('bin/busybox')!.data.toString(), '\x7fELF fake');
    assert.equal(byName.get('bin/sh')!.mode, S_IFLNK | 0o777);
    assert.equal(byName.get('bin/sh')!.data.toString(), 'busybox');
    assert.equal(byName.get('lib/modules/virtio.ko')!.data.length, 1001);
    assert.equal(byName.get('dev/console')!.mode, S_IFCHR | 0o600);
    assert.deepEqual([byName.get('dev/console')!.rdevMajor, byName.get('dev/console')!.rdevMinor], [5, 1]);
    assert.equal(byName.get('empty')!.data.length, 0);
    for (const e of entries) {
      assert.equal(e.uid, 0);
      assert.equal(e.gid, 0);
      assert.equal(e.mtime, 1700000000);
    }
    assert.equal(new Set(entries.map((e) => e.ino)).size, entries.length, 'every entry has its own inode number');
  });

  it('aligns headers and data to 4 bytes, ends with the trailer and pads to 512', () => {
    const archive = sample();
    assert.equal(archive.length % 512, 0);
    let offset = 0;
    let names = 0;
    // Walk the headers by hand: each starts on a 4-byte boundary with the magic.
    while (offset < archive.length) {
      assert.equal(offset % 4, 0);
      assert.equal(archive.toString('ascii', offset, offset + 6), '070701');
      const nameSize = parseInt(archive.toString('ascii', offset + 94, offset + 102), 16);
      const fileSize = parseInt(archive.toString('ascii', offset + 54, offset + 62), 16);
      const name = archive.toString('ascii', offset + 110, offset + 110 + nameSize - 1);
      names++;
      if (name === 'TRAILER!!!') {
        const end = offset + 110 + nameSize;
        assert.ok(
          archive.subarray(end).every((b) => b === 0),
          'only zero padding after the trailer',
        );
        break;
      }
      const dataStart = Math.ceil((offset + 110 + nameSize) / 4) * 4;
      offset = Math.ceil((dataStart + fileSize) / 4) * 4;
    }
    assert.equal(names, readNewc(archive).length + 1);
  });

  it('is deterministic', () => {
    assert.deepEqual(sample(), sample());
  });

  it('rejects bad names, duplicates, and use after finish', () => {
    const w = new NewcWriter();
    for (const bad of ['', '/abs', 'a/../b', 'a//b', 'trailing/', './x'])
      assert.throws(() => w.file(bad, ''), /bad entry name/);
    w.file('x', 'one');
    assert.throws(() => w.file('x', 'two'), /duplicate entry 'x'/);
    assert.throws(() => w.file('x/y', ''), /not a directory/);
    w.directory('d');
    w.directory('d'); // the same directory twice is fine
    w.finish();
    assert.throws(() => w.file('z', ''), /already finished/);
  });

  it('reader rejects a truncated archive and one without a trailer', () => {
    const archive = sample();
    assert.throws(() => readNewc(archive.subarray(0, 50)), /truncated/);
    const noTrailer = new NewcWriter().file('a', 'x').finish();
    const cut = noTrailer.subarray(0, noTrailer.indexOf('TRAILER!!!') - 110);
    assert.throws(() => readNewc(cut), /truncated header/);
  });

  it('is listed by busybox cpio -tv with the same types and symlink targets', function () {
    if (!hasBusybox) this.skip();
    const r = spawnSync('busybox', ['cpio', '-t', '-v'], { input: sample(), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const line = (name: string): string =>
      lines.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} -> `)) ??
      assert.fail(`no ${name} in:\n${r.stdout}`);
    assert.match(line('bin'), /^drwxr-xr-x /);
    assert.match(line('bin/busybox'), /^-rwxr-xr-x /);
    assert.match(line('bin/sh'), /^lrwxrwxrwx .* bin\/sh -> busybox$/);
    assert.match(line('dev/console'), /^crw------- /);
    assert.match(line('tmp'), /^drwxrwxrwt /);
    assert.equal(lines.length, 11);
  });

  it('is extracted by busybox cpio -i with the right contents and modes', function () {
    if (!hasBusybox) this.skip();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cpio-'));
    try {
      // Without the device node: creating it needs root.
      const archive = new NewcWriter()
        .file('bin/busybox', 'binary', 0o755)
        .symlink('bin/sh', 'busybox')
        .file('etc/hosts', 'x\n', 0o600)
        .finish();
      const r = spawnSync('busybox', ['cpio', '-i', '-d'], { input: archive, cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(fs.readFileSync(path.join(dir, 'bin/busybox'), 'utf8'), 'binary');
      assert.equal(fs.statSync(path.join(dir, 'bin/busybox')).mode & 0o777, 0o755);
      assert.equal(fs.readlinkSync(path.join(dir, 'bin/sh')), 'busybox');
      assert.equal(fs.statSync(path.join(dir, 'etc/hosts')).mode & 0o777, 0o600);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
