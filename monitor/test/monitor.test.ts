import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { HullMonitor } from '../monitor';
import { escapeLabelValue, mergeExposition, writeExposition, type Family } from '../exposition';
import { findShimSockets, METRICS_SOCKET } from '../shims';
import type { PodLabels } from '../pods';

const SHIM_TEXT = (mem: number): string =>
  [
    '# HELP hull_guest_memory_bytes The guest memory.',
    '# TYPE hull_guest_memory_bytes gauge',
    `hull_guest_memory_bytes{kind="total"} ${mem}`,
    `hull_guest_memory_bytes{kind="free"} ${mem / 2}`,
    '# HELP hull_agent_rpc_duration_seconds Agent RPCs.',
    '# TYPE hull_agent_rpc_duration_seconds histogram',
    'hull_agent_rpc_duration_seconds_bucket{le="0.1",method="Check",outcome="ok"} 1',
    'hull_agent_rpc_duration_seconds_bucket{le="+Inf",method="Check",outcome="ok"} 2',
    'hull_agent_rpc_duration_seconds_sum{method="Check",outcome="ok"} 0.5',
    'hull_agent_rpc_duration_seconds_count{method="Check",outcome="ok"} 2',
    '# HELP hull_vm_vcpus vCPUs.',
    '# TYPE hull_vm_vcpus gauge',
    'hull_vm_vcpus 1',
    '',
  ].join('\n');

