/**
 * The containerd side of hull's wire protocols: the shim v2 Task API, task events and the ttrpc Events service,
 * cgroup metrics, runtime options. Generated classes come from protos/gen/containerd (root `containerd`, see
 * scripts/gen-protos.mjs); this module adds short aliases, type URLs, event topics and ttrpc method descriptors.
 *
 * Generated classes take plain objects with camelCase field names (`execId` for `exec_id`); 64-bit integers are
 * numbers (see int64.ts).
 */
import './int64'; // must run before the generated module loads
import { protobufMethod, type ProtobufjsClass, type ServiceDefinition } from 'ttrpc-ts';
import { containerd, google, io, runtimeoptions, ttrpc } from './gen/containerd';
import { packAny, type Encoder, type PackedAny } from './well-known';

export { containerd, google, io, runtimeoptions, ttrpc };
export * from './well-known';
export { clampUint64, MAX_UINT64_NUMBER } from './int64';

export import task = containerd.task.v2;
export import events = containerd.events;
export import eventsService = containerd.services.events.ttrpc.v1;
export import types = containerd.types;
export import taskTypes = containerd.v1.types;
export import cgroups1 = io.containerd.cgroups.v1;
export import cgroups2 = io.containerd.cgroups.v2;
export import runcOptions = containerd.runc.v1;
export import runtimeOptions = runtimeoptions.v1;
export import bootstrap = containerd.runtime.bootstrap.v1;

/** The plain-object shape a generated class encodes (its `$Properties`). */
export type PropertiesOf<C> = C extends { encode(message: infer P, ...rest: never[]): unknown } ? P : never;

const OCI_SPEC_PREFIX = 'types.containerd.io/opencontainers/runtime-spec/1/';

/** Type URLs as containerd 1.6 writes and expects them: bare full names for protobuf, typeurl names for JSON. */
export const TypeUrl = {
  TaskCreate: 'containerd.events.TaskCreate',
  TaskStart: 'containerd.events.TaskStart',
  TaskDelete: 'containerd.events.TaskDelete',
  TaskExit: 'containerd.events.TaskExit',
  TaskOOM: 'containerd.events.TaskOOM',
  TaskExecAdded: 'containerd.events.TaskExecAdded',
  TaskExecStarted: 'containerd.events.TaskExecStarted',
  TaskPaused: 'containerd.events.TaskPaused',
  TaskResumed: 'containerd.events.TaskResumed',
  TaskCheckpointed: 'containerd.events.TaskCheckpointed',
  /** StatsResponse.stats on a cgroup v1 host. */
  CgroupsV1Metrics: 'io.containerd.cgroups.v1.Metrics',
  /** StatsResponse.stats on a cgroup v2 host. */
  CgroupsV2Metrics: 'io.containerd.cgroups.v2.Metrics',
  /** CreateTaskRequest.options from the CRI plugin for a runtime with `options` configured. */
  RuntimeOptions: 'runtimeoptions.v1.Options',
  /** ProcessInfo.info: which exec a pid belongs to. */
  RuncProcessDetails: 'containerd.runc.v1.ProcessDetails',
  /** JSON OCI Spec. */
  OciSpec: `${OCI_SPEC_PREFIX}Spec`,
  /** JSON OCI Process: ExecProcessRequest.spec. */
  OciProcess: `${OCI_SPEC_PREFIX}Process`,
  /** JSON OCI LinuxResources: UpdateTaskRequest.resources. */
  OciLinuxResources: `${OCI_SPEC_PREFIX}LinuxResources`,
  /** JSON OCI runtime features document (features.json): RuntimeInfo.features, what `-info` prints. */
  OciFeatures: `${OCI_SPEC_PREFIX}features/Features`,
} as const;

