export { Client, createServiceClient, type CallOptions, type ClientOptions, type ServiceClient } from './client';
export { Server, type ServerOptions } from './server';
export { ServiceRegistry, type HandlerContext, type RawHandler, type ServiceImplementation } from './service-registry';
export {
  codec,
  method,
  protobufMethod,
  type Codec,
  type MethodDescriptor,
  type ProtobufjsClass,
  type RequestOf,
  type ResponseOf,
  type ServiceDefinition,
} from './method';
export { type Metadata } from './metadata';
export {
  CancelledError,
  Code,
  ConnectionClosedError,
  DeadlineExceededError,
  MessageTooLargeError,
  ProtocolError,
  StatusError,
  TtrpcError,
  errorMessage,
  fromStatus,
  toStatus,
  type AnyMessage,
  type Status,
} from './status';
export {
  FrameDecoder,
  FrameType,
  HEADER_LENGTH,
  MAX_MESSAGE_LENGTH,
  encodeFrame,
  type DecodedFrame,
  type Frame,
  type FrameHeader,
} from './frame-codec';
export { Channel } from './channel';
export {
  connectUnix,
  isAbstract,
  listenUnix,
  unixSocketPath,
  type ConnectOptions,
  type ListenOptions,
} from './transport';
export {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  type KeyValue,
  type RequestMessage,
  type ResponseMessage,
} from './wire';
export {
  Prng,
  caseSeed,
  decoderCase,
  duplexPair,
  formatResult,
  fuzzArgs,
  fuzzDecoder,
  fuzzMethods,
  fuzzServer,
  FuzzFailure,
  mutateBytes,
  mutatePayload,
  protobufSoup,
  referenceFrames,
  serverCase,
  splitStream,
  type FuzzMethod,
  type FuzzOptions,
  type FuzzResult,
  type ServerTarget,
} from './fuzz';
