import { EventEmitter } from 'node:events';
import amqp, { type ChannelModel, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from '../log.js';

/** Something that (re)creates its channels, consumers and declarations on a fresh connection. */
export type SetupHook = (model: ChannelModel) => Promise<void>;

export interface BrokerOptions {
  url: string;
  logger: Logger;
  /** Connection name shown in the management UI. */
  name?: string;
  /** AMQP heartbeat, seconds. @default 10 */
  heartbeat?: number;
}

/**
 * One recovering AMQP connection per process. amqplib restores the socket only, so every component
 * registers a setup hook that rebuilds its channels, topology and consumers; hooks run in
 * registration order on every (re)connect, and at once when registered while connected.
 */
export class Broker extends EventEmitter {
  readonly url: string;
  private readonly log: Logger;
  private readonly name: string;
  private readonly heartbeat: number;
  private conn: RecoveringChannelModel | null = null;
  private model: ChannelModel | null = null;
  private readonly hooks: SetupHook[] = [];
  private closing = false;

  constructor(opts: BrokerOptions) {
    super();
    this.url = opts.url;
    this.log = opts.logger;
    this.name = opts.name ?? 'amebo';
    this.heartbeat = opts.heartbeat ?? 10;
  }

  get connected(): boolean {
    return this.model !== null;
  }

  /** Connects, waiting at most `timeoutMs` for the first connection; recovery goes on forever after. */
  async open(timeoutMs = 10_000): Promise<void> {
    const url = new URL(this.url);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(this.heartbeat));
    const conn = await amqp.connect(url.toString(), {
      timeout: 5000,
      noDelay: true,
      clientProperties: { connection_name: this.name },
      recovery: {
        waitForConnect: false,
        initialDelay: 100,
        maxDelay: 5000,
        maxRetries: Infinity,
        setup: async (model: ChannelModel) => {
          model.on('error', (err: Error) => this.log.warn({ err: err.message }, 'amqp connection error'));
          for (const hook of this.hooks) await hook(model);
        },
      },
    });
    this.conn = conn;
    conn.on('connect', (model: ChannelModel) => {
      this.model = model;
      this.log.info('amqp connected');
      this.emit('connect');
    });
    conn.on('disconnect', (err: Error) => {
      this.model = null;
      if (!this.closing) this.log.warn({ err: err.message }, 'amqp disconnected; reconnecting');
      this.emit('disconnect', err);
    });
    conn.on('connect-failed', (err: Error) => this.log.debug({ err: err.message }, 'amqp connect attempt failed'));
    conn.on('error', (err: Error) => this.log.warn({ err: err.message }, 'amqp error'));
    conn.on('blocked', (reason: string) => this.log.warn({ reason }, 'amqp connection blocked by the broker'));
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        conn.waitForConnect(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new BrokerUnreachableError(this.url, timeoutMs)), timeoutMs);
        }),
      ]);
    } catch (err) {
      this.closing = true;
      await conn.close().catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Adds a setup hook; runs it now when connected (its failure is then the caller's). */
  async addHook(hook: SetupHook): Promise<void> {
    this.hooks.push(hook);
    if (this.model) await hook(this.model);
  }

  removeHook(hook: SetupHook): void {
    const i = this.hooks.indexOf(hook);
    if (i >= 0) this.hooks.splice(i, 1);
  }

  /** Waits until connected, at most `timeoutMs`. */
  async waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.model) return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.off('connect', on);
        resolve(false);
      }, timeoutMs);
      const on = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.once('connect', on);
    });
  }

  /** A short-lived channel for checks that may close it with an error (passive declares). */
  async withThrowawayChannel<T>(fn: (ch: amqp.Channel) => Promise<T>): Promise<T> {
    const model = this.model;
    if (!model) throw new BrokerUnavailableError();
    const ch = await model.createChannel();
    ch.on('error', () => undefined);
    try {
      return await fn(ch);
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  /** The live connection, for components that open channels outside setup (they must also add a hook). */
  current(): ChannelModel | null {
    return this.model;
  }

  async close(): Promise<void> {
    this.closing = true;
    const conn = this.conn;
    this.conn = null;
    this.model = null;
    if (conn) await Promise.race([conn.close().catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
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

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}
