/**
 * A stand-in for qemu-system-x86_64 for fast lifecycle tests: it reads the argv our builder makes, serves QMP on
 * the -qmp socket, writes its console to stdout (as `-chardev stdio,id=console` asks), and misbehaves on request
 * through `fake.mode=...` words in -append:
 *   exit-early        print an error to stderr and a line to the console, exit 1 before QMP
 *   no-qmp            never open QMP (a hung boot)
 *   stubborn          ignore QMP quit and SIGTERM (only SIGKILL ends it)
 *   cid-busy=<cid>    fail like QEMU when vhost-vsock's guest CID is taken
 *   crash-after=<ms>  exit with code 3 that long after QMP is up
 *   agent-log=<N>     on a connection to the agent's log port (-chardev socket,id=agentlog), write an info and an
 *                     error record, a line that is not JSON, N info records, then `fake agent log done`
 *   flood=<MiB>       once QMP is up, write that many MiB of console lines, then a 1 MiB line, then `fake: flood done`
 *   dimm-fail         device_add of a pc-dimm fails (as when QEMU runs out of slots or address space)
 * It answers the hot-plug commands (query-hotpluggable-cpus, device_add of a CPU or pc-dimm, object-add/-del,
 * query-cpus-fast, query-memory-size-summary, query-memory-devices: device memory from 4 GiB, a DIMM without addr
 * right after the last device on 2 MiB as QEMU does, one with addr checked for overlap and room) from `-smp N,maxcpus=M` and `-m N,slots=S,maxmem=X` (a pmem root image's
 * memory-backend-file counts as plugged memory, as in QEMU), and appends
 * every QMP command it receives, as a JSON line, to <qmp socket>.log.
 */
import fs from 'node:fs';
import path from 'node:path';

