import assert from 'node:assert/strict';
import fs from 'node:fs';
import { InvalidArgumentError } from '../../errors';
import type { OciSpec } from '../../agent-client';
import {
  checkNoHostNamespaces,
  checkNoIdmappedMounts,
  checkNoSharedPropagation,
  IDMAP_REFUSAL,
  podShm,
  podSizing,
  sizeVm,
} from '../pod';
import { testConfig } from './fakes';

describe('core pod sizing and shm', () => {
  it('adds quota/period rounded up, or whole CPUs of shares when there is no quota, and memory in MiB', () => {
    assert.deepEqual(podSizing({}), { extraVcpus: 0, extraMemoryMiB: 0 });
    const q = (quota: string, period: string, shares = '0', memory = '0') =>
      podSizing({
        'io.kubernetes.cri.sandbox-cpu-quota': quota,
        'io.kubernetes.cri.sandbox-cpu-period': period,
        'io.kubernetes.cri.sandbox-cpu-shares': shares,
        'io.kubernetes.cri.sandbox-memory': memory,
      });
    assert.equal(q('250000', '100000').extraVcpus, 3);
    assert.equal(q('100000', '100000').extraVcpus, 1);
    assert.equal(q('-1', '100000', '2048').extraVcpus, 2);
    assert.equal(q('0', '0', '512').extraVcpus, 0);
    assert.equal(q('0', '0', '0', String(64 * 1024 * 1024 + 1)).extraMemoryMiB, 65);
    assert.throws(() => q('1e5', '100000'), InvalidArgumentError);
  });

  it('caps vCPUs at the host and refuses more memory than the host has', () => {
    const vm = { ...testConfig(), vcpus: 1, memoryMiB: 256 };
    const r = sizeVm(vm, { extraVcpus: 9, extraMemoryMiB: 100 }, { cpus: 4, memoryMiB: 1000 });
    assert.equal(r.vm.vcpus, 4);
    assert.equal(r.vm.memoryMiB, 356);
    assert.equal(r.capped.length, 1);
    assert.throws(
      () => sizeVm(vm, { extraVcpus: 0, extraMemoryMiB: 900 }, { cpus: 4, memoryMiB: 1000 }),
      /more than the host's 1000 MiB/,
    );
  });

  it('measures the host tmpfs containerd made for the pod', () => {
    if (!fs.existsSync('/dev/shm')) return;
    const st = fs.statfsSync('/dev/shm');
    const shm = podShm({ mounts: [{ destination: '/dev/shm', type: 'bind', source: '/dev/shm', options: ['rbind'] }] });
    assert.equal(shm?.sizeBytes, st.type === 0x01021994 ? st.blocks * st.bsize : 64 * 1024 * 1024);
    assert.equal(podShm({ mounts: [] }), undefined);
  });

  it('checkNoSharedPropagation: refuses a shared or rshared bind (Bidirectional), keeps rslave and private', () => {
    const spec = (options: string[]): OciSpec => ({
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc', options: [] },
        { destination: '/data', type: 'bind', source: '/srv/data', options },
      ],
    });
    for (const o of ['rshared', 'shared']) {
      assert.throws(
        () => checkNoSharedPropagation(spec(['rbind', o]), 'c1'),
        (e: Error) =>
          e instanceof InvalidArgumentError &&
          e.message.startsWith(`container c1: mount "/data" asks for ${o} propagation`) &&
          /a VM cannot give/.test(e.message) &&
          /rslave/.test(e.message),
      );
    }
    for (const o of ['rslave', 'slave', 'rprivate', 'private']) checkNoSharedPropagation(spec(['rbind', o]), 'c1');
    checkNoSharedPropagation({}, 'c1');
  });

  it('checkNoIdmappedMounts: refuses idmap/ridmap options and uid/gid mappings on a mount, saying why', () => {
    const mapping = [{ containerID: 0, hostID: 100000, size: 65536 }];
    const cases: [Record<string, unknown>, string][] = [
      [{ options: ['rbind', 'idmap'] }, 'idmap'],
      [{ options: ['rbind', 'ridmap'] }, 'ridmap'],
      [{ options: ['rbind'], uidMappings: mapping, gidMappings: mapping }, 'uid/gid mappings'],
      [{ gidMappings: [] }, 'uid/gid mappings'],
    ];
    for (const [extra, what] of cases) {
      const spec = {
        mounts: [
          { destination: '/proc', type: 'proc', source: 'proc', options: [] },
          { destination: '/data', type: 'bind', source: '/srv/data', ...extra },
        ],
      } as OciSpec;
      assert.throws(
        () => checkNoIdmappedMounts(spec, 'c1'),
        (e: Error) =>
          e instanceof InvalidArgumentError &&
          e.message.startsWith(`container c1: mount "/data" is idmapped (${what}), which hull cannot do: `) &&
          e.message.includes(IDMAP_REFUSAL) &&
          /virtio-fs/.test(e.message) &&
          /6\.1/.test(e.message),
        what,
      );
    }
    checkNoIdmappedMounts(
      { mounts: [{ destination: '/data', type: 'bind', source: '/x', options: ['rbind', 'ro'] }] },
      'c1',
    );
    checkNoIdmappedMounts({}, 'c1');
  });

  describe('checkNoHostNamespaces: the host namespaces a VM cannot share', () => {
    // linux.namespaces of the sandbox specs containerd 1.6's CRI plugin writes (read from a runc pod's config.json).
    const netns = { type: 'network', path: '/var/run/netns/cni-1' };
    const POD = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, netns];
    const spec = (namespaces: { type: string; path?: string }[]): OciSpec => ({ linux: { namespaces } });
    const refused = (s: OciSpec, role: 'sandbox' | 'container' | undefined, re: RegExp) =>
      assert.throws(
        () => checkNoHostNamespaces(s, role, 'p1'),
        (e: Error) => e instanceof InvalidArgumentError && re.test(e.message) && /a VM cannot share/.test(e.message),
      );

    it('accepts a pod with its own namespaces, a pod container joining them, and a spec with no namespace list', () => {
      checkNoHostNamespaces(spec(POD), 'sandbox', 'p1');
      checkNoHostNamespaces(
        spec([
          { type: 'pid' },
          { type: 'mount' },
          { type: 'ipc', path: '/proc/9/ns/ipc' },
          { type: 'uts', path: '/proc/9/ns/uts' },
          { type: 'network', path: '/proc/9/ns/net' },
        ]),
        'container',
        'c1',
      );
      checkNoHostNamespaces({}, undefined, 'c1');
      checkNoHostNamespaces({ linux: {} }, 'sandbox', 'p1');
    });

    it('hostNetwork (no network, no uts entry): names the network namespace, the CRI option and the reason, not UTS', () => {
      const s = spec([{ type: 'pid' }, { type: 'ipc' }, { type: 'mount' }]);
      refused(
        s,
        'sandbox',
        /^pod sandbox p1 asks for the host's network namespace \(hostNetwork: namespace_options\.network = NODE\).*only a loopback interface/,
      );
      assert.throws(
        () => checkNoHostNamespaces(s, 'sandbox', 'p1'),
        (e: Error) => !/UTS/.test(e.message),
      );
    });

    it('hostIPC (no ipc entry) and hostPID (no pid entry) are refused, each by name; both at once in one message', () => {
      refused(
        spec(POD.filter((n) => n.type !== 'ipc')),
        'sandbox',
        /the host's IPC namespace \(hostIPC: namespace_options\.ipc = NODE\).*shared memory/,
      );
      refused(
        spec(POD.filter((n) => n.type !== 'pid')),
        'sandbox',
        /the host's PID namespace \(hostPID: namespace_options\.pid = NODE\).*signal the host's/,
      );
      refused(
        spec(POD.filter((n) => n.type !== 'pid' && n.type !== 'ipc')),
        'container',
        /^container p1 of a pod asks for the host's IPC namespace .* and the host's PID namespace/,
      );
    });

    it('a plain container (ctr run --net-host: no network entry) is refused the same way, naming the spec and the flag', () => {
      refused(
        spec([{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }]),
        undefined,
        /^container p1 asks for the host's network namespace \(no "network" entry in linux\.namespaces, as ctr run --net-host writes\)/,
      );
      refused(
        spec([{ type: 'pid' }, { type: 'ipc' }, { type: 'mount' }, { type: 'network' }]),
        undefined,
        /the host's UTS namespace \(no "uts" entry/,
      );
    });
  });
});
