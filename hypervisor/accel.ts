/**
 * Host capability detection: which accelerator can really run a stock guest kernel, whether the agent can use
 * vsock, and which guest CID to ask for. Every check goes through a `HostProbe` so tests can pretend any host.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { FailedPreconditionError } from '../errors';
import type { Accel, AgentTransport } from './types';

export const KVM_DEVICE = '/dev/kvm';
/** The paravirtual KVM module (PVM). /dev/kvm opens fine under it, but a stock guest kernel hangs silently. */
export const KVM_PVM_MODULE = '/sys/module/kvm_pvm';
export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock';
export const VHOST_NET_DEVICE = '/dev/vhost-net';

/** What accel/transport detection asks the host. */
export interface HostProbe {
  exists(path: string): boolean;
  /** Whether open(path, O_RDWR) succeeds (closed again at once). */
  openReadWrite(path: string): boolean;
}

export const realHostProbe: HostProbe = {
  exists: (p) => fs.existsSync(p),
  openReadWrite: (p) => {
    try {
      fs.closeSync(fs.openSync(p, fs.constants.O_RDWR));
      return true;
    } catch {
      return false;
    }
  },
};

export interface Choice<T> {
  value: T;
  /** Why, for the log line ("kvm_pvm is loaded: ..."). */
  reason: string;
}

/**
 * 'auto' picks KVM only when /dev/kvm opens read-write and kvm_pvm is not loaded; otherwise TCG, with the reason.
 * 'kvm' forces KVM (FailedPreconditionError when /dev/kvm cannot be opened; only a reason-worthy note under
 * kvm_pvm, since someone may run a PVM-enabled guest kernel). 'tcg' forces TCG.
 */
export function chooseAccel(requested: 'auto' | Accel, probe: HostProbe = realHostProbe): Choice<Accel> {
  if (requested === 'tcg') return { value: 'tcg', reason: 'configured: accel=tcg' };
  const pvm = probe.exists(KVM_PVM_MODULE);
  const kvmUsable = probe.openReadWrite(KVM_DEVICE);
  if (requested === 'kvm') {
    if (!kvmUsable) {
      const why = probe.exists(KVM_DEVICE) ? 'cannot be opened read-write' : 'does not exist';
      throw new FailedPreconditionError(`accel=kvm is configured but ${KVM_DEVICE} ${why}`);
    }
    return {
      value: 'kvm',
      reason: pvm
        ? 'configured: accel=kvm (warning: kvm_pvm is loaded; a stock guest kernel hangs under it)'
        : 'configured: accel=kvm',
    };
  }
  if (!probe.exists(KVM_DEVICE)) return { value: 'tcg', reason: `${KVM_DEVICE} does not exist; using TCG` };
  if (!kvmUsable) return { value: 'tcg', reason: `${KVM_DEVICE} cannot be opened read-write; using TCG` };
  if (pvm) return { value: 'tcg', reason: 'kvm_pvm is loaded: a stock guest kernel hangs under it; using TCG' };
  return { value: 'kvm', reason: `${KVM_DEVICE} opens read-write and kvm_pvm is not loaded; using KVM` };
}

/**
 * 'auto' = vsock when /dev/vhost-vsock opens read-write (QEMU's vhost-vsock-pci needs exactly that), else a
 * virtio-serial port, with the reason. 'vsock' without a usable device is a FailedPreconditionError saying why.
 */
export function chooseTransport(
  requested: 'auto' | AgentTransport,
  probe: HostProbe = realHostProbe,
): Choice<AgentTransport> {
  if (requested === 'serial') return { value: 'serial', reason: 'configured: agentTransport=serial' };
  const exists = probe.exists(VHOST_VSOCK_DEVICE);
  const usable = exists && probe.openReadWrite(VHOST_VSOCK_DEVICE);
  if (requested === 'vsock') {
    if (!usable) {
      const why = exists ? 'cannot be opened read-write' : 'does not exist (modprobe vhost_vsock)';
      throw new FailedPreconditionError(`agentTransport=vsock is configured but ${VHOST_VSOCK_DEVICE} ${why}`);
    }
    return { value: 'vsock', reason: 'configured: agentTransport=vsock' };
  }
  if (!exists) return { value: 'serial', reason: `${VHOST_VSOCK_DEVICE} does not exist; using a virtio-serial port` };
  if (!usable)
    return { value: 'serial', reason: `${VHOST_VSOCK_DEVICE} cannot be opened read-write; using a virtio-serial port` };
  return { value: 'vsock', reason: `${VHOST_VSOCK_DEVICE} opens read-write; using vsock` };
}

/**
 * vhost-net moves the NICs' data path into the host kernel. It is asked for only when the guest runs under KVM
 * (vhost needs the guest's memory mapped by a KVM VM; under TCG QEMU would fall back or fail) and /dev/vhost-net
 * opens read-write here; otherwise QEMU's own virtio-net backend, with the reason.
 */
export function chooseVhostNet(accel: Accel, probe: HostProbe = realHostProbe): Choice<boolean> {
  if (accel !== 'kvm')
    return { value: false, reason: `the guest runs under ${accel.toUpperCase()}, not KVM; no vhost-net` };
  if (!probe.exists(VHOST_NET_DEVICE))
    return { value: false, reason: `${VHOST_NET_DEVICE} does not exist (modprobe vhost_net); no vhost-net` };
  if (!probe.openReadWrite(VHOST_NET_DEVICE))
    return { value: false, reason: `${VHOST_NET_DEVICE} cannot be opened read-write; no vhost-net` };
  return { value: true, reason: `KVM and ${VHOST_NET_DEVICE} opens read-write; vhost-net on` };
}

/** CIDs 0-2 are reserved (hypervisor, local, host); 0xFFFFFFFF is VMADDR_CID_ANY. We stay below 2^31 so that no
 * tool that reads the CID as a signed 32-bit number gets it wrong. */
export const MIN_GUEST_CID = 3;
export const MAX_GUEST_CID = 0x7fffffff;
/** How many CIDs start() tries before giving up. */
export const CID_ATTEMPTS = 8;

/**
 * Guest CID allocation, lock-free: the kernel is the arbiter. QEMU's vhost-vsock device claims its CID with the
 * VHOST_VSOCK_SET_GUEST_CID ioctl, which fails with EADDRINUSE when another VM on the host holds it, and QEMU then
 * exits at once with "unable to set guest cid". So we ask for a CID derived from the sandbox id (the same sandbox
 * gets the same CID, which helps debugging) and, if QEMU reports it taken, retry with pseudo-random ones
 * (`cidCandidates`), at most CID_ATTEMPTS times. No lock file, nothing to leak when a shim dies. (Kata opens
 * /dev/vhost-vsock itself and probes with the ioctl; QEMU's answer is enough, and keeps hypervisor/ free of native code.)
 */
export function* cidCandidates(
  id: string,
  random: () => number = () => crypto.randomInt(0, 0x7fffffff),
): Generator<number> {
  const span = MAX_GUEST_CID - MIN_GUEST_CID + 1;
  const digest = crypto.createHash('sha256').update(id).digest();
  yield MIN_GUEST_CID + (digest.readUInt32BE(0) % span);
  for (;;) yield MIN_GUEST_CID + (random() % span);
}

/** Whether QEMU's stderr says the CID it asked for is taken (the one foreign string we classify, here only). */
export function isCidInUse(stderr: string): boolean {
  return /unable to set guest cid/i.test(stderr) && /address already in use|EADDRINUSE/i.test(stderr);
}
