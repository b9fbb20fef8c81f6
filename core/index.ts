export { Sandbox, type CreateRequest, type ProcessState, type SandboxOptions } from './sandbox';
export { SandboxVm, describeExit, type AgentDialer, type BootOptions, type BootTimings } from './vm';
export { Process, type ExitInfo, type ProcessStatus } from './process';
export { ProcessIo, stdioTarget } from './stdio';
export { BUNDLE_POINTER, Store, processAlive, processMatches, readBundlePointer, recoverFromRecord, removeUnmounted, writeBundlePointer, type SandboxRecord } from './store';
export type { EventSink, RootfsMount, SandboxEvent, StdioPaths } from './events';
