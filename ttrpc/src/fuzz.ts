/**
 * Seeded, reproducible fuzzing of ttrpc's frame decoder and of any ttrpc `Server`. A run is a function of its seed:
 * the same seed replays the same inputs, so a failure is reported with the seed and case number that reproduce it.
 *
 * - `fuzzDecoder`: random and mutated byte streams (valid frames bit-flipped, truncated, with lying length fields up
 *   to the cap and beyond, many frames per write, one frame split at every byte) fed to a `FrameDecoder` in random
 *   pieces, checked against a whole-buffer reference parse, with the decoder's buffered bytes bounded by the cap.
 * - `fuzzServer`: frames written to a server over an in-memory duplex: requests for the target's methods with
 *   mutated protobuf payloads, unknown services and methods, mutated request envelopes and metadata, timeouts, stream
 *   ids even, zero, reused and out of order, frames of other types, oversized frames, a connection that ends
 *   mid-frame. Every answer must be a well-formed response on a stream that asked, with a status the server's
 *   contract allows for that input (ttrpc's Go server's codes for protocol errors, the target's for handlers).
 *
 * No dependencies: the generator knows the protobuf wire format, not any message's schema.
 */
import { Duplex } from 'node:stream';
import { FrameDecoder, FrameType, HEADER_LENGTH, MAX_MESSAGE_LENGTH, type DecodedFrame } from './frame-codec';
import type { MethodDescriptor, ServiceDefinition } from './method';
import type { Server } from './server';
import { Code } from './status';
import { decodeRequest, decodeResponse, encodeRequest, type KeyValue, type RequestMessage } from './wire';

// ---- PRNG ---------------------------------------------------------------------------------------------------------

/** mulberry32: a small, fast 32-bit PRNG; plenty for input generation, and the same sequence for the same seed. */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uint32. */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.next() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.next() & 0xff;
    return out;
  }

  /** A small length, skewed towards 0 and short, sometimes up to `max`. */
  size(max: number): number {
    const r = this.int(10);
    if (r < 3) return this.int(Math.min(8, max + 1));
    if (r < 8) return this.int(Math.min(64, max + 1));
    return this.int(max + 1);
  }
}

/** A seed for case `i` of a run seeded `seed`: each case can be replayed alone. */
export function caseSeed(seed: number, i: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0;
}

// ---- byte and protobuf mutation -----------------------------------------------------------------------------------

/** One random edit of `buf`: bit flips, interesting bytes, truncation, insertion, deletion, duplication. */
export function mutateBytes(rng: Prng, buf: Uint8Array): Buffer {
  const b = Buffer.from(buf);
  switch (rng.int(8)) {
    case 0: {
      if (b.length === 0) return rng.bytes(rng.size(16));
      for (let n = rng.range(1, 4); n > 0; n--) b[rng.int(b.length)]! ^= 1 << rng.int(8);
      return b;
    }
    case 1: {
      if (b.length === 0) return b;
      b[rng.int(b.length)] = rng.pick([0, 0xff, 0x7f, 0x80, 0x01]);
      return b;
    }
    case 2:
      return b.subarray(0, rng.int(b.length + 1));
    case 3: {
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), rng.bytes(rng.size(32)), b.subarray(at)]);
    }
    case 4: {
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), b.subarray(at + rng.size(16))]);
    }
    case 5: {
      const at = rng.int(b.length + 1);
      const piece = b.subarray(at, at + rng.size(32));
      return Buffer.concat([b.subarray(0, at), piece, piece, b.subarray(at)]);
    }
    case 6: {
      // A varint that never ends, or one of 10 bytes.
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), Buffer.alloc(rng.range(1, 11), 0xff), b.subarray(at)]);
    }
    default:
      return Buffer.concat([b, rng.bytes(rng.size(16))]);
  }
}

