/**
 * What the shim daemon loads before it serves (issue 15: its memory): the modules of features that are off by
 * default stay on disk, and the generated protobuf classes are made at their first use (scripts/gen-protos.mjs
 * lazyDefs), so a daemon that serves the Task API has made few of them. Each probe runs in a fresh process.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { daemonEnv, restoreDaemonEnv, DAEMON_NODE_FLAGS } from '../daemon-launch';

const dist = path.resolve(__dirname, '..', '..');

interface Probe {
  modules: string[];
  /** Per generated module: types (namespaces, messages, enums, services) made so far, and those not yet made. */
  types: Record<string, { made: number; pending: number }>;
  /** Whether each of a few types the daemon does not use at start is still to be made. */
  notMade: boolean[];
}

/** In a fresh process: the daemon's module graph, as main.js requires it; then what is loaded and made. */
function probe(): Probe {
  const script = `
    require(${JSON.stringify(path.join(dist, 'shim', 'daemon.js'))});
    const dist = ${JSON.stringify(dist + path.sep)};
    const modules = Object.keys(require.cache).map((f) =>
      f.startsWith(dist) ? f.slice(dist.length) : f.replace(/^.*node_modules\\//, 'node_modules/'));
    // Walks what has been made; a type not made yet is an accessor (a getter) on its parent.
    const count = (o, c, seen) => {
      for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(o))) {
        if (!/^[A-Za-z]/.test(k) || k === 'prototype' || k === 'constructor') continue;
        if (d.get) { c.pending++; continue; }
        const v = d.value;
        if (!v || (typeof v !== 'object' && typeof v !== 'function') || seen.has(v) || !/^[A-Z]|^[a-z][a-z0-9]*$/.test(k)) continue;
        if (typeof v === 'function' && !/^[A-Z]/.test(k)) continue;
        seen.add(v);
        c.made++;
        count(v, c, seen);
      }
      return c;
    };
    const types = {};
    for (const name of ['containerd', 'agent', 'hull']) {
      const file = require.resolve(dist + 'protos/gen/' + name + '.js');
      if (require.cache[file]) types[name] = count(require(file), { made: 0, pending: 0 }, new Set());
    }
    const gen = (name) => require(dist + 'protos/gen/' + name + '.js');
    const getter = (o, k) => typeof Object.getOwnPropertyDescriptor(o, k)?.get === 'function';
    const c = gen('containerd');
    const a = gen('agent');
    const notMade = [
      getter(c.io.containerd.cgroups.v1, 'Metrics'),
      getter(c.io.containerd.cgroups.v2, 'Metrics'),
      getter(c.containerd.task, 'v3'),
      getter(a.grpc, 'CgroupStats'),
      getter(a.grpc, 'Spec'),
    ];
    process.stdout.write(JSON.stringify({ modules, types, notMade }));
  `;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as Probe;
}

describe("the shim daemon's start loads what it serves with, not more", function () {
  this.timeout(30_000);
  let loaded: Probe;
  before(() => {
    loaded = probe();
  });

  it('leaves the modules of features off by default unloaded', () => {
    const lazy = [
      // the debug console ([agent] debug_console_enabled): required when a sandbox has it on
      'shim/debug-console.js',
      'protos/debug-socket.js',
      // the systemd cgroup driver: required for a systemd cgroupsPath
      'core/systemd.js',
      'dbus/',
      // tracing ([runtime] enable_tracing): the SDK and its gRPC exporter
      'shim/tracing-sdk.js',
      'node_modules/@opentelemetry/sdk-',
      'node_modules/@grpc/',
    ];
    const found = loaded.modules.filter((m) => lazy.some((l) => m.startsWith(l)));
    assert.deepEqual(found, [], `loaded at start: ${found.join(', ')}`);
  });

  it('makes the generated protobuf types it uses, not the others', () => {
    // Before lazyDefs every type was made at load (nothing pending).
    for (const name of ['containerd', 'agent', 'hull']) {
      const t = loaded.types[name];
      assert.ok(t, `protos/gen/${name}.js is loaded`);
      assert.ok(t.pending > 0, `protos/gen/${name}.js: all ${t.made} types made at start`);
    }
    // Stats' cgroup metrics (made at the first Stats), task API v3's own classes (v2's serve both), the agent's
    // cgroup statistics and OCI spec types.
    assert.deepEqual(loaded.notMade, [true, true, true, true, true], JSON.stringify(loaded.types));
  });
});

describe("the daemon's node settings (daemon-launch.ts)", () => {
  it('start launches the daemon with its own V8 settings, and no old-generation limit', () => {
    assert.ok(DAEMON_NODE_FLAGS.includes('--v8-pool-size=1'));
    assert.ok(!DAEMON_NODE_FLAGS.some((f) => f.startsWith('--max-old-space-size')));
  });

  it("holds malloc to one arena in the daemon only, not in what the daemon runs, and keeps containerd's choice", () => {
    const env = daemonEnv({ PATH: '/bin' });
    assert.equal(env.MALLOC_ARENA_MAX, '1');
    restoreDaemonEnv(env);
    assert.deepEqual(env, { PATH: '/bin' });

    const chosen = daemonEnv({ PATH: '/bin', MALLOC_ARENA_MAX: '4' });
    assert.deepEqual(chosen, { PATH: '/bin', MALLOC_ARENA_MAX: '4' });
    restoreDaemonEnv(chosen);
    assert.deepEqual(chosen, { PATH: '/bin', MALLOC_ARENA_MAX: '4' });
  });
});
