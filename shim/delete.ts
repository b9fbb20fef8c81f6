/**
 * `containerd-shim-hull-v2 ... -id <id> -bundle <bundle> delete`: containerd runs it whenever a container's
 * connection to its shim closes, normally after Delete and Shutdown (then there is nothing left to do), and after
 * a shim died. It cleans up that one container from the sandbox's crash-recovery record:
 * - the daemon still lives and still has the container: ask it (Kill all, Delete), as containerd would have;
 * - the daemon is dead: stop every helper process the record names (QEMU, virtiofsd and its forked child; each
 *   checked by start time and argv), remove the taps and the port-forwarding rule, unmount the share, remove the
 *   state folder; or, for a pod container, unshare only that container. One recovery of a sandbox at a time (a
 *   lock), since containerd runs `delete` for each container of a crashed pod, possibly at once.
 * stdout carries only the encoded DeleteResponse; problems go to stderr (containerd logs them as warnings).
 */
import fs from 'node:fs';
import { Client } from 'ttrpc-ts';
import { readBundlePointer, recoverLocked, shimRuns, Store } from '../core';
import { errorMessage } from '../errors';
import { VirtioFsShare } from '../fs-share';
import { NOOP_LOGGER } from '../log';
import { task, TaskService, toTimestamp } from '../protos/containerd';
import { socketAddress, socketPath } from './address';
import type { ShimFlags } from './flags';

const SIGKILL = 9;
const DAEMON_CALL_MS = 2_000;

async function askDaemon(flags: ShimFlags, sandboxId: string): Promise<void> {
  const client = await Client.connect(socketAddress(flags.address, flags.namespace, sandboxId), {
    connectTimeoutMs: 1_000,
    metadata: { 'containerd-namespace-ttrpc': [flags.namespace] },
  });
  try {
    await client
      .call(TaskService.Kill, { id: flags.id, signal: SIGKILL, all: true }, { timeoutMs: DAEMON_CALL_MS })
      .catch(() => undefined);
    await client.call(TaskService.Delete, { id: flags.id }, { timeoutMs: DAEMON_CALL_MS });
  } finally {
    client.close();
  }
}

export async function deleteContainer(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const warn = (msg: string): void => void fs.writeSync(2, `hull delete ${flags.id}: ${msg}\n`);
  let pid = 0;
  const pointer = readBundlePointer(bundle);
  if (pointer) {
    try {
      // Refused unless it lies at <stateDir>/<namespace>/<sandbox>/state.json and names nothing outside that folder.
      const record = Store.load(pointer.record, pointer.stateDir);
      const ours =
        record &&
        record.namespace === flags.namespace &&
        (record.sandboxId === flags.id || record.containers[flags.id] !== undefined);
      if (record && ours) {
        pid = record.qemuPid ?? 0;
        if (shimRuns(record)) {
          await askDaemon(flags, record.sandboxId).catch((err: unknown) =>
            warn(`the shim daemon (pid ${record.shimPid}) did not delete it: ${errorMessage(err)}`),
          );
        } else {
          // Under the sandbox's lock, on the record as it is then: other containers' deletes may run at the same time.
          const problems = await recoverLocked({
            recordFile: pointer.record,
            stateDir: pointer.stateDir,
            namespace: flags.namespace,
            containerId: flags.id,
            share: (r) => new VirtioFsShare({ root: r.shareRoot, sandboxId: r.shareId }),
            logger: NOOP_LOGGER,
          });
          for (const p of problems) warn(p);
          // The dead daemon's socket (the daemon removes it when it exits normally).
          if (flags.id === record.sandboxId)
            fs.rmSync(socketPath(socketAddress(flags.address, flags.namespace, record.sandboxId)), { force: true });
        }
      }
    } catch (err) {
      warn(errorMessage(err));
    }
  }
  return task.DeleteResponse.encode({ pid, exitStatus: 128 + SIGKILL, exitedAt: toTimestamp(Date.now()) }).finish();
}
