import type { ChannelModel } from 'amqplib';
import type { Logger } from '../log.js';
import { metrics } from '../metrics.js';
import { RecoveringConnection, redactUrl, type ChannelSpec, type ManagedChannel, type SetupHook } from './link.js';

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
    });
    this.url = opts.url;
    const connection = opts.name ?? 'amebo';
    metrics.amqpConnected.set({ connection }, 0);
    this.on('ready', () => metrics.amqpConnected.set({ connection }, 1));
    this.on('disconnect', () => metrics.amqpConnected.set({ connection }, 0));
    this.on('closed', () => metrics.amqpConnected.set({ connection }, 0));
    this.on('reconnecting', (r: { node: string }) => metrics.amqpReconnects.inc({ connection, node: r.node }));
  }

  /** A managed channel whose state shows in `amebo_amqp_channels_ready{channel}`. */
  override channel(spec: ChannelSpec): ManagedChannel {
    const mc = super.channel(spec);
    metrics.amqpChannelsReady.set({ channel: spec.name }, 0);
    mc.on('ready', () => metrics.amqpChannelsReady.set({ channel: spec.name }, 1));
    mc.on('lost', () => metrics.amqpChannelsReady.set({ channel: spec.name }, 0));
    return mc;
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
