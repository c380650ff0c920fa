/**
 * Data streams on the `{domain}.data` headers exchange. Publishing is confirmed (amqp-fabric's is
 * fire-and-forget and loses errors). A subscriber's queue is named exactly as given, so
 * subscribers sharing a name compete for messages and different names each get a copy.
 */
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import { FabricUnavailableError } from './errors.js';
import { parsePythonJson, type JsonValue } from './json.js';
import { send } from '../broker/send.js';
import type { Link, ManagedChannel } from './link.js';
import { dataExchange, DECLARE } from './names.js';

/**
 * Header values. Matching compares values, so a filter only matches what was published with the
 * same value; strings are safest across languages (a Python float travels as a 32-bit float).
 */
export type HeaderValue = string | number | boolean;
export type DataHeaders = Record<string, HeaderValue>;

/** A received data message. */
export interface DataMessage {
  /** The body as published (amqp-fabric passes bytes through unchanged). */
  body: Buffer;
  /** Headers, including the publisher's `service_id` and `service_type`. */
  headers: Record<string, unknown>;
  /** True when this message was handed out before and not acknowledged. */
  redelivered: boolean;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as (Python-tolerant) JSON. */
  json<T = JsonValue>(): T;
}

/** Handles one message; the message is acknowledged once this returns or resolves. */
export type DataHandler = (msg: DataMessage) => unknown;

export interface SubscribeDataOptions {
  /**
   * Domain whose data exchange to subscribe to.
   * @default the connector's domain
   */
  domain?: string;
  /**
   * Messages handled at once by this subscriber.
   * @default 16
   */
  prefetch?: number;
}

/** A live subscription; `cancel()` stops consuming and waits for running handlers. */
export interface Subscription {
  /** The queue consumed (its name, or the current server-generated one). */
  readonly queue: string;
  cancel(): Promise<void>;
}

/** Body of a published data message: bytes as they are, strings as UTF-8, other values as JSON with sorted keys. */
export type DataBody = Buffer | string | JsonValue | object;

/** Encodes like amqp-fabric's documented convention `json.dumps(obj, sort_keys=True)`. */
export function encodeDataBody(body: DataBody): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return Buffer.from(JSON.stringify(body, (_k, v: unknown) => sortKeys(v)) ?? 'null', 'utf8');
}

function sortKeys(v: unknown): unknown {
  if (
    v === null ||
    typeof v !== 'object' ||
    Array.isArray(v) ||
    typeof (v as { toJSON?: unknown }).toJSON === 'function'
  )
    return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) out[k] = (v as Record<string, unknown>)[k];
  return out;
}

export function messageOf(m: ConsumeMessage): DataMessage {
  return {
    body: m.content,
    headers: m.properties.headers ?? {},
    redelivered: m.fields.redelivered,
    text: () => m.content.toString('utf8'),
    json: <T>() => parsePythonJson(m.content) as T,
  };
}

export class DataPublisher {
  private readonly link: Link;
  private readonly mc: ManagedChannel;
  private readonly declared = new Set<string>();
  private started: Promise<void> | null = null;

  constructor(link: Link, _log: Logger) {
    this.link = link;
    // One recovery path (ManagedChannel): rebuilt on reconnect and after a channel-level close.
    this.mc = link.channel({ name: 'fabric data publisher', confirm: true });
    this.mc.on('ready', () => this.declared.clear());
  }

  /** Publishes and resolves when the broker confirms; waits at most `timeoutMs` for a connection and the confirm. */
  async publish(exchange: string, body: Buffer, headers: Record<string, unknown>, timeoutMs: number): Promise<void> {
    this.started ??= this.mc.open({ wait: false }).catch((err: unknown) => {
      this.started = null;
      throw err;
    });
    const deadline = Date.now() + timeoutMs;
    await this.started;
    for (;;) {
      const ch: ConfirmChannel | null = (await this.mc.waitReady(deadline - Date.now()))
        ? this.mc.confirmChannel
        : null;
      if (!ch)
        throw new FabricUnavailableError(
          `data publish not confirmed within ${timeoutMs} ms (${this.link.connected ? 'channel being rebuilt' : 'broker not connected'})`,
        );
      if (!this.declared.has(exchange)) {
        await ch.assertExchange(exchange, 'headers', DECLARE.durableHeaders);
        this.declared.add(exchange);
      }
      let t: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          new Promise<void>((resolve, reject) => {
            send(ch, exchange, '', body, { headers, deliveryMode: 1, priority: 0 }, (err) =>
              err ? reject(err) : resolve(),
            );
          }),
          new Promise<never>((_, reject) => {
            t = setTimeout(
              () => reject(new FabricUnavailableError(`data publish not confirmed within ${timeoutMs} ms`)),
              Math.max(1, deadline - Date.now()),
            );
          }),
        ]);
        return;
      } catch (err) {
        // A connection lost mid-publish is retried on the next connection while time remains.
        if (err instanceof FabricUnavailableError || Date.now() >= deadline || this.link.isClosed) throw err;
        if ((err as Error).message !== 'channel closed' && !(err as Error).name.includes('IllegalOperation')) throw err;
      } finally {
        clearTimeout(t);
      }
    }
  }

  async close(): Promise<void> {
    await this.mc.close();
  }
}

