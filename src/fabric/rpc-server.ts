/**
 * The serving side of RPC: one channel per registration, one queue per method shared by every
 * instance with the same FQN (the HA clique). A call is acked only once its reply is confirmed
 * by the broker, so a call in flight on an instance that dies is redelivered to another member.
 */
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import { toWireError } from './errors.js';
import { encodePythonJson, parsePythonJson, type JsonValue } from './json.js';
import type { Link, ManagedChannel } from './link.js';
import { assertMethod, DECLARE, methodQueue, RPC_DLX, rpcExchange, type ServiceAddress } from './names.js';

/** What a handler gets besides its keyword arguments. */
export interface RpcContext {
  /** The method being called. */
  method: string;
  /** True when another instance may already have run this call (it died before acking it). */
  redelivered: boolean;
  /** The call's correlation id (a UUID from Python and TypeScript callers). */
  correlationId: string | undefined;
}

/** An RPC method: keyword arguments in (one object, `{}` when none), any JSON value out. */
export type RpcHandler = (args: any, ctx: RpcContext) => unknown;

/** The methods a registration exposes: an object (its methods) or an explicit map. */
export type RpcApi = object | Map<string, RpcHandler>;

export interface RpcRegisterOptions {
  /**
   * Calls this instance runs at once across the methods of this registration (the prefetch of
   * each method queue's consumer and of the channel); further calls wait in their queues, where
   * other instances of the clique can take them. amqp-fabric runs one per method.
   * @default 16
   */
  concurrency?: number;
  /**
   * The methods to expose. Without it: a Map's entries, or every function-valued property of the
   * object and of its class chain (not `Object.prototype`) whose name does not start with `_`.
   */
  methods?: string[];
  /**
   * How long {@link RpcRegistration.close} waits for running calls to reply.
   * @default 10000
   */
  drainTimeoutMs?: number;
}

/** A set of exposed methods; `close()` stops taking calls and waits for the running ones. */
export interface RpcRegistration {
  /** Exposed method names, `health_check` included. */
  readonly methods: readonly string[];
  /** Calls currently running on this instance. */
  readonly inflight: number;
  close(): Promise<void>;
}

const RESERVED = new Set(['constructor', 'then']);

export function collectMethods(api: RpcApi, only?: string[]): Map<string, RpcHandler> {
  const out = new Map<string, RpcHandler>();
  if (api instanceof Map) {
    for (const [name, fn] of api) if (typeof fn === 'function') out.set(name, fn);
  } else {
    const seen = new Set<string>();
    for (let o: object | null = api; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
      for (const name of Object.getOwnPropertyNames(o)) {
        if (seen.has(name) || name.startsWith('_') || RESERVED.has(name)) continue;
        seen.add(name);
        const fn = (api as Record<string, unknown>)[name];
        if (typeof fn === 'function') out.set(name, (fn as RpcHandler).bind(api));
      }
    }
  }
  let result = out;
  if (only) {
    result = new Map();
    for (const name of only) {
      const fn = out.get(name);
      if (!fn) throw new TypeError(`rpcRegister: ${JSON.stringify(name)} is not a method of the API`);
      result.set(name, fn);
    }
  }
  // Callers and tests ping with health_check, as amqp-fabric's AbstractServiceApi provides it.
  if (!result.has('health_check')) result.set('health_check', () => true);
  for (const name of result.keys()) assertMethod(name);
  return result;
}

export class RpcServer implements RpcRegistration {
  private readonly link: Link;
  private readonly log: Logger;
  private readonly exchange: string;
  private readonly handlers: Map<string, RpcHandler>;
  private readonly concurrency: number;
  private readonly drainTimeoutMs: number;
  /** One recovery path (ManagedChannel): rebuilt on reconnect, after a channel-level close and a consumer cancel. */
  private readonly mc: ManagedChannel;
  private acker: Acker | null = null;
  private consumerTags: string[] = [];
  private running = 0;
  private closing = false;
  private idleWaiters: Array<() => void> = [];

