/**
 * The Kata guest agent protocol (kata-containers 3.32.0): services `grpc.AgentService` and `grpc.Health`.
 * Generated classes come from protos/gen/agent (root `agent`, see scripts/gen-protos.mjs); this module adds
 * ttrpc method descriptors.
 *
 * Field names: the generated code camel-cases snake_case names (`container_id` -> `containerId`) and keeps the rest
 * as upstream spells them, so the OCI messages keep their Go-style capitals (`Spec.Process.Args`, `Spec.OCI`... see
 * protos/proto/kata/oci.proto). 64-bit integers are numbers (see int64.ts).
 */
import './int64'; // must run before the generated module loads
import { protobufMethod, type ProtobufjsClass, type ServiceDefinition } from 'ttrpc-ts';
import { google, grpc, types } from './gen/agent';

export { google, grpc, types };
export { clampUint64, MAX_UINT64_NUMBER } from './int64';

/** ttrpc service names. */
export const AGENT_SERVICE = 'grpc.AgentService';
export const HEALTH_SERVICE = 'grpc.Health';

const Empty = google.protobuf.Empty;
const rpc = <Req, Res>(name: string, request: ProtobufjsClass<Req>, response: ProtobufjsClass<Res>) =>
  protobufMethod(AGENT_SERVICE, name, request, response);

/** grpc.AgentService: every RPC of the upstream service, grouped as upstream groups them. */
export const AgentService = {
  // Containers and processes.
  CreateContainer: rpc('CreateContainer', grpc.CreateContainerRequest, Empty),
  StartContainer: rpc('StartContainer', grpc.StartContainerRequest, Empty),
  RemoveContainer: rpc('RemoveContainer', grpc.RemoveContainerRequest, Empty),
  ExecProcess: rpc('ExecProcess', grpc.ExecProcessRequest, Empty),
  SignalProcess: rpc('SignalProcess', grpc.SignalProcessRequest, Empty),
  WaitProcess: rpc('WaitProcess', grpc.WaitProcessRequest, grpc.WaitProcessResponse),
  UpdateContainer: rpc('UpdateContainer', grpc.UpdateContainerRequest, Empty),
  UpdateEphemeralMounts: rpc('UpdateEphemeralMounts', grpc.UpdateEphemeralMountsRequest, Empty),
  StatsContainer: rpc('StatsContainer', grpc.StatsContainerRequest, grpc.StatsContainerResponse),
  PauseContainer: rpc('PauseContainer', grpc.PauseContainerRequest, Empty),
  ResumeContainer: rpc('ResumeContainer', grpc.ResumeContainerRequest, Empty),
  RemoveStaleVirtiofsShareMounts: rpc(
    'RemoveStaleVirtiofsShareMounts',
    grpc.RemoveStaleVirtiofsShareMountsRequest,
    Empty,
  ),
  GetDiagnosticData: rpc('GetDiagnosticData', grpc.GetDiagnosticDataRequest, grpc.GetDiagnosticDataResponse),

  // Standard streams.
  WriteStdin: rpc('WriteStdin', grpc.WriteStreamRequest, grpc.WriteStreamResponse),
  ReadStdout: rpc('ReadStdout', grpc.ReadStreamRequest, grpc.ReadStreamResponse),
  ReadStderr: rpc('ReadStderr', grpc.ReadStreamRequest, grpc.ReadStreamResponse),
  CloseStdin: rpc('CloseStdin', grpc.CloseStdinRequest, Empty),
  TtyWinResize: rpc('TtyWinResize', grpc.TtyWinResizeRequest, Empty),

  // Network.
  UpdateInterface: rpc('UpdateInterface', grpc.UpdateInterfaceRequest, types.Interface),
  UpdateRoutes: rpc('UpdateRoutes', grpc.UpdateRoutesRequest, grpc.Routes),
  ListInterfaces: rpc('ListInterfaces', grpc.ListInterfacesRequest, grpc.Interfaces),
  ListRoutes: rpc('ListRoutes', grpc.ListRoutesRequest, grpc.Routes),
  AddARPNeighbors: rpc('AddARPNeighbors', grpc.AddARPNeighborsRequest, Empty),
  GetIPTables: rpc('GetIPTables', grpc.GetIPTablesRequest, grpc.GetIPTablesResponse),
  SetIPTables: rpc('SetIPTables', grpc.SetIPTablesRequest, grpc.SetIPTablesResponse),

  // Observability.
  GetMetrics: rpc('GetMetrics', grpc.GetMetricsRequest, grpc.Metrics),

  // Memory agent tuning.
  MemAgentMemcgSet: rpc('MemAgentMemcgSet', grpc.MemAgentMemcgConfig, Empty),
  MemAgentCompactSet: rpc('MemAgentCompactSet', grpc.MemAgentCompactConfig, Empty),

  // Sandbox and guest.
  CreateSandbox: rpc('CreateSandbox', grpc.CreateSandboxRequest, Empty),
  DestroySandbox: rpc('DestroySandbox', grpc.DestroySandboxRequest, Empty),
  OnlineCPUMem: rpc('OnlineCPUMem', grpc.OnlineCPUMemRequest, Empty),
  ReseedRandomDev: rpc('ReseedRandomDev', grpc.ReseedRandomDevRequest, Empty),
  GetGuestDetails: rpc('GetGuestDetails', grpc.GuestDetailsRequest, grpc.GuestDetailsResponse),
  MemHotplugByProbe: rpc('MemHotplugByProbe', grpc.MemHotplugByProbeRequest, Empty),
  SetGuestDateTime: rpc('SetGuestDateTime', grpc.SetGuestDateTimeRequest, Empty),
  CopyFile: rpc('CopyFile', grpc.CopyFileRequest, Empty),
  GetOOMEvent: rpc('GetOOMEvent', grpc.GetOOMEventRequest, grpc.OOMEvent),
  AddSwap: rpc('AddSwap', grpc.AddSwapRequest, Empty),
  AddSwapPath: rpc('AddSwapPath', grpc.AddSwapPathRequest, Empty),
  GetVolumeStats: rpc('GetVolumeStats', grpc.VolumeStatsRequest, grpc.VolumeStatsResponse),
  ResizeVolume: rpc('ResizeVolume', grpc.ResizeVolumeRequest, Empty),
  SetPolicy: rpc('SetPolicy', grpc.SetPolicyRequest, Empty),
} satisfies ServiceDefinition;

/** grpc.Health: liveness and version of the agent. */
export const HealthService = {
  Check: protobufMethod(HEALTH_SERVICE, 'Check', grpc.CheckRequest, grpc.HealthCheckResponse),
  Version: protobufMethod(HEALTH_SERVICE, 'Version', grpc.CheckRequest, grpc.VersionCheckResponse),
} satisfies ServiceDefinition;
