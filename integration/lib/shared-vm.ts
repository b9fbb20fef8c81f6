/**
 * A real VM with the sandbox's virtio-fs share mounted in the guest, as core's Sandbox makes it, for the tests that
 * drive SandboxVm and the agent directly; and the teardown that proves nothing of it is left.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { AgentClient } from '../../agent-client';
import { SandboxVm } from '../../core/vm';
import type { VirtioFsShare } from '../../fs-share';
import type { Hypervisor, VmConfig } from '../../hypervisor';
import { NOOP_LOGGER } from '../../log';
import { childProcesses, mountsContaining } from './guest';
import { sharedDirStorage } from '../../core/pod';

/**
 * Boots `config` and has the agent make the sandbox with the share at GUEST_SHARED_DIR (with `hostname`; after
 * `beforeCreate`, which a VM cloned from a template uses for its reseed and clock).
 */
export async function bootWithShare(
  hv: Hypervisor,
  config: VmConfig,
  sandboxId: string,
  opts: { hostname?: string; beforeCreate?: (agent: AgentClient) => Promise<void> } = {},
): Promise<SandboxVm> {
  const vm = await SandboxVm.boot(hv, config, { bootTimeoutMs: 120_000, logger: NOOP_LOGGER });
  await opts.beforeCreate?.(vm.agent);
  await vm.agent.createSandbox({
    sandboxId,
    ...(opts.hostname ? { hostname: opts.hostname } : {}),
    storages: [sharedDirStorage()],
  });
  return vm;
}

/**
 * The guest powers itself off, the share is cleaned up, and then no QEMU or virtiofsd of this process and no mount
 * under `dir` is left; `dir` is removed.
 */
export async function shutDownAndCheck(vm: SandboxVm | undefined, share: VirtioFsShare | undefined, dir: string) {
  try {
    if (vm) assert.equal((await vm.shutdown({ gracefulMs: 30_000 })).code, 0, 'the guest powered itself off');
  } finally {
    await share?.cleanup();
    assert.deepEqual(
      childProcesses(process.pid, ['qemu-system-x86_64', 'virtiofsd']),
      [],
      'no QEMU or virtiofsd left running',
    );
    assert.deepEqual(mountsContaining(dir), [], 'no mount left');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
