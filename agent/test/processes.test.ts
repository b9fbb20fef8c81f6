import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, StatusError } from 'ttrpc-ts';
import { cgroupPids, formatTable, listFormat, parseStat, processList, readProcess } from '../processes';

describe('agent process lists (ListProcesses)', () => {
  it("accepts Kata's formats and no ps arguments but the default", () => {
    assert.equal(listFormat('json', []), 'json');
    assert.equal(listFormat('table', ['-ef']), 'table');
    for (const [format, args] of [
      ['', []],
      ['xml', []],
      ['table', ['-o', 'pid']],
      ['json', ['-ef', 'x']],
    ] as const) {
      assert.throws(
        () => listFormat(format, [...args]),
        (e: unknown) => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT,
      );
    }
  });

  it('collects the pids of a cgroup and of the cgroups below it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-cgroup-'));
    try {
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), '12\n7\n');
      fs.mkdirSync(path.join(dir, 'child'));
      fs.writeFileSync(path.join(dir, 'child', 'cgroup.procs'), '30\n7\n');
      assert.deepEqual(cgroupPids(dir), [7, 12, 30]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses /proc/<pid>/stat, whose command may hold spaces and parentheses', () => {
    const line = '42 (a (b) c) S 7 42 42 0 -1 4194304 99 0 0 0 150 50 0 0 20 0 1 0 852455 3133440 418';
    assert.deepEqual(parseStat(line), { comm: 'a (b) c', state: 'S', ppid: 7, cpuTicks: 200 });
  });

  it('formats a ps-like table and a JSON pid list', () => {
    const table = formatTable([{ uid: 0, pid: 7, ppid: 1, state: 'S', cpuTicks: 366_100, cmd: 'sleep 100' }]);
    assert.equal(table, 'UID  PID  PPID  STAT      TIME  CMD\n  0    7     1     S  01:01:01  sleep 100\n');
    assert.equal(processList([3, 4], 'json').toString(), '[3,4]');
    const own = readProcess(process.pid);
    assert.ok(own && own.pid === process.pid && own.cmd.includes('node'), JSON.stringify(own));
    assert.match(
      processList([process.pid, 2 ** 22 + 1], 'table').toString(),
      new RegExp(`^UID +PID.*\\n +\\d+ +${process.pid} `),
    );
  });
});
