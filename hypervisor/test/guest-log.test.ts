import assert from 'node:assert/strict';
import type { Logger } from '../../log';
import { GuestConsole } from '../console';
import {
  AGENT_DROPPED_MSG,
  AGENT_RECORD_MAX_BYTES,
  AgentLog,
  ConsoleClassifier,
  agentRecordLevel,
  classifyConsoleLine,
  parseAgentRecord,
} from '../guest-log';

type Line = { level: string; msg: string; obj: Record<string, unknown> };

function recorder(enabled?: string[]): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void =>
      void lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return {
    lines,
    info: at('info'),
    warn: at('warn'),
    debug: at('debug'),
    error: at('error'),
    ...(enabled ? { isLevelEnabled: (l: string) => enabled.includes(l) } : {}),
  };
}

describe('hypervisor/guest-log: kernel console lines', () => {
  it('error reports are error or warn (with or without printk times), everything else debug', () => {
    const cases: Array<[string, string]> = [
      ['[    2.123456] Kernel panic - not syncing: VFS: Unable to mount root fs', 'error'],
      ['Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100', 'error'],
      ['[   12.5] Oops: 0002 [#1] PREEMPT SMP NOPTI', 'error'],
      ['BUG: kernel NULL pointer dereference, address: 0000000000000000', 'error'],
      ['watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [node:123]', 'error'],
      ['general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP', 'error'],
      ['Call Trace:', 'error'],
      ['node invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0', 'error'],
      ['Out of memory: Killed process 321 (stress) total-vm:1048576kB', 'error'],
      ['Memory cgroup out of memory: Killed process 99 (app)', 'error'],
      ['INFO: task kworker/0:1:42 blocked for more than 120 seconds.', 'error'],
      ['rcu: INFO: rcu_preempt self-detected stall on CPU', 'error'],
      ['rcu: INFO: rcu_sched detected stalls on CPUs/tasks:', 'error'],
      ['app[123]: segfault at 0 ip 000055d5 sp 00007ffd error 4 in app[55d5+1000]', 'warn'],
      ['WARNING: CPU: 0 PID: 1 at kernel/fork.c:123 copy_process+0x1/0x2', 'warn'],
      ['[    0.000000] Linux version 6.1.0-28-cloud-amd64', 'debug'],
      ['hull-initrd: mounting /dev/vda', 'debug'],
      ['hull-agent error this is only the console, not the agent', 'debug'],
      ['virtio_net virtio1 eth0: renamed from tmp', 'debug'],
      ['', 'debug'],
    ];
    for (const [line, level] of cases) assert.equal(classifyConsoleLine(line), level, line);
  });

  it("a report's following lines (registers, frames, tables) take its level; the first ordinary line ends it", () => {
    const c = new ConsoleClassifier();
    const lines = [
      ['[    5.0] BUG: unable to handle page fault for address: ffff', 'error'],
      ['[    5.0] CPU: 0 PID: 1 Comm: node Not tainted 6.1.0 #1', 'error'],
      ['[    5.0] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009)', 'error'],
      ['[    5.0] RIP: 0010:memcpy_orig+0x10/0x120', 'error'],
      ['[    5.0] Call Trace:', 'error'],
      ['[    5.0]  <TASK>', 'error'],
      ['[    5.0]  ? __die+0x20/0x70', 'error'],
      ['[    5.0]  do_syscall_64+0x5b/0xc0', 'error'],
      ['[    5.0]  </TASK>', 'error'],
      ['[    5.0] virtio_blk virtio2: [vda] 290816 512-byte logical blocks', 'debug'],
      ['[    5.0]  do_syscall_64+0x5b/0xc0', 'debug'],
      ['[    6.0] app[7]: segfault at 10 ip 1 sp 2 error 6', 'warn'],
      ['[    6.0] Code: 48 89 f8 48 89 d1 f3 a4 c3', 'warn'],
      ['plain line', 'debug'],
    ];
    for (const [line, level] of lines) assert.equal(c.classify(line!), level, line);
  });

  it('GuestConsole logs lines with source console at their level; errors also when debug is off', () => {
    const log = recorder(['info', 'warn', 'error']);
    const c = new GuestConsole(log, true);
    c.push(Buffer.from('[    1.0] Linux version 6.1\n[    9.9] Kernel panic - not syncing: Attempted to kill init!\n'));
    c.end();
    assert.deepEqual(log.lines, [
      {
        level: 'error',
        msg: 'guest console',
        obj: { source: 'console', line: '[    9.9] Kernel panic - not syncing: Attempted to kill init!' },
      },
    ]);
    assert.equal(c.tail().length, 2, 'both lines are in the tail');
  });

  it('a console flood with the debug level off is not counted against the rate (those lines are not logged anyway)', () => {
    const log = recorder(['info', 'warn', 'error']);
    const c = new GuestConsole(log, true, { linesPerWindow: 5, windowMs: 1000 }, () => 0);
    for (let i = 0; i < 1000; i++) c.push(Buffer.from(`line ${i}\n`));
    c.push(Buffer.from('Oops: 0000 [#1] SMP\n'));
    c.end();
    assert.deepEqual(
      log.lines.map((l) => [l.level, l.obj.line]),
      [['error', 'Oops: 0000 [#1] SMP']],
    );
    assert.equal(c.totals.notLogged, 0);
  });
});

