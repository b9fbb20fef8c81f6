import net from 'node:net';
import assert from 'node:assert/strict';
import {
  AGENT_LOG_FLOOD_ANNOTATION,
  AGENT_STOP_ANNOTATION,
  DebugHooks,
  debugHooksEnabled,
  floodLog,
  MAX_FLOOR_BYTES,
  PROFILE_ANNOTATION,
  SERIAL_FLOOR_ANNOTATION,
  TCP_FLOOR_ANNOTATION,
  writeFloor,
  type FloorTarget,
} from '../debug-hooks';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('agent DebugHooks (test-only faults, honoured only with hull.debug_hooks=1)', () => {
  it('is enabled only by hull.debug_hooks=1 on the kernel command line', () => {
    assert.equal(debugHooksEnabled(new Map([['hull.debug_hooks', '1']])), true);
    assert.equal(debugHooksEnabled(new Map([['hull.debug_hooks', '0']])), false);
    assert.equal(debugHooksEnabled(new Map([['hull.debug_hooks', '']])), false);
    assert.equal(debugHooksEnabled(new Map()), false);
  });

  it('stops the agent the given time after the annotated container starts, once', async () => {
    let stops = 0;
    const hooks = new DebugHooks(true, () => stops++);
    hooks.created('c1', { [AGENT_STOP_ANNOTATION]: '30', other: 'x' });
    hooks.created('c2', { other: 'x' });
    await sleep(60);
    assert.equal(stops, 0, 'not before the container starts');
    hooks.started('c2');
    hooks.started('c1');
    await sleep(10);
    assert.equal(stops, 0);
    await sleep(60);
    assert.equal(stops, 1);
    hooks.started('c1');
    await sleep(60);
    assert.equal(stops, 1);
  });

  it('ignores the annotation when hooks are off, a bad delay, and a container removed before it started', async () => {
    let stops = 0;
    const off = new DebugHooks(false, () => stops++);
    off.created('c1', { [AGENT_STOP_ANNOTATION]: '1' });
    off.started('c1');
    const on = new DebugHooks(true, () => stops++);
    for (const bad of ['-1', '1e3', 'soon', '99999999', '']) {
      on.created('c2', { [AGENT_STOP_ANNOTATION]: bad });
      on.started('c2');
    }
    on.created('c3', { [AGENT_STOP_ANNOTATION]: '1' });
    on.removed('c3');
    on.started('c3');
    await sleep(30);
    assert.equal(stops, 0);
  });

  it('floods the log on create with the record count asked for, only with hooks on and a sane count', async () => {
    const floods: number[] = [];
    const on = new DebugHooks(
      true,
      () => undefined,
      (n) => floods.push(n),
    );
    on.created('c1', { [AGENT_LOG_FLOOD_ANNOTATION]: '5000' });
    for (const bad of ['-1', '1e3', 'lots', '1000000', '']) on.created('c2', { [AGENT_LOG_FLOOD_ANNOTATION]: bad });
    new DebugHooks(
      false,
      () => undefined,
      (n) => floods.push(n),
    ).created('c3', { [AGENT_LOG_FLOOD_ANNOTATION]: '10' });
    assert.deepEqual(floods, [5000]);
    const seen: number[] = [];
    floodLog(1234, (i) => seen.push(i));
    assert.equal(seen.length, 500, 'in batches: the agent keeps serving in between');
    await sleep(20);
    assert.deepEqual(
      seen,
      Array.from({ length: 1234 }, (_, i) => i),
    );
  });

  it('channel floors: the serial port or a TCP address, on create, only with hooks on and checked values', async () => {
    const floors: FloorTarget[] = [];
    const on = new DebugHooks(
      true,
      () => undefined,
      () => undefined,
      (t) => floors.push(t),
    );
    on.created('c1', { [SERIAL_FLOOR_ANNOTATION]: String(64 << 20) });
    on.created('c2', { [TCP_FLOOR_ANNOTATION]: '10.1.2.1:4567:1000' });
    for (const bad of ['0', '-1', '1e3', String(MAX_FLOOR_BYTES + 1), ''])
      on.created('b', { [SERIAL_FLOOR_ANNOTATION]: bad });
    for (const bad of ['10.1.2.1:0:5', '10.1.2.1:70000:5', '999.1.2.1:80:5', 'host:80:5', '::1:80:5', '10.1.2.1:80:0'])
      on.created('b', { [TCP_FLOOR_ANNOTATION]: bad });
    new DebugHooks(
      false,
      () => undefined,
      () => undefined,
      (t) => floors.push(t),
    ).created('c3', { [SERIAL_FLOOR_ANNOTATION]: '10', [TCP_FLOOR_ANNOTATION]: '10.1.2.1:4567:10' });
    assert.deepEqual(floors, [
      { kind: 'serial', bytes: 64 << 20 },
      { kind: 'tcp', host: '10.1.2.1', port: 4567, bytes: 1000 },
    ]);
  });

  it('the TCP floor sends exactly the bytes asked for, then ends the connection', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const got = new Promise<number>((resolve) =>
      server.once('connection', (s) => {
        let n = 0;
        s.on('data', (c: Buffer) => (n += c.length)).on('end', () => resolve(n));
      }),
    );
    writeFloor({ kind: 'tcp', host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, bytes: 3_000_001 });
    assert.equal(await got, 3_000_001);
    server.close();
  });

  it('profiles the guest for the window asked for, after the delay asked for, only with hooks on', async () => {
    const windows: number[] = [];
    const make = (enabled: boolean): DebugHooks =>
      new DebugHooks(
        enabled,
        () => undefined,
        () => undefined,
        () => undefined,
        (ms) => windows.push(ms),
      );
    const on = make(true);
    on.created('c1', { [PROFILE_ANNOTATION]: '40+1500' });
    on.created('c2', { [PROFILE_ANNOTATION]: '700' });
    for (const bad of ['0', '60001', '1+', '+5', 'x', '1+2+3', '']) on.created('b', { [PROFILE_ANNOTATION]: bad });
    make(false).created('c3', { [PROFILE_ANNOTATION]: '5' });
    await sleep(10);
    assert.deepEqual(windows, [700]);
    await sleep(80);
    assert.deepEqual(windows, [700, 1500]);
  });
});
