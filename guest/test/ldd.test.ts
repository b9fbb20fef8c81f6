/** Parsing ldd output into the files the guest needs. */
import assert from 'node:assert/strict';
import { parseLdd, sharedLibraries } from '../ldd';

const NODE_LDD = `	linux-vdso.so.1 (0x00007f46e6838000)
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f46e681f000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f46e6600000)
	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f46e6520000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f46e631c000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f46e683a000)
`;

describe('guest ldd parsing', () => {
  it('lists libraries and the loader, without the vDSO', () => {
    assert.deepEqual(parseLdd(NODE_LDD), [
      '/lib/x86_64-linux-gnu/libdl.so.2',
      '/lib/x86_64-linux-gnu/libstdc++.so.6',
      '/lib/x86_64-linux-gnu/libm.so.6',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
  });

  it('lists each library once, and accepts lines without a load address', () => {
    assert.deepEqual(parseLdd('libc.so.6 => /lib/libc.so.6 (0x1)\nlibc.so.6 => /lib/libc.so.6\n/lib/ld.so\n'), [
      '/lib/libc.so.6',
      '/lib/ld.so',
    ]);
  });

  it('returns nothing for a static program', () => {
    assert.deepEqual(parseLdd('\tnot a dynamic executable\n'), []);
    assert.deepEqual(parseLdd('\tstatically linked\n'), []);
  });

  it('fails on a missing library and on lines it does not understand', () => {
    assert.throws(
      () => parseLdd('libfoo.so.1 => not found\nlibbar.so => not found\n'),
      /not found: libfoo.so.1, libbar.so/,
    );
    assert.throws(() => parseLdd('something odd\n'), /cannot parse/);
  });

  it("finds the host node's libc and loader", async function () {
    if (process.platform !== 'linux') this.skip();
    const libs = await sharedLibraries(process.execPath);
    assert.ok(
      libs.some((l) => /\/libc\.so\.6$/.test(l)),
      libs.join(' '),
    );
    assert.ok(libs.some((l) => /\/ld-linux-x86-64\.so\.2$/.test(l)) || process.arch !== 'x64', libs.join(' '));
  });
});
