import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { MAX_PIDS, parsePidList, toGrpcResources } from '../resources';

describe('agent client resources and process lists', () => {
  it('puts resources in the OCI shape, 0 meaning "not set"', () => {
    assert.equal(toGrpcResources(undefined), undefined);
    assert.deepEqual(toGrpcResources({ memoryLimitBytes: 32 << 20, cpuQuotaUs: -1, cpus: '0', pidsLimit: 10 }), {
      Memory: { Limit: 32 << 20, Reservation: 0, Swap: 0 },
      CPU: { Shares: 0, Quota: -1, Period: 0, Cpus: '0', Mems: '' },
      Pids: { Limit: 10 },
    });
    assert.throws(() => toGrpcResources({ memoryLimitBytes: 0 }), InvalidArgumentError);
    assert.throws(() => toGrpcResources({ cpuShares: 1.5 }), InvalidArgumentError);
  });

  it('accepts only a JSON array of positive pids from the guest', () => {
    assert.deepEqual(parsePidList(Buffer.from('[1, 42]')), [1, 42]);
    assert.deepEqual(parsePidList(Buffer.from('[]')), []);
    for (const bad of [
      '',
      '{}',
      '[0]',
      '[-1]',
      '[1.5]',
      '["1"]',
      'null',
      JSON.stringify(new Array(MAX_PIDS + 1).fill(1)),
    ]) {
      assert.equal(parsePidList(Buffer.from(bad)), undefined, bad.slice(0, 20));
    }
  });
});
