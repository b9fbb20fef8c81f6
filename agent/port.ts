/**
 * The agent channel over a virtio-serial port. The guest sees the port as a character device; Node cannot poll
 * such a file, so a read loop runs reads on libuv's thread pool. A read returning 0 bytes means the host side is
 * not connected (never was, or went away): the current connection ends, and the next bytes start a new one, with a
 * fresh frame decoder. While the host is away, the loop polls every POLL_MS.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { log } from './log';

const POLL_MS = 20;
const READ_SIZE = 256 * 1024;

/** The device node of the virtio-serial port with this name, as /sys/class/virtio-ports lists it. */
export function findSerialPort(name: string, sysDir = '/sys/class/virtio-ports'): string | undefined {
  let ports: string[];
  try {
    ports = fs.readdirSync(sysDir);
  } catch {
    return undefined;
  }
  for (const port of ports) {
    try {
      if (fs.readFileSync(path.join(sysDir, port, 'name'), 'utf8').trim() === name) return `/dev/${port}`;
    } catch {
      // a port without a name
    }
  }
  return undefined;
}

export async function waitForSerialPort(name: string, timeoutMs: number): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const dev = findSerialPort(name);
    if (dev && fs.existsSync(dev)) return dev;
    if (Date.now() > until) throw new Error(`virtio-serial port ${name} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** One host connection over the port: bytes pushed in by the listener, writes go straight to the device. */
class PortConnection extends Duplex {
  private ended = false;

  constructor(private readonly fd: number) {
    super();
  }

  override _read(): void {
    // data is pushed by the listener's read loop
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.ended) {
      callback();
      return;
    }
    const writeAll = (offset: number): void => {
      fs.write(this.fd, chunk, offset, chunk.length - offset, null, (err, written) => {
        if (err) {
          // The host went away mid-write; the read loop ends this connection.
          callback();
          return;
        }
        if (offset + written < chunk.length) writeAll(offset + written);
        else callback();
      });
    };
    writeAll(0);
  }

  deliver(data: Buffer): void {
    if (!this.ended) this.push(data);
  }

  hangUp(): void {
    if (this.ended) return;
    this.ended = true;
    this.push(null);
  }
}

export class SerialPortListener {
  private fd = -1;
  private current: PortConnection | undefined;
  private stopped = false;

  constructor(
    private readonly device: string,
    private readonly onConnection: (stream: Duplex) => void,
  ) {}

  start(): void {
    this.fd = fs.openSync(this.device, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    this.readLoop();
  }

  stop(): void {
    this.stopped = true;
    this.current?.hangUp();
  }

  private readLoop(): void {
    const buf = Buffer.allocUnsafe(READ_SIZE);
    const next = (delay: number): void => {
      if (this.stopped) return;
      if (delay) setTimeout(step, delay);
      else setImmediate(step);
    };
    const step = (): void => {
      fs.read(this.fd, buf, 0, buf.length, null, (err, n) => {
        if (err) {
          log.warn('agent port read failed', { device: this.device, error: err.message });
          this.current?.hangUp();
          this.current = undefined;
          next(POLL_MS * 5);
          return;
        }
        if (n === 0) {
          if (this.current) {
            this.current.hangUp();
            this.current = undefined;
          }
          next(POLL_MS);
          return;
        }
        if (!this.current) {
          this.current = new PortConnection(this.fd);
          this.onConnection(this.current);
        }
        this.current.deliver(Buffer.from(buf.subarray(0, n)));
        next(0);
      });
    };
    step();
  }
}
