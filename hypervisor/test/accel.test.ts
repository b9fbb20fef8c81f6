import assert from 'node:assert/strict';
import { FailedPreconditionError } from '../../errors';
import {
  CID_ATTEMPTS,
  KVM_DEVICE,
  KVM_PVM_MODULE,
  MAX_GUEST_CID,
  MIN_GUEST_CID,
  VHOST_NET_DEVICE,
  VHOST_VSOCK_DEVICE,
  chooseAccel,
  chooseTransport,
  chooseVhostNet,
  cidCandidates,
  isCidInUse,
  type HostProbe,
} from '../accel';

/** A pretend host: `present` paths exist; `rw` paths also open read-write. */
function host(present: string[], rw: string[] = []): HostProbe {
  return { exists: (p) => present.includes(p) || rw.includes(p), openReadWrite: (p) => rw.includes(p) };
}

describe('hypervisor/accel', () => {
  describe('chooseAccel', () => {
    it('auto: KVM when /dev/kvm opens read-write and kvm_pvm is not loaded', () => {
      const c = chooseAccel('auto', host([], [KVM_DEVICE]));
      assert.equal(c.value, 'kvm');
    });
    it('auto: TCG under kvm_pvm, and says why', () => {
      const c = chooseAccel('auto', host([KVM_PVM_MODULE], [KVM_DEVICE]));
      assert.equal(c.value, 'tcg');
      assert.equal(c.reason, 'kvm_pvm is loaded: a stock guest kernel hangs under it; using TCG');
    });
    it('auto: TCG when /dev/kvm is missing or not openable', () => {
      assert.equal(chooseAccel('auto', host([])).value, 'tcg');
      assert.match(chooseAccel('auto', host([])).reason, /does not exist/);
      const c = chooseAccel('auto', host([KVM_DEVICE]));
      assert.equal(c.value, 'tcg');
      assert.match(c.reason, /cannot be opened read-write/);
    });
    it("'kvm' forces KVM, even under kvm_pvm (with a warning), and fails without /dev/kvm", () => {
      const c = chooseAccel('kvm', host([KVM_PVM_MODULE], [KVM_DEVICE]));
      assert.equal(c.value, 'kvm');
      assert.match(c.reason, /warning: kvm_pvm/);
      assert.throws(
        () => chooseAccel('kvm', host([])),
        (e: Error) => e instanceof FailedPreconditionError && /\/dev\/kvm does not exist/.test(e.message),
      );
    });
    it("'tcg' forces TCG", () => {
      assert.equal(chooseAccel('tcg', host([], [KVM_DEVICE])).value, 'tcg');
    });
  });

  describe('chooseTransport', () => {
    it('auto: vsock when /dev/vhost-vsock opens read-write, else serial, and says why', () => {
      const v = chooseTransport('auto', host([], [VHOST_VSOCK_DEVICE]));
      assert.deepEqual(v, { value: 'vsock', reason: '/dev/vhost-vsock opens read-write; using vsock' });
      const closed = chooseTransport('auto', host([VHOST_VSOCK_DEVICE]));
      assert.deepEqual(closed, {
        value: 'serial',
        reason: '/dev/vhost-vsock cannot be opened read-write; using a virtio-serial port',
      });
      const c = chooseTransport('auto', host([]));
      assert.deepEqual(c, { value: 'serial', reason: '/dev/vhost-vsock does not exist; using a virtio-serial port' });
    });
    it('forced vsock without a usable device is a FailedPreconditionError saying why; forced serial always works', () => {
      assert.equal(chooseTransport('vsock', host([], [VHOST_VSOCK_DEVICE])).value, 'vsock');
      assert.throws(
        () => chooseTransport('vsock', host([])),
        (e: Error) => e instanceof FailedPreconditionError && /does not exist \(modprobe vhost_vsock\)/.test(e.message),
      );
      assert.throws(
        () => chooseTransport('vsock', host([VHOST_VSOCK_DEVICE])),
        (e: Error) => e instanceof FailedPreconditionError && /cannot be opened read-write/.test(e.message),
      );
      assert.equal(chooseTransport('serial', host([], [VHOST_VSOCK_DEVICE])).value, 'serial');
    });
  });

  describe('guest CIDs', () => {
    it('the first candidate is derived from the id (stable), later ones are random, all in range', () => {
      const a = cidCandidates('pod-a');
      const first = a.next().value as number;
      assert.equal(cidCandidates('pod-a').next().value, first);
      assert.notEqual(cidCandidates('pod-b').next().value, first);
      let n = 0;
      const seq = [0, 5, MAX_GUEST_CID, 0x7ffffffe];
      const gen = cidCandidates('pod-a', () => seq[n++ % seq.length]!);
      for (let i = 0; i < CID_ATTEMPTS; i++) {
        const cid = gen.next().value as number;
        assert.ok(cid >= MIN_GUEST_CID && cid <= MAX_GUEST_CID, `cid ${cid} in range`);
      }
    });
    it("recognises QEMU's CID-in-use error and nothing else", () => {
      assert.ok(
        isCidInUse(
          'qemu-system-x86_64: -device vhost-vsock-pci,guest-cid=3: vhost-vsock: unable to set guest cid: Address already in use',
        ),
      );
      assert.ok(
        !isCidInUse(
          'qemu-system-x86_64: -device vhost-vsock-pci,guest-cid=3: vhost-vsock: unable to set guest cid: Permission denied',
        ),
      );
      assert.ok(!isCidInUse('could not open /dev/vhost-vsock'));
    });
  });

  describe('chooseVhostNet', () => {
    it('only under KVM and with /dev/vhost-net usable, saying why not otherwise', () => {
      assert.equal(chooseVhostNet('kvm', host([], [VHOST_NET_DEVICE])).value, true);
      const tcg = chooseVhostNet('tcg', host([], [VHOST_NET_DEVICE]));
      assert.equal(tcg.value, false);
      assert.match(tcg.reason, /TCG/);
      assert.match(chooseVhostNet('kvm', host([])).reason, /does not exist/);
      assert.match(chooseVhostNet('kvm', host([VHOST_NET_DEVICE])).reason, /cannot be opened read-write/);
    });
  });
});
