/**
 * hull's own extension of the agent protocol (protos/proto/hull/): `hull.agent.v1.Diagnostics` (guest facts Kata's
 * API has no field for, and a bounded read of a file in the shared folder) and `hull.agent.v1.Processes`
 * (ListProcesses, which Kata's API dropped after 2.x) and `hull.agent.v1.PortForward` (TCP connections to the guest's
 * loopback, relayed over the agent channel: Kubernetes port forwarding). Generated classes come from protos/gen/hull (root `hull`).
 */
import './int64'; // must run before the generated module loads
import { protobufMethod } from 'ttrpc-ts';
import { hull } from './gen/hull';

export import diagnostics = hull.agent.v1;

export const DIAGNOSTICS_SERVICE = 'hull.agent.v1.Diagnostics';

export const DiagnosticsService = {
  GuestInfo: protobufMethod(
    DIAGNOSTICS_SERVICE,
    'GuestInfo',
    diagnostics.GuestInfoRequest,
    diagnostics.GuestInfoResponse,
  ),
  ReadFile: protobufMethod(DIAGNOSTICS_SERVICE, 'ReadFile', diagnostics.ReadFileRequest, diagnostics.ReadFileResponse),
};

export const PROCESSES_SERVICE = 'hull.agent.v1.Processes';

export const ProcessesService = {
  ListProcesses: protobufMethod(
    PROCESSES_SERVICE,
    'ListProcesses',
    diagnostics.ListProcessesRequest,
    diagnostics.ListProcessesResponse,
  ),
};

export const PORT_FORWARD_SERVICE = 'hull.agent.v1.PortForward';

export const PortForwardService = {
  OpenConnection: protobufMethod(
    PORT_FORWARD_SERVICE,
    'OpenConnection',
    diagnostics.OpenConnectionRequest,
    diagnostics.OpenConnectionResponse,
  ),
  ReadConnection: protobufMethod(
    PORT_FORWARD_SERVICE,
    'ReadConnection',
    diagnostics.ReadConnectionRequest,
    diagnostics.ReadConnectionResponse,
  ),
  WriteConnection: protobufMethod(
    PORT_FORWARD_SERVICE,
    'WriteConnection',
    diagnostics.WriteConnectionRequest,
    diagnostics.WriteConnectionResponse,
  ),
  CloseConnection: protobufMethod(
    PORT_FORWARD_SERVICE,
    'CloseConnection',
    diagnostics.CloseConnectionRequest,
    diagnostics.CloseConnectionResponse,
  ),
};

export const TRACING_SERVICE = 'hull.agent.v1.Tracing';

/** The spans the agent recorded in the guest (agent/tracing.ts), drained by the shim (agent-client/tracing.ts). */
export const TracingService = {
  DrainSpans: protobufMethod(
    TRACING_SERVICE,
    'DrainSpans',
    diagnostics.DrainSpansRequest,
    diagnostics.DrainSpansResponse,
  ),
};

export const DEBUG_CONSOLE_SERVICE = 'hull.agent.v1.DebugConsole';

/**
 * The debug console (`hull exec`): a process in the guest itself, outside every container (agent/debug-console.ts,
 * agent-client/debug-console.ts). Served only when the host enabled it at CreateSandbox, with this metadata.
 */
export const DEBUG_CONSOLE_METADATA = 'hull-debug-console';
export const DEBUG_CONSOLE_ENABLED = 'enabled';

export const DebugConsoleService = {
  StartProcess: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'StartProcess',
    diagnostics.StartDebugProcessRequest,
    diagnostics.StartDebugProcessResponse,
  ),
  ReadOutput: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'ReadOutput',
    diagnostics.ReadDebugOutputRequest,
    diagnostics.ReadDebugOutputResponse,
  ),
  WriteInput: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'WriteInput',
    diagnostics.WriteDebugInputRequest,
    diagnostics.WriteDebugInputResponse,
  ),
  CloseInput: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'CloseInput',
    diagnostics.DebugProcessRequest,
    diagnostics.DebugEmpty,
  ),
  ResizeTerminal: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'ResizeTerminal',
    diagnostics.ResizeDebugTerminalRequest,
    diagnostics.DebugEmpty,
  ),
  SignalProcess: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'SignalProcess',
    diagnostics.SignalDebugProcessRequest,
    diagnostics.DebugEmpty,
  ),
  WaitProcess: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'WaitProcess',
    diagnostics.DebugProcessRequest,
    diagnostics.WaitDebugProcessResponse,
  ),
  RemoveProcess: protobufMethod(
    DEBUG_CONSOLE_SERVICE,
    'RemoveProcess',
    diagnostics.DebugProcessRequest,
    diagnostics.DebugEmpty,
  ),
};
