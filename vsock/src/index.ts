/**
 * hull-vsock: AF_VSOCK stream sockets for Node.js (Linux), as Duplex streams. A small Node-API addon
 * (src/vsock.c) makes the system calls; readiness comes from a libuv poll handle on node's own event loop.
 *
 *   const server = VsockServer.listen({ port: 1024 });          // every CID
 *   const socket = await server.accept();                       // a VsockSocket (Duplex)
 *   const client = await connect({ cid: 3, port: 1024, timeoutMs: 1000 });
 */
import { VsockError, errnoError } from './errors';
import { native } from './native';
import type { VsockAddress } from './socket';

export { VsockError, errnoError, vsockUri } from './errors';
export { isAvailable } from './native';
export { VsockSocket, connect, type ConnectOptions, type SocketOptions, type VsockAddress } from './socket';
export { VsockServer, type ListenOptions } from './server';
export { ConsoleSocket, pipe, setPipeSize, setWindowSize, windowSize, type ConsoleMaster } from './console';

/** Any CID (bind: every transport). */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_HYPERVISOR = 0;
/** This machine, through the vsock_loopback transport. */
export const VMADDR_CID_LOCAL = 1;
/** The host, seen from a guest. */
export const VMADDR_CID_HOST = 2;
/** Any port (bind: the kernel chooses). */
export const VMADDR_PORT_ANY = 0xffffffff;

/** This machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock); throws a VsockError (ENOENT without /dev/vsock). */
export function localCid(): number {
  const cid = native().localCid();
  if (cid < 0) throw errnoError(cid, 'ioctl(/dev/vsock)');
  return cid;
}

/** `vsock://<cid>:<port>` (decimal, each in [0, 2^32-1]) to an address; a VsockError with code EINVAL otherwise. */
export function parseVsockUri(uri: string): VsockAddress {
  const m = /^vsock:\/\/(\d{1,10}):(\d{1,10})$/.exec(uri);
  const cid = Number(m?.[1]);
  const port = Number(m?.[2]);
  if (!m || cid > 0xffffffff || port > 0xffffffff) {
    throw new VsockError(`${JSON.stringify(uri)} is not a vsock address (vsock://<cid>:<port>)`, { code: 'EINVAL' });
  }
  return { cid, port };
}