const SCRIPT = String.raw`
'use strict';
const fs = require('fs');
const net = require('net');
const argv = process.argv.slice(2);
const opt = (name) => { const i = argv.indexOf(name); return i < 0 ? undefined : argv[i + 1]; };
const all = (name) => argv.flatMap((w, i) => (w === name ? [argv[i + 1]] : []));
const append = opt('-append') || '';
const mode = Object.fromEntries(append.split(' ').filter((w) => w.startsWith('fake.mode=')).map((w) => {
  const [k, v] = w.slice('fake.mode='.length).split('=');
  return [k, v === undefined ? true : v];
}));
const consoleOnStdout = all('-chardev').some((c) => c.startsWith('stdio,id=console'));
const say = (line) => { if (consoleOnStdout) process.stdout.write(line + '\n'); };
say('fake qemu booting ' + (opt('-name') || ''));
const vsock = all('-device').find((d) => d.startsWith('vhost-vsock-pci,'));
if (vsock && mode['cid-busy'] !== undefined && vsock.endsWith('guest-cid=' + mode['cid-busy'])) {
  process.stderr.write('qemu-system-x86_64: -device ' + vsock + ': vhost-vsock: unable to set guest cid: Address already in use\n');
  process.exit(1);
}
if (mode['exit-early']) {
  say('fake: Kernel panic - not syncing: nothing to do');
  process.stderr.write('qemu-system-x86_64: fake failure for the test\n');
  process.exit(1);
}
if (mode['stubborn']) process.on('SIGTERM', () => say('fake: ignoring SIGTERM'));
const keepAlive = setInterval(() => undefined, 1000);
if (mode['no-qmp']) return;
const agentLogDev = all('-chardev').find((c) => c.startsWith('socket,id=agentlog,'));
if (agentLogDev) {
  const logPath = agentLogDev.split(',').find((o) => o.startsWith('path=')).slice(5);
  net.createServer((sock) => {
    sock.on('error', () => undefined);
    const n = Number(mode['agent-log'] || 0);
    if (!mode['agent-log']) return;
    const rec = (level, msg, fields) => sock.write(JSON.stringify({ level, msg, ...(fields ? { fields } : {}) }) + '\n');
    rec('info', 'fake agent ready', { transport: 'serial' });
    rec('error', 'fake agent failure', { error: 'boom' });
    sock.write('hull-agent error forged\n');
    for (let i = 0; i < n; i++) rec('info', 'fake flood ' + i);
    rec('info', 'fake agent log done');
  }).listen(logPath);
}
const qmpPath = opt('-qmp').replace(/^unix:/, '').split(',')[0];
let status = 'running';
const [smpN, ...smpOpts] = (opt('-smp') || '1').split(',');
const maxCpus = Number((smpOpts.find((o) => o.startsWith('maxcpus=')) || 'maxcpus=' + smpN).slice(8));
const [memSize, ...memOpts] = (opt('-m') || '128M').split(',');
const MiB = 1024 * 1024;
const baseMem = parseInt(memSize, 10) * MiB;
const maxMem = parseInt((memOpts.find((o) => o.startsWith('maxmem=')) || 'maxmem=' + memSize).slice(7), 10) * MiB;
const cpus = Array.from({ length: maxCpus }, (_, i) => ({ plugged: i < Number(smpN), props: { 'core-id': i, 'thread-id': 0, 'node-id': 0, 'socket-id': 0 } }));
const objects = new Map();
const dimms = [];
// Device memory as QEMU 7.2's q35 lays it out for guests below 2 GiB: from 4 GiB, maxmem - RAM plus 1 GiB per slot.
const DEVICE_BASE = 4 * 1024 * MiB;
const slotCount = Number((memOpts.find((o) => o.startsWith('slots=')) || 'slots=0').slice(6));
const deviceEnd = DEVICE_BASE + (maxMem - baseMem) + slotCount * 1024 * MiB;
// A pmem root image (nvdimm or virtio-pmem on a memory-backend-file) is plugged memory to QEMU, as on a real one,
// at the start of device memory.
for (const o of all('-object').filter((o) => o.startsWith('memory-backend-file,')))
  dimms.push({ id: 'rootimg', addr: DEVICE_BASE, size: Number(o.split(',').find((w) => w.startsWith('size=')).slice(5)) });
// Where QEMU puts a DIMM without addr: after the last device, on its backend's page size (2 MiB for a memfd).
const nextFree = () => dimms.reduce((end, d) => Math.max(end, Math.ceil((d.addr + d.size) / (2 * MiB)) * 2 * MiB), DEVICE_BASE);
const hotplug = (cmd) => {
  const a = cmd.arguments || {};
  switch (cmd.execute) {
    case 'query-hotpluggable-cpus':
      return { return: cpus.map((c, i) => ({ props: c.props, 'vcpus-count': 1, type: 'max-x86_64-cpu', ...(c.plugged ? { 'qom-path': '/machine/cpu' + i } : {}) })).reverse() };
    case 'query-cpus-fast':
      return { return: cpus.flatMap((c, i) => (c.plugged ? [{ 'cpu-index': i, props: c.props, 'qom-path': '/machine/cpu' + i, target: 'x86_64' }] : [])) };
    case 'query-memory-size-summary':
      return { return: { 'base-memory': baseMem, 'plugged-memory': dimms.reduce((n, d) => n + d.size, 0) } };
    case 'query-memory-devices':
      return { return: dimms.map((d) => ({ type: d.id === 'rootimg' ? 'nvdimm' : 'dimm', data: { id: d.id, addr: d.addr, size: d.size, memdev: '/objects/' + d.id, slot: 0, node: 0, hotplugged: d.id !== 'rootimg', hotpluggable: true } })) };
    case 'object-add':
      if (objects.has(a.id)) return { error: { class: 'GenericError', desc: 'attempt to add duplicate property ' + a.id } };
      objects.set(a.id, a);
      return { return: {} };
    case 'object-del':
      objects.delete(a.id);
      return { return: {} };
    case 'device_add':
      if (a.driver === 'pc-dimm') {
        const mem = objects.get(a.memdev);
        if (!mem || mode['dimm-fail']) return { error: { class: 'GenericError', desc: 'fake: cannot plug ' + a.id } };
        if (baseMem + dimms.reduce((n, d) => n + d.size, 0) + mem.size > maxMem) return { error: { class: 'GenericError', desc: 'not enough space' } };
        const addr = a.addr === undefined ? nextFree() : a.addr;
        if (addr % (2 * MiB) !== 0 || addr < DEVICE_BASE || addr + mem.size > deviceEnd || dimms.some((d) => addr < d.addr + d.size && d.addr < addr + mem.size))
          return { error: { class: 'GenericError', desc: 'fake: bad DIMM address ' + addr } };
        dimms.push({ id: a.id, addr, size: mem.size });
        return { return: {} };
      }
      if (a.driver === 'max-x86_64-cpu') {
        const c = cpus.find((c) => !c.plugged && c.props['core-id'] === a['core-id'] && c.props['socket-id'] === a['socket-id']);
        if (!c) return { error: { class: 'GenericError', desc: 'fake: no such free CPU slot' } };
        c.plugged = true;
        return { return: {} };
      }
      return { error: { class: 'GenericError', desc: 'fake: unknown driver ' + a.driver } };
  }
  return undefined;
};
const server = net.createServer((sock) => {
  const send = (o) => sock.write(JSON.stringify(o) + '\r\n');
  send({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: [] } });
  let buf = '';
  sock.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const cmd = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      const id = cmd.id;
      fs.appendFileSync(qmpPath + '.log', JSON.stringify({ execute: cmd.execute, arguments: cmd.arguments }) + '\n');
      const hp = hotplug(cmd);
      if (hp) { send({ ...hp, id }); continue; }
      switch (cmd.execute) {
        case 'qmp_capabilities': send({ return: {}, id }); break;
        case 'query-status': send({ return: { status, running: status === 'running', singlestep: false }, id }); break;
        case 'stop': status = 'paused'; send({ return: {}, id }); send({ event: 'STOP', data: {} }); break;
        case 'cont': status = 'running'; send({ return: {}, id }); send({ event: 'RESUME', data: {} }); break;
        case 'quit':
          send({ return: {}, id });
          if (!mode['stubborn']) { send({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' } }); setImmediate(() => process.exit(0)); }
          break;
        default: send({ error: { class: 'CommandNotFound', desc: 'The command ' + cmd.execute + ' has not been found' }, id });
      }
    }
  });
  sock.on('error', () => undefined);
});
server.listen(qmpPath);
if (mode['flood'] !== undefined) {
  const line = 'fake flood '.padEnd(1023, 'x') + '\n';
  const lines = Number(mode['flood']) * 1024;
  let i = 0;
  const more = () => {
    while (i < lines) {
      i++;
      if (!process.stdout.write(line)) return process.stdout.once('drain', more);
    }
    process.stdout.write('y'.repeat(1 << 20) + '\n');
    say('fake: flood done');
  };
  more();
}
if (mode['crash-after'] !== undefined) setTimeout(() => { say('fake: crashing'); process.exit(3); }, Number(mode['crash-after']));
void keepAlive;
`;

/** Write the fake as an executable in `dir` and return its path. */
export function writeFakeQemu(dir: string): string {
  const file = path.join(dir, 'fake-qemu');
  // A function body so that a bare `return` ends the main script early (no-qmp).
  fs.writeFileSync(file, `#!${process.execPath}\n(function () {${SCRIPT}\n})();\n`, { mode: 0o755 });
  return file;
}
