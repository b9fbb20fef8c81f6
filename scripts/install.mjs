#!/usr/bin/env node
// `make install`: the shim bundled into one file (esbuild) under <prefix>/lib/hull, a launcher at
// <prefix>/bin/containerd-shim-hull-v2 (a real file: the shim finds the guest artefacts relative to its own
// folder), the guest artefacts under <prefix>/share/hull/guest, and the default configuration at
// /etc/hull/configuration.toml unless one exists (then it goes next to it as configuration.toml.default); hull-monitor
// bundled likewise, with a launcher <prefix>/bin/hull-monitor and its systemd unit <prefix>/lib/systemd/system; hull
// (check, env) bundled likewise, with a launcher <prefix>/bin/hull.
// Prints the containerd config.toml fragment and a RuntimeClass to use it.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const prefix = path.resolve(args[args.indexOf('--prefix') + 1] ?? '/usr/local');
const etc = path.resolve(args.includes('--etc') ? args[args.indexOf('--etc') + 1] : '/etc/hull');

const libDir = path.join(prefix, 'lib', 'hull');
const binDir = path.join(prefix, 'bin');
const guestDir = path.join(prefix, 'share', 'hull', 'guest');
for (const d of [libDir, binDir, guestDir, etc]) fs.mkdirSync(d, { recursive: true });

// Four bundles, so that `start` (part of every container start) parses only its own small one: main.js keeps
// requiring ./daemon and ./delete lazily, and those resolve to their own bundles next to it. The daemon requires
// ./tracing-sdk (the OpenTelemetry SDK and its OTLP/gRPC exporter) only when tracing is on: a bundle of its own too.
const bundle = (entry, outfile, external = []) =>
  build({
    entryPoints: [path.join(root, 'dist', 'shim', entry)],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile: path.join(libDir, outfile),
    external,
    logLevel: 'warning',
  });
