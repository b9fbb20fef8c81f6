import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../errors';
import type { GuestMount, VolumeSpec } from '../types';
import { isBindMount, shareVolumes, type OciMount } from '../volumes';

describe('fs-share volumes of a container spec', () => {
  it('shares each bind mount and rewrites it to its guest path; other mounts pass through', async () => {
    const shared: VolumeSpec[] = [];
    const fake = {
      shareVolume: async (cid: string, v: VolumeSpec): Promise<GuestMount> => {
        shared.push(v);
        return {
          guestPath: `/run/kata-containers/shared/containers/${cid}/volumes/${shared.length}`,
          readOnly: v.readOnly,
        };
      },
    };
    const mounts: OciMount[] = [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] },
      { destination: '/data', type: 'bind', source: '/srv/data', options: ['rbind', 'ro', 'nosuid'] },
      { destination: '/cache', type: 'none', source: '/srv/cache', options: ['rbind', 'rprivate'] },
    ];
    assert.deepEqual(await shareVolumes(fake, 'c1', mounts), [
      mounts[0],
      {
        destination: '/data',
        type: 'bind',
        source: '/run/kata-containers/shared/containers/c1/volumes/1',
        options: ['rbind', 'nosuid', 'ro'],
      },
      {
        destination: '/cache',
        type: 'bind',
        source: '/run/kata-containers/shared/containers/c1/volumes/2',
        options: ['rbind', 'rprivate', 'rw'],
      },
    ]);
    assert.deepEqual(shared, [
      { source: '/srv/data', destination: '/data', readOnly: true },
      { source: '/srv/cache', destination: '/cache', readOnly: false },
    ]);
    await assert.rejects(
      shareVolumes(fake, 'c1', [{ destination: '/x', type: 'bind', source: '/x', options: ['ro', 'rw'] }]),
      InvalidArgumentError,
    );
  });

  it('recognises bind mounts', () => {
    assert.ok(isBindMount({ destination: '/a', type: 'bind', source: '/a', options: [] }));
    assert.ok(isBindMount({ destination: '/a', type: '', source: '/a', options: ['bind'] }));
    assert.ok(!isBindMount({ destination: '/a', type: 'tmpfs', source: 'tmpfs', options: [] }));
  });
});
