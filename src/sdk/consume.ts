/**
 * Native consumer for `transport: amqp` subscriptions (design §7): the same retry ladder and dead
 * letters as the HTTP bridge, and async_service's rule: a message is acked only after the handler
 * resolved and everything it published is confirmed by the broker.
 */
import { EventEmitter } from 'node:events';
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { pino, type Logger } from 'pino';
import { Broker } from '../broker/connection.js';
import { HEADER } from '../broker/message.js';
import { ConfirmPublisher } from '../broker/publisher.js';
import { Topology } from '../broker/topology.js';
import { DELIVERY_DEFAULTS } from '../delivery/defaults.js';
import { decide } from '../delivery/ladder.js';
import { ack, attemptOf, deadLetter, requeueLater, retryLater } from '../delivery/settle.js';

/** An event as a native consumer receives it. */
export interface AmeboEvent<P = unknown> {
  id: string;
  action: string;
  application: string;
  payload: P;
  deduper: string | null;
  timestamp: string;
  conversation_id: string | null;
  schema_version?: number;
}

export interface HandlerContext {
  /** 1 on the first delivery, then 2, 3... on retries. */
  attempt: number;
  /** The broker headers (traceparent, conversation_id, x-amebo-*). */
  headers: Record<string, unknown>;
  /**
   * Publishes with a broker confirm. The incoming message is acked only once every publish made
   * here is confirmed; a failed publish counts as a handler failure (retried).
   */
  publish(
    exchange: string,
    routingKey: string,
    body: Buffer | string | object,
    options?: Options.Publish,
  ): Promise<void>;
}

export type Handler<P> = (event: AmeboEvent<P>, ctx: HandlerContext) => Promise<void>;

/** Thrown by a handler for an event that retrying cannot fix: dead-lettered at once. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

export interface ConsumeOptions<P = unknown> {
  /** RabbitMQ URL. */
  amqpUrl: string;
  /** The subscription's queue (`queue` in the POST /v1/subscriptions answer). */
  queue: string;
  /** Amebo's RabbitMQ name prefix (AMEBO_PREFIX). @default 'amebo' */
  prefix?: string;
  handler: Handler<P>;
  /**
   * Delays between attempts, seconds; use the subscription's `retry_schedule`.
   * @default the server's default (AMEBO_RETRY_SCHEDULE's default: 5 s … 1 day, 9 steps)
   */
  retrySchedule?: number[];
  /** @default 10 (AMEBO_MAX_ATTEMPTS's default) */
  maxAttempts?: number;
  /** Seconds from the first attempt after which a failing event is dead-lettered. @default 259200 (3 days) */
  maxAge?: number;
  /** Messages in flight (handled concurrently). @default 50 */
  prefetch?: number;
  /** Queue type of Amebo's retry queues (AMEBO_QUEUE_TYPE). @default 'quorum' */
  queueType?: 'quorum' | 'classic';
  /** x-delivery-limit of the retry queues (AMEBO_DELIVERY_LIMIT). @default 20 */
  deliveryLimit?: number;
  logger?: Logger;
  /** Connection name shown by RabbitMQ. @default 'amebo-consumer <pid>' */
  name?: string;
}

/** How one message was settled, as `settled` reports it. */
export interface Settlement {
  /** The event's id (the message id), or null when the message carried none. */
  id: string | null;
  /** The attempt that was handled (1 on the first delivery). */
  attempt: number;
  /** `ack`: handled; `retry`: a copy waits in a retry queue (confirmed) before the ack; `dead`: dead-lettered. */
  outcome: 'ack' | 'retry' | 'dead';
  /** For `retry`: the wait before the next attempt. */
  delayMs?: number;
  /** For `dead`: why (`max_attempts`, `max_age`, `permanent_error`). */
  reason?: string;
  /** The handler's error (null on `ack`). */
  error: string | null;
}

