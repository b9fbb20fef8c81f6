import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { checkQemuUser, chooseConfinement, realConfineProbe, type ConfineProbe } from '../confine';

function probe(o: Partial<{ euid: number; seccomp: boolean; users: string[] }> = {}): ConfineProbe {
  return {
    euid: () => o.euid ?? 0,
    kernelSeccomp: () => o.seccomp ?? true,
    userExists: (name) => (o.users ?? ['nobody']).includes(name),
  };
}

describe('hypervisor/confine', () => {
  describe('chooseConfinement', () => {
    it('root, a kernel with seccomp, an existing user: the filter (set*id allowed) and -runas', () => {
      const c = chooseConfinement({ seccomp: true, qemuUser: 'nobody' }, probe());
      assert.deepEqual(c.value, { seccomp: true, runAs: 'nobody' });
      assert.match(
        c.reason,
        /elevateprivileges=allow.*QEMU 7\.2 installs the filter before -runas drops.*drops to nobody/,
      );
    });

    it('numeric uid:gid needs no passwd entry', () => {
      assert.deepEqual(chooseConfinement({ seccomp: true, qemuUser: '200001:200001' }, probe({ users: [] })).value, {
        seccomp: true,
        runAs: '200001:200001',
      });
    });

    it('a user that does not exist: no -runas, and the filter then denies set*id', () => {
      const c = chooseConfinement({ seccomp: true, qemuUser: 'hull-qemu' }, probe());
      assert.deepEqual(c.value, { seccomp: true });
      assert.match(c.reason, /elevateprivileges=deny/);
      assert.match(c.reason, /user hull-qemu does not exist \(\/etc\/passwd\): QEMU keeps uid 0/);
    });

    it('a shim that is not root cannot make QEMU drop: QEMU keeps its uid', () => {
      const c = chooseConfinement({ seccomp: true, qemuUser: 'nobody' }, probe({ euid: 1000 }));
      assert.deepEqual(c.value, { seccomp: true });
      assert.match(c.reason, /hull runs as uid 1000, not root/);
    });

    it('a kernel without seccomp: no filter, with the reason', () => {
      const c = chooseConfinement({ seccomp: true, qemuUser: '' }, probe({ seccomp: false }));
      assert.deepEqual(c.value, { seccomp: false });
      assert.match(c.reason, /the kernel has no seccomp/);
      assert.match(c.reason, /configured: no qemu_user, QEMU keeps uid 0/);
    });

    it('configured off: neither, and the host is not asked about seccomp', () => {
      const p = probe();
      p.kernelSeccomp = () => assert.fail('asked the kernel');
      const c = chooseConfinement({ seccomp: false, qemuUser: '' }, p);
      assert.deepEqual(c.value, { seccomp: false });
      assert.match(c.reason, /configured: no seccomp filter/);
    });
  });

  describe('checkQemuUser', () => {
    it('takes "", names and uid:gid', () => {
      for (const u of ['', 'nobody', 'hull-qemu', '_qemu', 'libvirt-qemu', '65534:65534', '4294967294:1'])
        assert.equal(checkQemuUser('u', u), u);
    });
    it('refuses root, out-of-range ids, and anything else', () => {
      for (const u of [
        'root',
        '0:0',
        '0:1',
        '1:0',
        '4294967295:1',
        'a,b',
        'Nobody',
        '1000',
        ':1',
        'x'.repeat(40),
        'a b',
        '../x',
        7,
      ]) {
        assert.throws(() => checkQemuUser('u', u), InvalidArgumentError, String(u));
      }
    });
  });

  describe('realConfineProbe on this host', () => {
    it('answers (Debian has nobody; the kernel here has seccomp)', () => {
      assert.equal(realConfineProbe.userExists('nobody'), true);
      assert.equal(realConfineProbe.userExists('no-such-user-hull'), false);
      assert.equal(realConfineProbe.kernelSeccomp(), true);
      assert.equal(typeof realConfineProbe.euid(), 'number');
    });
  });
});