/** Every task event a shim publishes: payload class, type URL, and topic (containerd runtime/events.go). */
export const TaskEvents = {
  TaskCreate: { type: events.TaskCreate, typeUrl: TypeUrl.TaskCreate, topic: '/tasks/create' },
  TaskStart: { type: events.TaskStart, typeUrl: TypeUrl.TaskStart, topic: '/tasks/start' },
  TaskDelete: { type: events.TaskDelete, typeUrl: TypeUrl.TaskDelete, topic: '/tasks/delete' },
  TaskExit: { type: events.TaskExit, typeUrl: TypeUrl.TaskExit, topic: '/tasks/exit' },
  TaskOOM: { type: events.TaskOOM, typeUrl: TypeUrl.TaskOOM, topic: '/tasks/oom' },
  TaskExecAdded: { type: events.TaskExecAdded, typeUrl: TypeUrl.TaskExecAdded, topic: '/tasks/exec-added' },
  TaskExecStarted: { type: events.TaskExecStarted, typeUrl: TypeUrl.TaskExecStarted, topic: '/tasks/exec-started' },
  TaskPaused: { type: events.TaskPaused, typeUrl: TypeUrl.TaskPaused, topic: '/tasks/paused' },
  TaskResumed: { type: events.TaskResumed, typeUrl: TypeUrl.TaskResumed, topic: '/tasks/resumed' },
  TaskCheckpointed: { type: events.TaskCheckpointed, typeUrl: TypeUrl.TaskCheckpointed, topic: '/tasks/checkpointed' },
} as const;

export type TaskEventName = keyof typeof TaskEvents;
export type TaskEventPayload<N extends TaskEventName> = PropertiesOf<(typeof TaskEvents)[N]['type']>;

/** A task event's topic and packed payload, ready to go into an Envelope. */
export function taskEvent<N extends TaskEventName>(
  name: N,
  payload: TaskEventPayload<N>,
): { topic: string; event: PackedAny } {
  const entry = TaskEvents[name];
  const type = entry.type as Encoder<TaskEventPayload<N>>;
  return { topic: entry.topic, event: packAny(entry.typeUrl, type, payload) };
}

/** ttrpc service names. */
export const TASK_SERVICE = 'containerd.task.v2.Task';
/** containerd 2.x's task API v3: v2's messages under another service name (protos/proto/containerd/task/v3). */
export const TASK_SERVICE_V3 = 'containerd.task.v3.Task';
export const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';

const Empty = google.protobuf.Empty;
const taskRpc = <Req, Res>(name: string, request: ProtobufjsClass<Req>, response: ProtobufjsClass<Res>) =>
  protobufMethod(TASK_SERVICE, name, request, response);

/** containerd.task.v2.Task: what containerd calls on the shim. */
export const TaskService = {
  State: taskRpc('State', task.StateRequest, task.StateResponse),
  Create: taskRpc('Create', task.CreateTaskRequest, task.CreateTaskResponse),
  Start: taskRpc('Start', task.StartRequest, task.StartResponse),
  Delete: taskRpc('Delete', task.DeleteRequest, task.DeleteResponse),
  Pids: taskRpc('Pids', task.PidsRequest, task.PidsResponse),
  Pause: taskRpc('Pause', task.PauseRequest, Empty),
  Resume: taskRpc('Resume', task.ResumeRequest, Empty),
  Checkpoint: taskRpc('Checkpoint', task.CheckpointTaskRequest, Empty),
  Kill: taskRpc('Kill', task.KillRequest, Empty),
  Exec: taskRpc('Exec', task.ExecProcessRequest, Empty),
  ResizePty: taskRpc('ResizePty', task.ResizePtyRequest, Empty),
  CloseIO: taskRpc('CloseIO', task.CloseIORequest, Empty),
  Update: taskRpc('Update', task.UpdateTaskRequest, Empty),
  Wait: taskRpc('Wait', task.WaitRequest, task.WaitResponse),
  Stats: taskRpc('Stats', task.StatsRequest, task.StatsResponse),
  Connect: taskRpc('Connect', task.ConnectRequest, task.ConnectResponse),
  Shutdown: taskRpc('Shutdown', task.ShutdownRequest, Empty),
} satisfies ServiceDefinition;

/** containerd.task.v3.Task: the same methods and codecs as v2's, served by the same handlers. */
export const TaskServiceV3 = Object.fromEntries(
  Object.entries(TaskService).map(([name, m]) => [name, { ...m, service: TASK_SERVICE_V3 }]),
) as unknown as typeof TaskService;

/** containerd.services.events.ttrpc.v1.Events: what the shim calls on containerd ($TTRPC_ADDRESS). */
export const EventsService = {
  Forward: protobufMethod(EVENTS_SERVICE, 'Forward', eventsService.ForwardRequest, Empty),
} satisfies ServiceDefinition;
