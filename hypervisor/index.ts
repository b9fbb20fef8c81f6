/** hypervisor/: the Hypervisor contract and its QEMU driver. Core imports from here only. */
export * from './types';
export { QemuHypervisor, type QemuHypervisorOptions, type StartTimings } from './qemu/qemu';
export { chooseAccel, chooseTransport, cidCandidates, realHostProbe, type Choice, type HostProbe } from './accel';
export { resolveConfig, vmPaths, type FileProbe, type ResolvedConfig, type VmPaths } from './config';
export { chooseRootImage, ROOT_IMAGE_DEVICES, type RootImage, type RootImageDevice } from './root-image';
export { copySparse } from './qemu/template';
export { QmpClient, type QmpEvent, type QmpStatus, type ShutdownEvent } from './qemu/qmp';
export { probeSandboxMode, type SandboxMode } from './virtiofsd';
export * from './network';
