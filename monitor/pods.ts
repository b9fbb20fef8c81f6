/**
 * Pod names from containerd's CRI plugin: one ListPodSandbox per scrape (nothing in between), through grpc-js
 * with the generated classes of protos/cri.ts (integration/lib/cri.ts is the tests' fuller client of the same API).
 * A sandbox id of hull's shim is the CRI pod sandbox id. Values are capped in length; the text format escapes them.
 */
import * as grpc from '@grpc/grpc-js';
import { RuntimeService } from '../protos/cri';

export interface PodLabels {
  pod_name: string;
  pod_namespace: string;
  pod_uid: string;
}

/** Kubernetes' longest name (a DNS subdomain); longer values are cut. */
const MAX_LABEL_VALUE = 253;
const cap = (s: string | null | undefined): string => (s ?? '').slice(0, MAX_LABEL_VALUE);

export type PodLookup = (timeoutMs: number) => Promise<Map<string, PodLabels>>;

export class CriPods {
  readonly #client: grpc.Client;

  /** `socket`: containerd's gRPC socket (its CRI plugin serves there). */
  constructor(socket: string) {
    const target = socket.startsWith('unix:') ? socket : `unix://${socket}`;
    this.#client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 << 20,
    });
  }

  /** Every pod sandbox CRI knows: id -> its metadata. */
  list: PodLookup = (timeoutMs) => {
    const m = RuntimeService.ListPodSandbox;
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        m.path,
        (v: Parameters<typeof m.request.encode>[0]) => Buffer.from(m.request.encode(v).finish()),
        (data: Buffer) => m.response.decode(data),
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => {
          if (err || !res) return reject(err ?? new Error('ListPodSandbox: no answer'));
          const out = new Map<string, PodLabels>();
          for (const item of res.items ?? []) {
            if (!item.id) continue;
            out.set(item.id, {
              pod_name: cap(item.metadata?.name),
              pod_namespace: cap(item.metadata?.namespace),
              pod_uid: cap(item.metadata?.uid),
            });
          }
          resolve(out);
        },
      );
    });
  };

  close(): void {
    this.#client.close();
  }
}
