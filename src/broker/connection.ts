import type { ChannelModel } from 'amqplib';
import type { Logger } from '../log.js';
import { metrics } from '../metrics.js';
import { RecoveringConnection, redactUrl, type ConnectionObserver, type SetupHook } from './link.js';

export { redactUrl, type SetupHook };

export interface BrokerOptions {
  url: string;
  logger: Logger;
  /** Connection name shown in the management UI. */
  name?: string;
  /** AMQP heartbeat, seconds. @default 10 */
  heartbeat?: number;
}

/**
 * One recovering AMQP connection per process (the same class the fabric SDK uses). Components
 * register a setup hook that rebuilds their channels, topology and consumers; hooks run in
 * registration order on every (re)connect, and at once when registered while connected.
 */
export class Broker extends RecoveringConnection {
  readonly url: string;

  constructor(opts: BrokerOptions) {
    super({
      url: opts.url,
      name: opts.name ?? 'amebo',
      logger: opts.logger,
      heartbeatSeconds: opts.heartbeat ?? 10,
      unreachable: (url, timeoutMs) => new BrokerUnreachableError(url, timeoutMs),
      unavailable: () => new BrokerUnavailableError(),
      // Its state and its managed channels' show in /metrics.
      observer: metricsObserver(opts.name ?? 'amebo'),
    });
    this.url = opts.url;
  }

  /** Adds a setup hook; runs it now when connected (its failure is then the caller's), else on connect. */
  addHook(hook: SetupHook): Promise<void> {
    return this.addSetup(hook, { wait: false });
  }

  removeHook(hook: SetupHook): void {
    this.removeSetup(hook);
  }

  /** The live connection, for components that open channels outside setup (they must also add a hook). */
  current(): ChannelModel | null {
    return this.model;
  }
}

/**
 * A connection's state in `/metrics`: `amebo_amqp_connected{connection}`,
 * `amebo_amqp_connect_failures_total{connection,node}` and `amebo_amqp_channels_ready{channel}`.
 * Every AMQP connection of an Amebo process uses one (the core's `Broker`, and the fabric gateway's
 * and presence role's connections through their `observer` option).
 */
export function metricsObserver(connection: string): ConnectionObserver {
  return {
    connected: (up) => metrics.amqpConnected.set({ connection }, up ? 1 : 0),
    failed: (node) => metrics.amqpReconnects.inc({ connection, node }),
    channel: (name, state) =>
      state === 'closed'
        ? metrics.amqpChannelsReady.remove({ channel: name })
        : metrics.amqpChannelsReady.set({ channel: name }, state === 'ready' ? 1 : 0),
  };
}

export class BrokerUnavailableError extends Error {
  override name = 'BrokerUnavailableError';
  constructor() {
    super('RabbitMQ is not connected');
  }
}

export class BrokerUnreachableError extends Error {
  override name = 'BrokerUnreachableError';
  constructor(url: string, timeoutMs: number) {
    super(`RabbitMQ unreachable at ${redactUrl(url)} after ${timeoutMs} ms`);
  }
}
