/**
 * VM templates, QEMU's side (hypervisor/README.md, "Templates"). A template is one VM booted to agent-ready with
 * guest RAM in a file on tmpfs (memory-backend-file, share=on) and no per-pod device, paused, its device state
 * saved with the `x-ignore-shared` migration capability: the stream then carries the devices and the small ROM
 * blocks, not the shared guest RAM, which is in the file already. A clone starts QEMU with the same layout on its
 * own copy of that file, `-incoming defer`, loads the state (`migrate-incoming fd:3`, the state file inherited as
 * fd 3: nothing to connect to, so it works after -runas), resumes, and hot-plugs its virtio-fs device and its NICs
 * (their backends, virtiofsd's chardev and the taps' netdevs, are on its command line, opened before -runas).
 *
 * Why a copy and not a private copy-on-write mapping of the template's file (share=off): vhost-user hands virtiofsd
 * the file descriptor of each RAM block, and virtiofsd maps it MAP_SHARED. With share=off QEMU's guest would write
 * its virtqueues into private pages virtiofsd never sees (it would read the template's pages): virtio-fs cannot work
 * on a private mapping (the reason Kata's templates exclude virtio-fs). So each clone's RAM is a sparse copy of the
 * template's touched pages (about 150 MiB, copied at memory speed) in its own state folder, shared with its own
 * virtiofsd only.
 */
import fs from 'node:fs';
import net from 'node:net';
import { UnavailableError } from '../../errors';
import { abortError, sleep } from '../util';
import { GUEST_SHARE_TAG } from '../types';
import type { VmNic } from '../types';
import {
  TEMPLATE_FS_CHARDEV,
  TEMPLATE_FS_DEVICE,
  TEMPLATE_FS_PORT,
  templateNicDevice,
  templateNicPort,
} from './cmdline';
import type { QmpClient } from './qmp';

/** The fd a clone's QEMU inherits the template's saved state on (stdin, stdout, stderr come first). */
export const INCOMING_FD = 3;
/** A template's device state is small (ROMs, device registers: ~1 MiB); a stream beyond this is refused. */
export const MAX_STATE_BYTES = 64 * 1024 * 1024;
const PAGE = 4096;
const CHUNK = 2 * 1024 * 1024;

/**
 * Copies `src` to `dst` (created 0600) keeping it sparse: only the pages that are not all zero are written, so a
 * template's 512 MiB file whose guest touched 150 MiB costs 150 MiB. Reading a hole of a tmpfs file allocates
 * nothing. Returns the bytes written.
 */
