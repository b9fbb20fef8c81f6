/**
 * lib/portmap-nat.ts, which removes at the end of a CRI run the nat chains portmap leaves behind: its parser on
 * sample `iptables -S` lines, then the removal against the real portmap plugin and iptables, each case in a network
 * namespace of its own (in-netns/portmap-nat-case.ts under `unshare -n`), so the host's tables are never touched.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseNatListing, splitRuleLine } from './lib/portmap-nat';

interface Left {
  problems: string[];
  iptables: string;
  ip6tables: string;
  nft: object[];
}

const EMPTY_NAT = ['-P PREROUTING ACCEPT', '-P INPUT ACCEPT', '-P OUTPUT ACCEPT', '-P POSTROUTING ACCEPT', ''].join(
  '\n',
);

function runCase(name: string): Left {
  const script = path.join(__dirname, 'in-netns', 'portmap-nat-case.js');
  return JSON.parse(
    execFileSync('unshare', ['-n', process.execPath, script, name, fs.readlinkSync('/proc/self/ns/net')], {
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: 60_000,
    }).toString(),
  ) as Left;
}

describe('portmap-nat: what portmap leaves in the nat table', function () {
  it('splits iptables -S lines, quoted words with escaped quotes included', function () {
    assert.deepEqual(
      splitRuleLine('-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ'),
      [
        '-A',
        'POSTROUTING',
        '-m',
        'comment',
        '--comment',
        'CNI portfwd requiring masquerade',
        '-j',
        'CNI-HOSTPORT-MASQ',
      ],
    );
    assert.deepEqual(splitRuleLine('-A X --comment "dnat name: \\"n\\" id: \\"a\\\\b\\"" -j Y'), [
      '-A',
      'X',
      '--comment',
      'dnat name: "n" id: "a\\b"',
      '-j',
      'Y',
    ]);
    assert.deepEqual(splitRuleLine('-A X --comment "" -j Y'), ['-A', 'X', '--comment', '', '-j', 'Y']);
    assert.throws(() => splitRuleLine('-A X --comment "open'), /unbalanced/);
  });

  it('parses chains and rules with their targets', function () {
    const t = parseNatListing(
      [
        '-P OUTPUT ACCEPT',
        '-N CNI-HOSTPORT-DNAT',
        '-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT',
        '-A CNI-X -g CNI-Y',
        '',
      ].join('\n'),
    );
    assert.deepEqual([...t.chains], ['CNI-HOSTPORT-DNAT']);
    assert.deepEqual(t.rules, [
      {
        chain: 'OUTPUT',
        spec: ['-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'CNI-HOSTPORT-DNAT'],
        target: 'CNI-HOSTPORT-DNAT',
      },
      { chain: 'CNI-X', spec: ['-g', 'CNI-Y'], target: 'CNI-Y' },
    ]);
  });

  it('removes the chains, jumps and nft tables a run made once its pods are gone', function () {
    const left = runCase('gone');
    assert.deepEqual(left.problems, []);
    assert.equal(left.iptables, EMPTY_NAT);
    assert.equal(left.ip6tables, EMPTY_NAT);
    assert.deepEqual(left.nft, [], 'no nft table is left');
  });

  it('keeps everything while a pod still has a mapping', function () {
    const left = runCase('busy');
    assert.match(
      left.problems.join('\n'),
      /kept nat chains CNI-HOSTPORT-DNAT, CNI-HOSTPORT-SETMARK, CNI-HOSTPORT-MASQ: .*still in use/,
    );
    for (const want of [
      '-N CNI-HOSTPORT-MASQ',
      '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
      '-j DNAT --to-destination 10.99.0.2:8080',
    ]) {
      assert.ok(left.iptables.includes(want), `${want} in:\n${left.iptables}`);
    }
  });

  it('leaves chains that existed before the run', function () {
    const left = runCase('before');
    assert.deepEqual(left.problems, []);
    for (const chain of ['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-SETMARK', 'CNI-HOSTPORT-MASQ'])
      assert.ok(left.iptables.includes(`-N ${chain}\n`), left.iptables);
    assert.ok(left.iptables.includes('-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT'), left.iptables);
    assert.doesNotMatch(left.iptables, /CNI-DN-/, "the pod's own chain went at DEL");
  });
});
