import assert from 'node:assert/strict';
import { Code, StatusError } from 'ttrpc-ts';
import { grpc } from '../../protos/agent';
import { toRuntimeSpec } from '../oci';
import { MAX_NAMES_PER_RULE, MAX_SECCOMP_NAMES, MAX_SECCOMP_RULES, toOciSeccomp } from '../seccomp';

const invalid =
  (pattern: RegExp) =>
  (e: unknown): boolean =>
    e instanceof StatusError && e.code === Code.INVALID_ARGUMENT && pattern.test(e.message);
/** As the agent gets it: encoded by the host, decoded by the server (oneof members unset are null). */
const wire = (s: grpc.ILinuxSeccomp): grpc.LinuxSeccomp =>
  grpc.LinuxSeccomp.decode(grpc.LinuxSeccomp.encode(s).finish());
const rule = (over: Partial<grpc.ILinuxSyscall> = {}): grpc.ILinuxSyscall => ({
  Names: ['mkdir'],
  Action: 'SCMP_ACT_ERRNO',
  ...over,
});
const profile = (syscalls: grpc.ILinuxSyscall[], over: Partial<grpc.ILinuxSeccomp> = {}): grpc.LinuxSeccomp =>
  wire({ DefaultAction: 'SCMP_ACT_ALLOW', Syscalls: syscalls, ...over });

