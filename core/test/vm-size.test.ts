import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { containerNeed, hotplugLimits, memoryAfterGrowth, vmTarget } from '../vm-size';

const MIB = 1024 * 1024;

describe('core/vm-size: hot-plug sizing', () => {
  it("a container's need: ceil(quota/period) vCPUs and its memory limit in MiB, rounded up; unlimited is nothing", () => {
    assert.deepEqual(containerNeed({ cpu: { quota: 150_000, period: 100_000 }, memory: { limit: 100 * MIB + 1 } }), {
      vcpus: 2,
      memoryMiB: 101,
    });
    assert.deepEqual(containerNeed({ cpu: { quota: -1, period: 100_000 }, memory: { limit: -1 } }), {
      vcpus: 0,
      memoryMiB: 0,
    });
    assert.deepEqual(containerNeed({ cpu: { quota: 50_000 } }).vcpus, 1, 'period 0/absent: the kernel default 100 ms');
    assert.deepEqual(containerNeed(undefined), { vcpus: 0, memoryMiB: 0 });
    assert.deepEqual(containerNeed({ cpu: { shares: 2048 } }, { vcpus: 3, memoryMiB: 64 }), {
      vcpus: 3,
      memoryMiB: 64,
    });
    assert.throws(() => containerNeed({ cpu: { quota: 1.5 } }), InvalidArgumentError);
    assert.throws(
      () => containerNeed({ memory: { limit: '1G' as unknown as number } }),
      /memory\.limit "1G" is not an integer/,
    );
  });

  it("the target: base + the larger of the pod's annotations and the containers' sum", () => {
    const base = { vcpus: 1, memoryMiB: 512 };
    const needs = [
      { vcpus: 1, memoryMiB: 100 },
      { vcpus: 2, memoryMiB: 100 },
    ];
    assert.deepEqual(vmTarget(base, { extraVcpus: 0, extraMemoryMiB: 0 }, needs), { vcpus: 4, memoryMiB: 712 });
    assert.deepEqual(vmTarget(base, { extraVcpus: 2, extraMemoryMiB: 300 }, needs), { vcpus: 4, memoryMiB: 812 });
  });

  it('the room: capped at the host, at least the boot size, memory in whole DIMMs above it; none without the keys', () => {
    const boot = { vcpus: 2, memoryMiB: 512 };
    const host = { cpus: 4, memoryMiB: 8192 };
    assert.equal(hotplugLimits({}, boot, host, 128, 256), undefined);
    assert.equal(hotplugLimits({ maxVcpus: 0, maxMemoryMiB: 0 }, boot, host, 128, 256), undefined);
    const l = hotplugLimits({ maxVcpus: 16, maxMemoryMiB: 1000 }, boot, host, 128, 256)!;
    assert.equal(l.maxVcpus, 4);
    assert.equal(l.maxMemoryMiB, 512 + 3 * 128);
    const small = hotplugLimits({ maxVcpus: 1, maxMemoryMiB: 100 }, boot, host, 128, 256)!;
    assert.deepEqual([small.maxVcpus, small.maxMemoryMiB], [2, 512], 'never below the boot size');
    const cpuOnly = hotplugLimits({ maxVcpus: 3 }, boot, host, 128, 256)!;
    assert.deepEqual([cpuOnly.maxVcpus, cpuOnly.maxMemoryMiB], [3, 512]);
    assert.equal(hotplugLimits({ maxMemoryMiB: 99_999 }, boot, host, 128, 256)!.maxMemoryMiB, 512 + 60 * 128);
    const big = { cpus: 64, memoryMiB: 1024 * 1024 };
    assert.equal(
      hotplugLimits({ maxMemoryMiB: 512 * 1024 }, boot, big, 128, 256)!.maxMemoryMiB,
      512 + 256 * 128,
      "at most QEMU's 256 DIMM slots",
    );
  });

  it('memory grows in whole DIMMs', () => {
    assert.equal(memoryAfterGrowth(512, 513, 128), 640);
    assert.equal(memoryAfterGrowth(512, 768, 128), 768);
    assert.equal(memoryAfterGrowth(512, 400, 128), 512);
  });
});