/**
 * A consumer rebuilt on every connection: declares its queue and bindings, consumes with manual
 * ack, acks after the handler. A failing handler gets the message once more, then it is dropped
 * (amqp-fabric's data queues have no dead-letter exchange to send it to).
 */
export class DataSubscription implements Subscription {
  private readonly link: Link;
  private readonly log: Logger;
  private readonly exchange: string;
  private readonly name: string;
  private readonly bindings: Array<Record<string, unknown>>;
  private readonly handler: DataHandler;
  private readonly prefetch: number;
  private readonly exclusive: boolean;
  private readonly mc: ManagedChannel;
  private tag: string | null = null;
  private currentQueue = '';
  private running = 0;
  private cancelled = false;
  private idle: Array<() => void> = [];

  constructor(
    link: Link,
    log: Logger,
    opts: {
      exchange: string;
      /** Queue name; '' for a server-named private queue (a new one per connection). */
      queue: string;
      bindings: Array<Record<string, unknown>>;
      handler: DataHandler;
      prefetch: number;
    },
  ) {
    this.link = link;
    this.log = log;
    this.exchange = opts.exchange;
    this.name = opts.queue;
    this.exclusive = opts.queue === '';
    this.bindings = opts.bindings;
    this.handler = opts.handler;
    this.prefetch = opts.prefetch;
    this.mc = link.channel({
      name: `fabric subscription ${opts.exchange}`,
      prefetch: opts.prefetch,
      setup: (ch) => this.setup(ch),
    });
  }

  get queue(): string {
    return this.currentQueue;
  }

  async start(): Promise<void> {
    await this.mc.open();
  }

  private async setup(ch: Channel): Promise<void> {
    if (this.cancelled) return;
    await ch.assertExchange(this.exchange, 'headers', DECLARE.durableHeaders);
    const { queue } = await ch.assertQueue(this.name, this.exclusive ? DECLARE.privateQueue : DECLARE.dataQueue);
    for (const args of this.bindings) await ch.bindQueue(queue, this.exchange, '', args);
    const { consumerTag } = await ch.consume(queue, (m) => this.onMessage(ch, m), { noAck: false });
    this.tag = consumerTag;
    this.currentQueue = queue;
  }

  private onMessage(ch: Channel, m: ConsumeMessage | null): void {
    if (!m) {
      if (this.cancelled) return;
      // The broker cancelled us (queue deleted, node gone): a new channel declares and consumes
      // again, with backoff until it works.
      this.log.warn({ queue: this.currentQueue }, 'fabric: subscription cancelled by the broker; redeclaring');
      this.mc.reset();
      return;
    }
    this.running++;
    void (async () => {
      let ok = true;
      try {
        await this.handler(messageOf(m));
      } catch (err) {
        ok = false;
        this.log.warn({ err: (err as Error).message, queue: this.currentQueue }, 'fabric: data handler failed');
      }
      try {
        if (ok) ch.ack(m);
        else ch.nack(m, false, !m.fields.redelivered);
      } catch {
        /* channel gone: the broker redelivers */
      }
    })().finally(() => {
      this.running--;
      if (this.running === 0) for (const w of this.idle.splice(0)) w();
    });
  }

  async cancel(drainTimeoutMs = 10_000): Promise<void> {
    if (this.cancelled) return;
    this.cancelled = true;
    const ch = this.mc.channel;
    if (ch && this.tag) await ch.cancel(this.tag).catch(() => undefined);
    if (this.running > 0) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.idle.push(r)),
        new Promise<void>((r) => (t = setTimeout(r, drainTimeoutMs))),
      ]);
      clearTimeout(t);
    }
    await this.mc.close();
  }
}

/** Binding arguments of a data subscription: all the given headers must match. */
export function dataBinding(headers: DataHeaders): Record<string, unknown> {
  return { 'x-match': 'all', ...headers };
}

export { dataExchange };