describe('agent seccomp profile for crun', () => {
  it('converts a containerd-like profile back to the OCI shape, errnoRet only where the host set it', () => {
    const out = toOciSeccomp(
      wire({
        DefaultAction: 'SCMP_ACT_ERRNO',
        Architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
        Syscalls: [
          { Names: ['read', 'write', '_llseek', 'utimensat_time64'], Action: 'SCMP_ACT_ALLOW' },
          {
            Names: ['personality'],
            Action: 'SCMP_ACT_ALLOW',
            Args: [{ Index: 0, Value: 0xffffffff, Op: 'SCMP_CMP_EQ' }],
          },
          {
            Names: ['clone'],
            Action: 'SCMP_ACT_ALLOW',
            Args: [{ Index: 0, Value: 0x7e020000, ValueTwo: 0, Op: 'SCMP_CMP_MASKED_EQ' }],
          },
          { Names: ['clone3'], Action: 'SCMP_ACT_ERRNO', errnoret: 38 },
          { Names: ['mkdirat'], Action: 'SCMP_ACT_ERRNO', errnoret: 0 },
          {
            Names: ['ioctl'],
            Action: 'SCMP_ACT_ALLOW',
            Args: [{ Index: 1, Value: 0xff, ValueTwo: 0x54, Op: 'SCMP_CMP_MASKED_EQ' }],
          },
        ],
      }),
    );
    assert.deepEqual(out, {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [
        { names: ['read', 'write', '_llseek', 'utimensat_time64'], action: 'SCMP_ACT_ALLOW' },
        {
          names: ['personality'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: 0xffffffff, op: 'SCMP_CMP_EQ' }],
        },
        {
          names: ['clone'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: 0x7e020000, op: 'SCMP_CMP_MASKED_EQ' }],
        },
        { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
        { names: ['mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 0 }, // 0 is a value: the oneof tells it from unset
        {
          names: ['ioctl'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 1, value: 0xff, valueTwo: 0x54, op: 'SCMP_CMP_MASKED_EQ' }],
        },
      ],
    });
    assert.deepEqual(
      toOciSeccomp(profile([], { Flags: ['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'] })),
      { defaultAction: 'SCMP_ACT_ALLOW', flags: ['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'] },
    );
  });

  it('an absent or empty profile stays absent; one with rules needs a default action', () => {
    assert.equal(toOciSeccomp(undefined), undefined);
    assert.equal(toOciSeccomp(null), undefined);
    assert.equal(toOciSeccomp(wire({})), undefined);
    assert.equal(toOciSeccomp(wire({ DefaultAction: '', Architectures: [], Flags: [], Syscalls: [] })), undefined);
    assert.throws(() => toOciSeccomp(wire({ Syscalls: [rule()] })), invalid(/no default action/));
    assert.throws(() => toOciSeccomp(wire({ Architectures: ['SCMP_ARCH_X86_64'] })), invalid(/no default action/));
  });

  it('toRuntimeSpec keeps the profile in linux.seccomp, and no key at all without one', () => {
    const spec = (Seccomp: grpc.ILinuxSeccomp | null): grpc.ISpec => ({
      Process: { Args: ['true'], Cwd: '/' },
      Linux: { Seccomp },
    });
    const linux = (s: grpc.ISpec): Record<string, unknown> =>
      toRuntimeSpec(s, 'c1', '/r').linux as Record<string, unknown>;
    assert.deepEqual(linux(spec(profile([rule({ errnoret: 1 })]))).seccomp, {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    });
    assert.equal('seccomp' in linux(spec(null)), false);
    assert.equal('seccomp' in linux(spec(wire({}))), false);
    assert.throws(
      () => toRuntimeSpec(spec(profile([rule({ Action: 'SCMP_ACT_NOTIFY' })])), 'c1', '/r'),
      invalid(/SCMP_ACT_NOTIFY/),
    );
  });

  it('refuses actions outside the OCI set, and SCMP_ACT_NOTIFY (no listener in a guest)', () => {
    for (const a of [
      'SCMP_ACT_KILL',
      'SCMP_ACT_KILL_PROCESS',
      'SCMP_ACT_KILL_THREAD',
      'SCMP_ACT_TRAP',
      'SCMP_ACT_TRACE',
      'SCMP_ACT_LOG',
    ]) {
      assert.equal(toOciSeccomp(profile([rule({ Action: a })]))?.syscalls?.[0]?.action, a);
      assert.equal(toOciSeccomp(wire({ DefaultAction: a }))?.defaultAction, a);
    }
    assert.throws(
      () => toOciSeccomp(wire({ DefaultAction: 'SCMP_ACT_NOTIFY' })),
      invalid(/default action SCMP_ACT_NOTIFY needs a seccomp agent/),
    );
    assert.throws(
      () => toOciSeccomp(profile([rule({ Action: 'SCMP_ACT_NOTIFY' })])),
      invalid(/rule 0 action SCMP_ACT_NOTIFY/),
    );
    for (const a of ['scmp_act_allow', 'SCMP_ACT_ALLOW ', 'ALLOW', 'SCMP_ACT_ERRNO(1)', '']) {
      assert.throws(() => toOciSeccomp(profile([rule({ Action: a })])), invalid(/is not a seccomp action/), a);
    }
    assert.throws(
      () => toOciSeccomp(wire({ DefaultAction: 'SCMP_ACT_PERMIT' })),
      invalid(/default action "SCMP_ACT_PERMIT" is not a seccomp action/),
    );
  });

  it('checks architectures, flags and syscall names', () => {
    assert.throws(
      () => toOciSeccomp(profile([], { Architectures: ['SCMP_ARCH_Z80'] })),
      invalid(/"SCMP_ARCH_Z80" is not an SCMP_ARCH_\* architecture/),
    );
    assert.throws(() => toOciSeccomp(profile([], { Architectures: ['x86_64'] })), invalid(/architecture/));
    assert.throws(
      () => toOciSeccomp(profile([], { Architectures: new Array(33).fill('SCMP_ARCH_X86') })),
      invalid(/more than 32 architectures/),
    );
    assert.throws(
      () => toOciSeccomp(profile([], { Flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] })),
      invalid(/is not a SECCOMP_FILTER_FLAG_\* flag/),
    );
    for (const name of ['', 'MKDIR', 'mkdir;', '../x', 'a b', 'x'.repeat(65), 'mkdir\0']) {
      assert.throws(
        () => toOciSeccomp(profile([rule({ Names: [name] })])),
        invalid(/is not a syscall name \(rule 0\)/),
        JSON.stringify(name),
      );
    }
    assert.deepEqual(
      toOciSeccomp(profile([rule({ Names: ['x'.repeat(64), '_newselect', 'arm_fadvise64_64'] })]))?.syscalls?.[0]
        ?.names,
      ['x'.repeat(64), '_newselect', 'arm_fadvise64_64'],
    );
  });

  it('checks argument comparisons: index 0-5, SCMP_CMP_* operators, exact values, at most 6', () => {
    const withArg = (a: grpc.ILinuxSeccompArg): grpc.LinuxSeccomp =>
      profile([rule({ Action: 'SCMP_ACT_ALLOW', Args: [a] })]);
    for (const op of [
      'SCMP_CMP_NE',
      'SCMP_CMP_LT',
      'SCMP_CMP_LE',
      'SCMP_CMP_EQ',
      'SCMP_CMP_GE',
      'SCMP_CMP_GT',
      'SCMP_CMP_MASKED_EQ',
    ]) {
      assert.equal(toOciSeccomp(withArg({ Index: 5, Value: 1, Op: op }))?.syscalls?.[0]?.args?.[0]?.op, op);
    }
    assert.throws(
      () => toOciSeccomp(withArg({ Index: 6, Value: 1, Op: 'SCMP_CMP_EQ' })),
      invalid(/index 6 is not 0 to 5/),
    );
    assert.throws(
      () => toOciSeccomp(withArg({ Index: 0, Value: 1, Op: 'SCMP_CMP_MASKED' })),
      invalid(/is not an SCMP_CMP_\* operator/),
    );
    assert.throws(() => toOciSeccomp(withArg({ Index: 0, Value: 1, Op: '' })), invalid(/operator/));
    assert.throws(
      () => toOciSeccomp(withArg({ Index: 0, Value: 2 ** 53, Op: 'SCMP_CMP_EQ' })),
      invalid(/value 9007199254740992 is not an integer from 0 to 2\^53-1/),
    );
    assert.throws(
      () => toOciSeccomp(withArg({ Index: 0, Value: 1, ValueTwo: 2 ** 60, Op: 'SCMP_CMP_MASKED_EQ' })),
      invalid(/valueTwo/),
    );
    assert.equal(
      toOciSeccomp(withArg({ Index: 0, Value: Number.MAX_SAFE_INTEGER, Op: 'SCMP_CMP_LE' }))?.syscalls?.[0]?.args?.[0]
        ?.value,
      Number.MAX_SAFE_INTEGER,
    );
    const seven = Array.from({ length: 7 }, (_, i) => ({ Index: i % 6, Value: 0, Op: 'SCMP_CMP_NE' }));
    assert.throws(() => toOciSeccomp(profile([rule({ Args: seven })])), invalid(/more than 6 argument comparisons/));
    assert.equal(toOciSeccomp(profile([rule({ Args: seven.slice(0, 6) })]))?.syscalls?.[0]?.args?.length, 6);
  });

  it('errnoRet: at most 65535 (the kernel keeps 16 bits), only with SCMP_ACT_ERRNO or SCMP_ACT_TRACE', () => {
    assert.equal(toOciSeccomp(profile([rule({ errnoret: 0xffff })]))?.syscalls?.[0]?.errnoRet, 0xffff);
    assert.equal(toOciSeccomp(profile([rule({ Action: 'SCMP_ACT_TRACE', errnoret: 7 })]))?.syscalls?.[0]?.errnoRet, 7);
    assert.throws(
      () => toOciSeccomp(profile([rule({ errnoret: 0x10000 })])),
      invalid(/errnoRet 65536 is not 0 to 65535/),
    );
    assert.throws(
      () => toOciSeccomp(profile([rule({ Action: 'SCMP_ACT_KILL', errnoret: 1 })])),
      invalid(/errnoRet with SCMP_ACT_KILL, which returns no errno/),
    );
    assert.equal(
      'errnoRet' in (toOciSeccomp(profile([rule()]))?.syscalls?.[0] ?? {}),
      false,
      'unset on the wire: not in the OCI rule',
    );
  });

  it('caps the number of rules and names', () => {
    assert.throws(
      () => toOciSeccomp(profile(new Array(MAX_SECCOMP_RULES + 1).fill(rule()))),
      invalid(/more than 1024 rules/),
    );
    assert.equal(toOciSeccomp(profile(new Array(MAX_SECCOMP_RULES).fill(rule())))?.syscalls?.length, MAX_SECCOMP_RULES);
    assert.throws(
      () => toOciSeccomp(profile([rule({ Names: new Array(MAX_NAMES_PER_RULE + 1).fill('read') })])),
      invalid(/more than 512 syscall names in rule 0/),
    );
    const many = new Array(MAX_SECCOMP_NAMES / MAX_NAMES_PER_RULE + 1).fill(
      rule({ Names: new Array(MAX_NAMES_PER_RULE).fill('read') }),
    );
    assert.throws(() => toOciSeccomp(profile(many)), invalid(/more than 8192 syscall names in all/));
  });
});
