import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { InvalidArgumentError } from '../../errors';
import { CRI_ANNOTATIONS } from '../../core/pod';
import { SOCKET_ROOT, sandboxOf, socketAddress, socketPath } from '../address';

/** sha256 computed outside Node (coreutils), so that the test does not repeat the code under test. */
function sha256sum(text: string): string {
  return execFileSync('sha256sum', [], { input: text }).toString().split(' ')[0]!;
}

describe('shim socket address (containerd SocketAddress)', () => {
  it('is unix:///run/containerd/s/<sha256 of address/namespace/id> (known values)', () => {
    // printf %s /run/containerd/containerd.sock/k8s.io/0123456789abcdef | sha256sum
    assert.equal(
      socketAddress('/run/containerd/containerd.sock', 'k8s.io', '0123456789abcdef'),
      'unix:///run/containerd/s/a1516fb9360830ba76705961d0f826b1118eac1dcf4c026f5d98ab29a95b6f39',
    );
    assert.equal(
      socketAddress('/run/containerd/containerd.sock', 'default', 'redis'),
      'unix:///run/containerd/s/f6b99128c07bdbd0902363ba979c22f8ef053e683a7ce24dd016a1ab17092c33',
    );
  });

  it('hashes path.Join(address, ns, id), which cleans the path like Go does', () => {
    const addr = socketAddress('/tmp/ctd/containerd.sock', 'ns1', 'sb-1');
    assert.equal(addr, `unix://${SOCKET_ROOT}/${sha256sum('/tmp/ctd/containerd.sock/ns1/sb-1')}`);
    // Go's path.Join drops the trailing slash and the repeated ones.
    assert.equal(socketAddress('/tmp/ctd//containerd.sock/', 'ns1', 'sb-1'), addr);
    assert.equal(addr.length, 'unix://'.length + 82, 'the socket path is 82 characters');
  });

  it('socketPath strips unix:// and leaves a plain path alone', () => {
    assert.equal(socketPath('unix:///run/containerd/s/abc'), '/run/containerd/s/abc');
    assert.equal(socketPath('/run/x.sock'), '/run/x.sock');
  });
});

describe('shim sandboxOf (CRI annotations)', () => {
  it('a CRI sandbox owns a sandbox of its own id', () => {
    assert.deepEqual(
      sandboxOf('sb1', { [CRI_ANNOTATIONS.containerType]: 'sandbox', [CRI_ANNOTATIONS.sandboxId]: 'sb1' }),
      { sandboxId: 'sb1', joins: false },
    );
  });

  it('a CRI pod container joins its sandbox', () => {
    assert.deepEqual(
      sandboxOf('c1', { [CRI_ANNOTATIONS.containerType]: 'container', [CRI_ANNOTATIONS.sandboxId]: 'sb1' }),
      { sandboxId: 'sb1', joins: true },
    );
  });

  it('a container without annotations (ctr run) owns a sandbox', () => {
    assert.deepEqual(sandboxOf('c1', undefined), { sandboxId: 'c1', joins: false });
    assert.deepEqual(sandboxOf('c1', {}), { sandboxId: 'c1', joins: false });
    assert.deepEqual(
      sandboxOf('c1', { 'io.kubernetes.cri.sandbox-id': 'sb1' }),
      { sandboxId: 'c1', joins: false },
      'no container type: not CRI',
    );
  });

  it('refuses an unknown container type and a pod container without its sandbox id', () => {
    assert.throws(
      () => sandboxOf('c1', { [CRI_ANNOTATIONS.containerType]: 'pod' }),
      (e) =>
        e instanceof InvalidArgumentError &&
        /io.kubernetes.cri.container-type="pod": expected "sandbox" or "container"/.test(e.message),
    );
    assert.throws(
      () => sandboxOf('c1', { [CRI_ANNOTATIONS.containerType]: 'container' }),
      (e) => e instanceof InvalidArgumentError && /without the io.kubernetes.cri.sandbox-id/.test(e.message),
    );
    assert.throws(
      () => sandboxOf('c1', { [CRI_ANNOTATIONS.containerType]: 'container', [CRI_ANNOTATIONS.sandboxId]: '' }),
      InvalidArgumentError,
    );
  });
});
