import { method, type Codec } from '../src/method';

/** Two connected in-memory Duplex ends (the fuzzing kit's, also what these tests use). */
export { duplexPair } from '../src/fuzz';

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
