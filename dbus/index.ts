export { DBusConnection, DBusConnectionError, DBusError, DBUS_SERVICE } from './connection';
export type { CallRequest, ConnectOptions, SignalRequest } from './connection';
export { DBusProtocolError, parseSignature, isObjectPath, Reader, Writer } from './marshal';
export type { DBusType, DBusValue, Variant } from './marshal';
export {
  MessageDecoder,
  MessageType,
  NO_REPLY_EXPECTED,
  decodeMessage,
  encodeMessage,
  MAX_MESSAGE_BYTES,
} from './message';
export type { Message } from './message';
