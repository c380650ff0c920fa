/**
 * The fabric's AMQP connection: Amebo's recovering connection (`src/broker/link.ts`: setup hooks
 * rebuilt on every reconnect, coalesced socket writes), failing with the fabric's own errors.
 */
import type { Logger } from 'pino';
import {
  RecoveringConnection,
  redactUrl,
  type ConnectionObserver,
  type ManagedChannel,
  type ReconnectAttempt,
  type SetupHook,
} from '../broker/link.js';
import { FabricUnavailableError } from './errors.js';

export { redactUrl, type ConnectionObserver, type ManagedChannel, type ReconnectAttempt, type SetupHook };

export interface LinkOptions {
  url: string;
  /** Shown as `connection_name` in `rabbitmqctl list_connections client_properties`. */
  name: string;
  logger: Logger;
  heartbeatSeconds: number;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
  /** Told of the connection's and its channels' state (Amebo's own roles feed `/metrics` from it). */
  observer?: ConnectionObserver;
}

/** The fabric's connection: Amebo's recovering connection, failing with the fabric's errors. */
export class Link extends RecoveringConnection {
  constructor(opts: LinkOptions) {
    super({
      ...opts,
      logPrefix: 'fabric',
      unreachable: (url, timeoutMs, lastFailure) =>
        new FabricUnavailableError(
          `broker unreachable at ${redactUrl(url)} after ${timeoutMs} ms${lastFailure ? ` (${lastFailure})` : ''}`,
        ),
      unavailable: (message) => new FabricUnavailableError(message),
    });
  }
}
