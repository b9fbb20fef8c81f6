/**
 * `make demo`: a private containerd (its own root, state and socket under /tmp) with hull's checkout on its PATH
 * as the runtime io.containerd.hull.v2, a busybox image built from Debian's busybox-static and imported with
 * `ctr image import`, and one container run in a VM that prints the guest's kernel release. Everything it started
 * is stopped and removed at the end.
 */
import os from 'node:os';
import { BUSYBOX_IMAGE, importBusybox, startContainerd } from './lib/containerd';

async function main(): Promise<void> {
  const ctd = await startContainerd({ namespace: 'demo' });
  try {
    console.log(`private containerd at ${ctd.address}`);
    await importBusybox(ctd);
    console.log(`imported ${BUSYBOX_IMAGE}`);
    const args = ['run', '--rm', '--runtime', 'io.containerd.hull.v2', BUSYBOX_IMAGE, 'hull-demo', 'uname', '-r'];
    console.log(`$ ctr ${args.join(' ')}`);
    const t0 = Date.now();
    const r = await ctd.ctr(args);
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    if (r.code !== 0) throw new Error(`ctr run exited with ${r.code}`);
    console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s; the host kernel is ${os.release()}: that was a VM)`);
  } finally {
    await ctd.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