  constructor(
    link: Link,
    log: Logger,
    address: ServiceAddress,
    handlers: Map<string, RpcHandler>,
    opts: RpcRegisterOptions,
  ) {
    this.link = link;
    this.log = log;
    this.exchange = rpcExchange(address);
    this.handlers = handlers;
    this.concurrency = opts.concurrency ?? 16;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1 || this.concurrency > 65535)
      throw new RangeError('rpcRegister: concurrency must be an integer in 1..65535');
    this.drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
    this.mc = link.channel({
      name: `fabric rpc ${this.exchange}`,
      confirm: true,
      setup: (ch) => this.setup(ch as ConfirmChannel),
    });
  }

  get methods(): readonly string[] {
    return [...this.handlers.keys()];
  }

  get inflight(): number {
    return this.running;
  }

  async start(): Promise<void> {
    await this.mc.open();
  }

  private async setup(ch: ConfirmChannel): Promise<void> {
    if (this.closing) return;
    // Calls beyond the limit stay queued, where other members of the clique can take them. The
    // per-channel (global) limit costs the broker a shared counter on every delivery and ack, so it
    // is set only when several methods could together exceed the per-consumer one.
    await ch.prefetch(this.concurrency, false);
    if ([...this.handlers.keys()].filter((m) => m !== 'health_check').length > 1)
      await ch.prefetch(this.concurrency, true);
    const acker = new Acker(ch, this.concurrency);
    await ch.assertExchange(this.exchange, 'direct', DECLARE.rpcExchange);
    await ch.assertExchange(RPC_DLX, 'headers', DECLARE.dlx);
    const tags: string[] = [];
    for (const method of this.handlers.keys()) {
      const q = methodQueue(this.exchange, method);
      await ch.assertQueue(q, DECLARE.methodQueue);
      await ch.bindQueue(q, this.exchange, q);
      const { consumerTag } = await ch.consume(q, (msg) => this.onCall(ch, acker, method, msg), { noAck: false });
      tags.push(consumerTag);
    }
    this.acker = acker;
    this.consumerTags = tags;
  }

  private onCall(ch: ConfirmChannel, acker: Acker, method: string, msg: ConsumeMessage | null): void {
    if (!msg) {
      // The broker cancelled us (the queue was deleted): closing the channel makes its 'close'
      // handler rebuild everything on the live connection.
      if (this.closing || this.mc.channel !== ch) return;
      this.log.warn({ method }, 'fabric: rpc consumer cancelled by the broker; redeclaring');
      this.mc.reset();
      return;
    }
    this.running++;
    acker.delivered(msg);
    // Plain callbacks rather than async/await: a synchronous handler replies in the same tick.
    let result: unknown;
    try {
      const p = msg.properties;
      result = this.handlers.get(method)!(decodeArgs(msg.content), {
        method,
        redelivered: msg.fields.redelivered,
        correlationId: p.correlationId as string | undefined,
      });
    } catch (err) {
      this.reply(ch, acker, msg, 'error', encodeError(err));
      return;
    }
    if (isThenable(result))
      result.then(
        (v) => this.replyResult(ch, acker, msg, v),
        (err: unknown) => this.reply(ch, acker, msg, 'error', encodeError(err)),
      );
    else this.replyResult(ch, acker, msg, result);
  }

  private replyResult(ch: ConfirmChannel, acker: Acker, msg: ConsumeMessage, result: unknown): void {
    let body: string;
    try {
      body = encodePythonJson(result === undefined ? null : result);
    } catch (err) {
      this.reply(ch, acker, msg, 'error', encodeError(err));
      return;
    }
    this.reply(ch, acker, msg, 'result', body);
  }

  /** Publishes the reply; the call is acked once the broker confirms it (see {@link Acker}). */
  private reply(ch: ConfirmChannel, acker: Acker, msg: ConsumeMessage, type: 'result' | 'error', body: string): void {
    const p = msg.properties;
    const replyTo = p.replyTo as string | undefined;
    if (!replyTo) {
      acker.ack(msg);
      this.done();
      return;
    }
    try {
      ch.publish(
        '',
        replyTo,
        Buffer.from(body),
        {
          contentType: 'application/json',
          correlationId: p.correlationId as string | undefined,
          deliveryMode: (p.deliveryMode as number | undefined) ?? 1,
          type,
          timestamp: Math.floor(Date.now() / 1000),
          priority: 0,
        },
        (err) => {
          // A reply the broker refused must not be lost silently: rejecting dead-letters the call
          // to rpc.dlx, which brings it back to its caller as failed (wire spec §2).
          if (err) acker.reject(msg);
          else acker.ack(msg);
          this.done();
        },
      );
    } catch {
      // The channel is gone; the broker requeues the call and it is served again.
      this.done();
    }
  }

  private done(): void {
    this.running--;
    if (this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const ch = this.mc.channel;
    if (ch) for (const tag of this.consumerTags) await ch.cancel(tag).catch(() => undefined);
    if (this.running > 0) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => (t = setTimeout(r, this.drainTimeoutMs))),
      ]);
      clearTimeout(t);
    }
    this.acker?.flush();
    await this.mc.close();
  }
}

