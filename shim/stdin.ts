/**
 * What containerd writes on the stdin of `start` and `-info`: runtime options (a google.protobuf.Any; containerd
 * 1.6 to 2.2), or containerd 2.3's BootstrapParams. Read with a size cap and a deadline, and never from a terminal:
 * a person running `-info` by hand must not see it wait. An absent, closed or empty stdin is no input.
 */
import fs from 'node:fs';
import net from 'node:net';

export const STDIN_MAX_BYTES = 1 << 20;
export const STDIN_TIMEOUT_MS = 2000;

export type StdinInput =
  | { kind: 'none'; why: 'closed' | 'tty' | 'empty' }
  | { kind: 'data'; data: Buffer }
  | { kind: 'refused'; why: 'too-large' | 'timeout' | 'error'; detail?: string };

/** Reads fd `fd` (0) to its end, at most `maxBytes`, within `timeoutMs`. */
export async function readStdin(o: { fd?: number; maxBytes?: number; timeoutMs?: number } = {}): Promise<StdinInput> {
  const fd = o.fd ?? 0;
  const maxBytes = o.maxBytes ?? STDIN_MAX_BYTES;
  const timeoutMs = o.timeoutMs ?? STDIN_TIMEOUT_MS;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
  } catch {
    return { kind: 'none', why: 'closed' };
  }
  if (st.isCharacterDevice()) {
    // A terminal is never read; /dev/null (containerd's Go exec with no Stdin) is empty.
    return { kind: 'none', why: st.rdev === fs.statSync('/dev/null').rdev ? 'empty' : 'tty' };
  }
  if (st.isFile()) {
    const size = Math.min(st.size, maxBytes + 1);
    const buf = Buffer.alloc(size);
    const n = size > 0 ? fs.readSync(fd, buf, 0, size, 0) : 0;
    if (n > maxBytes) return { kind: 'refused', why: 'too-large' };
    return n === 0 ? { kind: 'none', why: 'empty' } : { kind: 'data', data: buf.subarray(0, n) };
  }
  // A pipe or a socket: read asynchronously, so that the deadline holds even if the writer keeps it open.
  return new Promise<StdinInput>((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let stream: net.Socket;
    try {
      stream = new net.Socket({ fd, readable: true, writable: false });
    } catch (err) {
      resolve({ kind: 'refused', why: 'error', detail: (err as Error).message });
      return;
    }
    const done = (result: StdinInput): void => {
      clearTimeout(timer);
      stream.removeAllListeners('data');
      stream.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ kind: 'refused', why: 'timeout' }), timeoutMs);
    stream.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) done({ kind: 'refused', why: 'too-large' });
      else chunks.push(chunk);
    });
    stream.once('end', () =>
      done(total === 0 ? { kind: 'none', why: 'empty' } : { kind: 'data', data: Buffer.concat(chunks) }),
    );
    stream.once('error', (err) => done({ kind: 'refused', why: 'error', detail: err.message }));
  });
}
