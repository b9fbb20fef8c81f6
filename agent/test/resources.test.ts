import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import type { grpc } from '../../protos/agent';
import { parseCpuList, toOciResources } from '../resources';

const invalidArg = (e: unknown): boolean => e instanceof StatusError && e.code === Code.INVALID_ARGUMENT;
const MiB = 1 << 20;

describe('agent container resources', () => {
  it('keeps memory, CPU and pids limits in the OCI shape', () => {
    const r: grpc.ILinuxResources = {
      Memory: { Limit: 64 * MiB, Reservation: 32 * MiB, Swap: 128 * MiB, Kernel: 5, Swappiness: 10 },
      CPU: { Shares: 512, Quota: 50_000, Period: 100_000, Cpus: '0', Mems: '0', RealtimeRuntime: 7 },
      Pids: { Limit: 100 },
      BlockIO: { Weight: 10 },
    };
    assert.deepEqual(toOciResources(r, { cpus: new Set([0, 1]), mems: new Set([0]) }), {
      memory: { limit: 64 * MiB, reservation: 32 * MiB, swap: 128 * MiB },
      cpu: { shares: 512, quota: 50_000, period: 100_000, cpus: '0', mems: '0' },
      pids: { limit: 100 },
    });
    assert.deepEqual(toOciResources({ Memory: { Limit: -1, Swap: -1 }, CPU: { Quota: -1 }, Pids: { Limit: -1 } }), {
      memory: { limit: -1, swap: -1 },
      cpu: { quota: -1 },
      pids: { limit: -1 },
    });
  });

  it('leaves out what is not set, and is undefined when nothing applies', () => {
    assert.equal(toOciResources(undefined), undefined);
    assert.equal(toOciResources({}), undefined);
    assert.equal(
      toOciResources({ Memory: { Kernel: 10 }, BlockIO: { Weight: 10 }, Devices: [{ Allow: false, Access: 'rwm' }] }),
      undefined,
    );
    assert.deepEqual(toOciResources({ Memory: { Limit: 16 * MiB } }), { memory: { limit: 16 * MiB } });
  });

  it('refuses values the kernel or crun would refuse, or that make no sense', () => {
    const bad: grpc.ILinuxResources[] = [
      { Memory: { Limit: 4096 } },
      { Memory: { Limit: -2 } },
      { Memory: { Limit: 64 * MiB, Swap: 32 * MiB } },
      { Memory: { Limit: -1, Swap: 64 * MiB } },
      { Memory: { Reservation: -5 } },
      { CPU: { Shares: 1 } },
      { CPU: { Shares: 300_000 } },
      { CPU: { Quota: 10 } },
      { CPU: { Quota: -2 } },
      { CPU: { Period: 999 } },
      { CPU: { Period: 2_000_000 } },
      { CPU: { Cpus: '0-' } },
      { CPU: { Cpus: '3-1' } },
      { CPU: { Cpus: '0;1' } },
      { CPU: { Cpus: '2' } },
      { CPU: { Mems: '1' } },
      { Pids: { Limit: -3 } },
    ];
    for (const r of bad)
      assert.throws(
        () => toOciResources(r, { cpus: new Set([0, 1]), mems: new Set([0]) }),
        invalidArg,
        JSON.stringify(r),
      );
  });

  it('parses cpu lists', () => {
    assert.deepEqual([...parseCpuList('0-2,5', 'c')], [0, 1, 2, 5]);
    assert.deepEqual([...parseCpuList('7', 'c')], [7]);
    for (const bad of ['', ',', '1,', 'a', '1-2-3', '99999'])
      assert.throws(() => parseCpuList(bad, 'c'), invalidArg, bad);
  });
});
