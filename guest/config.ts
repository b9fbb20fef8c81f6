/**
 * What goes into the guest image. Changing anything here changes the builder's own fingerprint, so the next
 * `make guest` rebuilds.
 */

/**
 * Kernel modules, by name (dependencies are added from modules.dep). Everything else the guest needs is built into
 * the cloud kernel (ext4, devtmpfs, the 8250 serial console, cgroup2, tmpfs).
 */
export const GUEST_MODULES = {
  /**
   * Loaded by the initramfs: virtio over PCI (q35) or MMIO (microvm) and virtio-blk to reach the root disk, and the
   * virtio-serial driver so the agent's channel exists when the agent starts (loading it here costs far less than a
   * modprobe spawned by node under emulation). virtio_balloon: free page reporting (the host's
   * `free_page_reporting`) works only once the driver is bound, and nothing else would load it (no udev); without
   * the device it stays loaded and idle (about 30 KiB).
   */
  initrd: ['virtio_pci', 'virtio_mmio', 'virtio_blk', 'virtio_console', 'virtio_balloon'],
  /**
   * In the initramfs too, loaded only for a pmem root (the root image through DAX, `root=/dev/pmem0`): ACPI NFIT
   * (QEMU's nvdimm, with libnvdimm), nd_pmem (the pmem block device and its "pfn" mode, with nd_btt) and virtio_pmem.
   * All are modules in Debian's cloud kernel; FS_DAX and ext4 are built in. A kernel without them gets an image
   * with no PFN info block, which the host reads as "no DAX" (guest/pmem.ts).
   */
  initrdPmem: ['nfit', 'nd_pmem', 'virtio_pmem'],
  /** Installed in the root filesystem for the agent to `modprobe`, with a modules.dep made by depmod. */
  rootfs: [
    'virtio_console', // virtio-serial ports: /dev/hvc*, /dev/vport*
    'vsock',
    'vmw_vsock_virtio_transport_common',
    'vmw_vsock_virtio_transport', // the agent's AF_VSOCK listener
    'vsock_loopback', // CID 1 inside the guest: not loaded at boot; tests load it through CreateSandbox
    'fuse',
    'virtiofs', // the shared folder
    'overlay', // container root filesystems
    'virtio_rng', // /dev/hwrng, entropy from the host
    'veth',
    'tun',
    'virtio_net', // pod networking (virtio_net pulls in net_failover and failover)
    'sch_ingress',
    'act_mirred',
    'cls_u32', // tc redirect between the pod's veth and the VM's NIC
  ],
  /**
   * Shipped for the kernel to load on demand, never loaded at boot: what a container expects a normal host kernel to
   * offer (`brctl addbr`, `iptables`, `ip link add ... type vlan`, `mount -o loop` of an xfs image). The kernel's
   * request_module runs /sbin/modprobe (busybox), which finds the module through the image's modules.alias and
   * modules.dep. `trees` are folders under /lib/modules/<release>/kernel/ taken whole; `names` are single modules.
   * Dependencies come along from modules.dep.
   */
  onDemand: {
    trees: [
      'net/netfilter',
      'net/ipv4/netfilter',
      'net/ipv6/netfilter', // nftables, iptables (legacy and nft), conntrack, NAT, ipset
      'net/bridge',
      'net/8021q', // bridges (with br_netfilter and ebtables), VLANs
      'net/sched', // tc qdiscs, classifiers and actions
      'drivers/net/bonding',
      'drivers/net/ipvlan',
      'drivers/net/vxlan',
      'drivers/net/wireguard',
      'drivers/net/team',
      'fs/fat',
      'fs/isofs',
      'fs/squashfs',
      'fs/erofs',
      'fs/exfat',
      'fs/xfs',
    ],
    names: [
      'dummy',
      'macvlan',
      'macvtap',
      'geneve',
      'ifb',
      'vrf',
      'nlmon',
      'ipip',
      'ip_gre',
      'ip6_tunnel',
      'sit', // virtual links
      'loop',
      'binfmt_misc', // loop devices; binfmt_misc for foreign-architecture containers (qemu-user)
      'nls_cp437',
      'nls_ascii',
      'nls_utf8',
      'nls_iso8859-1', // code pages vfat and isofs ask for
    ],
  },
  /** Modules in the lists above that a kernel may lack without failing the build (they are reported). */
  optional: ['virtio_rng', 'vsock_loopback', 'sch_ingress', 'act_mirred', 'cls_u32'],
} as const;

/** Paths inside the guest. */
export const GUEST_PATHS = {
  agentDir: '/opt/hull/agent',
  /** The loader (guest/agent-loader.ts), which runs the bundle agent.js with its code cache agent.cache. */
  agentMain: '/opt/hull/agent/main.js',
  node: '/usr/bin/node',
  crun: '/usr/bin/crun',
  /**
   * iproute2's ip (busybox's applet stays at /sbin/ip; PATH puts /usr/sbin first): the agent configures the pod's
   * interfaces, routes and neighbours with it (`-j` for reading), which busybox's ip cannot fully do.
   */
  ip: '/usr/sbin/ip',
  /** What the kernel runs: a symlink to hullInit. */
  init: '/sbin/init',
  /** hull-init (guest/init/hull-init.c): PID 1, starts the agent, reaps orphans, powers off when the agent exits. */
  hullInit: '/sbin/hull-init',
  /** hull-ctty (guest/init/hull-ctty.c): run first in a guest process on a pty of the guest's own; agent/terminal.ts has the same path. */
  hullCtty: '/sbin/hull-ctty',
  /** hull-reseed (guest/init/hull-reseed.c): the agent's ReseedRandomDev; agent/reseed.ts has the same path. */
  hullReseed: '/sbin/hull-reseed',
  /** Default root disk: the first virtio-blk disk, on PCI and on MMIO alike. `root=/dev/vdX` on the kernel command line overrides it. */
  rootDevice: '/dev/vda',
} as const;

/**
 * Options for the guest's node, which hull-init starts to run the agent (compiled into hull-init). Measured under TCG on
 * 2025-era hardware: see guest/README.md.
 */
export const AGENT_NODE_FLAGS: readonly string[] = [];

/** Packages inside native modules that esbuild must not bundle; they are copied next to the bundle if the agent uses them. */
export const NATIVE_MODULES: readonly string[] = ['node-pty', 'hull-vsock'];

/** How long the initramfs waits for the root disk to appear, in seconds. */
export const ROOT_WAIT_SECONDS = 20;

/** Debian packages whose versions go into the manifest and the fingerprint (the versioned kernel image is added). */
export const PACKAGES = [
  'linux-image-cloud-amd64',
  'busybox-static',
  'crun',
  'iproute2',
  'nodejs',
  'e2fsprogs',
  'kmod',
  'gcc',
  'libc6-dev',
] as const;

/** Debian's iproute2 installs ip here (/usr/sbin/ip and /sbin/ip are symlinks to it on a merged-/usr host). */
export const IPROUTE2_IP_SUFFIX = '/bin/ip';
