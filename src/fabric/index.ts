/**
 * `amebo/fabric`: the SDK for TypeScript services on the AMQP fabric, wire-compatible with the Python
 * library amqp-fabric 0.2.3 (RPC both ways, keep-alives, data streams, remote logs).
 * Amebo's own roles (presence, HTTP gateway) live next to it in `presence.ts` and `gateway.ts`.
 */
export { FabricConnector } from './connector.js';
export type { FabricConnectorOptions, FabricConnectorEvents, RpcProxy, ServiceFilter } from './connector.js';
export type { CallOptions } from './rpc-client.js';
export type { ConnectionObserver, ReconnectAttempt } from './link.js';
export type { RpcApi, RpcContext, RpcHandler, RpcRegisterOptions, RpcRegistration } from './rpc-server.js';
export {
  FabricError,
  FabricUnavailableError,
  RemoteError,
  RpcTimeoutError,
  ServiceError,
  ServiceNotFoundError,
  PYTHON_ERROR_TYPES,
} from './errors.js';
export type { NotFoundReason, PythonErrorType, TimeoutReason } from './errors.js';
export type { ServiceChange, ServiceInfo, ServiceStatus } from './discovery.js';
export type {
  DataBody,
  DataHandler,
  DataHeaders,
  DataMessage,
  HeaderValue,
  SubscribeDataOptions,
  Subscription,
} from './data.js';
export { LogDestination, LEVEL_NAMES, pythonLevel } from './logs.js';
export type { LevelName, LogDestinationOptions, LogFilter, LogRecord } from './logs.js';
export { parsePythonJson, encodePythonJson, encodeStrictJson, JsonDecodeError } from './json.js';
export type { JsonValue } from './json.js';
export { InvalidNameError } from './names.js';
export type { ServiceAddress } from './names.js';
