import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import type { grpc } from '../../protos/agent';
import { SANDBOX_SHM } from '../init';
import { allowsAllDevices, deviceRules, PRIVILEGED_DEVICES, sysctlNamespace, toRuntimeSpec } from '../oci';
import { GuestSandbox } from '../sandbox';

const invalid =
  (pattern: RegExp) =>
  (e: unknown): boolean =>
    e instanceof StatusError && e.code === Code.INVALID_ARGUMENT && pattern.test(e.message);
const base = (linux: grpc.ILinux, extra: Partial<grpc.ISpec> = {}): grpc.ISpec => ({
  Process: { Args: ['true'], Cwd: '/' },
  Linux: linux,
  ...extra,
});
const nsTypes = (spec: ReturnType<typeof toRuntimeSpec>): string[] =>
  (spec.linux as { namespaces: { type: string }[] }).namespaces.map((n) => n.type);

describe('agent OCI spec for a pod', () => {
  it("a namespace joined by path (a pod container) is the guest's own for ipc and uts, a new one for pid", () => {
    const out = toRuntimeSpec(
      base({
        Namespaces: [
          { Type: 'ipc', Path: '/proc/9/ns/ipc' },
          { Type: 'uts', Path: '/proc/9/ns/uts' },
          { Type: 'pid', Path: '/proc/9/ns/pid' },
          { Type: 'network', Path: '/var/run/netns/x' },
        ],
      }),
      'c1',
      '/r',
    );
    assert.deepEqual(nsTypes(out), ['pid', 'mount']);
    const own = toRuntimeSpec(
      base({ Namespaces: [{ Type: 'ipc' }, { Type: 'uts' }, { Type: 'network' }] }),
      'c1',
      '/r',
    );
    assert.deepEqual(
      nsTypes(own),
      ['pid', 'ipc', 'uts', 'mount'],
      "a pid namespace always: the agent runs in the guest's",
    );
    const shared = toRuntimeSpec(
      base({ Namespaces: [{ Type: 'pid', Path: '/proc/9/ns/pid' }] }),
      'c1',
      '/r',
      undefined,
      '/proc/42/ns/pid',
    );
    assert.deepEqual((shared.linux as { namespaces: object[] }).namespaces, [
      { type: 'pid', path: '/proc/42/ns/pid' },
      { type: 'mount' },
    ]);
  });

  it("a privileged container (every device allowed) gets the guest's loop, tun and fuse nodes, never the host's devices", () => {
    const hostLoop = { Path: '/dev/loop0', Type: 'b', Major: 7, Minor: 0 };
    const priv = toRuntimeSpec(
      base({
        Devices: [hostLoop, { Path: '/dev/sda', Type: 'b', Major: 8, Minor: 0 }],
        Resources: {
          Devices: [
            { Allow: false, Access: 'rwm' },
            { Allow: true, Type: 'a', Major: -1, Minor: -1, Access: 'rwm' },
          ],
        },
      }),
      'c1',
      '/r',
    );
    const linux = priv.linux as {
      devices: { path: string; type: string; major: number; minor: number }[];
      resources: { devices: object[] };
    };
    assert.deepEqual(
      linux.devices.map((d) => `${d.path} ${d.type} ${d.major}:${d.minor}`),
      PRIVILEGED_DEVICES.map((d) => `${d.path} ${d.type} ${d.major}:${d.minor}`),
    );
    assert.ok(
      linux.devices.some((d) => d.path === '/dev/loop-control') && !linux.devices.some((d) => d.path === '/dev/sda'),
    );
    assert.deepEqual(linux.resources.devices, [
      { allow: false, access: 'rwm' },
      { allow: true, type: 'a', access: 'rwm' },
    ]);

    // containerd's default rules (deny all, then a few allowed), a later deny-all, or a partial allow: not privileged.
    const plain = toRuntimeSpec(
      base({
        Devices: [hostLoop],
        Resources: {
          Devices: [
            { Allow: false, Access: 'rwm' },
            { Allow: true, Type: 'c', Major: 10, Minor: 229, Access: 'rwm' },
          ],
        },
      }),
      'c1',
      '/r',
    );
    assert.equal((plain.linux as { devices?: object[] }).devices, undefined);
    assert.deepEqual(
      (plain.linux as { resources?: object }).resources,
      {
        devices: [
          { allow: false, access: 'rwm' },
          { allow: true, type: 'c', major: 10, minor: 229, access: 'rwm' },
        ],
      },
      'the device rules are kept: the same numbers in the guest',
    );
    assert.equal(
      allowsAllDevices([
        { Allow: true, Access: 'rwm' },
        { Allow: false, Access: 'rwm' },
      ]),
      false,
    );
    assert.equal(allowsAllDevices([{ Allow: true, Access: 'rw' }]), false);
    assert.equal(allowsAllDevices([{ Allow: true, Type: 'b', Access: 'rwm' }]), false);
    assert.equal(allowsAllDevices(undefined), false);
    assert.throws(
      () => allowsAllDevices(Array.from({ length: 257 }, () => ({ Allow: true, Access: 'rwm' }))),
      invalid(/more than 256/),
    );
  });

  it('device cgroup rules are checked: type a, b or c, access of r, w and m, device numbers', () => {
    assert.deepEqual(deviceRules([{ Allow: true, Type: 'b', Major: 7, Minor: -1, Access: 'm' }]), [
      { allow: true, type: 'b', major: 7, access: 'm' },
    ]);
    assert.throws(() => deviceRules([{ Allow: true, Type: 'x', Access: 'rwm' }]), invalid(/type "x" is not a, b or c/));
    assert.throws(() => deviceRules([{ Allow: true, Access: 'rwx' }]), invalid(/access "rwx"/));
    assert.throws(
      () => deviceRules([{ Allow: true, Major: -2, Access: 'r' }]),
      invalid(/major -2 is not a device number/),
    );
    assert.throws(() => deviceRules([{ Allow: true, Minor: 2 ** 33, Access: 'r' }]), invalid(/minor 8589934592/));
  });

  it("a host name needs a UTS namespace of the container's own", () => {
    assert.equal(toRuntimeSpec(base({ Namespaces: [{ Type: 'uts' }] }, { Hostname: 'c1' }), 'c1', '/r').hostname, 'c1');
    assert.throws(
      () => toRuntimeSpec(base({ Namespaces: [] }, { Hostname: 'c1' }), 'c1', '/r'),
      invalid(/no UTS namespace of its own/),
    );
  });

  it('namespaced sysctls go to crun when the container has that namespace, to the guest otherwise; others are refused', () => {
    const out = toRuntimeSpec(
      base({
        Namespaces: [{ Type: 'ipc' }],
        Sysctl: { 'kernel.shmmax': '1000000', 'net.ipv4.ip_forward': '1', 'net/ipv4/conf/eth0.100/forwarding': '1' },
      }),
      'c1',
      '/r',
    );
    assert.deepEqual((out.linux as { sysctl: object }).sysctl, { 'kernel.shmmax': '1000000' });
    assert.deepEqual(out.guestSysctls, [
      { key: 'net.ipv4.ip_forward', value: '1' },
      { key: 'net/ipv4/conf/eth0.100/forwarding', value: '1' },
    ]);
    assert.throws(
      () => toRuntimeSpec(base({ Sysctl: { 'kernel.panic': '1' } }), 'c1', '/r'),
      invalid(/not a namespaced sysctl/),
    );
    assert.throws(
      () => toRuntimeSpec(base({ Sysctl: { 'net.ipv4.ip_forward': '1\n2' } }), 'c1', '/r'),
      invalid(/printable/),
    );
    for (const k of ['net..x', 'net/../../etc', '../net.x', 'net', 'net.', '/net.x'])
      assert.equal(sysctlNamespace(k), undefined, k);
    assert.equal(sysctlNamespace('fs.mqueue.msg_max'), 'ipc');
  });

  it("a volume may bind the pod's shm made by the agent, and no other guest path", () => {
    const out = toRuntimeSpec(
      base({}, { Mounts: [{ destination: '/dev/shm', type: 'bind', source: SANDBOX_SHM, options: ['rbind', 'rw'] }] }),
      'c1',
      '/r',
    );
    assert.deepEqual(out.mounts, [
      { destination: '/dev/shm', type: 'bind', source: SANDBOX_SHM, options: ['rbind', 'rw'] },
    ]);
    assert.throws(
      () =>
        toRuntimeSpec(
          base(
            {},
            { Mounts: [{ destination: '/dev/shm', type: 'bind', source: `${SANDBOX_SHM}/../x`, options: ['rbind'] }] },
          ),
          'c1',
          '/r',
        ),
      invalid(/not a normalized path inside the shared folder/),
    );
  });

  it("CreateSandbox checks the pod's shm storage before mounting anything", async () => {
    const sb = new GuestSandbox({ setHostname: false });
    const shm = (o: Partial<grpc.IStorage>): grpc.ICreateSandboxRequest => ({
      sandboxId: 's1',
      storages: [
        {
          driver: 'ephemeral',
          source: 'shm',
          fstype: 'tmpfs',
          mountPoint: SANDBOX_SHM,
          options: ['size=1048576'],
          ...o,
        },
      ],
    });
    await assert.rejects(sb.create(shm({ mountPoint: '/etc' })), invalid(/pod's shm/));
    await assert.rejects(sb.create(shm({ source: '/dev/sda' })), invalid(/pod's shm/));
    await assert.rejects(sb.create(shm({ options: ['size=1m', 'exec,suid'] })), invalid(/not allowed/));
    await assert.rejects(sb.create(shm({ options: [] })), invalid(/needs a size/));
    await assert.rejects(sb.create(shm({ fstype: 'ext4' })), invalid(/mounts tmpfs, not ext4/));
  });
});
