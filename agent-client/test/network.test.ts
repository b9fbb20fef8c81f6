import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import { types } from '../../protos/agent';
import {
  BadReplyError,
  fromGrpcInterface,
  fromGrpcRoutes,
  toGrpcInterface,
  toGrpcNeighbor,
  toGrpcRoute,
} from '../network';

describe('agent-client network types', () => {
  it("an interface becomes Kata's types.Interface: mask as the prefix length, family from the address", () => {
    assert.deepEqual(
      toGrpcInterface({
        name: 'eth0',
        mac: '02:42:AC:11:00:02',
        mtu: 1450,
        noArp: true,
        pciPath: '02/00',
        linkType: 'veth',
        addresses: [
          { address: '10.0.0.2', prefixLength: 24 },
          { address: 'fd00::2', prefixLength: 64 },
        ],
      }),
      {
        device: 'eth0',
        name: 'eth0',
        hwAddr: '02:42:AC:11:00:02',
        mtu: 1450,
        devicePath: '02/00',
        type: 'veth',
        rawFlags: 0x80,
        IPAddresses: [
          { family: types.IPFamily.v4, address: '10.0.0.2', mask: '24' },
          { family: types.IPFamily.v6, address: 'fd00::2', mask: '64' },
        ],
      },
    );
    assert.equal(
      toGrpcInterface({ name: 'eth0', mac: '02:00:00:00:00:01', addresses: [] }).mtu,
      0,
      'no MTU: unchanged',
    );
    assert.throws(
      () => toGrpcInterface({ name: 'eth0', mac: '02:00:00:00:00:01', addresses: [{ address: 'x', prefixLength: 1 }] }),
      InvalidArgumentError,
    );
  });

  it('routes: the default route is an empty dest, scope by name, family from dest or gateway', () => {
    assert.deepEqual(toGrpcRoute({ dest: 'default', gateway: 'fd00::1', device: 'eth0' }), {
      dest: '',
      gateway: 'fd00::1',
      device: 'eth0',
      source: '',
      scope: 0,
      family: types.IPFamily.v6,
      flags: 0,
      mtu: 0,
    });
    assert.deepEqual(
      toGrpcRoute({ dest: '10.0.0.0/24', device: 'eth0', scope: 'link', source: '10.0.0.2', onlink: true, mtu: 1400 }),
      {
        dest: '10.0.0.0/24',
        gateway: '',
        device: 'eth0',
        source: '10.0.0.2',
        scope: 253,
        family: types.IPFamily.v4,
        flags: 4,
        mtu: 1400,
      },
    );
    assert.equal(toGrpcRoute({ dest: 'default', device: 'eth0' }).family, types.IPFamily.v4);
  });

  it('neighbours: permanent unless said otherwise', () => {
    assert.deepEqual(toGrpcNeighbor({ address: '10.0.0.1', mac: '02:00:00:00:00:01', device: 'eth0' }), {
      toIPAddress: { family: types.IPFamily.v4, address: '10.0.0.1', mask: '' },
      device: 'eth0',
      lladdr: '02:00:00:00:00:01',
      state: 0x80,
      flags: 0,
    });
    assert.equal(
      toGrpcNeighbor({ address: '10.0.0.1', mac: '02:00:00:00:00:01', device: 'eth0', state: 'stale', router: true })
        .flags,
      0x80,
    );
  });

  it('checks what the guest answers', () => {
    const good: types.IInterface = {
      name: 'eth0',
      hwAddr: '02:42:AC:11:00:02',
      mtu: 1500,
      type: '',
      rawFlags: 0x11043,
      IPAddresses: [{ family: types.IPFamily.v4, address: '10.0.0.2', mask: '24' }],
    };
    assert.deepEqual(fromGrpcInterface(good), {
      name: 'eth0',
      mac: '02:42:ac:11:00:02',
      mtu: 1500,
      linkType: '',
      flags: 0x11043,
      up: true,
      addresses: [{ family: 4, address: '10.0.0.2', prefixLength: 24 }],
    });
    for (const bad of [
      { ...good, IPAddresses: [{ family: types.IPFamily.v6, address: '10.0.0.2', mask: '24' }] },
      { ...good, IPAddresses: [{ family: types.IPFamily.v4, address: '10.0.0.2', mask: '33' }] },
      { ...good, name: 'x'.repeat(300) },
      { ...good, mtu: -1 },
      { ...good, rawFlags: 1.5 },
    ])
      assert.throws(() => fromGrpcInterface(bad), BadReplyError, JSON.stringify(bad));
    assert.deepEqual(
      fromGrpcRoutes([
        { dest: '', gateway: '10.0.0.1', device: 'eth0', scope: 0, family: types.IPFamily.v4, flags: 4 },
      ]),
      [{ dest: 'default', gateway: '10.0.0.1', device: 'eth0', scope: 'universe', family: 4, onlink: true }],
    );
    assert.equal(fromGrpcRoutes([{ dest: '10.0.0.0/8', device: 'eth0', scope: 17 }])[0]!.scope, 17);
    assert.throws(() => fromGrpcRoutes([{ family: 9 as types.IPFamily }]), BadReplyError);
    assert.throws(() => fromGrpcRoutes(Array.from({ length: 5000 }, () => ({}))), BadReplyError);
  });
});
