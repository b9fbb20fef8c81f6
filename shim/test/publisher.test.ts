import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Code, Server, StatusError, type HandlerContext, type RequestOf } from 'ttrpc-ts';
import { NOOP_LOGGER } from '../../log';
import { EventsService, events } from '../../protos/containerd';
import { EventPublisher } from '../publisher';

type ForwardRequest = RequestOf<typeof EventsService.Forward>;
type Forwarded = { envelope: ForwardRequest['envelope']; metadata: Readonly<Record<string, string[]>> };
type Handler = (req: ForwardRequest, ctx: HandlerContext) => Promise<void>;

/** containerd's Events service on a unix socket in a temporary folder, recording every Forward that succeeded. */
class FakeContainerd {
  readonly received: Forwarded[] = [];
  attempts = 0;
  server: Server | undefined;
  /** Runs before a Forward is recorded; throw to fail it. */
  before: Handler = async () => undefined;

  constructor(readonly socket: string) {}

  async listen(): Promise<void> {
    this.server = new Server();
    this.server.register(EventsService, {
      Forward: async (req, ctx) => {
        this.attempts++;
        await this.before(req, ctx);
        this.received.push({ envelope: req.envelope, metadata: ctx.metadata });
        return {};
      },
    });
    await this.server.listen(this.socket);
  }

  topics(): string[] {
    return this.received.map((r) => r.envelope!.topic!);
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}

async function until(what: string, pred: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('shim EventPublisher (Events.Forward over a real ttrpc socket)', () => {
  let tmp: string;
  let ctd: FakeContainerd;
  let publisher: EventPublisher | undefined;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-pub-'));
    ctd = new FakeContainerd(path.join(tmp, 'containerd.sock.ttrpc'));
  });
  afterEach(async () => {
    await publisher?.close(100);
    publisher = undefined;
    await ctd.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('forwards events in order with namespace, topic, a non-zero timestamp, the payload and the namespace metadata', async () => {
    await ctd.listen();
    publisher = new EventPublisher(ctd.socket, 'k8s.io', NOOP_LOGGER, 10);
    const before = Date.now();
    publisher.publish('TaskCreate', { containerId: 'c1', bundle: '/b/c1', pid: 42 });
    publisher.publish('TaskStart', { containerId: 'c1', pid: 42 });
    for (let i = 0; i < 20; i++) publisher.publish('TaskExecAdded', { containerId: 'c1', execId: `e${i}` });
    publisher.publish('TaskExit', {
      containerId: 'c1',
      id: 'c1',
      pid: 42,
      exitStatus: 3,
      exitedAt: { seconds: 1_700_000_000, nanos: 5 },
    });
    await until('every event', () => ctd.received.length === 23);
    assert.deepEqual(ctd.topics(), [
      '/tasks/create',
      '/tasks/start',
      ...Array<string>(20).fill('/tasks/exec-added'),
      '/tasks/exit',
    ]);
    const execIds = ctd.received.slice(2, 22).map((r) => events.TaskExecAdded.decode(r.envelope!.event!.value!).execId);
    assert.deepEqual(
      execIds,
      Array.from({ length: 20 }, (_, i) => `e${i}`),
    );
    for (const r of ctd.received) {
      const env = r.envelope!;
      assert.equal(env.namespace, 'k8s.io');
      const ms = Number(env.timestamp!.seconds) * 1000 + Math.floor((env.timestamp!.nanos ?? 0) / 1e6);
      assert.ok(ms >= before - 1000 && ms <= Date.now() + 1000, `timestamp ${ms} is now`);
      assert.ok(Number(env.timestamp!.seconds) > 0);
      assert.deepEqual(r.metadata['containerd-namespace-ttrpc'], ['k8s.io']);
    }
    const exit = ctd.received[22]!.envelope!.event!;
    assert.equal(exit.type_url, 'containerd.events.TaskExit');
    const decoded = events.TaskExit.decode(exit.value!);
    assert.equal(decoded.containerId, 'c1');
    assert.equal(decoded.exitStatus, 3);
    assert.equal(Number(decoded.exitedAt?.seconds), 1_700_000_000);
  });

  it('retries an event containerd refused, keeping the order', async () => {
    await ctd.listen();
    let failures = 3;
    ctd.before = async (req) => {
      if (req.envelope?.topic === '/tasks/start' && failures-- > 0) throw new StatusError(Code.UNAVAILABLE, 'busy');
    };
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 5);
    publisher.publish('TaskCreate', { containerId: 'c1' });
    publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
    publisher.publish('TaskDelete', { containerId: 'c1' });
    await until('every event', () => ctd.received.length === 3);
    assert.deepEqual(ctd.topics(), ['/tasks/create', '/tasks/start', '/tasks/delete']);
    assert.equal(ctd.attempts, 6);
  });

  it('gives an event up after 5 attempts, and the next ones still go out', async () => {
    await ctd.listen();
    ctd.before = async (req) => {
      if (req.envelope?.topic === '/tasks/start') throw new StatusError(Code.INVALID_ARGUMENT, 'bad envelope');
    };
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 1);
    publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
    publisher.publish('TaskExit', { containerId: 'c1', id: 'c1' });
    await until('the exit', () => ctd.received.length === 1);
    assert.deepEqual(ctd.topics(), ['/tasks/exit']);
    assert.equal(ctd.attempts, 6);
  });

  it('delivers to a containerd that starts listening late', async () => {
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 20);
    publisher.publish('TaskCreate', { containerId: 'c1' });
    publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
    await sleep(50);
    await ctd.listen();
    publisher.publish('TaskExit', { containerId: 'c1', id: 'c1' });
    await until('every event', () => ctd.received.length === 3);
    assert.deepEqual(ctd.topics(), ['/tasks/create', '/tasks/start', '/tasks/exit']);
  });

