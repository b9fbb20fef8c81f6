/**
 * What `start` prints, by caller. Every containerd reads stdout and stderr together and connects to what it finds:
 * - containerd 1.6 (no MAX_SHIM_VERSION in the environment) takes the whole output, trimmed, as the address: it can
 *   parse nothing else, so it gets the bare address (task API v2);
 * - containerd 1.7 to 2.2 (MAX_SHIM_VERSION=2, also set by 2.x) parse JSON `{"version","address","protocol"}`
 *   (pkg/shim BootstrapParams); 1.7 refuses a version above 2, 2.x takes 3 (task API v3). The two set the same
 *   environment, so the publish binary (containerd itself) tells them apart by the main package path in its Go
 *   build information (`.../containerd/v2/cmd/containerd`, go-buildinfo.ts); unknown gets version 2, which both take;
 * - containerd 2.3 writes its BootstrapParams (protobuf) on stdin, with its version: it gets a protobuf
 *   BootstrapResult, version 3, as its own runc shim answers (2.3 also still parses the JSON form).
 * Stdin may also hold the runtime options (a google.protobuf.Any, from 1.6 to 2.2 when the runtime has options),
 * which have no field 4 (containerd_version): they are not BootstrapParams, and Create brings the same options.
 */
import { containerdMajor, goModInfo } from './go-buildinfo';
import type { StdinInput } from './stdin';
import { decodeBootstrapParams, encodeBootstrapResult, type BootstrapParams } from './wire';

/** containerd 2.x's CurrentShimVersion: the task API (containerd.task.v3.Task) the shim serves. */
export const TASK_API_V3 = 3;

export type StartAnswer =
  | { form: 'address'; why: string }
  | { form: 'json'; version: 2 | 3; why: string }
  | { form: 'protobuf'; version: 3; why: string };

/** containerd 2.3's BootstrapParams on stdin, or undefined (no input, runtime options, or not protobuf). */
export function bootstrapParamsOf(input: StdinInput): BootstrapParams | undefined {
  if (input.kind !== 'data') return undefined;
  try {
    const params = decodeBootstrapParams(input.data);
    return params.containerdVersion ? params : undefined;
  } catch {
    return undefined;
  }
}

export interface Caller {
  input: StdinInput;
  env: NodeJS.ProcessEnv;
  /** -publish-binary: containerd's own executable. */
  publishBinary: string;
  /** Reads a Go program's module information (tests pass a fake). */
  modInfo?: (file: string) => string | undefined;
}

export function chooseAnswer(c: Caller): StartAnswer {
  const params = bootstrapParamsOf(c.input);
  if (params)
    return {
      form: 'protobuf',
      version: 3,
      why: `BootstrapParams on stdin from containerd ${params.containerdVersion}`,
    };
  if (c.env.MAX_SHIM_VERSION === undefined)
    return { form: 'address', why: 'no MAX_SHIM_VERSION: containerd 1.6, which reads a bare address' };
  const major = c.publishBinary ? containerdMajor((c.modInfo ?? goModInfo)(c.publishBinary)) : undefined;
  if (major !== undefined && major >= 2)
    return { form: 'json', version: TASK_API_V3, why: `containerd ${major}.x (${c.publishBinary})` };
  return {
    form: 'json',
    version: 2,
    why:
      major === 1
        ? `containerd 1.7 (${c.publishBinary}), which refuses a version above 2`
        : 'containerd 1.7 or newer of unknown major version: version 2, which all of them take',
  };
}

/** The bytes `start` writes on stdout. */
export function formatAnswer(answer: StartAnswer, address: string): Buffer {
  switch (answer.form) {
    case 'address':
      return Buffer.from(address, 'utf8');
    case 'json':
      // Go's encoding/json of pkg/shim BootstrapParams: fields in declaration order.
      return Buffer.from(JSON.stringify({ version: answer.version, address, protocol: 'ttrpc' }), 'utf8');
    case 'protobuf':
      return encodeBootstrapResult({ version: answer.version, address, protocol: 'ttrpc' });
  }
}
