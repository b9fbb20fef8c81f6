/**
 * `containerd-shim-hull-v2 ... -id <id> -bundle <bundle> delete`: containerd runs it whenever a container's
 * connection to its shim closes, normally after Delete and Shutdown (then there is nothing left to do), and after
 * a shim died. It cleans up that one container from the sandbox's crash-recovery record:
 * - the daemon still lives and still has the container: ask it (Kill all, Delete), as containerd would have;
 * - the daemon is dead: stop the VM and virtiofsd (pids checked against their argv), unmount the share, remove the
 *   state folder; or, for a pod container, unshare only that container.
 * stdout carries only the encoded DeleteResponse; problems go to stderr (containerd logs them as warnings).
 */
import fs from 'node:fs';
import { Client } from 'ttrpc-ts';
import { processAlive, processMatches, readBundlePointer, recoverFromRecord, Store } from '../core';
import { errorMessage } from '../errors';
import { VirtioFsShare } from '../fs-share';
import { NOOP_LOGGER } from '../log';
import { task, TaskService, toTimestamp } from '../protos/containerd';
import { socketAddress, socketPath } from './address';
import type { ShimFlags } from './flags';

const SIGKILL = 9;
const DAEMON_CALL_MS = 2_000;

async function askDaemon(flags: ShimFlags, sandboxId: string): Promise<void> {
  const client = await Client.connect(socketAddress(flags.address, flags.namespace, sandboxId), { connectTimeoutMs: 1_000, metadata: { 'containerd-namespace-ttrpc': [flags.namespace] } });
  try {
    await client.call(TaskService.Kill, { id: flags.id, signal: SIGKILL, all: true }, { timeoutMs: DAEMON_CALL_MS }).catch(() => undefined);
    await client.call(TaskService.Delete, { id: flags.id }, { timeoutMs: DAEMON_CALL_MS });
  } finally {
    client.close();
  }
}

export async function deleteContainer(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  const warn = (msg: string): void => void fs.writeSync(2, `hull delete ${flags.id}: ${msg}\n`);
  let pid = 0;
  const recordFile = readBundlePointer(bundle);
  if (recordFile) {
    try {
      const record = Store.load(recordFile);
      const ours = record && (record.sandboxId === flags.id || record.containers[flags.id] !== undefined);
      if (record && ours) {
        pid = record.qemuPid ?? 0;
        const daemonAlive = processAlive(record.shimPid) && processMatches(record.shimPid, record.sandboxId);
        if (daemonAlive) {
          await askDaemon(flags, record.sandboxId).catch((err: unknown) => warn(`the shim daemon (pid ${record.shimPid}) did not delete it: ${errorMessage(err)}`));
        } else {
          const share = new VirtioFsShare({ root: record.shareRoot, sandboxId: record.shareId });
          for (const p of await recoverFromRecord(record, recordFile, flags.id, share, NOOP_LOGGER)) warn(p);
          // The dead daemon's socket (the daemon removes it when it exits normally).
          if (flags.id === record.sandboxId) fs.rmSync(socketPath(socketAddress(flags.address, flags.namespace, record.sandboxId)), { force: true });
        }
      }
    } catch (err) {
      warn(errorMessage(err));
    }
  }
  return task.DeleteResponse.encode({ pid, exitStatus: 128 + SIGKILL, exitedAt: toTimestamp(Date.now()) }).finish();
}