await bundle('main.js', 'shim.js', ['./daemon', './delete']);
await bundle('daemon.js', 'daemon.js', ['./tracing-sdk']);
await bundle('tracing-sdk.js', 'tracing-sdk.js');
await bundle('delete.js', 'delete.js');
// hull-monitor (monitor/): its own bundle, launcher and systemd unit (written, not enabled).
await build({
  entryPoints: [path.join(root, 'dist', 'monitor', 'main.js')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: path.join(libDir, 'monitor.js'),
  logLevel: 'warning',
});
// hull (cli/: check, env), the operator's command: its own bundle and launcher. It sits in the shim's bin/, so it
// finds the guest artefacts (<prefix>/share/hull/guest) and the configuration as the shim does.
await build({
  entryPoints: [path.join(root, 'dist', 'cli', 'main.js')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: path.join(libDir, 'hull.js'),
  logLevel: 'warning',
});
// The native addons the bundles load (hull-vsock: the agent channel under KVM; hull-netns: port forwarding): each
// package looks for its addon next to the JavaScript that requires it when node-gyp's build folder is not there.
for (const [pkgDir, file] of [
  ['vsock', 'hull_vsock.node'],
  ['netns', 'hull_netns.node'],
]) {
  const src = path.join(root, pkgDir, 'build', 'Release', file);
  if (!fs.existsSync(src)) throw new Error(`${src} is missing: run \`make build\``);
  fs.copyFileSync(src, path.join(libDir, `.${file}.tmp`));
  fs.renameSync(path.join(libDir, `.${file}.tmp`), path.join(libDir, file));
}
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
fs.writeFileSync(
  path.join(libDir, 'package.json'),
  JSON.stringify({ name: pkg.name, version: pkg.version, private: true }) + '\n',
);

const launcher = path.join(binDir, 'containerd-shim-hull-v2');
fs.writeFileSync(
  `${launcher}.tmp`,
  `#!/usr/bin/env node\n'use strict';\nrequire(${JSON.stringify(path.join(libDir, 'shim.js'))}).main(__filename);\n`,
  { mode: 0o755 },
);
fs.renameSync(`${launcher}.tmp`, launcher);

const monitorLauncher = path.join(binDir, 'hull-monitor');
fs.writeFileSync(
  `${monitorLauncher}.tmp`,
  `#!/usr/bin/env node\n'use strict';\nrequire(${JSON.stringify(path.join(libDir, 'monitor.js'))}).main();\n`,
  { mode: 0o755 },
);
fs.renameSync(`${monitorLauncher}.tmp`, monitorLauncher);
const hullLauncher = path.join(binDir, 'hull');
fs.writeFileSync(
  `${hullLauncher}.tmp`,
  `#!/usr/bin/env node\n'use strict';\nrequire(${JSON.stringify(path.join(libDir, 'hull.js'))}).main(__filename);\n`,
  { mode: 0o755 },
);
fs.renameSync(`${hullLauncher}.tmp`, hullLauncher);
const unitDir = path.join(prefix, 'lib', 'systemd', 'system');
fs.mkdirSync(unitDir, { recursive: true });
const unit = path.join(unitDir, 'hull-monitor.service');
fs.writeFileSync(
  `${unit}.tmp`,
  fs
    .readFileSync(path.join(root, 'config', 'hull-monitor.service'), 'utf8')
    .replaceAll('@BINDIR@', binDir)
    .replaceAll('@DOCDIR@', path.join(prefix, 'share', 'hull')),
);
fs.renameSync(`${unit}.tmp`, unit);

for (const f of ['vmlinuz', 'initrd.img', 'rootfs.img', 'manifest.json']) {
  const src = path.join(root, 'guest', 'out', f);
  if (!fs.existsSync(src)) throw new Error(`${src} is missing: run \`make guest\``);
  fs.copyFileSync(src, path.join(guestDir, `.${f}.tmp`));
  fs.renameSync(path.join(guestDir, `.${f}.tmp`), path.join(guestDir, f));
}

const conf = path.join(etc, 'configuration.toml');
const shipped = path.join(root, 'config', 'configuration.toml');
const confTarget = fs.existsSync(conf) ? `${conf}.default` : conf;
fs.copyFileSync(shipped, confTarget);

console.log(`installed:
  ${launcher}
  ${monitorLauncher}
  ${hullLauncher}   (hull check: is this host ready for pods? hull env: the effective configuration)
  ${unit}   (systemctl daemon-reload && systemctl enable --now hull-monitor)
  ${libDir}/{shim,daemon,delete,monitor,tracing-sdk,hull}.js, hull_vsock.node, hull_netns.node
  ${guestDir}/{vmlinuz,initrd.img,rootfs.img,manifest.json}
  ${confTarget}${confTarget !== conf ? `   (kept your ${conf})` : ''}

containerd (/etc/containerd/config.toml, version 2), then restart containerd:

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
    runtime_type = "io.containerd.hull.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull.options]
      ConfigPath = "${conf}"

  # only where root may not write a negative oom_score_adj (containers, some VMs):
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true

containerd 2.x (version = 3): the same under the CRI runtime plugin:

  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.hull]
    runtime_type = "io.containerd.hull.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.hull.options]
      ConfigPath = "${conf}"

Kubernetes (overhead: the base guest, default_memory, plus [hypervisor] memory_overhead; see the README):

  apiVersion: node.k8s.io/v1
  kind: RuntimeClass
  metadata:
    name: hull
  handler: hull
  overhead:
    podFixed:
      memory: "768Mi"
      cpu: "250m"

Prometheus (hull-monitor listens on 127.0.0.1:8090; every shim's metrics with sandbox_id, pod_name, pod_namespace, pod_uid):

  scrape_configs:
    - job_name: hull
      static_configs:
        - targets: ["127.0.0.1:8090"]

Without Kubernetes: ctr run --rm --runtime io.containerd.hull.v2 <image> <id> uname -r`);
