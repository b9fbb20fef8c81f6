export { KataAgentClient, type DialOptions } from './client';
export { parseAgentEndpoint, type VsockConnector } from './channel';
export { classifyAgentError } from './errors';
export { AGENT_TIMEOUTS_MS, DEFAULT_TIMEOUT_MS, NO_DEADLINE, timeoutFor } from './timeouts';
export type { AgentClient, AgentEndpoint, ContainerAgentClient, NetworkAgentClient, PortForwardAgentClient, ContainerMount, ContainerResources, ContainerSpec, ContainerStats, ProcessSpec, FileContents, GuestDetails, HealthStatus, SandboxSpec, StorageSpec } from './types';
export { grpcProcessFromOci, grpcResourcesFromOci, grpcSpecFromOci, type OciLinuxResources, type OciMount, type OciProcess, type OciSeccomp, type OciSpec } from './oci';
export { toGrpcInterface, toGrpcNeighbor, toGrpcRoute, type ArpNeighbor, type GuestInterface, type GuestRoute, type InterfaceAddress, type IpFamily, type NetworkInterface, type RouteScope, type RouteSpec } from './network';
