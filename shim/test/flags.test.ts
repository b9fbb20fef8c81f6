import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { parseFlags, type ShimFlags } from '../flags';

const DEFAULTS: ShimFlags = {
  namespace: '',
  id: '',
  address: '',
  publishBinary: '',
  bundle: '',
  socket: '',
  debug: false,
  version: false,
  info: false,
  action: 'daemon',
};

describe('shim flags (Go flag syntax)', () => {
  it('parses what containerd passes to start, delete and the daemon', () => {
    const start = [
      '-namespace',
      'k8s.io',
      '-address',
      '/run/containerd/containerd.sock',
      '-publish-binary',
      '/usr/bin/containerd',
      '-id',
      'abc',
      '-debug',
      'start',
    ];
    assert.deepEqual(parseFlags(start), {
      ...DEFAULTS,
      namespace: 'k8s.io',
      address: '/run/containerd/containerd.sock',
      publishBinary: '/usr/bin/containerd',
      id: 'abc',
      debug: true,
      action: 'start',
    });
    const del = [
      '-namespace',
      'default',
      '-address',
      '/a.sock',
      '-publish-binary',
      '/c',
      '-id',
      'x',
      '-bundle',
      '/run/b/x',
      'delete',
    ];
    assert.deepEqual(parseFlags(del), {
      ...DEFAULTS,
      namespace: 'default',
      address: '/a.sock',
      publishBinary: '/c',
      id: 'x',
      bundle: '/run/b/x',
      action: 'delete',
    });
    assert.deepEqual(parseFlags(['-namespace', 'n', '-id', 'i', '-address', '/a']), {
      ...DEFAULTS,
      namespace: 'n',
      id: 'i',
      address: '/a',
    });
    assert.deepEqual(parseFlags([]), DEFAULTS);
  });

  it('takes -x v, -x=v, --x v and --x=v alike; a value may start with a dash or be empty', () => {
    for (const argv of [['-id', 'v'], ['-id=v'], ['--id', 'v'], ['--id=v']])
      assert.equal(parseFlags(argv).id, 'v', argv.join(' '));
    assert.equal(parseFlags(['-id', '-debug']).id, '-debug', 'Go takes the next argument as the value, whatever it is');
    assert.equal(parseFlags(['-address=']).address, '');
    assert.equal(parseFlags(['-address=a=b']).address, 'a=b');
    assert.equal(parseFlags(['-socket', '/s.sock', '-id', 'a', '-id', 'b']).id, 'b', 'the last one wins');
  });

  it('booleans: alone, =true/=false/=1/=0; never a separate value', () => {
    assert.equal(parseFlags(['-debug']).debug, true);
    assert.equal(parseFlags(['--debug']).debug, true);
    assert.equal(parseFlags(['-debug=true']).debug, true);
    assert.equal(parseFlags(['-debug=1']).debug, true);
    assert.equal(parseFlags(['-debug=false']).debug, false);
    assert.equal(parseFlags(['-debug', '-debug=0']).debug, false);
    assert.throws(
      () => parseFlags(['-debug=yes']),
      (e) => e instanceof InvalidArgumentError && /invalid boolean value "yes" for -debug/.test(e.message),
    );
    // `-debug false`: "false" is the first positional, i.e. the action.
    assert.throws(() => parseFlags(['-debug', 'false']), /unknown action "false"/);
    assert.equal(parseFlags(['-v']).version, true);
    assert.equal(parseFlags(['-version']).version, true);
  });

  it('-info (containerd 2.x runs `<shim> -info` alone) is a boolean', () => {
    assert.deepEqual(parseFlags(['-info']), { ...DEFAULTS, info: true });
    assert.equal(parseFlags(['--info=false']).info, false);
  });

  it('refuses an unknown flag and a flag without its value', () => {
    assert.throws(
      () => parseFlags(['-bogus', 'x']),
      (e) => e instanceof InvalidArgumentError && e.message === 'flag provided but not defined: -bogus',
    );
    assert.throws(
      () => parseFlags(['-id']),
      (e) => e instanceof InvalidArgumentError && e.message === 'flag needs an argument: -id',
    );
    assert.throws(() => parseFlags(['-namespace', 'n', '-bundle']), /flag needs an argument: -bundle/);
  });

  it('the action is the first positional; flags stop there or at --; extra arguments are refused', () => {
    assert.equal(parseFlags(['start']).action, 'start');
    assert.equal(parseFlags(['delete']).action, 'delete');
    assert.equal(parseFlags(['-id', 'a', '--', 'delete']).action, 'delete');
    assert.throws(() => parseFlags(['-id', 'a', '-']), /unknown action "-"/);
    assert.throws(
      () => parseFlags(['stop']),
      (e) => e instanceof InvalidArgumentError && /unknown action "stop": expected start or delete/.test(e.message),
    );
    assert.throws(() => parseFlags(['start', 'extra']), /unexpected arguments after start: extra/);
    // Go stops at the first positional: a flag after the action is an extra argument, not a flag.
    assert.throws(() => parseFlags(['delete', '-id', 'x']), /unexpected arguments after delete: -id x/);
  });
});