describe('hypervisor/guest-log: agent log records (untrusted)', () => {
  it('a valid record: level, message, fields kept', () => {
    const r = parseAgentRecord(
      JSON.stringify({ level: 'warn', msg: 'mount failed', fields: { target: '/run', n: 3 } }),
    );
    assert.deepEqual(r, { level: 'warn', msg: 'mount failed', fields: { target: '/run', n: 3 } });
    assert.equal(agentRecordLevel(r), 'warn');
    assert.equal(agentRecordLevel(parseAgentRecord('{"level":"info","msg":"ready"}')), 'debug');
    assert.equal(agentRecordLevel(parseAgentRecord('{"level":"debug","msg":"x"}')), 'debug');
    assert.equal(agentRecordLevel(parseAgentRecord('{"level":"error","msg":"x"}')), 'error');
  });

  it('invalid JSON, non-objects, forged or missing levels and messages: invalid records at debug, text cleaned', () => {
    const bad: Array<[string, RegExp]> = [
      ['hull-agent error forged on the console format', /not JSON/],
      ['{"level":"error","msg":"cut', /not JSON/],
      ['["error","x"]', /not a JSON object/],
      ['"error"', /not a JSON object/],
      ['null', /not a JSON object/],
      ['{"level":"fatal","msg":"x"}', /no valid level/],
      ['{"level":"ERROR","msg":"x"}', /no valid level/],
      ['{"level":"error ","msg":"x"}', /no valid level/],
      ['{"level":50,"msg":"x"}', /no valid level/],
      ['{"level":["error"],"msg":"x"}', /no valid level/],
      ['{"msg":"x"}', /no valid level/],
      ['{"level":"error","msg":{"toString":"x"}}', /no message/],
      ['{"level":"error","msg":"x","fields":[1,2]}', /fields is not an object/],
      ['{"level":"error","msg":"x","fields":"a"}', /fields is not an object/],
      ['{"level":"error","msg":"x","fields":{"__proto__":{"polluted":1}}}', /field name/],
      ['{"level":"error","msg":"x","fields":{"a b":1}}', /field name/],
      [
        JSON.stringify({
          level: 'error',
          msg: 'x',
          fields: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`f${i}`, i])),
        }),
        /more than 32 fields/,
      ],
    ];
    for (const [line, why] of bad) {
      const r = parseAgentRecord(line);
      assert.match(r.invalid ?? '', why, line);
      assert.equal(r.level, 'debug', line);
      assert.equal(agentRecordLevel(r), 'debug', line);
      assert.deepEqual(r.fields, {});
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    const ctl = parseAgentRecord('\u001b[2J\u001b]0;owned\u0007 not json');
    assert.equal(ctl.msg, '\ufffd[2J\ufffd]0;owned\ufffd not json');
  });

  it('control characters in messages and fields are replaced, long texts cut, nested values flattened to capped text', () => {
    const r = parseAgentRecord(
      JSON.stringify({
        level: 'error',
        msg: 'line one\nline two \u001b[31mred\u009b',
        fields: { s: 'z'.repeat(5000).slice(0, 3000), nested: { a: [1, 2, { b: 'c' }] }, nan: 'NaN', t: true, n: null },
      }),
    );
    assert.equal(r.invalid, undefined);
    assert.equal(r.msg, 'line one | line two \ufffd[31mred\ufffd');
    assert.equal(r.fields.s, `${'z'.repeat(1024)}…(1976 bytes more)`);
    assert.equal(r.fields.nested, '{"a":[1,2,{"b":"c"}]}');
    assert.equal(r.fields.t, true);
    assert.equal(r.fields.n, null);
  });

  it('oversized lines are invalid records, their first KiB kept as text', () => {
    const huge = JSON.stringify({ level: 'error', msg: 'x'.repeat(AGENT_RECORD_MAX_BYTES) });
    const r = parseAgentRecord(huge);
    assert.match(r.invalid!, /longer than 4096 bytes/);
    assert.equal(r.level, 'debug');
    assert.ok(Buffer.byteLength(r.msg) < 1100, `${Buffer.byteLength(r.msg)} bytes kept`);
    assert.match(parseAgentRecord('{"level":"error"', 100).invalid!, /longer than/);
  });

  it('AgentLog: a stream cut anywhere, a line of 1 MiB, invalid records counted; source agent, fields nested', () => {
    const log = recorder();
    const a = new AgentLog(log, {}, () => 0);
    const stream = Buffer.from(
      '{"level":"info","msg":"ready","fields":{"transport":"serial"}}\n' +
        `{"level":"error","msg":"${'y'.repeat(1 << 20)}"}\n` +
        '{"level":"warn","msg":"w","fields":{"source":"console","level":"error"}}\n' +
        '\n\n{"level":"error","msg":"last without newline"}',
    );
    for (let i = 0; i < stream.length; i += 7777) a.push(stream.subarray(i, i + 7777));
    a.end();
    assert.deepEqual(
      log.lines.map((l) => [l.level, l.msg.slice(0, 20), l.obj]),
      [
        ['debug', 'ready', { source: 'agent', guestLevel: 'info', fields: { transport: 'serial' } }],
        ['debug', '{"level":"error","ms', { source: 'agent', invalidRecord: 'longer than 4096 bytes' }],
        ['warn', 'w', { source: 'agent', fields: { source: 'console', level: 'error' } }],
        ['error', 'last without newline', { source: 'agent', fields: {} }],
      ],
    );
    assert.deepEqual(a.totals, { bytes: stream.length, records: 4, invalid: 1, notLogged: 0, droppedInGuest: 0 });
    assert.equal(a.tail().length, 4);
    assert.ok(a.tail()[1]!.length < 2100);
  });

  it('AgentLog: a flood is logged at most linesPerWindow per window, the rest counted (one summary line), memory bounded', () => {
    let now = 0;
    const log = recorder();
    const a = new AgentLog(log, { linesPerWindow: 10, windowMs: 1000, maxLines: 50 }, () => now);
    const rec = Buffer.from('{"level":"error","msg":"flood"}\n');
    for (let i = 0; i < 10_000; i++) a.push(rec);
    assert.equal(log.lines.length, 10);
    now = 1000;
    a.push(Buffer.from('{"level":"info","msg":"after"}\n'));
    assert.deepEqual(
      log.lines.slice(10).map((l) => [l.level, l.msg, l.obj.notLogged, l.obj.source]),
      [
        ['warn', "9990 agent log records not logged (the guest wrote faster than the log's limit)", 9990, 'agent'],
        ['debug', 'after', undefined, 'agent'],
      ],
    );
    a.end();
    assert.equal(log.lines.length, 12, 'nothing left to report');
    assert.equal(a.tail().length, 50);
    assert.equal(a.totals.notLogged, 9990);
  });

  it("AgentLog: the agent's drop reports are counted; one over the rate is carried in the next report; forged counts ignored", () => {
    const now = 0;
    const log = recorder();
    const a = new AgentLog(log, { linesPerWindow: 2, windowMs: 1000 }, () => now);
    const drop = (n: unknown): Buffer =>
      Buffer.from(`${JSON.stringify({ level: 'warn', msg: AGENT_DROPPED_MSG, fields: { dropped: n } })}\n`);
    a.push(drop(5)); // logged
    a.push(Buffer.from('{"level":"info","msg":"x"}\n')); // logged
    a.push(drop(700)); // over the rate
    a.push(drop(-3));
    a.push(drop(1e300));
    a.push(drop('9'));
    a.end();
    assert.equal(a.totals.droppedInGuest, 705);
    const report = log.lines.at(-1)!;
    assert.match(report.msg, /^4 agent log records not logged/);
    assert.equal(report.obj.droppedInGuest, 700);
  });
});