/** What a consumer reports (tests and embedders wait on these). */
export interface ConsumerEvents {
  /**
   * Consuming from the queue: on every rebuild of the consumer (reconnect, channel loss, the
   * broker's cancel). The first one comes before `consume()` resolves; `consuming` tells the state.
   */
  ready: [{ queue: string; consumerTag: string }];
  /** Consuming again after `lost` or `cancelled` (right after that `ready`). */
  recovered: [{ queue: string; consumerTag: string }];
  /** The channel was lost (connection loss, channel error); it is rebuilt by itself. */
  lost: [];
  /** The broker cancelled the consumer (queue deleted?); it consumes again once it can. */
  cancelled: [{ queue: string }];
  /**
   * A try to get consuming again failed and the next follows after `delayMs`: `connection` when
   * no node took the connection, `channel` when the connection is up but the consumer's channel
   * could not be set up (its queue or exchanges missing on that node).
   */
  reconnecting: [
    { scope: 'connection' | 'channel'; attempt: number; delayMs: number; node: string | null; error: Error },
  ];
  /** A message was handled and settled (after the broker confirmed any retry copy or dead letter). */
  settled: [Settlement];
  /** A message could not be settled (it is requeued after a pause); emitted only while someone listens. */
  error: [Error];
  /** `close()` finished: nothing more is consumed. */
  closed: [];
}

export interface Consumer extends EventEmitter<ConsumerEvents> {
  /** True while the consumer is registered with the broker. */
  readonly consuming: boolean;
  /** Stops taking messages, waits for handlers in flight (at most `graceMs`), closes the connection. */
  close(graceMs?: number): Promise<void>;
}

class RunningConsumer extends EventEmitter<ConsumerEvents> implements Consumer {
  /** Set by `consume()` once the channel exists. */
  isConsuming: () => boolean = () => false;
  stop: (graceMs: number) => Promise<void> = async () => undefined;

  get consuming(): boolean {
    return this.isConsuming();
  }

  close(graceMs = 10_000): Promise<void> {
    return this.stop(graceMs);
  }
}

