export {
  Sandbox,
  type CreateRequest,
  type ProcessState,
  type SandboxMetricsView,
  type SandboxOptions,
} from './sandbox';
export { SandboxVm, describeExit, type AgentDialer, type BootOptions, type BootTimings } from './vm';
export { Process, type ExitInfo, type ProcessStatus } from './process';
export { ProcessIo, stdioTarget } from './stdio';
export {
  BUNDLE_POINTER,
  RECORD_LOCK_TIMEOUT_MS,
  RecordLock,
  Store,
  helperRuns,
  processAlive,
  processMatches,
  readBundlePointer,
  recoverFromRecord,
  recoverLocked,
  removeUnmounted,
  shimRuns,
  writeBundlePointer,
  type LockedRecoveryOptions,
  type SandboxRecord,
} from './store';
export {
  FAILPOINT_ANNOTATION,
  FAILPOINT_STEPS,
  armedFailpoint,
  sigkillSelf,
  type Crash,
  type FailpointStep,
} from './failpoint';
export type { EventSink, RootfsMount, SandboxEvent, StdioPaths } from './events';
