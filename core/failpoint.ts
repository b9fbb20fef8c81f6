/**
 * Failpoints for crash tests, in the manner of containerd's failpoint shim: the OCI annotation FAILPOINT_ANNOTATION
 * names one creation step, and the shim SIGKILLs itself right after that step, leaving exactly what a crash there
 * would leave for `delete` to clean up. Honoured only when the configuration enables them
 * (`[runtime] enable_failpoints = true`, default off); otherwise the annotation is ignored (and logged).
 */
import { InvalidArgumentError } from '../errors';
import type { Logger } from '../log';

export const FAILPOINT_ANNOTATION = 'io.hull.failpoint';

/** The creation steps, in the order they happen. */
export const FAILPOINT_STEPS = Object.freeze([
  /** The crash-recovery record and the bundle pointer are written (Create, before anything else is made). */
  'record-written',
  /** The share's folders are made (fs-share prepare). */
  'share-prepared',
  /** The pod's taps exist in its network namespace (pods with a network only). */
  'taps-made',
  /** virtiofsd is spawned and in the record. */
  'virtiofsd-spawned',
  /** QEMU is spawned and in the record. */
  'qemu-spawned',
  /** The agent answered (the VM booted). */
  'agent-dialled',
  /** The agent's CreateSandbox returned. */
  'sandbox-created',
  /** The container exists in the guest (CreateContainer returned). */
  'container-created',
  /** The container's init runs (StartContainer returned). */
  'container-started',
] as const);

export type FailpointStep = (typeof FAILPOINT_STEPS)[number];

/** How a failpoint ends the process (the real one SIGKILLs the shim; core's unit tests pass a throwing fake). */
export type Crash = (step: FailpointStep) => void;

export const sigkillSelf: Crash = () => {
  process.kill(process.pid, 'SIGKILL');
};

/**
 * The step a container's annotations arm, if failpoints are enabled. An unknown step name is an
 * InvalidArgumentError (a typo must not make a crash test pass by never crashing).
 */
export function armedFailpoint(
  annotations: Record<string, string> | undefined,
  enabled: boolean,
  logger: Logger,
): FailpointStep | undefined {
  const value = annotations?.[FAILPOINT_ANNOTATION];
  if (value === undefined) return undefined;
  if (!enabled) {
    logger.warn(
      { annotation: FAILPOINT_ANNOTATION, value },
      'failpoint annotation ignored: failpoints are disabled in the configuration',
    );
    return undefined;
  }
  if (!(FAILPOINT_STEPS as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(
      `annotation ${FAILPOINT_ANNOTATION}: ${JSON.stringify(value).slice(0, 80)} is not one of ${FAILPOINT_STEPS.join(', ')}`,
    );
  }
  return value as FailpointStep;
}