  it('reconnects after containerd restarted', async () => {
    await ctd.listen();
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 10);
    publisher.publish('TaskCreate', { containerId: 'c1' });
    await until('the first event', () => ctd.received.length === 1);
    await ctd.close();
    fs.rmSync(ctd.socket, { force: true });
    const first = ctd.received;
    ctd = new FakeContainerd(ctd.socket);
    await ctd.listen();
    publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
    await until('the second event', () => ctd.received.length === 1);
    assert.deepEqual(
      [...first, ...ctd.received].map((r) => r.envelope!.topic),
      ['/tasks/create', '/tasks/start'],
    );
  });

  it('close() waits for queued events but no longer than its bound, then drops the rest', async () => {
    await ctd.listen();
    ctd.before = () => new Promise(() => undefined); // containerd never answers
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 10);
    publisher.publish('TaskCreate', { containerId: 'c1' });
    publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
    await until('the first attempt', () => ctd.attempts === 1);
    const t0 = Date.now();
    await publisher.close(150);
    const took = Date.now() - t0;
    assert.ok(took >= 140 && took < 1_000, `close took ${took} ms`);
    publisher.publish('TaskExit', { containerId: 'c1', id: 'c1' }); // ignored once closed
    await sleep(100);
    assert.equal(ctd.attempts, 1);
    assert.equal(ctd.received.length, 0);
  });

  it('close() during a retry pause: no further attempt, no connection left open', async () => {
    await ctd.listen();
    let failed = false;
    ctd.before = async () => {
      if (!failed) {
        failed = true;
        throw new StatusError(Code.UNAVAILABLE, 'busy');
      }
    };
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 100);
    publisher.publish('TaskCreate', { containerId: 'c1' });
    await until('the first attempt', () => ctd.attempts === 1);
    await publisher.close(10);
    await sleep(250); // past the retry pause
    assert.equal(ctd.attempts, 1, 'no attempt after close()');
    assert.equal(ctd.server!.connectionCount, 0, 'no connection left open');
  });

  it('an event published just as the queue finishes its last send is not stranded', async () => {
    await ctd.listen();
    publisher = new EventPublisher(ctd.socket, 'ns1', NOOP_LOGGER, 10);
    // Hold the queue's first send open after it went out, then complete it and publish in the very next
    // microtask: between the queue's last look at itself and the moment it reports being idle.
    const p = publisher as unknown as { send(item: unknown): Promise<void> };
    const realSend = p.send.bind(publisher);
    let complete!: () => void;
    p.send = (item) => {
      p.send = realSend;
      const held = new Promise<void>((resolve) => void realSend(item).then(() => (complete = resolve)));
      return held; // resolved directly by complete(): the queue resumes in the next microtask
    };
    publisher.publish('TaskCreate', { containerId: 'c1' });
    await until('the first event', () => ctd.received.length === 1 && complete !== undefined);
    complete();
    queueMicrotask(() => publisher!.publish('TaskStart', { containerId: 'c1', pid: 1 }));
    await until('the second event', () => ctd.received.length === 2, 1_000);
    assert.deepEqual(ctd.topics(), ['/tasks/create', '/tasks/start']);
  });
  describe('a bounded queue', () => {
    type Logged = { obj: Record<string, unknown>; msg: string };
    const recorder = (): { logger: typeof NOOP_LOGGER; warned: Logged[] } => {
      const warned: Logged[] = [];
      return {
        warned,
        logger: {
          ...NOOP_LOGGER,
          warn: (obj: object, msg: string) => warned.push({ obj: obj as Record<string, unknown>, msg }),
        },
      };
    };
    const exit = (id: string) => ({ containerId: 'c1', id, pid: 1, exitStatus: 0, exitedAt: { seconds: 1, nanos: 0 } });

    it('full: drops the oldest non-exit events (never the one in flight, never an exit) and logs how many per topic', async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      ctd.before = () => gate;
      await ctd.listen();
      const { logger, warned } = recorder();
      publisher = new EventPublisher(ctd.socket, 'default', logger, 10, 4);
      publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
      await until('the first event in flight', () => ctd.attempts === 1);
      publisher.publish('TaskExit', exit('c1'));
      for (let i = 0; i < 10; i++) publisher.publish('TaskExecAdded', { containerId: 'c1', execId: `e${i}` });
      assert.equal(publisher.queued, 4);
      release();
      await until('the kept events', () => ctd.received.length === 4);
      assert.deepEqual(ctd.topics(), ['/tasks/start', '/tasks/exit', '/tasks/exec-added', '/tasks/exec-added']);
      assert.deepEqual(
        ctd.received.slice(2).map((r) => events.TaskExecAdded.decode(r.envelope!.event!.value!).execId),
        ['e8', 'e9'],
      );
      await until('the summary', () => warned.some((w) => w.obj.dropped === 8));
      const summary = warned.find((w) => w.obj.dropped === 8)!;
      assert.deepEqual(summary.obj.byTopic, { '/tasks/exec-added': 8 });
      assert.match(summary.msg, /dropped 8 events/);
      assert.equal(
        warned.filter((w) => /queue to containerd is full/.test(w.msg)).length,
        1,
        'one warning when dropping starts, not one per event',
      );
    });

    it('exits are kept past the bound (up to four times it) when nothing else can go', async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      ctd.before = () => gate;
      await ctd.listen();
      publisher = new EventPublisher(ctd.socket, 'default', NOOP_LOGGER, 10, 2);
      publisher.publish('TaskStart', { containerId: 'c1', pid: 1 });
      await until('the first event in flight', () => ctd.attempts === 1);
      for (let i = 0; i < 5; i++) publisher.publish('TaskExit', exit(`e${i}`));
      assert.equal(publisher.queued, 6);
      for (let i = 5; i < 12; i++) publisher.publish('TaskExit', exit(`e${i}`));
      assert.equal(publisher.queued, 8, 'a hard bound even for exits');
      release();
      await until('the kept events', () => ctd.received.length === 8);
      assert.deepEqual(ctd.topics(), ['/tasks/start', ...Array<string>(7).fill('/tasks/exit')]);
    });
  });
});