function varint(n: number | bigint): Buffer {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

function tag(field: number, wire: number): Buffer {
  return varint(field * 8 + wire);
}

const STRINGS = [
  '',
  'a',
  'sb',
  'c1',
  '..',
  '.',
  '/',
  '../../etc',
  '/etc/passwd',
  'a/b',
  '\0',
  'é',
  '\u{1F600}',
  'x'.repeat(300),
  '-rf',
  '--help',
  ' ',
  '%s%n',
  'containerd',
  'default',
  'k8s.io',
];

/**
 * A plausible message of unknown schema: fields 1..`maxField` with random wire types, varints at the edges,
 * interesting strings, nested soups, and now and then a length that overruns the message or is absurdly large.
 */
export function protobufSoup(rng: Prng, maxField = 16, depth = 0, strings: readonly string[] = STRINGS): Buffer {
  const parts: Buffer[] = [];
  for (let n = rng.size(12); n > 0; n--) {
    const field = rng.chance(0.95) ? rng.range(1, maxField) : rng.pick([0, 19000, 536870911, rng.next() >>> 3]);
    switch (rng.int(10)) {
      case 0:
      case 1:
        parts.push(
          tag(field, 0),
          varint(
            rng.pick<number | bigint>([
              0,
              1,
              -1,
              2 ** 31,
              2 ** 32,
              2 ** 53,
              -(2 ** 63),
              2n ** 64n - 1n,
              rng.next(),
              rng.int(70),
            ]),
          ),
        );
        break;
      case 2:
      case 3:
      case 4: {
        const s = Buffer.from(rng.chance(0.8) ? rng.pick(strings) : rng.bytes(rng.size(40)).toString('latin1'));
        parts.push(tag(field, 2), varint(s.length), s);
        break;
      }
      case 5: {
        const inner = depth < 3 ? protobufSoup(rng, maxField, depth + 1, strings) : rng.bytes(rng.size(8));
        parts.push(tag(field, 2), varint(inner.length), inner);
        break;
      }
      case 6:
        // A length-delimited field that claims more than there is (up to 2^63).
        parts.push(
          tag(field, 2),
          varint(rng.pick<number | bigint>([rng.range(1, 100), 2 ** 31, 2 ** 32 + 5, 2n ** 63n])),
          rng.bytes(rng.size(8)),
        );
        break;
      case 7:
        parts.push(tag(field, rng.pick([1, 5])), rng.bytes(rng.pick([8, 4, 3])));
        break;
      case 8:
        // Groups (wire types 3 and 4) and the undefined wire types 6 and 7.
        parts.push(tag(field, rng.pick([3, 4, 6, 7])), rng.bytes(rng.size(4)));
        break;
      default: {
        // Packed repeated varints.
        const items = Buffer.concat(Array.from({ length: rng.size(8) }, () => varint(rng.next())));
        parts.push(tag(field, 2), varint(items.length), items);
      }
    }
  }
  return Buffer.concat(parts);
}

/** A payload for a method whose valid examples are `examples`: valid, mutated, soup, random, truncated or huge. */
export function mutatePayload(rng: Prng, examples: readonly Uint8Array[], strings?: readonly string[]): Buffer {
  const example = examples.length ? Buffer.from(rng.pick(examples)) : Buffer.alloc(0);
  switch (rng.int(8)) {
    case 0:
      return example;
    case 1:
    case 2: {
      let b: Buffer = example;
      for (let n = rng.range(1, 3); n > 0; n--) b = mutateBytes(rng, b);
      return b;
    }
    case 3:
    case 4:
      return protobufSoup(rng, 16, 0, strings);
    case 5:
      return Buffer.concat([example, protobufSoup(rng, 16, 0, strings)]);
    case 6:
      return rng.bytes(rng.size(64));
    default: {
      // A large string field (1 KiB, sometimes 64 KiB, rarely 1 MiB) in a field a message is likely to have.
      const r = rng.int(100);
      const big = Buffer.alloc(r === 0 ? 1 << 20 : r < 10 ? 65536 : 1024, rng.pick([0x61, 0x2f, 0]));
      return Buffer.concat([tag(rng.range(1, 4), 2), varint(big.length), big]);
    }
  }
}

// ---- frames ---------------------------------------------------------------------------------------------------------

function frame(
  streamId: number,
  type: number,
  flags: number,
  payload: Uint8Array,
  declaredLength = payload.length,
): Buffer {
  const b = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  b.writeUInt32BE(declaredLength >>> 0, 0);
  b.writeUInt32BE(streamId >>> 0, 4);
  b[8] = type & 0xff;
  b[9] = flags & 0xff;
  b.set(payload, HEADER_LENGTH);
  return b;
}

/** Cuts `data` into the pieces it is written in: one write, random cuts, or one byte at a time. */
export function splitStream(rng: Prng, data: Buffer): Buffer[] {
  const mode = rng.int(10);
  if (mode < 3 || data.length === 0) return [data];
  if (mode === 9 && data.length <= 4096) return Array.from(data, (_, i) => data.subarray(i, i + 1));
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < data.length) {
    const n = Math.min(data.length - pos, rng.chance(0.3) ? rng.range(1, HEADER_LENGTH + 2) : rng.range(1, 4096));
    out.push(data.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

/** Whole-buffer reference parse of a frame stream: what a decoder fed `data` in any pieces must return. */
export function referenceFrames(data: Buffer, maxLength: number): { frames: DecodedFrame[]; pending: number } {
  const frames: DecodedFrame[] = [];
  let pos = 0;
  for (;;) {
    if (data.length - pos < HEADER_LENGTH) return { frames, pending: data.length - pos };
    const length = data.readUInt32BE(pos);
    const header = { length, streamId: data.readUInt32BE(pos + 4), type: data[pos + 8]!, flags: data[pos + 9]! };
    if (data.length - pos - HEADER_LENGTH < length) return { frames, pending: data.length - pos };
    if (length > maxLength) frames.push({ kind: 'oversized', ...header });
    else
      frames.push({
        kind: 'frame',
        ...header,
        payload: data.subarray(pos + HEADER_LENGTH, pos + HEADER_LENGTH + length),
      });
    pos += HEADER_LENGTH + length;
  }
}

/** A random byte stream for the decoder: valid frames, then mutated. */
function decoderInput(rng: Prng, maxLength: number): Buffer {
  const parts: Buffer[] = [];
  for (let n = rng.range(1, 8); n > 0; n--) {
    switch (rng.int(6)) {
      case 0:
        parts.push(rng.bytes(rng.size(64)));
        break;
      case 1: {
        // A length field that lies: over the cap (the payload follows, to be skipped) or just at it.
        const declared = rng.pick([maxLength, maxLength + 1, maxLength + rng.range(1, 300)]);
        const body = rng.chance(0.5) ? Buffer.alloc(declared) : Buffer.alloc(rng.int(declared));
        parts.push(frame(rng.next(), rng.int(256), rng.int(256), body, declared));
        break;
      }
      case 2:
        // A huge declared length and whatever follows: the decoder must wait (or skip) without buffering it.
        parts.push(
          frame(
            rng.next(),
            rng.int(4),
            0,
            rng.bytes(rng.size(32)),
            rng.pick([0xffffffff, 0x80000000, MAX_MESSAGE_LENGTH * 4, rng.next()]),
          ),
        );
        break;
      default:
        parts.push(
          frame(
            rng.pick([0, 1, 2, 3, rng.next()]),
            rng.pick([1, 2, 3, rng.int(256)]),
            rng.int(256),
            rng.bytes(rng.size(200)),
          ),
        );
    }
  }
  let data: Buffer = Buffer.concat(parts);
  if (rng.chance(0.4)) data = mutateBytes(rng, data);
  return data;
}

// ---- results --------------------------------------------------------------------------------------------------------

export interface FuzzOptions {
  seed: number;
  iterations: number;
  /** Called every `progressEvery` cases (for a long run's log). */
  onProgress?(done: number): void;
  progressEvery?: number;
}

export interface FuzzResult {
  target: string;
  seed: number;
  /** Cases run. */
  cases: number;
  /** Inputs: byte streams for the decoder, frames for a server. */
  inputs: number;
  bytes: number;
  ms: number;
  peakRssBytes: number;
  peakHeapBytes: number;
  /** Heap used after the run minus before (after a GC when node runs with --expose-gc). */
  heapGrowthBytes: number;
  /** Response codes seen, by code (servers only). */
  codes: Record<number, number>;
}

export class FuzzFailure extends Error {
  constructor(
    readonly target: string,
    readonly seed: number,
    readonly caseIndex: number,
    detail: string,
  ) {
    super(`${target}: seed ${seed} case ${caseIndex} (case seed ${caseSeed(seed, caseIndex)}): ${detail}`);
    this.name = 'FuzzFailure';
  }
}

class Meter {
  private readonly start = Date.now();
  private readonly heapBefore: number;
  peakRss = 0;
  peakHeap = 0;

  constructor() {
    gc();
    this.heapBefore = process.memoryUsage().heapUsed;
    this.sample();
  }

  sample(): void {
    const m = process.memoryUsage();
    if (m.rss > this.peakRss) this.peakRss = m.rss;
    if (m.heapUsed > this.peakHeap) this.peakHeap = m.heapUsed;
  }

  finish(
    target: string,
    seed: number,
    cases: number,
    inputs: number,
    bytes: number,
    codes: Record<number, number>,
  ): FuzzResult {
    this.sample();
    gc();
    return {
      target,
      seed,
      cases,
      inputs,
      bytes,
      codes,
      ms: Date.now() - this.start,
      peakRssBytes: this.peakRss,
      peakHeapBytes: this.peakHeap,
      heapGrowthBytes: process.memoryUsage().heapUsed - this.heapBefore,
    };
  }
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

// ---- target 1: the frame decoder -----------------------------------------------------------------------------------

function sameFrames(a: DecodedFrame[], b: DecodedFrame[]): string | undefined {
  if (a.length !== b.length) return `${a.length} frames, expected ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (
      x.kind !== y.kind ||
      x.length !== y.length ||
      x.streamId !== y.streamId ||
      x.type !== y.type ||
      x.flags !== y.flags
    ) {
      return `frame ${i}: ${JSON.stringify({ ...x, payload: undefined })}, expected ${JSON.stringify({ ...y, payload: undefined })}`;
    }
    if (x.kind === 'frame' && y.kind === 'frame' && !x.payload.equals(y.payload)) return `frame ${i}: payload differs`;
  }
  return undefined;
}

/** One decoder case; throws a description of the first difference from the reference. */
export function decoderCase(rng: Prng, maxLength: number): { bytes: number } {
  const data = decoderInput(rng, maxLength);
  const expected = referenceFrames(data, maxLength);
  const decoder = new FrameDecoder(maxLength);
  const got: DecodedFrame[] = [];
  for (const piece of splitStream(rng, data)) {
    // A copy per piece: the decoder may keep views of what it is given, and the writer may reuse its buffer.
    for (const f of decoder.write(Buffer.from(piece)))
      got.push(f.kind === 'frame' ? { ...f, payload: Buffer.from(f.payload) } : f);
    if (decoder.heldBytes > HEADER_LENGTH + maxLength)
      throw new Error(`decoder holds ${decoder.heldBytes} bytes, over the cap of ${HEADER_LENGTH + maxLength}`);
  }
  const diff = sameFrames(got, expected.frames);
  if (diff) throw new Error(diff);
  if (decoder.pendingBytes !== expected.pending)
    throw new Error(`decoder holds ${decoder.pendingBytes} bytes at the end, expected ${expected.pending}`);
  return { bytes: data.length };
}

/**
 * ≥ `iterations` byte streams through a FrameDecoder. The cap is small (1 KiB) so that lying lengths, frames at and
 * over the cap, and skipping are exercised often; `fuzzDecoderAtRealCap` covers the 4 MiB cap more slowly.
 */
export function fuzzDecoder(options: FuzzOptions & { maxLength?: number }): FuzzResult {
  const maxLength = options.maxLength ?? 1024;
  const meter = new Meter();
  let bytes = 0;
  for (let i = 0; i < options.iterations; i++) {
    const rng = new Prng(caseSeed(options.seed, i));
    try {
      bytes += decoderCase(rng, maxLength).bytes;
    } catch (err) {
      throw new FuzzFailure('decoder', options.seed, i, (err as Error).message);
    }
    if ((i & 1023) === 0) meter.sample();
    if (options.onProgress && (i + 1) % (options.progressEvery ?? 100_000) === 0) options.onProgress(i + 1);
  }
  return meter.finish('frame decoder', options.seed, options.iterations, options.iterations, bytes, {});
}

// ---- targets 2 and 3: a server -----------------------------------------------------------------------------------

export interface FuzzMethod {
  descriptor: MethodDescriptor<unknown, unknown>;
  /** Valid requests, encoded: the starting points of mutation. */
  examples: Uint8Array[];
  /** The status codes its handler may answer with (OK included if it can succeed). */
  codes: readonly Code[];
  /** A long poll: may stay unanswered until the connection closes. */
  longPoll?: boolean;
}

export interface ServerTarget {
  name: string;
  server: Server;
  methods: FuzzMethod[];
  /** Strings that mean something to the handlers (ids, paths), mixed into the generated payloads. */
  strings?: readonly string[];
  /** How long a case waits for its answers before calling one missing. */
  answerTimeoutMs?: number;
  /** Called after each case (e.g. to clear a fake's records, or to start over with a fresh server every so often). */
  afterCase?(index: number): Promise<void> | void;
}

/** Builds a target's methods from a service definition: every method, its examples, the codes its handler may answer. */
export function fuzzMethods(
  service: ServiceDefinition,
  codes: readonly Code[],
  options: {
    examples?: Record<string, unknown[]>;
    codes?: Record<string, readonly Code[]>;
    longPoll?: string[];
    skip?: string[];
  } = {},
): FuzzMethod[] {
  return Object.entries(service)
    .filter(([name]) => !options.skip?.includes(name))
    .map(([name, descriptor]) => ({
      descriptor,
      examples: (options.examples?.[name] ?? [{}]).map((e) => descriptor.request.encode(e)),
      codes: options.codes?.[name] ?? codes,
      longPoll: options.longPoll?.includes(name),
    }));
}

/** What one frame of a case must get back. */
type Expectation =
  { kind: 'none' } | { kind: 'status'; codes: readonly Code[]; what: string; method?: FuzzMethod; longPoll?: boolean };

interface PlannedFrame {
  bytes: Buffer;
  streamId: number;
  expect: Expectation;
}

/** A request with a deadline may end at it. (CANCELLED is for a connection that closed: then nothing is answered.) */
const TIMEOUT_CODES = [Code.DEADLINE_EXCEEDED];

/** The ttrpc envelope of a request: service, method, payload, timeout and metadata, each possibly wrong. */
function planRequest(
  rng: Prng,
  target: ServerTarget,
): { request: RequestMessage; method: FuzzMethod | undefined; codes: readonly Code[]; what: string } {
  const m = rng.pick(target.methods);
  let service = m.descriptor.service;
  let methodName = m.descriptor.method;
  let method: FuzzMethod | undefined = m;
  const r = rng.int(20);
  if (r === 0) {
    service = rng.pick([
      '',
      'grpc.Unknown',
      `${service}.`,
      service.toUpperCase(),
      service.slice(0, -1),
      rng.bytes(rng.size(20)).toString('latin1'),
    ]);
    method = undefined;
  } else if (r === 1) {
    methodName = rng.pick([
      '',
      'Unknown',
      methodName.toLowerCase(),
      `${methodName}\0`,
      `/${methodName}`,
      'constructor',
      '__proto__',
      'toString',
      'hasOwnProperty',
      rng.bytes(rng.size(20)).toString('latin1'),
    ]);
    method = undefined;
  }
  if (!method && target.methods.some((x) => x.descriptor.service === service && x.descriptor.method === methodName))
    method = m;
  const timeoutNano = rng.pick([0, 0, 0, 0, 1, rng.range(1, 1e6), 5e9, -1, -(2 ** 62), 2 ** 53, 2 ** 62, 9.2e18]);
  const metadata: KeyValue[] = [];
  for (let n = rng.chance(0.7) ? 0 : rng.size(40); n > 0; n--)
    metadata.push({
      key: rng.pick(['containerd-namespace-ttrpc', 'x', '', 'a'.repeat(200)]),
      value: rng.pick(['default', '', 'k8s.io', '\0']),
    });
  const request: RequestMessage = {
    service,
    method: methodName,
    payload: mutatePayload(rng, m.examples, target.strings),
    timeoutNano,
    metadata,
  };
  const codes: readonly Code[] = method
    ? timeoutNano !== 0
      ? [...method.codes, ...TIMEOUT_CODES]
      : method.codes
    : [Code.UNIMPLEMENTED];
  return { request, method, codes, what: `${service}/${methodName}` };
}

/**
 * A case: the frames a client writes on one connection, and what each must get back under the server's contract
 * (ttrpc's Go server: even stream id or a stream id not above the last request's → INVALID_ARGUMENT, undecodable
 * request → INVALID_ARGUMENT, unknown service or method → UNIMPLEMENTED, oversized request → RESOURCE_EXHAUSTED;
 * frames of other types get no answer).
 */
function planCase(rng: Prng, target: ServerTarget, maxLength: number): { frames: PlannedFrame[]; truncated: boolean } {
  const frames: PlannedFrame[] = [];
  let lastId = 0;
  let nextId = 1;
  for (let n = rng.range(1, 12); n > 0; n--) {
    // Mostly fresh odd ids; sometimes even, zero, reused, out of order, or at the top of the range.
    let streamId = nextId;
    const idKind = rng.int(20);
    if (idKind === 0) streamId = rng.pick([0, 2, nextId + 1, 0xfffffffe]);
    else if (idKind === 1 && lastId > 0) streamId = rng.chance(0.5) ? lastId : rng.range(0, lastId);
    else if (idKind === 2) streamId = rng.pick([0xffffffff, 0x7fffffff, nextId + 2 * rng.range(1, 1000)]);
    if (streamId > 0xffffffff) streamId = 0xffffffff; // ids are u32: after the top one, none is fresh
    const kind = rng.int(40);
    const odd = streamId % 2 === 1;
    if (kind === 0) {
      // A frame of another type: no answer, whatever it holds.
      frames.push({
        bytes: frame(
          streamId,
          rng.pick([FrameType.Response, FrameType.Data, 0, 4, 0xff]),
          rng.int(256),
          rng.bytes(rng.size(64)),
        ),
        streamId,
        expect: { kind: 'none' },
      });
      continue;
    }
    if (kind === 1 && rng.chance(0.01)) {
      // An oversized request: skipped and answered RESOURCE_EXHAUSTED (rare: it costs its length in bytes).
      const declared = maxLength + rng.range(1, 100);
      frames.push({
        bytes: frame(streamId, FrameType.Request, 0, Buffer.alloc(declared), declared),
        streamId,
        expect: { kind: 'status', codes: [Code.RESOURCE_EXHAUSTED], what: 'oversized' },
      });
      continue;
    }
    let expect: Expectation;
    let payload: Buffer;
    if (kind === 2 || kind === 3) {
      // A mangled envelope: whatever it decodes to decides the answer.
      payload = rng.chance(0.5)
        ? mutateBytes(rng, encodeRequest(planRequest(rng, target).request))
        : protobufSoup(rng, 6);
      expect = { kind: 'status', codes: [], what: 'mangled envelope' };
    } else {
      const planned = planRequest(rng, target);
      payload = encodeRequest(planned.request);
      if (payload.length > maxLength) payload = payload.subarray(0, maxLength);
      expect = {
        kind: 'status',
        codes: planned.codes,
        what: planned.what,
        method: planned.method,
        longPoll: planned.method?.longPoll,
      };
    }
    // The contract, in ttrpc's order.
    if (!odd) {
      expect = { kind: 'status', codes: [Code.INVALID_ARGUMENT], what: 'even stream id' };
    } else if (streamId <= lastId) {
      expect = { kind: 'status', codes: [Code.INVALID_ARGUMENT], what: 'stream id not above the last' };
    } else {
      lastId = streamId;
      nextId = streamId + 2;
      if (expect.kind === 'status' && (expect.what === 'mangled envelope' || payload.length === maxLength))
        expect = expectForEnvelope(target, payload);
    }
    frames.push({
      bytes: frame(streamId, FrameType.Request, rng.chance(0.9) ? 0 : rng.int(256), payload),
      streamId,
      expect,
    });
  }
  // Sometimes the connection ends in the middle of one more frame: no answer to it, and no harm.
  const truncated = rng.chance(0.1);
  if (truncated) {
    const extra = frame(nextId, FrameType.Request, 0, rng.bytes(rng.size(64)));
    frames.push({ bytes: extra.subarray(0, rng.int(extra.length)), streamId: nextId, expect: { kind: 'none' } });
  }
  return { frames, truncated };
}

/** The answer to a request envelope the generator did not build field by field (the wire codec classifies it). */
function expectForEnvelope(target: ServerTarget, payload: Buffer): Expectation {
  let request: RequestMessage;
  try {
    request = decodeRequest(payload);
  } catch {
    return { kind: 'status', codes: [Code.INVALID_ARGUMENT], what: 'undecodable envelope' };
  }
  const method = target.methods.find(
    (m) => m.descriptor.service === request.service && m.descriptor.method === request.method,
  );
  if (!method)
    return { kind: 'status', codes: [Code.UNIMPLEMENTED], what: `${request.service}/${request.method} (mangled)` };
  const codes = request.timeoutNano !== 0 ? [...method.codes, ...TIMEOUT_CODES] : method.codes;
  return {
    kind: 'status',
    codes,
    what: `${request.service}/${request.method} (mangled)`,
    method,
    longPoll: method.longPoll,
  };
}

/** Two connected in-memory Duplex ends. */
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

/** Runs one case against the target's server; throws a description of the first broken property. */
export async function serverCase(
  rng: Prng,
  target: ServerTarget,
  codes: Record<number, number> = {},
): Promise<{ frames: number; bytes: number }> {
  const maxLength = target.server.options.maxMessageLength ?? MAX_MESSAGE_LENGTH;
  const { frames, truncated } = planCase(rng, target, maxLength);
  const [client, serverEnd] = duplexPair();
  target.server.serveStream(serverEnd);
  const expected = new Map<number, Expectation[]>();
  let owed = 0;
  for (const f of frames) {
    if (f.expect.kind === 'none') continue;
    const list = expected.get(f.streamId) ?? [];
    list.push(f.expect);
    expected.set(f.streamId, list);
    if (!f.expect.longPoll) owed++;
  }
  const problems: string[] = [];
  const decoder = new FrameDecoder(MAX_MESSAGE_LENGTH);
  let done: () => void = () => undefined;
  const allAnswered = new Promise<void>((resolve) => (done = resolve));
  if (owed === 0) done();
  let closed = false;
  client.on('data', (chunk: Buffer) => {
    for (const f of decoder.write(chunk)) {
      if (f.kind === 'oversized') {
        problems.push(`oversized response on stream ${f.streamId}`);
        continue;
      }
      if (f.type !== FrameType.Response) {
        problems.push(`frame of type ${f.type} from the server`);
        continue;
      }
      const waiting = expected.get(f.streamId) ?? [];
      let code: Code;
      let message: string;
      let payload: Uint8Array;
      try {
        const res = decodeResponse(f.payload);
        code = res.status?.code ?? Code.OK;
        message = res.status?.message ?? '';
        payload = res.payload;
      } catch (err) {
        problems.push(`undecodable response on stream ${f.streamId}: ${(err as Error).message}`);
        continue;
      }
      // Answers on one stream id (a reused id) come in completion order: match the most specific expectation the
      // code fits (a reuse's INVALID_ARGUMENT before a handler's), a request's before a long poll's.
      let at = -1;
      for (let k = 0; k < waiting.length; k++) {
        const x = waiting[k]!;
        if (x.kind !== 'status' || !x.codes.includes(code)) continue;
        const best = waiting[at] as { codes: readonly Code[]; longPoll?: boolean } | undefined;
        if (
          !best ||
          x.codes.length < best.codes.length ||
          (x.codes.length === best.codes.length && best.longPoll && !x.longPoll)
        )
          at = k;
      }
      if (at < 0 && waiting.length) at = 0;
      const e = at < 0 ? undefined : waiting.splice(at, 1)[0];
      if (!e || e.kind !== 'status') {
        problems.push(`answer on stream ${f.streamId}, which asked for none`);
        continue;
      }
      if (code !== Code.OK && payload.length) problems.push(`${e.what}: status ${code} with a payload`);
      try {
        if (code === Code.OK && e.method) e.method.descriptor.response.decode(payload);
      } catch (err) {
        problems.push(`${e.what}: OK with an undecodable response: ${(err as Error).message}`);
      }
      codes[code] = (codes[code] ?? 0) + 1;
      if (!e.codes.includes(code))
        problems.push(
          `${e.what} on stream ${f.streamId}: status ${Code[code] ?? code} (${code}), expected one of ${e.codes.map((c) => Code[c]).join(', ')}: ${message}`,
        );
      if (!e.longPoll && --owed === 0) done();
    }
  });
  client.on('close', () => {
    closed = true;
    done();
  });
  client.on('error', () => undefined);

  const data: Buffer = Buffer.concat(frames.map((f) => f.bytes));
  for (const piece of splitStream(rng, data)) client.write(piece);
  if (truncated) client.end();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>(
    (resolve) => (timer = setTimeout(() => resolve('timeout'), target.answerTimeoutMs ?? 5_000)),
  );
  const outcome = await Promise.race([allAnswered.then(() => 'answered' as const), timeout]);
  clearTimeout(timer);
  if (outcome === 'timeout') {
    const missing = [...expected.entries()].flatMap(([id, list]) =>
      list
        .filter((e) => e.kind === 'status' && !e.longPoll)
        .map((e) => `${(e as { what: string }).what} on stream ${id}`),
    );
    problems.push(`no answer within ${target.answerTimeoutMs ?? 5_000} ms to ${missing.join('; ')}`);
  } else if (closed && owed > 0 && !truncated) {
    problems.push(`connection closed with ${owed} answers owed`);
  }
  // A truncated case ended its side: the server must close the connection.
  if (truncated && !closed)
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        problems.push('connection not closed after the client ended it mid-frame');
        resolve();
      }, 2_000);
      client.once('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
  client.destroy();
  if (problems.length) throw new Error(problems.join('\n'));
  return { frames: frames.length, bytes: data.length };
}

/** Cases until `iterations` frames have been written; afterwards no connection or request may be left behind. */
export async function fuzzServer(target: ServerTarget, options: FuzzOptions): Promise<FuzzResult> {
  const meter = new Meter();
  const codes: Record<number, number> = {};
  let frames = 0;
  let bytes = 0;
  let i = 0;
  let nextProgress = options.progressEvery ?? 100_000;
  for (; frames < options.iterations; i++) {
    const rng = new Prng(caseSeed(options.seed, i));
    try {
      const r = await serverCase(rng, target, codes);
      frames += r.frames;
      bytes += r.bytes;
    } catch (err) {
      throw new FuzzFailure(target.name, options.seed, i, (err as Error).message);
    }
    await target.afterCase?.(i);
    if ((i & 255) === 0) meter.sample();
    if (options.onProgress && frames >= nextProgress) {
      options.onProgress(frames);
      nextProgress += options.progressEvery ?? 100_000;
    }
  }
  // Connections close asynchronously after the client's end is destroyed.
  for (let wait = 0; target.server.connectionCount > 0 && wait < 100; wait++)
    await new Promise((r) => setTimeout(r, 10));
  if (target.server.connectionCount > 0)
    throw new FuzzFailure(
      target.name,
      options.seed,
      i,
      `${target.server.connectionCount} connections left open after the run`,
    );
  return meter.finish(target.name, options.seed, i, frames, bytes, codes);
}

// ---- command line ---------------------------------------------------------------------------------------------------

/** `--iterations N --seed N` (defaults 10^6 and 1). */
export function fuzzArgs(argv: string[]): { iterations: number; seed: number } {
  const get = (name: string, dflt: number): number => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return dflt;
    const v = Number(argv[i + 1]);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} needs a non-negative integer`);
    return v;
  };
  return { iterations: get('iterations', 1_000_000), seed: get('seed', 1) };
}

/** One line for a run's log and the README's table. */
export function formatResult(r: FuzzResult): string {
  const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const codes = Object.entries(r.codes)
    .map(([c, n]) => `${Code[Number(c)] ?? c}=${n}`)
    .join(' ');
  return `${r.target}: seed ${r.seed}, ${r.inputs} inputs in ${r.cases} cases (${mib(r.bytes)}), ${(r.ms / 1000).toFixed(1)} s, peak RSS ${mib(r.peakRssBytes)}, peak heap ${mib(r.peakHeapBytes)}, heap growth ${mib(r.heapGrowthBytes)}${codes ? `; codes ${codes}` : ''}`;
}
