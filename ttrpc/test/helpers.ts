import { Duplex } from 'node:stream';
import { method, type Codec } from '../src/method';

/** Two connected in-memory Duplex ends: what one writes, the other reads. */
export function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (!p.destroyed) p.destroy();
        cb(err);
      },
    });
  ends.push(
    make(() => ends[1]!),
    make(() => ends[0]!),
  );
  return [ends[0]!, ends[1]!];
}

export const json = <T>(): Codec<T> => ({
  encode: (v) => Buffer.from(JSON.stringify(v)),
  decode: (b) => JSON.parse(Buffer.from(b).toString()) as T,
});

export interface EchoRequest {
  text: string;
  delayMs?: number;
  fail?: { code: number; message: string };
  size?: number;
}
export interface EchoResponse {
  text: string;
  timeoutNano?: number;
  metadata?: Record<string, string[]>;
}

export const Echo = {
  Echo: method('test.Echo', 'Echo', json<EchoRequest>(), json<EchoResponse>()),
  Sleep: method('test.Echo', 'Sleep', json<EchoRequest>(), json<EchoResponse>()),
  Missing: method('test.Echo', 'Missing', json<EchoRequest>(), json<EchoResponse>()),
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