export function copySparse(src: string, dst: string): number {
  const zero = Buffer.alloc(PAGE);
  const buf = Buffer.allocUnsafe(CHUNK);
  const inFd = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  let outFd: number | undefined;
  let written = 0;
  try {
    const size = fs.fstatSync(inFd).size;
    outFd = fs.openSync(dst, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    fs.ftruncateSync(outFd, size);
    for (let pos = 0; pos < size;) {
      const n = fs.readSync(inFd, buf, 0, Math.min(CHUNK, size - pos), pos);
      if (n <= 0) break;
      // Write each run of non-zero pages at its offset.
      let run = -1;
      for (let off = 0; off <= n; off += PAGE) {
        const end = Math.min(off + PAGE, n);
        const isZero = off >= n || buf.compare(zero, 0, end - off, off, end) === 0;
        if (!isZero && run < 0) run = off;
        if ((isZero || end === n) && run >= 0) {
          const stop = isZero ? off : end;
          fs.writeSync(outFd, buf, run, stop - run, pos + run);
          written += stop - run;
          run = -1;
        }
      }
      pos += n;
    }
  } finally {
    fs.closeSync(inFd);
    if (outFd !== undefined) fs.closeSync(outFd);
  }
  return written;
}

/** The migration capability that leaves shared RAM blocks out of the stream (both ends must set it). */
async function ignoreShared(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
}

/**
 * A clone's start: load the template's state from INCOMING_FD, wait until QEMU has left `inmigrate` (a failed load
 * makes QEMU exit, which the caller's signal reports), then resume the guest.
 */
export async function loadTemplateState(qmp: QmpClient, signal: AbortSignal): Promise<void> {
  await ignoreShared(qmp);
  await qmp.execute('migrate-incoming', { uri: `fd:${INCOMING_FD}` });
  for (;;) {
    if (signal.aborted) throw abortError(signal, 'load the template state');
    const st = await qmp.queryStatus();
    if (st.running) return;
    if (st.status === 'paused' || st.status === 'postmigrate' || st.status === 'prelaunch') {
      await qmp.cont();
      return;
    }
    if (st.status !== 'inmigrate') throw new UnavailableError(`VM is ${st.status} while loading the template state`);
    await sleep(5, signal);
  }
}

/** Hot-plugs the clone's virtio-fs device (its chardev is on the command line) on the template's spare port. */
export async function plugVirtiofs(qmp: QmpClient): Promise<void> {
  await qmp.execute('device_add', {
    driver: 'vhost-user-fs-pci',
    id: TEMPLATE_FS_DEVICE,
    chardev: TEMPLATE_FS_CHARDEV,
    tag: GUEST_SHARE_TAG,
    bus: TEMPLATE_FS_PORT,
  });
}

/**
 * Hot-plugs a clone's NICs: NIC `i` is a virtio-net-pci device with the pod's MAC (and host_mtu) on netdev `net<i>`
 * (its tap, opened from the command line) and the template's spare port `hullnetport<i>`. The guest's pciehp and
 * virtio_net bring it up asynchronously; the agent's UpdateInterface waits for the MAC to appear.
 */
export async function plugNics(qmp: QmpClient, nics: readonly VmNic[]): Promise<void> {
  for (const [i, nic] of nics.entries()) {
    // JSON, not QEMU's option syntax: the MAC (checked by resolveConfig) cannot smuggle in another property.
    await qmp.execute('device_add', {
      driver: 'virtio-net-pci',
      id: templateNicDevice(i),
      bus: templateNicPort(i),
      netdev: `net${i}`,
      mac: nic.mac,
      ...(nic.mtu === undefined ? {} : { host_mtu: nic.mtu }),
    });
  }
}

/**
 * Saves a paused template VM's device state into `stateFile` (0600): QEMU migrates to a unix socket we listen on
 * (`socketPath`, removed after) and the stream goes to the file; resolves once query-migrate says completed.
 * The VM stays paused (the caller stops it).
 */
export async function saveTemplateState(
  qmp: QmpClient,
  stateFile: string,
  socketPath: string,
  signal: AbortSignal,
): Promise<number> {
  fs.rmSync(socketPath, { force: true });
  const out = fs.createWriteStream(stateFile, { flags: 'wx', mode: 0o600 });
  let bytes = 0;
  let accepted = false;
  const server = net.createServer();
  const received = new Promise<void>((resolve, reject) => {
    server.on('connection', (conn) => {
      if (accepted) {
        conn.destroy(); // one stream only
        return;
      }
      accepted = true;
      server.close();
      conn.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > MAX_STATE_BYTES) {
          conn.destroy();
          reject(new UnavailableError(`the template's device state exceeds ${MAX_STATE_BYTES} bytes`));
          return;
        }
        if (!out.write(chunk)) {
          conn.pause();
          out.once('drain', () => conn.resume());
        }
      });
      conn.on('error', reject);
      conn.on('end', () => out.end(() => resolve()));
    });
    server.on('error', reject);
  });
  received.catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  fs.chmodSync(socketPath, 0o600);
  try {
    await ignoreShared(qmp);
    await qmp.execute('migrate', { uri: `unix:${socketPath}` });
    for (;;) {
      if (signal.aborted) throw abortError(signal, 'save the template state');
      const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') break;
      if (m.status === 'failed' || m.status === 'cancelled')
        throw new UnavailableError(`saving the template state ${m.status}: ${String(m['error-desc'] ?? '')}`);
      await sleep(10, signal);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        received,
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new UnavailableError('the template state stream did not end')), 10_000);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    return bytes;
  } finally {
    server.close();
    out.destroy();
    fs.rmSync(socketPath, { force: true });
  }
}