export class ArgumentsError extends TypeError {
  override name = 'TypeError';
}

function decodeArgs(content: Buffer): Record<string, JsonValue> {
  let v: JsonValue;
  try {
    v = parsePythonJson(content);
  } catch (err) {
    throw new ArgumentsError(`call body is not JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new ArgumentsError('call body must be a JSON object of keyword arguments');
  return v;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

function encodeError(err: unknown): string {
  const e = toWireError(err);
  try {
    return encodePythonJson({ error: e });
  } catch {
    return encodePythonJson({ error: { type: e.type, message: e.message, args: [e.message] } });
  }
}

/**
 * Ack frames are held this long so that one ack with `multiple` settles a run of calls: on a busy
 * service that spares the broker most ack frames (it shares the CPU with us). The window is far
 * below any call's deadline; a crash inside it only means a finished call is served again.
 */
const ACK_DELAY_MS = 1;

/**
 * Acks calls once their replies are confirmed, coalescing (see {@link ACK_DELAY_MS}). Acks go out at
 * once when half the prefetch credit is waiting on them, so low concurrency (amqp-fabric's one
 * call at a time) never waits for the window. Calls that finish out of order are acked one by one,
 * so a slow call never pins the prefetch credit of the fast ones after it.
 */
export class Acker {
  private readonly ch: Channel;
  private readonly flushAt: number;
  /** Delivered, not yet settled, in delivery-tag order. */
  private readonly order: ConsumeMessage[] = [];
  private readonly done = new Map<number, ConsumeMessage>();
  private readonly settled = new Set<number>();
  private timer: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;

  constructor(ch: Channel, prefetch: number) {
    this.ch = ch;
    this.flushAt = Math.max(1, Math.floor(prefetch / 2));
  }

  delivered(m: ConsumeMessage): void {
    this.order.push(m);
  }

  ack(m: ConsumeMessage): void {
    this.done.set(m.fields.deliveryTag, m);
    if (this.immediate) return;
    if (this.done.size >= this.flushAt) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.immediate = setImmediate(() => this.flush());
    } else this.timer ??= setTimeout(() => this.flush(), ACK_DELAY_MS);
  }

  /** At once: a later `multiple` ack only covers deliveries still unacked, so this one stays rejected. */
  reject(m: ConsumeMessage): void {
    this.settled.add(m.fields.deliveryTag);
    try {
      this.ch.reject(m, false);
    } catch {
      // channel closed: the broker requeues the call
    }
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
    let last: ConsumeMessage | null = null;
    while (this.order.length > 0) {
      const tag = this.order[0]!.fields.deliveryTag;
      const m = this.done.get(tag);
      if (m) {
        this.done.delete(tag);
        last = m;
      } else if (!this.settled.delete(tag)) break;
      this.order.shift();
    }
    try {
      if (last) this.ch.ack(last, true);
      for (const [tag, m] of this.done) {
        this.ch.ack(m);
        this.settled.add(tag);
      }
    } catch {
      // channel closed: unacked calls are requeued by the broker
    }
    this.done.clear();
  }
}