describe('hull-monitor', function () {
  let stateDir: string;
  const servers: http.Server[] = [];

  beforeEach(() => {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hull-mon-'));
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  /** A fake shim: an HTTP server on `<state>/<ns>/<id>/metrics.sock` answering with `handler`. */
  async function fakeShim(id: string, handler: http.RequestListener, ns = 'k8s.io'): Promise<string> {
    const dir = path.join(stateDir, ns, id);
    fs.mkdirSync(dir, { recursive: true });
    const sock = path.join(dir, METRICS_SOCKET);
    const server = http.createServer(handler);
    await new Promise<void>((r) => server.listen(sock, r));
    servers.push(server);
    return sock;
  }
  const answer =
    (text: string): http.RequestListener =>
    (_req, res) =>
      res.writeHead(200, { 'content-type': 'text/plain' }).end(text);

  /** A socket file nobody listens on (a shim killed by SIGKILL leaves one). */
  async function staleSocket(id: string): Promise<void> {
    const sock = await fakeShim(id, answer(''));
    const keep = `${sock}.keep`;
    fs.linkSync(sock, keep);
    const s = servers.pop()!;
    await new Promise((r) => s.close(r)); // unlinks metrics.sock
    fs.renameSync(keep, sock);
  }

  it('merges every shim once per family, with sandbox_id and the pod labels CRI gives', async () => {
    await fakeShim('sb1', answer(SHIM_TEXT(1000)));
    await fakeShim('sb2', answer(SHIM_TEXT(2000)));
    const pods = new Map<string, PodLabels>([
      ['sb1', { pod_name: 'web-"1"', pod_namespace: 'default', pod_uid: 'u-1' }],
    ]);
    const mon = new HullMonitor({ stateDir, pods: () => Promise.resolve(pods), timeoutMs: 2000, maxBytes: 1 << 20 });
    const text = await mon.scrape();
    assert.equal(text.match(/^# TYPE hull_guest_memory_bytes gauge$/gm)?.length, 1);
    assert.equal(text.match(/^# TYPE hull_agent_rpc_duration_seconds histogram$/gm)?.length, 1);
    assert.match(
      text,
      /^hull_guest_memory_bytes\{sandbox_id="sb1",containerd_namespace="k8s.io",pod_name="web-\\"1\\"",pod_namespace="default",pod_uid="u-1",kind="total"\} 1000$/m,
    );
    assert.match(
      text,
      /^hull_guest_memory_bytes\{sandbox_id="sb2",containerd_namespace="k8s.io",kind="total"\} 2000$/m,
    );
    assert.match(text, /^hull_vm_vcpus\{sandbox_id="sb2",containerd_namespace="k8s.io"\} 1$/m);
    assert.match(text, /^hull_agent_rpc_duration_seconds_bucket\{sandbox_id="sb1",.*le="\+Inf".*\} 2$/m);
    assert.match(text, /^hull_monitor_shims 2$/m);
    assert.match(text, /^hull_monitor_shim_up\{sandbox_id="sb1",containerd_namespace="k8s.io"\} 1$/m);
    // promtool (Debian's prometheus) accepts the union.
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  });

  it('skips and counts a stale socket (dead shim), serving the others', async () => {
    await fakeShim('live', answer(SHIM_TEXT(1000)));
    await staleSocket('dead');
    assert.equal(findShimSockets(stateDir).length, 2);
    const mon = new HullMonitor({ stateDir, timeoutMs: 2000, maxBytes: 1 << 20 });
    const text = await mon.scrape();
    assert.match(
      text,
      /^hull_guest_memory_bytes\{sandbox_id="live",containerd_namespace="k8s.io",kind="total"\} 1000$/m,
    );
    assert.doesNotMatch(text, /^hull_guest_memory_bytes\{sandbox_id="dead"/m);
    assert.match(text, /^hull_monitor_scrape_errors_total\{reason="refused"\} 1$/m);
    assert.match(text, /^hull_monitor_shim_up\{sandbox_id="dead",containerd_namespace="k8s.io"\} 0$/m);
  });

  it('gives each shim the deadline: a hung shim is cut off and counted, the scrape returns in time', async () => {
    await fakeShim('slow', () => undefined); // never answers
    await fakeShim('fast', answer(SHIM_TEXT(1000)));
    const mon = new HullMonitor({ stateDir, timeoutMs: 300, maxBytes: 1 << 20 });
    const t0 = Date.now();
    const text = await mon.scrape();
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 2000, `took ${took} ms`);
    assert.match(text, /^hull_monitor_scrape_errors_total\{reason="timeout"\} 1$/m);
    assert.match(text, /sandbox_id="fast"/);
  });

  it('caps the bytes read from a shim', async () => {
    const huge = `# TYPE x gauge\n${'x 1\n'.repeat(100_000)}`;
    await fakeShim('big', answer(huge));
    await fakeShim('small', answer(SHIM_TEXT(5)));
    const mon = new HullMonitor({ stateDir, timeoutMs: 2000, maxBytes: 64 * 1024 });
    const text = await mon.scrape();
    assert.match(text, /^hull_monitor_scrape_errors_total\{reason="too_large"\} 1$/m);
    assert.doesNotMatch(text, /^x\{/m);
    assert.match(text, /^hull_monitor_shim_up\{sandbox_id="big",containerd_namespace="k8s.io"\} 0$/m);
    assert.match(text, /sandbox_id="small"/);
  });

  it('serves sandbox ids alone when CRI fails, and counts it', async () => {
    await fakeShim('sb1', answer(SHIM_TEXT(1000)));
    const mon = new HullMonitor({
      stateDir,
      pods: () => Promise.reject(new Error('no containerd')),
      timeoutMs: 2000,
      maxBytes: 1 << 20,
    });
    const text = await mon.scrape();
    assert.match(
      text,
      /^hull_guest_memory_bytes\{sandbox_id="sb1",containerd_namespace="k8s.io",kind="total"\} 1000$/m,
    );
    assert.match(text, /^hull_monitor_cri_errors_total 1$/m);
  });

  it('ignores folders whose names are not ids, and files that are not sockets', async () => {
    fs.mkdirSync(path.join(stateDir, 'k8s.io', 'bad name'), { recursive: true });
    fs.writeFileSync(path.join(stateDir, 'k8s.io', 'bad name', METRICS_SOCKET), '');
    fs.mkdirSync(path.join(stateDir, 'k8s.io', 'plain'), { recursive: true });
    fs.writeFileSync(path.join(stateDir, 'k8s.io', 'plain', METRICS_SOCKET), '');
    assert.deepEqual(findShimSockets(stateDir), []);
  });
});

describe('hull-monitor exposition merge', () => {
  it('drops malformed lines and samples of undeclared families, keeps the rest', () => {
    const families = new Map<string, Family>();
    const dropped = mergeExposition(
      [
        '# TYPE a gauge',
        'a 1',
        'a{x="1"} not-a-number',
        'b 2',
        'a{x="}"} 3',
        '{bad} 1',
        '# TYPE c counter',
        'c_total 4',
      ].join('\n'),
      { sandbox_id: 's' },
      families,
    );
    assert.equal(dropped, 4);
    assert.equal(
      writeExposition(families.values()),
      '# TYPE a gauge\na{sandbox_id="s"} 1\na{sandbox_id="s",x="}"} 3\n',
    );
  });

  it('escapes label values', () => {
    assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  });
});
