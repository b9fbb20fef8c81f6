import assert from 'node:assert/strict';
import fs from 'node:fs';
import { InvalidArgumentError } from '../../errors';
import { podShm, podSizing, sizeVm } from '../pod';
import { testConfig } from './fakes';

describe('core pod sizing and shm', () => {
  it('adds quota/period rounded up, or whole CPUs of shares when there is no quota, and memory in MiB', () => {
    assert.deepEqual(podSizing({}), { extraVcpus: 0, extraMemoryMiB: 0 });
    const q = (quota: string, period: string, shares = '0', memory = '0') => podSizing({
      'io.kubernetes.cri.sandbox-cpu-quota': quota, 'io.kubernetes.cri.sandbox-cpu-period': period, 'io.kubernetes.cri.sandbox-cpu-shares': shares, 'io.kubernetes.cri.sandbox-memory': memory,
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
    assert.throws(() => sizeVm(vm, { extraVcpus: 0, extraMemoryMiB: 900 }, { cpus: 4, memoryMiB: 1000 }), /more than the host's 1000 MiB/);
  });

  it('measures the host tmpfs containerd made for the pod', () => {
    if (!fs.existsSync('/dev/shm')) return;
    const st = fs.statfsSync('/dev/shm');
    const shm = podShm({ mounts: [{ destination: '/dev/shm', type: 'bind', source: '/dev/shm', options: ['rbind'] }] });
    assert.equal(shm?.sizeBytes, st.type === 0x01021994 ? st.blocks * st.bsize : 64 * 1024 * 1024);
    assert.equal(podShm({ mounts: [] }), undefined);
  });
});
