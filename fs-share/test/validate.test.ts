import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { planRootfs, validateAbsolutePath, volumeName } from '../validate';

describe('fs-share validate', () => {
  it('requires absolute normalized paths without option-breaking characters', () => {
    assert.equal(validateAbsolutePath('p', '/a/b'), '/a/b');
    assert.equal(validateAbsolutePath('p', '/'), '/');
    for (const bad of ['a/b', '/a/../b', '/a//b', '/a/./b', '/a/', '', '/a,b', '/a\\b', '/a\nb', '/a\0b']) {
      assert.throws(() => validateAbsolutePath('p', bad), InvalidArgumentError, JSON.stringify(bad));
    }
    assert.equal(validateAbsolutePath('p', '/a,b', { allowComma: true }), '/a,b');
  });

  it('names volumes by a hash of the destination, never by its pieces', () => {
    const n = volumeName('/etc/resolv.conf');
    assert.match(n, /^[0-9a-f]{16}$/);
    assert.equal(volumeName('/etc/resolv.conf'), n);
    assert.notEqual(volumeName('/etc/hosts'), n);
    assert.throws(() => volumeName('../../etc'), InvalidArgumentError);
    assert.throws(() => volumeName('/a/../../b'), InvalidArgumentError);
  });

  describe('planRootfs', () => {
    const ovl = (...options: string[]) => [{ type: 'overlay', source: 'overlay', options }];

    it('accepts containerd overlay mounts', () => {
      const plan = planRootfs(ovl('index=off', 'lowerdir=/l1:/l2', 'upperdir=/u', 'workdir=/w', 'userxattr'));
      assert.deepEqual(plan, {
        kind: 'overlay',
        options: ['index=off', 'lowerdir=/l1:/l2', 'upperdir=/u', 'workdir=/w', 'userxattr'],
        dirs: ['/l1', '/l2', '/u', '/w'],
        readOnly: false,
      });
      assert.equal(planRootfs(ovl('lowerdir=/l1:/l2')).readOnly, true);
      assert.equal(planRootfs(ovl('ro', 'lowerdir=/l', 'upperdir=/u', 'workdir=/w')).readOnly, true);
    });

    it('refuses unknown options, comma tricks and bad paths', () => {
      const bad = [
        ovl('lowerdir=/l,upperdir=/etc'),
        ovl('lowerdir=/l', 'upperdir=/u'),
        ovl('upperdir=/u', 'workdir=/w'),
        ovl('lowerdir=relative'),
        ovl('lowerdir=/l/../x'),
        ovl('lowerdir=/l', 'lowerdir=/m'),
        ovl('lowerdir=/l', 'xino=maybe'),
        ovl('lowerdir=/l', 'context=system_u'),
        ovl('lowerdir=/l', 'upperdir=/u:/v', 'workdir=/w'),
        ovl('lowerdir=/l', 'ro', 'rw'),
        ovl('lowerdir'),
        ovl('lowerdir=/l', ''),
      ];
      for (const m of bad) assert.throws(() => planRootfs(m), InvalidArgumentError, JSON.stringify(m));
    });

    it('accepts bind/rbind with safe flags only', () => {
      assert.deepEqual(planRootfs([{ type: 'bind', source: '/s', options: ['rbind', 'ro'] }]), {
        kind: 'bind',
        source: '/s',
        recursive: true,
        readOnly: true,
      });
      assert.equal(
        (planRootfs([{ type: 'rbind', source: '/s', options: [] }]) as { recursive: boolean }).recursive,
        true,
      );
      assert.throws(() => planRootfs([{ type: 'bind', source: '/s', options: ['suid'] }]), InvalidArgumentError);
      assert.throws(() => planRootfs([{ type: 'bind', source: 's', options: [] }]), InvalidArgumentError);
    });

    it('refuses other types and anything but exactly one mount', () => {
      assert.throws(() => planRootfs([{ type: 'tmpfs', source: 'tmpfs', options: [] }]), InvalidArgumentError);
      assert.throws(() => planRootfs([]), InvalidArgumentError);
      assert.throws(() => planRootfs([...ovl('lowerdir=/l'), ...ovl('lowerdir=/m')]), InvalidArgumentError);
    });
  });
});
