/**
 * What the sandbox tells the outside world, in order: hull's own event shapes (shim/ turns them into containerd's
 * task events). The sink is called synchronously at the moment the event happens; ordering (a process's start
 * before its exit, create before start) is core's guarantee, delivery is the sink's.
 */
export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface RootfsMount {
  type: string;
  source: string;
  options: string[];
}

export type SandboxEvent =
  | { type: 'create'; containerId: string; bundle: string; rootfs: RootfsMount[]; io: StdioPaths; pid: number }
  | { type: 'start'; containerId: string; pid: number }
  | { type: 'exec-added'; containerId: string; execId: string }
  | { type: 'exec-started'; containerId: string; execId: string; pid: number }
  | { type: 'exit'; containerId: string; id: string; pid: number; exitStatus: number; exitedAt: Date }
  | { type: 'delete'; containerId: string; pid: number; exitStatus: number; exitedAt: Date }
  | { type: 'paused'; containerId: string }
  | { type: 'resumed'; containerId: string }
  | { type: 'oom'; containerId: string };

export type EventSink = (event: SandboxEvent) => void;
