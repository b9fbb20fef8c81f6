import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { grpc } from '../../protos/agent';
import { grpcSeccompFromOci, grpcSpecFromOci } from '../oci';

const refused =
  (pattern: RegExp) =>
  (e: unknown): boolean =>
    e instanceof InvalidArgumentError && pattern.test(e.message);
/** What the agent decodes from what the host encodes. */
const overTheWire = (s: grpc.ILinuxSeccomp | null): grpc.LinuxSeccomp =>
  grpc.LinuxSeccomp.decode(grpc.LinuxSeccomp.encode(s ?? {}).finish());

describe('agent client OCI seccomp', () => {
  it('carries a profile faithfully: actions, architectures, flags, args, errnoRet only where set (0 included)', () => {
    const profile = {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
      flags: ['SECCOMP_FILTER_FLAG_LOG'],
      syscalls: [
        { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW', args: [] },
        {
          names: ['clone'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: 0x7e020000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
        },
        { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
        { names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 0 },
        {
          names: ['personality'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: 0xffffffff, op: 'SCMP_CMP_EQ' }],
          errnoRet: null,
        },
      ],
    };
    const got = overTheWire(grpcSeccompFromOci(profile));
    assert.equal(got.DefaultAction, 'SCMP_ACT_ERRNO');
    assert.deepEqual(got.Architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    assert.deepEqual(got.Flags, ['SECCOMP_FILTER_FLAG_LOG']);
    assert.deepEqual(
      got.Syscalls.map((s) => s.errnoret),
      [null, null, 38, 0, null],
      'the oneof is set only when the profile has errnoRet',
    );
    assert.deepEqual(
      got.Syscalls.map((s) => s.ErrnoRet),
      [undefined, undefined, 'errnoret', 'errnoret', undefined],
    );
    assert.deepEqual(
      (got.Syscalls[1]?.Args ?? []).map((a) => ({ Index: a.Index, Value: a.Value, ValueTwo: a.ValueTwo, Op: a.Op })),
      [{ Index: 0, Value: 0x7e020000, ValueTwo: 0, Op: 'SCMP_CMP_MASKED_EQ' }],
    );
    assert.deepEqual(
      (got.Syscalls[4]?.Args ?? []).map((a) => ({ Index: a.Index, Value: a.Value, ValueTwo: a.ValueTwo, Op: a.Op })),
      [{ Index: 0, Value: 0xffffffff, ValueTwo: 0, Op: 'SCMP_CMP_EQ' }],
    );
    assert.deepEqual(got.Syscalls[0]?.Names, ['read', 'write']);
  });

  it('no profile is no profile, in the whole spec too', () => {
    assert.equal(grpcSeccompFromOci(undefined), null);
    assert.equal(grpcSeccompFromOci(null), null);
    assert.equal(grpcSpecFromOci({ process: { args: ['true'] }, linux: {} }).Linux?.Seccomp, null);
    assert.equal(
      grpcSpecFromOci({ process: { args: ['true'] }, linux: { seccomp: { defaultAction: 'SCMP_ACT_ALLOW' } } }).Linux
        ?.Seccomp?.DefaultAction,
      'SCMP_ACT_ALLOW',
    );
  });

  it("refuses what Kata's message cannot carry rather than dropping it: a listener, a default errno other than EPERM", () => {
    assert.throws(
      () => grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/seccomp-agent.sock' }),
      refused(/listenerPath: a seccomp agent cannot listen in the VM guest/),
    );
    assert.throws(
      () => grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38 }),
      refused(/defaultErrnoRet 38: the agent protocol carries no default errno/),
    );
    assert.equal(
      grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 1 })?.DefaultAction,
      'SCMP_ACT_ERRNO',
      'EPERM is the default anyway',
    );
    assert.equal(
      grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ERRNO', listenerPath: '', listenerMetadata: '' })?.DefaultAction,
      'SCMP_ACT_ERRNO',
    );
  });

  it('refuses numbers a protobuf field would wrap or JSON.parse has rounded', () => {
    const withRule = (r: object): unknown => ({
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', ...r }],
    });
    assert.throws(
      () => grpcSeccompFromOci(withRule({ errnoRet: -1 })),
      refused(/syscalls\[0\]\.errnoRet is not an integer from 0 to 4294967295/),
    );
    assert.throws(() => grpcSeccompFromOci(withRule({ errnoRet: 2 ** 32 })), refused(/errnoRet/));
    assert.throws(() => grpcSeccompFromOci(withRule({ errnoRet: '1' })), refused(/errnoRet/));
    assert.throws(
      () => grpcSeccompFromOci(withRule({ args: [{ index: -1, value: 0, op: 'SCMP_CMP_EQ' }] })),
      refused(/args\[0\]\.index/),
    );
    assert.throws(
      () => grpcSeccompFromOci(withRule({ args: [{ index: 0, value: -5, op: 'SCMP_CMP_EQ' }] })),
      refused(/args\[0\]\.value is not an integer/),
    );
    assert.throws(
      () => grpcSeccompFromOci(withRule({ args: [{ index: 0, value: 2 ** 64 - 1, op: 'SCMP_CMP_EQ' }] })),
      refused(/args\[0\]\.value/),
    );
    assert.throws(
      () => grpcSeccompFromOci(withRule({ args: [{ index: 0, value: 1, valueTwo: 1.5, op: 'SCMP_CMP_EQ' }] })),
      refused(/valueTwo/),
    );
    assert.throws(
      () => grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: -1 }),
      refused(/defaultErrnoRet is not an integer/),
    );
    assert.throws(
      () => grpcSeccompFromOci({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: {} }),
      refused(/syscalls is not an array/),
    );
  });
});