/** Consumes an Amebo queue with `handler`; reconnects by itself. */
export async function consume<P = unknown>(opts: ConsumeOptions<P>): Promise<Consumer> {
  const log = opts.logger ?? pino({ level: 'silent' });
  const topology = new Topology({
    prefix: opts.prefix ?? DELIVERY_DEFAULTS.prefix,
    queueType: opts.queueType ?? DELIVERY_DEFAULTS.queueType,
    deliveryLimit: opts.deliveryLimit ?? DELIVERY_DEFAULTS.deliveryLimit,
  });
  const ladder = {
    scheduleMs: (opts.retrySchedule ?? DELIVERY_DEFAULTS.retrySchedule).map((s) => s * 1000),
    maxAttempts: opts.maxAttempts ?? DELIVERY_DEFAULTS.maxAttempts,
    maxAgeMs: (opts.maxAge ?? DELIVERY_DEFAULTS.maxAgeSeconds) * 1000,
  };
  const broker = new Broker({ url: opts.amqpUrl, logger: log, name: opts.name ?? `amebo-consumer ${process.pid}` });
  await broker.open(10_000);
  const publisher = new ConfirmPublisher(broker, { logger: log });
  await publisher.start();
  const settle = { publisher, topology };
  const events = new RunningConsumer();
  const declared = new Set<number>();
  let stopping = false;
  let inflight = 0;
  const idle: (() => void)[] = [];

  const ensureRetry = async (ms: number): Promise<void> => {
    if (declared.has(ms)) return;
    await broker.withThrowawayChannel((ch) => topology.declareRetry(ch, ms)).catch(() => undefined);
    declared.add(ms);
  };

  const handle = async (ch: Channel, msg: ConsumeMessage): Promise<Settlement> => {
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    const { attempt, firstAt } = attemptOf(msg);
    const published: Promise<void>[] = [];
    let error: Error | null = null;
    let id = typeof msg.properties.messageId === 'string' ? msg.properties.messageId : null;
    try {
      const event = JSON.parse(msg.content.toString('utf8')) as AmeboEvent<P>;
      id ??= typeof event.id === 'string' ? event.id : null;
      await opts.handler(event, {
        attempt,
        headers,
        publish(exchange, routingKey, body, options = {}) {
          const buf = Buffer.isBuffer(body)
            ? body
            : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
          const p = publisher.publish(exchange, routingKey, buf, {
            persistent: true,
            contentType: 'application/json',
            ...options,
            headers: { [HEADER.conversation]: headers[HEADER.conversation], ...(options.headers ?? {}) },
          });
          published.push(p);
          return p;
        },
      });
      await Promise.all(published);
    } catch (err) {
      await Promise.allSettled(published);
      error = err instanceof Error ? err : new Error(String(err));
    }
    const fatal = error instanceof PermanentError || error instanceof SyntaxError;
    const d = decide({ status: error ? null : 200, fatal }, attempt, firstAt, Date.now(), ladder);
    if (d.kind === 'delivered') {
      ack(ch, msg);
      return { id, attempt, outcome: 'ack', error: null };
    }
    if (d.kind === 'retry') {
      await ensureRetry(d.delayMs);
      await retryLater(settle, ch, msg, opts.queue, { attempt: attempt + 1, firstAt, delayMs: d.delayMs });
      log.debug({ attempt, delayMs: d.delayMs, err: error?.message }, 'handler failed; retry scheduled');
      return { id, attempt, outcome: 'retry', delayMs: d.delayMs, error: error?.message ?? null };
    }
    const reason = d.kind === 'dead' && d.reason !== 'fatal' ? d.reason : 'permanent_error';
    await deadLetter(settle, ch, msg, opts.queue, {
      reason,
      attempts: attempt,
      lastError: error?.message ?? null,
    });
    log.warn({ attempt, err: error?.message }, 'event dead-lettered');
    return { id, attempt, outcome: 'dead', reason, error: error?.message ?? null };
  };

  // One recovery path (ManagedChannel): the consumer is rebuilt on reconnect, after a
  // channel-level error and after the broker cancels it, with backoff.
  let tag: string | null = null;
  /** A `lost` or `cancelled` came since the last `ready`: the next one is a recovery. */
  let interrupted = false;
  const mc = broker.channel({
    name: `consumer ${opts.queue}`,
    prefetch: opts.prefetch ?? 50,
    // What it needs, checked on every (re)build (on a node without them it waits, retried with
    // backoff): its queue and the exchanges of its dead letters and retried copies. All are
    // Amebo's (declared with arguments this side does not know), so only checked, never declared.
    declare: {
      exchanges: [
        { name: topology.dead, type: 'direct', passive: true },
        { name: topology.redeliver, type: 'direct', passive: true },
      ],
      queues: [{ name: opts.queue, passive: true }],
    },
    setup: async (ch) => {
      if (stopping) return;
      declared.clear();
      const { consumerTag } = await ch.consume(opts.queue, (msg) => {
        if (!msg) {
          log.warn({ queue: opts.queue }, 'the broker cancelled the consumer (queue deleted?); consuming again');
          tag = null;
          interrupted = true;
          events.emit('cancelled', { queue: opts.queue });
          mc.reset();
          return;
        }
        inflight++;
        void handle(ch, msg)
          .then(
            (s) => void events.emit('settled', s),
            (err: unknown) => {
              log.warn({ err: (err as Error).message }, 'message not settled; requeued');
              if (events.listenerCount('error')) events.emit('error', err as Error);
              return requeueLater(ch, msg, () => mc.channel === ch);
            },
          )
          .finally(() => {
            inflight--;
            if (inflight === 0) for (const r of idle.splice(0)) r();
          });
      });
      tag = consumerTag;
    },
  });
  mc.on('ready', () => {
    if (stopping || !tag) return;
    const at = { queue: opts.queue, consumerTag: tag };
    events.emit('ready', at);
    if (interrupted) events.emit('recovered', at);
    interrupted = false;
  });
  const retrying = (
    scope: 'connection' | 'channel',
    r: { attempt: number; delayMs: number; node: string | null; error: Error },
  ) => {
    if (!stopping)
      events.emit('reconnecting', { scope, attempt: r.attempt, delayMs: r.delayMs, node: r.node, error: r.error });
  };
  broker.on('reconnecting', (r) => retrying('connection', r));
  mc.on('failed', (f) => retrying('channel', f));
  mc.on('lost', () => {
    tag = null;
    if (stopping) return;
    interrupted = true;
    events.emit('lost');
  });
  events.isConsuming = () => !stopping && tag !== null && mc.ready;
  events.stop = async (graceMs) => {
    if (stopping) return;
    stopping = true;
    const ch = mc.channel;
    if (ch && tag) await ch.cancel(tag).catch(() => undefined);
    if (inflight > 0)
      await Promise.race([new Promise<void>((r) => idle.push(r)), new Promise((r) => setTimeout(r, graceMs))]);
    await mc.close();
    await publisher.close();
    await broker.close();
    tag = null;
    events.emit('closed');
  };
  await mc.open({ wait: false });
  return events;
}
