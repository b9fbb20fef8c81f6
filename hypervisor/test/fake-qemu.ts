/**
 * A stand-in for qemu-system-x86_64 for fast lifecycle tests: it reads the argv our builder makes, serves QMP on
 * the -qmp socket, writes its console to stdout (as `-chardev stdio,id=console` asks), and misbehaves on request
 * through `fake.mode=...` words in -append:
 *   exit-early        print an error to stderr and a line to the console, exit 1 before QMP
 *   no-qmp            never open QMP (a hung boot)
 *   stubborn          ignore QMP quit and SIGTERM (only SIGKILL ends it)
 *   cid-busy=<cid>    fail like QEMU when vhost-vsock's guest CID is taken
 *   crash-after=<ms>  exit with code 3 that long after QMP is up
 *   flood=<MiB>       once QMP is up, write that many MiB of console lines, then a 1 MiB line, then `fake: flood done`
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
const qmpPath = opt('-qmp').replace(/^unix:/, '').split(',')[0];
let status = 'running';
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
