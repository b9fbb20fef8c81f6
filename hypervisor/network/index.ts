/** hypervisor/network/: the host side of Kata's "tcfilter" pod networking (see README.md). */
export type { NetAddress, NetEndpoint, NetNeighbor, NetnsScan, NetRoute } from './types';
export { NUD_PERMANENT } from './types';
export { scanNetns } from './scan';
export { attachEndpoints, detachEndpoints } from './tcfilter';
export { checkNetnsPathShape } from './validate';
export { LocalhostRedirect, removeLocalhostRedirects, REDIRECT_COMMENT, type LocalhostConnection } from './localhost';
