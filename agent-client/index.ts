export { KataAgentClient, type DialOptions } from './client';
export { parseAgentEndpoint, type VsockConnector } from './channel';
export { classifyAgentError } from './errors';
export { DEBUG_READ_CHUNK, type DebugProcessSpec, type GuestDebugConsole } from './debug-console';
export { TRACER_NAME, type GuestSpan, type GuestSpanBatch } from './tracing';
export { AGENT_TIMEOUTS_MS, DEFAULT_TIMEOUT_MS, NO_DEADLINE, timeoutFor } from './timeouts';
export type {
  AgentClient,
  AgentEndpoint,
  ContainerAgentClient,
  NetworkAgentClient,
  PortForwardAgentClient,
  ContainerResources,
  ContainerStats,
  FileContents,
  GuestDetails,
  HealthStatus,
  SandboxSpec,
  StorageSpec,
} from './types';
export type { OciLinuxResources, OciMount, OciProcess, OciSeccomp, OciSpec } from './oci';
export type {
  ArpNeighbor,
  GuestInterface,
  GuestRoute,
  InterfaceAddress,
  IpFamily,
  NetworkInterface,
  RouteScope,
  RouteSpec,
} from './network';
export { observeAgentCalls, timedCall, type AgentCallObserver } from './rpc-timing';
export { GUEST_METRIC_NAMES, parseGuestMetrics, type GuestMetricName, type GuestMetrics } from './guest-metrics';
