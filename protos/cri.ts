/**
 * Kubernetes CRI v1 (`runtime.v1`), the part hull's integration tests and benchmarks call on containerd's CRI
 * plugin. Generated classes come from protos/gen/cri (root `cri`, see scripts/gen-protos.mjs); this module adds the
 * gRPC method table. The transport (grpc-js) lives with the client in integration/lib/cri.ts.
 *
 * As everywhere in protos/: plain objects with camelCase fields, 64-bit integers as numbers (int64.ts).
 */
import './int64'; // must run before the generated module loads
import { runtime } from './gen/cri';

export import cri = runtime.v1;

export const RUNTIME_SERVICE = 'runtime.v1.RuntimeService';
export const IMAGE_SERVICE = 'runtime.v1.ImageService';

/** A generated message class, as far as a codec needs it. */
export interface CriMessageClass<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(data: Uint8Array): T;
  toObject(
    message: T,
    options?: {
      longs?: NumberConstructor;
      enums?: StringConstructor | NumberConstructor;
      defaults?: boolean;
      bytes?: BufferConstructor;
    },
  ): Record<string, unknown>;
}

/** One unary RPC: its gRPC path and message classes. */
export interface CriMethod<Req, Res> {
  path: string;
  request: CriMessageClass<Req>;
  response: CriMessageClass<Res>;
}

type RequestOf<C> = C extends { create(properties?: infer P): unknown } ? NonNullable<P> : never;
type ResponseOf<C> = C extends { decode(...args: never[]): infer R } ? R : never;

function method<ReqC, ResC>(
  service: string,
  name: string,
  request: ReqC,
  response: ResC,
): CriMethod<RequestOf<ReqC>, ResponseOf<ResC>> {
  return {
    path: `/${service}/${name}`,
    request: request as unknown as CriMessageClass<RequestOf<ReqC>>,
    response: response as unknown as CriMessageClass<ResponseOf<ResC>>,
  };
}

const rt = <ReqC, ResC>(name: string, request: ReqC, response: ResC) =>
  method(RUNTIME_SERVICE, name, request, response);

/** runtime.v1.RuntimeService: the methods our .proto keeps. */
export const RuntimeService = {
  Version: rt('Version', cri.VersionRequest, cri.VersionResponse),
  Status: rt('Status', cri.StatusRequest, cri.StatusResponse),
  RunPodSandbox: rt('RunPodSandbox', cri.RunPodSandboxRequest, cri.RunPodSandboxResponse),
  StopPodSandbox: rt('StopPodSandbox', cri.StopPodSandboxRequest, cri.StopPodSandboxResponse),
  RemovePodSandbox: rt('RemovePodSandbox', cri.RemovePodSandboxRequest, cri.RemovePodSandboxResponse),
  PodSandboxStatus: rt('PodSandboxStatus', cri.PodSandboxStatusRequest, cri.PodSandboxStatusResponse),
  ListPodSandbox: rt('ListPodSandbox', cri.ListPodSandboxRequest, cri.ListPodSandboxResponse),
  CreateContainer: rt('CreateContainer', cri.CreateContainerRequest, cri.CreateContainerResponse),
  StartContainer: rt('StartContainer', cri.StartContainerRequest, cri.StartContainerResponse),
  StopContainer: rt('StopContainer', cri.StopContainerRequest, cri.StopContainerResponse),
  RemoveContainer: rt('RemoveContainer', cri.RemoveContainerRequest, cri.RemoveContainerResponse),
  ListContainers: rt('ListContainers', cri.ListContainersRequest, cri.ListContainersResponse),
  ContainerStatus: rt('ContainerStatus', cri.ContainerStatusRequest, cri.ContainerStatusResponse),
  UpdateContainerResources: rt(
    'UpdateContainerResources',
    cri.UpdateContainerResourcesRequest,
    cri.UpdateContainerResourcesResponse,
  ),
  ExecSync: rt('ExecSync', cri.ExecSyncRequest, cri.ExecSyncResponse),
  Exec: rt('Exec', cri.ExecRequest, cri.ExecResponse),
  PortForward: rt('PortForward', cri.PortForwardRequest, cri.PortForwardResponse),
  Attach: rt('Attach', cri.AttachRequest, cri.AttachResponse),
  ContainerStats: rt('ContainerStats', cri.ContainerStatsRequest, cri.ContainerStatsResponse),
};

/** runtime.v1.ImageService: the methods our .proto keeps. */
export const ImageService = {
  ListImages: method(IMAGE_SERVICE, 'ListImages', cri.ListImagesRequest, cri.ListImagesResponse),
  ImageStatus: method(IMAGE_SERVICE, 'ImageStatus', cri.ImageStatusRequest, cri.ImageStatusResponse),
};
