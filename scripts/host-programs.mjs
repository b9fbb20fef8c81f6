#!/usr/bin/env node
// The one list of the host programs hull, its guest image builder, its tests and its benchmarks run, each with the
// Debian package it comes from, and of the other Debian packages they need. The Makefile's APT_PACKAGES is derived
// from it (`node scripts/host-programs.mjs packages` prints the package names), so a program cannot be used without
// `make deps` installing it. scripts/test/host-programs.test.ts checks it both ways: every program here is owned (as
// `dpkg -S` sees it) by the package named, which is in APT_PACKAGES; and every program spawned anywhere in the tree is
// here (scripts/spawn-scan.ts: the convention the scan relies on is described at its top).
//
// A program entry: `name` (what PATH lookups and the code use), `path` (where Debian installs it; dpkg's own path may
// differ by /usr-merge or a symlink, which the test resolves), `package`, `why` (who runs it), and for what the guest
// image carries, `guest` (its path inside the guest, where the agent runs it). `runtime: true` marks the Node.js
// runtime itself (and npm's node-gyp): it runs everything else, so it is a prerequisite of `make`, not installed by it.

/** @typedef {{ name: string, path: string, package: string, why: string, guest?: string, runtime?: boolean }} HostProgram */

/** @type {readonly HostProgram[]} */
export const PROGRAMS = [
  // The runtime.
  {
    name: 'node',
    path: '/usr/bin/node',
    package: 'nodejs',
    runtime: true,
    guest: '/usr/bin/node',
    why: 'runs hull, the tests and (copied into the guest image) the agent',
  },
  {
    name: 'node-gyp',
    path: '/usr/bin/node-gyp',
    package: 'node-gyp',
    runtime: true,
    why: 'vsock/netns scripts/install.js outside npm (npm runs its own node-gyp); it runs g++ and make',
  },

  // containerd and the runc baseline.
  {
    name: 'containerd',
    path: '/usr/bin/containerd',
    package: 'containerd',
    why: 'integration: a private containerd per run; cli/ (hull check, hull env: --version)',
  },
  {
    name: 'ctr',
    path: '/usr/bin/ctr',
    package: 'containerd',
    why: 'integration, bench: containers through containerd',
  },
  {
    name: 'containerd-shim-runc-v2',
    path: '/usr/bin/containerd-shim-runc-v2',
    package: 'containerd',
    why: 'integration, bench: the runc baseline shim',
  },
  { name: 'runc', path: '/usr/sbin/runc', package: 'runc', why: 'run by containerd-shim-runc-v2' },
  // containerd 2.x (Debian sid's build, unpacked by `make deps` into /var/cache/hull/containerd-2/bin: not a package
  // here; integration/lib/containerd.ts runs its containerd, ctr and runc shim under the names above).
  {
    name: 'gpgv',
    path: '/usr/bin/gpgv',
    package: 'gpgv',
    why: "scripts/containerd2.mjs: sid's InRelease against Debian's archive keyring",
  },
  {
    name: 'dpkg-deb',
    path: '/usr/bin/dpkg-deb',
    package: 'dpkg',
    why: "scripts/containerd2.mjs: unpacks sid's containerd .deb (never installed)",
  },
  {
    name: 'bridge',
    path: '/usr/lib/cni/bridge',
    package: 'containernetworking-plugins',
    why: 'run by containerd (CRI): the pod network of the CRI tests',
  },
  {
    name: 'host-local',
    path: '/usr/lib/cni/host-local',
    package: 'containernetworking-plugins',
    why: 'run by the bridge plugin (IPAM)',
  },
  {
    name: 'portmap',
    path: '/usr/lib/cni/portmap',
    package: 'containernetworking-plugins',
    why: 'run by containerd (CRI) for hostPorts; integration/in-netns/portmap-nat-case.ts',
  },
  {
    name: 'loopback',
    path: '/usr/lib/cni/loopback',
    package: 'containernetworking-plugins',
    why: 'run by containerd (CRI)',
  },

  // The VM.
  {
    name: 'qemu-system-x86_64',
    path: '/usr/bin/qemu-system-x86_64',
    package: 'qemu-system-x86',
    why: 'hypervisor/qemu (configuration: qemuPath); cli/ (hull check: --version, the KVM test boot)',
  },
  {
    name: 'virtiofsd',
    path: '/usr/lib/qemu/virtiofsd',
    package: 'qemu-system-common',
    why: 'hypervisor/virtiofsd.ts (configuration: virtiofsdPath); cli/ (hull check, hull env: --version)',
  },

  // Networking.
  {
    name: 'nsenter',
    path: '/usr/bin/nsenter',
    package: 'util-linux',
    why: 'hypervisor: QEMU and ip/tc/iptables in the pod netns (configuration: nsenterPath); tests',
  },
  { name: 'unshare', path: '/usr/bin/unshare', package: 'util-linux', why: 'integration/portmap-nat.test.ts' },
  {
    name: 'setpriv',
    path: '/usr/bin/setpriv',
    package: 'util-linux',
    why: 'core/test/store.test.ts: a lock squatted by another user',
  },
  {
    name: 'ip',
    path: '/usr/sbin/ip',
    package: 'iproute2',
    guest: '/usr/sbin/ip',
    why: 'hypervisor/network, tests; the agent configures the pod network with it in the guest',
  },
  {
    name: 'tc',
    path: '/usr/sbin/tc',
    package: 'iproute2',
    why: 'hypervisor/network: redirect between the pod veth and the tap',
  },
  {
    name: 'iptables',
    path: '/usr/sbin/iptables',
    package: 'iptables',
    why: 'hypervisor/network/localhost.ts, portmap clean-up, tests; portmap runs it; cli/ (hull check: -t nat -S)',
  },
  {
    name: 'ip6tables',
    path: '/usr/sbin/ip6tables',
    package: 'iptables',
    why: 'integration/lib/portmap-nat.ts; portmap runs it',
  },
  {
    name: 'nft',
    path: '/usr/sbin/nft',
    package: 'nftables',
    why: 'integration/lib/portmap-nat.ts: the nft tables iptables-nft leaves',
  },

  // Mounts.
  { name: 'mount', path: '/usr/bin/mount', package: 'mount', why: 'fs-share/mount.ts' },
  { name: 'umount', path: '/usr/bin/umount', package: 'mount', why: 'fs-share/mount.ts, integration clean-up' },

  // The guest image (guest/build.ts) and its tests.
  {
    name: 'crun',
    path: '/usr/bin/crun',
    package: 'crun',
    guest: '/usr/bin/crun',
    why: 'copied into the guest image, where the agent runs the containers with it',
  },
  {
    name: 'busybox',
    path: '/bin/busybox',
    package: 'busybox-static',
    guest: '/bin/busybox',
    why: "the guest image's busybox (the agent's mount, modprobe...); guest tests",
  },
  { name: 'mkfs.ext4', path: '/usr/sbin/mkfs.ext4', package: 'e2fsprogs', why: 'guest/rootfs.ts: the root disk' },
  { name: 'debugfs', path: '/usr/sbin/debugfs', package: 'e2fsprogs', why: 'guest/test/rootfs.test.ts' },
  { name: 'e2fsck', path: '/usr/sbin/e2fsck', package: 'e2fsprogs', why: 'guest/test/rootfs.test.ts' },
  { name: 'dumpe2fs', path: '/usr/sbin/dumpe2fs', package: 'e2fsprogs', why: 'guest/test/rootfs.test.ts' },
  { name: 'depmod', path: '/usr/sbin/depmod', package: 'kmod', why: "guest/build.ts: the guest's modules.dep" },
  {
    name: 'gcc',
    path: '/usr/bin/gcc',
    package: 'gcc',
    why: 'guest/hull-init.ts (static hull-init, hull-ctty), integration pause image; node-gyp',
  },
  {
    name: 'ldd',
    path: '/usr/bin/ldd',
    package: 'libc-bin',
    why: 'guest/ldd.ts: the libraries copied with node, crun and ip; integration/lib/node-rootfs.ts',
  },
  {
    name: 'chroot',
    path: '/usr/sbin/chroot',
    package: 'coreutils',
    why: 'guest/build.ts: runs the staged guest programs once',
  },
  {
    name: 'dpkg-query',
    path: '/usr/bin/dpkg-query',
    package: 'dpkg',
    why: 'guest/host.ts: package versions and files',
  },
  {
    name: 'dpkg',
    path: '/usr/bin/dpkg',
    package: 'dpkg',
    why: 'scripts/test/host-programs.test.ts: dpkg -S, which package owns a program',
  },
  {
    name: 'xz',
    path: '/usr/bin/xz',
    package: 'xz-utils',
    why: 'guest/host.ts: xz-compressed kernel modules; scripts/containerd2.mjs: Packages.xz',
  },
  { name: 'zstd', path: '/usr/bin/zstd', package: 'zstd', why: 'guest/host.ts: zstd-compressed kernel modules' },

  // Observability: a real Prometheus scrapes hull-monitor in the metrics tests.
  {
    name: 'prometheus',
    path: '/usr/bin/prometheus',
    package: 'prometheus',
    why: 'integration: a real Prometheus server scraping hull-monitor',
  },
  {
    name: 'promtool',
    path: '/usr/bin/promtool',
    package: 'prometheus',
    why: 'tests: promtool check metrics (monitor and shim unit tests, integration)',
  },

  // The systemd cgroup driver's test: a private bus, with a fake systemd Manager on it.
  {
    name: 'dbus-daemon',
    path: '/usr/bin/dbus-daemon',
    package: 'dbus-daemon',
    why: 'core/test/systemd-cgroup.test.ts: a private D-Bus bus for the systemd cgroup driver',
  },

  // Small tools of tests and integration helpers.
  { name: 'tar', path: '/usr/bin/tar', package: 'tar', why: 'integration/lib/containerd.ts: the pause image layer' },
  {
    name: 'mkfifo',
    path: '/usr/bin/mkfifo',
    package: 'coreutils',
    why: 'integration/lib/runc-shim.ts, core and shim tests',
  },
  { name: 'sha256sum', path: '/usr/bin/sha256sum', package: 'coreutils', why: 'shim/test/address.test.ts' },
  { name: 'readlink', path: '/usr/bin/readlink', package: 'coreutils', why: 'netns tests' },
  { name: 'sleep', path: '/usr/bin/sleep', package: 'coreutils', why: 'core tests' },
  { name: 'true', path: '/usr/bin/true', package: 'coreutils', why: 'core tests' },
  {
    name: 'make',
    path: '/usr/bin/make',
    package: 'make',
    why: 'the Makefile; node-gyp; scripts/test/host-programs.test.ts (make apt-packages)',
  },
  {
    name: 'python3',
    path: '/usr/bin/python3',
    package: 'python3-minimal',
    why: 'hypervisor/test/network.test.ts: a raw-socket probe in a netns; node-gyp',
  },
  { name: 'sh', path: '/bin/sh', package: 'dash', why: 'agent/test/terminal.test.ts' },
];

/** Debian packages needed for something other than a program hull runs. */
export const OTHER_PACKAGES = [
  { package: 'linux-image-cloud-amd64', why: 'the guest kernel and its modules (guest/host.ts)' },
  { package: 'libc6-dev', why: 'the static libc gcc links hull-init, hull-ctty and pause against' },
  { package: 'g++', why: "node-gyp: node-pty's and the addons' native code" },
  { package: 'python3', why: 'node-gyp' },
  { package: 'debian-archive-keyring', why: "scripts/containerd2.mjs: the keys sid's InRelease is verified with" },
  { package: 'qemu-utils', why: 'qemu-img, for working on guest disks by hand (hull itself does not run it)' },
];

/** What `make deps` installs: every package above, once, in order of first mention (the runtime's excluded). */
export const APT_PACKAGES = [
  ...new Set([...PROGRAMS.filter((p) => !p.runtime).map((p) => p.package), ...OTHER_PACKAGES.map((p) => p.package)]),
];

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  if (process.argv[2] !== 'packages') {
    console.error('usage: node scripts/host-programs.mjs packages');
    process.exit(2);
  }
  console.log(APT_PACKAGES.join(' '));
}
