/**
 * One case of portmap-nat.test.ts, which runs it as `unshare -n node portmap-nat-case.js <case> <netns>`, <netns>
 * being where the test's /proc/self/ns/net links to (this refuses to run there). In its own network namespace,
 * whose nat tables start empty, it runs Debian's portmap plugin by hand (ADD, maybe DEL) for a pod on a bridge, then
 * lib/portmap-nat.ts' removal against the baseline taken before, and prints what is left as JSON.
 *
 * Cases: `gone` (the pod's mapping is removed before the clean-up), `busy` (its mapping is still there), `before`
 * (portmap's chains existed before the baseline: another pod came and went first).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { natBaseline, removePortmapNat } from '../lib/portmap-nat';

const CONF = {
  cniVersion: '1.0.0',
  name: 'hull-nat-case',
  type: 'portmap',
  capabilities: { portMappings: true },
  runtimeConfig: { portMappings: [{ hostPort: 41234, containerPort: 8080, protocol: 'tcp' }] },
  prevResult: {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'br0' }, { name: 'veth0' }, { name: 'eth0', sandbox: '/proc/self/ns/net' }],
    ips: [{ address: '10.99.0.2/24', gateway: '10.99.0.1', interface: 2 }],
  },
};

function portmap(command: 'ADD' | 'DEL', containerId: string): void {
  execFileSync('/usr/lib/cni/portmap', [], {
    input: JSON.stringify(CONF),
    env: {
      ...process.env,
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: '/proc/self/ns/net',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/usr/lib/cni',
    },
    stdio: ['pipe', 'ignore', 'inherit'],
  });
}

const ip = (args: string[]): void => void execFileSync('ip', args, { stdio: 'inherit' });
// spawns: wrapper; text's callers name the program
const text = (file: string, args: string[]): string =>
  execFileSync(file, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString();

async function main(mode: string, callerNetns: string): Promise<void> {
  if (fs.readlinkSync('/proc/self/ns/net') === callerNetns)
    throw new Error('run me in a network namespace of my own (unshare -n)');
  ip(['link', 'add', 'br0', 'type', 'bridge']);
  ip(['addr', 'add', '10.99.0.1/24', 'dev', 'br0']);
  ip(['link', 'set', 'br0', 'up']);
  if (mode === 'before') {
    portmap('ADD', 'earlier');
    portmap('DEL', 'earlier');
  }
  const baseline = await natBaseline();
  portmap('ADD', 'pod');
  if (mode !== 'busy') portmap('DEL', 'pod');
  const problems: string[] = [];
  await removePortmapNat(baseline, problems);
  const nft = (JSON.parse(text('nft', ['-j', 'list', 'ruleset'])) as { nftables: object[] }).nftables.filter(
    (i) => !('metainfo' in i),
  );
  const left = {
    problems,
    iptables: text('iptables', ['-t', 'nat', '-S']),
    ip6tables: text('ip6tables', ['-t', 'nat', '-S']),
    nft,
  };
  process.stdout.write(`${JSON.stringify(left)}\n`);
}

main(process.argv[2] ?? '', process.argv[3] ?? '').catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
