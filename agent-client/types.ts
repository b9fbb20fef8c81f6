/** hull's own types for talking to the guest agent; generated protocol classes stay behind this edge. */

/** Where the agent listens, as the hypervisor reports it. */
export type AgentEndpoint = { transport: 'serial'; path: string } | { transport: 'vsock'; cid: number; port: number } | { transport: 'unix'; path: string };

export type HealthStatus = 'serving' | 'not-serving' | 'unknown';

export interface GuestDetails {
  /** `uname -r` inside the guest. */
  kernelRelease: string;
  agentVersion: string;
  nodeVersion: string;
  /** Whether the agent runs as the guest's init (PID 1). */
  initDaemon: boolean;
  memBlockSizeBytes: number;
  storageHandlers: string[];
  /** Guest uptime in ms when the agent's code started, and when it began serving. */
  agentStartedMs: number;
  agentReadyMs: number;
  transport: string;
}

/** A filesystem for the agent to mount in the guest. */
export interface StorageSpec {
  /** e.g. 'virtio-fs' */
  driver: string;
  /** For virtio-fs: the share's tag. */
  source: string;
  fstype: string;
  options: string[];
  /** Absolute path in the guest, below /run/kata-containers. */
  mountPoint: string;
}

export interface SandboxSpec {
  sandboxId: string;
  hostname?: string;
  dns?: string[];
  storages: StorageSpec[];
  kernelModules?: { name: string; parameters: string[] }[];
}

export interface FileContents {
  data: Buffer;
  /** The file's full size (data may be shorter). */
  size: number;
}

export interface AgentClient {
  check(): Promise<HealthStatus>;
  version(): Promise<{ agentVersion: string; protocolVersion: string }>;
  guestDetails(): Promise<GuestDetails>;
  createSandbox(spec: SandboxSpec): Promise<void>;
  /** The agent unmounts the sandbox's storages and powers the guest off after replying. */
  destroySandbox(): Promise<void>;
  setGuestDateTime(at: Date): Promise<void>;
  /** Reads a file of the shared folder as the guest sees it (a check of virtio-fs). */
  readSharedFile(guestPath: string, maxBytes?: number): Promise<FileContents>;
  /** Registers a listener for the agent connection's loss; returns a function that removes it. */
  onClose(listener: (err: Error) => void): () => void;
  close(): Promise<void>;
}
