/**
 * A typed CRI v1 client over grpc-js: unary calls to containerd's CRI plugin (`runtime.v1.RuntimeService` and
 * `ImageService`) on its unix socket, encoded with the generated protobufjs classes of protos/cri.ts, each with a
 * deadline. Failures are CriError with the gRPC status code and the method's name.
 *
 *   const cri = new CriClient('/tmp/…/c.sock');
 *   const { podSandboxId } = await cri.runPodSandbox({ config, runtimeHandler: 'hull' });
 *   const r = await cri.execSync({ containerId, cmd: ['true'], timeout: 10 });
 *   cri.close();
 */
import * as grpc from '@grpc/grpc-js';
import { cri, ImageService, RuntimeService, type CriMethod } from '../../protos/cri';

export { cri };
export const CriStatus = grpc.status;

/** Deadline of a call when the caller names none: pod and container starts under TCG take seconds, 5 at once longer. */
export const DEFAULT_TIMEOUT_MS = 180_000;

export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${method}: ${grpc.status[code] ?? code}: ${details}`);
    this.name = 'CriError';
  }
}

export interface CallOptions {
  timeoutMs?: number;
}

type RS = typeof RuntimeService;
type IS = typeof ImageService;
type Req<M> = M extends { request: { encode(message: infer R): unknown } } ? R : never;
type Res<M> = M extends { response: { decode(data: Uint8Array): infer R } } ? R : never;

export class CriClient {
  readonly #client: grpc.Client;

  /** `socket`: the path of containerd's gRPC socket (or a `unix://` address). */
  constructor(socket: string) {
    const target = socket.startsWith('unix:') ? socket : `unix://${socket}`;
    this.#client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      // crictl's limit: a verbose status or a list can be large.
      'grpc.max_receive_message_length': 16 << 20,
    });
  }

  /** One unary call with a deadline. */
  call<Q, R>(method: CriMethod<Q, R>, request: Q, opts: CallOptions = {}): Promise<R> {
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const name = method.path.slice(method.path.lastIndexOf('/') + 1);
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        method.path,
        (value: Q) => Buffer.from(method.request.encode(value).finish()),
        (data: Buffer) => method.response.decode(data),
        request,
        new grpc.Metadata(),
        { deadline },
        (err, value) => {
          if (err) reject(new CriError(name, err.code, err.details));
          else resolve(value as R);
        },
      );
    });
  }

  close(): void {
    this.#client.close();
  }

  version = (r: Req<RS['Version']> = {}, o?: CallOptions): Promise<Res<RS['Version']>> =>
    this.call(RuntimeService.Version, r, o);
  status = (r: Req<RS['Status']> = {}, o?: CallOptions): Promise<Res<RS['Status']>> =>
    this.call(RuntimeService.Status, r, o);
  runPodSandbox = (r: Req<RS['RunPodSandbox']>, o?: CallOptions): Promise<Res<RS['RunPodSandbox']>> =>
    this.call(RuntimeService.RunPodSandbox, r, o);
  stopPodSandbox = (podSandboxId: string, o?: CallOptions): Promise<Res<RS['StopPodSandbox']>> =>
    this.call(RuntimeService.StopPodSandbox, { podSandboxId }, o);
  removePodSandbox = (podSandboxId: string, o?: CallOptions): Promise<Res<RS['RemovePodSandbox']>> =>
    this.call(RuntimeService.RemovePodSandbox, { podSandboxId }, o);
  podSandboxStatus = (podSandboxId: string, verbose = false, o?: CallOptions): Promise<Res<RS['PodSandboxStatus']>> =>
    this.call(RuntimeService.PodSandboxStatus, { podSandboxId, verbose }, o);
  listPodSandbox = (r: Req<RS['ListPodSandbox']> = {}, o?: CallOptions): Promise<Res<RS['ListPodSandbox']>> =>
    this.call(RuntimeService.ListPodSandbox, r, o);
  createContainer = (r: Req<RS['CreateContainer']>, o?: CallOptions): Promise<Res<RS['CreateContainer']>> =>
    this.call(RuntimeService.CreateContainer, r, o);
  startContainer = (containerId: string, o?: CallOptions): Promise<Res<RS['StartContainer']>> =>
    this.call(RuntimeService.StartContainer, { containerId }, o);
  /** `timeout`: the grace period in seconds before SIGKILL. */
  stopContainer = (containerId: string, timeout = 0, o?: CallOptions): Promise<Res<RS['StopContainer']>> =>
    this.call(RuntimeService.StopContainer, { containerId, timeout }, o);
  removeContainer = (containerId: string, o?: CallOptions): Promise<Res<RS['RemoveContainer']>> =>
    this.call(RuntimeService.RemoveContainer, { containerId }, o);
  listContainers = (r: Req<RS['ListContainers']> = {}, o?: CallOptions): Promise<Res<RS['ListContainers']>> =>
    this.call(RuntimeService.ListContainers, r, o);
  containerStatus = (containerId: string, verbose = false, o?: CallOptions): Promise<Res<RS['ContainerStatus']>> =>
    this.call(RuntimeService.ContainerStatus, { containerId, verbose }, o);
  updateContainerResources = (
    r: Req<RS['UpdateContainerResources']>,
    o?: CallOptions,
  ): Promise<Res<RS['UpdateContainerResources']>> => this.call(RuntimeService.UpdateContainerResources, r, o);
  /** `timeout` (in the request) is in seconds; the call's own deadline is a little longer. */
  execSync = (r: Req<RS['ExecSync']>, o?: CallOptions): Promise<Res<RS['ExecSync']>> =>
    this.call(
      RuntimeService.ExecSync,
      r,
      o ?? (r.timeout ? { timeoutMs: (Number(r.timeout) + 30) * 1000 } : undefined),
    );
  exec = (r: Req<RS['Exec']>, o?: CallOptions): Promise<Res<RS['Exec']>> => this.call(RuntimeService.Exec, r, o);
  portForward = (r: Req<RS['PortForward']>, o?: CallOptions): Promise<Res<RS['PortForward']>> =>
    this.call(RuntimeService.PortForward, r, o);
  attach = (r: Req<RS['Attach']>, o?: CallOptions): Promise<Res<RS['Attach']>> =>
    this.call(RuntimeService.Attach, r, o);
  containerStats = (containerId: string, o?: CallOptions): Promise<Res<RS['ContainerStats']>> =>
    this.call(RuntimeService.ContainerStats, { containerId }, o);
  listImages = (r: Req<IS['ListImages']> = {}, o?: CallOptions): Promise<Res<IS['ListImages']>> =>
    this.call(ImageService.ListImages, r, o);
  imageStatus = (image: string, o?: CallOptions): Promise<Res<IS['ImageStatus']>> =>
    this.call(ImageService.ImageStatus, { image: { image } }, o);

  /** Waits until the runtime reports RuntimeReady and NetworkReady (the CNI configuration was loaded). */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      let last: string;
      try {
        const s = await this.status({}, { timeoutMs: 5_000 });
        const conds = s.status?.conditions ?? [];
        const notReady = conds.filter((c) => !c.status);
        if (conds.length > 0 && notReady.length === 0) return;
        last = notReady.map((c) => `${c.type}: ${c.reason} ${c.message}`).join('; ');
      } catch (err) {
        last = String(err);
      }
      if (Date.now() > until) throw new Error(`CRI not ready after ${timeoutMs} ms: ${last}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** The verbose sandbox info containerd returns (`info["info"]`, JSON), or undefined. */
  async sandboxInfo(podSandboxId: string): Promise<SandboxInfo | undefined> {
    const r = await this.podSandboxStatus(podSandboxId, true);
    const raw = r.info?.info;
    return raw ? (JSON.parse(raw) as SandboxInfo) : undefined;
  }
}

/** The part of containerd 1.6's verbose PodSandboxStatus info the tests read. */
export interface SandboxInfo {
  pid?: number;
  runtimeHandler?: string;
  runtimeType?: string;
  netNamespaceClosed?: boolean;
  runtimeSpec?: { hostname?: string; linux?: { namespaces?: { type: string; path?: string }[] } };
  cniResult?: unknown;
}

/** The network namespace path a sandbox's spec names, if any. */
export function netnsPathOf(info: SandboxInfo | undefined): string | undefined {
  return info?.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path || undefined;
}

/**
 * RemovePodSandbox of a pod whose shim died, the way the kubelet does it: retried (every 500 ms, bounded by `ms`) while
 * containerd answers UNKNOWN. containerd 2.x's CRI handles a dead shim's exits on its own schedule (its TaskExit
 * handler's Delete meets the closed ttrpc connection and is retried about a second later), so a RemovePodSandbox right
 * after StopPodSandbox can find a container not yet marked exited ("container is still running, to stop first"),
 * with runc as with hull; the kubelet's pod garbage collection tries again. containerd 1.6 removes it at once.
 * Returns how many calls it took.
 */
export async function removePodSandboxAfterShimDeath(
  client: CriClient,
  podSandboxId: string,
  ms = 30_000,
): Promise<number> {
  const until = Date.now() + ms;
  for (let calls = 1; ; calls++) {
    try {
      await client.removePodSandbox(podSandboxId);
      return calls;
    } catch (err) {
      if (!(err instanceof CriError) || err.code !== grpc.status.UNKNOWN || Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
