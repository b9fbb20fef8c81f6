/**
 * Typed method descriptors: how a service's request and response messages are encoded. ttrpc-ts knows nothing of
 * any particular protobuf library; a descriptor adapts one (for protobufjs static code:
 * `codec(Foo)` below, or `{ encode: (v) => Foo.encode(v).finish(), decode: (b) => Foo.decode(b) }`).
 */
export interface Codec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

export interface MethodDescriptor<Req, Res> {
  /** Fully qualified service name, e.g. `containerd.task.v2.Task`. */
  readonly service: string;
  /** Bare method name, e.g. `Create`. */
  readonly method: string;
  readonly request: Codec<Req>;
  readonly response: Codec<Res>;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- a Codec<T> is invariant in T, so only `any` accepts every
   method descriptor here; the mapped types below recover each method's own types. */
/** A service: its methods by bare name. */
export type ServiceDefinition = Record<string, MethodDescriptor<any, any>>;

export type RequestOf<D> = D extends MethodDescriptor<infer Req, any> ? Req : never;
export type ResponseOf<D> = D extends MethodDescriptor<any, infer Res> ? Res : never;
/* eslint-enable @typescript-eslint/no-explicit-any */

export function method<Req, Res>(
  service: string,
  name: string,
  request: Codec<Req>,
  response: Codec<Res>,
): MethodDescriptor<Req, Res> {
  return { service, method: name, request, response };
}

/** The shape protobufjs static classes have. */
export interface ProtobufjsClass<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(reader: Uint8Array): T;
}

/** A codec for a protobufjs static message class. */
export function codec<T>(cls: ProtobufjsClass<T>): Codec<T> {
  return { encode: (value) => cls.encode(value).finish(), decode: (bytes) => cls.decode(bytes) };
}

/** A method whose messages are protobufjs static classes. */
export function protobufMethod<Req, Res>(
  service: string,
  name: string,
  request: ProtobufjsClass<Req>,
  response: ProtobufjsClass<Res>,
): MethodDescriptor<Req, Res> {
  return method(service, name, codec(request), codec(response));
}
