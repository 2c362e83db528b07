/**
 * ArqonBus TypeScript SDK: a client for the ArqonBus WebSocket message bus
 * that runs unchanged in browsers and in Node >= 20.
 *
 * @packageDocumentation
 */
export { ArqonBus } from './client.js';
export type {
  AbortSignalLike,
  ArqonBusEvents,
  ArqonBusOptions,
  CallOptions,
  HistoryOptions,
  Identity,
  JoinOptions,
  PublishOptions,
} from './client.js';
export { ArqonConnectionError, ArqonError, ArqonTimeoutError } from './errors.js';
export type { ConnectionErrorKind, ErrorDetail } from './errors.js';
export { backoffDelay, DEFAULT_RECONNECT } from './backoff.js';
export type { ReconnectOptions, ReconnectPolicy } from './backoff.js';
export type { IteratorOptions, Subscription, SubscriptionState } from './subscription.js';
export type { WebSocketConstructor, WebSocketLike } from './transport.js';
export type { Listener } from './emitter.js';
export type * from './types.js';
