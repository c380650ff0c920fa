/**
 * The calling side of RPC. One reply queue per connector (bound to `rpc.dlx` with its own name in
 * `From`, so expired calls come back), one confirm channel for calls. Every call has a deadline:
 * the message's `expiration` (so an abandoned call dies in the queue) and a local timer.
 *
 * Unroutable calls fail at once: the target exchange is checked passively on a throwaway channel
 * (404 → no such service; amqp-fabric declares it instead, which leaks an exchange per target that
 * never runs), then the call is published `mandatory` (basic.return 312 → no such method).
 * Calls are not publisher-confirmed: the reply (or the return, or the deadline) settles every call,
 * and confirms would cost a broker round of work per call for nothing a caller could act on.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Channel, ConsumeMessage, Message } from 'amqplib';
import type { Logger } from 'pino';
import { FabricError, FabricUnavailableError, fromWireError, RpcTimeoutError, ServiceNotFoundError } from './errors.js';
import { encodePythonJson, parsePythonJson } from './json.js';
import { send } from '../broker/send.js';
import type { Link, ManagedChannel } from './link.js';
import {
  assertAddress,
  assertMethod,
  DECLARE,
  fqnOf,
  methodQueue,
  RPC_DLX,
  rpcExchange,
  type ServiceAddress,
} from './names.js';

/** Per-call options. */
export interface CallOptions {
  /**
   * Deadline of the call in milliseconds: sent as the message `expiration` and enforced by a local timer.
   * @default the connector's `defaultTimeoutMs` (30000)
   */
  timeoutMs?: number;
}

interface Pending {
  id: string;
  exchange: string;
  method: string;
  fqn: string;
  timeoutMs: number;
  timer: NodeJS.Timeout;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  /** The channel the call went out on: a 404 there fails the calls it carried. */
  ch: Channel | null;
}

/**
 * One publishing channel per target service: a publish to a vanished exchange closes its channel
 * with 404, and the broker discards whatever followed on that channel, so targets must not share one.
 */
interface Target {
  exchange: string;
  ch: Channel | null;
  opening: Promise<Channel> | null;
  lastUsed: number;
}

const NOT_FOUND = 404;
/**
 * The local timer fires this long after the message's expiration, so a call that expired in the
 * queue comes back through rpc.dlx first and is reported as `expired` (never executed) rather than
 * as a plain deadline (maybe executed).
 */
const EXPIRY_GRACE_MS = 50;
/** Idle target channels beyond this are closed, least recently used first. */
const MAX_TARGET_CHANNELS = 64;

export class RpcClient {
  private readonly link: Link;
  private readonly log: Logger;
  private readonly defaultTimeoutMs: number;
  readonly replyQueue: string;
  /** The reply queue's channel (ManagedChannel): rebuilt on reconnect, after a channel-level close and a cancel. */
  private readonly reply: ManagedChannel;
  private readonly pending = new Map<string, Pending>();
  /** Exchanges seen to exist on the current connection; dropped when a publish hits 404. */
  private readonly known = new Set<string>();
  private readonly checking = new Map<string, Promise<boolean>>();
  private readonly targets = new Map<string, Target>();
  private readonly headers: { From: string };
  private started: Promise<void> | null = null;
  private closing = false;
  private idleWaiters: Array<() => void> = [];

  constructor(link: Link, log: Logger, ownFqn: string, defaultTimeoutMs: number) {
    this.link = link;
    this.log = log;
    this.defaultTimeoutMs = defaultTimeoutMs;
    // Private to this connector (exclusive); the name only has to be unique and recognisable.
    this.replyQueue = `${ownFqn}.reply-${randomBytes(8).toString('hex')}`;
    this.headers = { From: this.replyQueue };
    this.reply = link.channel({ name: 'fabric rpc replies', setup: (ch) => this.setup(ch) });
  }

  /** Sets up the reply queue on first use; most services never call anyone. */
  ensureStarted(): Promise<void> {
    // rpc.dlx is auto-delete: when another process removes the last binding between our declare
    // and our bind, the broker deletes it and the bind fails with 404 (closing the channel).
    // Declare again on a fresh channel; once our binding exists the exchange stays. (Later
    // rebuilds retry by themselves, with backoff.)
    this.started ??= (async () => {
      for (let attempt = 1; ; attempt++)
        try {
          await this.reply.open();
          return;
        } catch (err) {
          if ((err as { code?: number }).code !== 404 || attempt >= 5) throw err;
          this.log.debug({ attempt }, 'fabric: rpc.dlx vanished between declare and bind; declaring again');
        }
    })().catch((err: unknown) => {
      this.started = null;
      throw err;
    });
    return this.started;
  }

  private async setup(rc: Channel): Promise<void> {
    if (this.closing) return;
    this.known.clear();
    await rc.assertExchange(RPC_DLX, 'headers', DECLARE.dlx);
    await rc.assertQueue(this.replyQueue, DECLARE.privateQueue);
    await rc.bindQueue(this.replyQueue, RPC_DLX, '', { From: this.replyQueue, 'x-match': 'any' });
    await rc.consume(this.replyQueue, (m) => (m ? this.onReply(m) : this.reply.reset()), {
      noAck: true,
      exclusive: true,
    });
  }

  /** Calls `method` on the service at `address` with keyword arguments `args`. */
  async call(
    address: ServiceAddress,
    method: string,
    args: object | undefined,
    opts: CallOptions = {},
  ): Promise<unknown> {
    assertAddress(address);
    assertMethod(method);
    return this.callChecked({ exchange: rpcExchange(address), fqn: fqnOf(address) }, method, args, opts.timeoutMs);
  }

  /**
   * A call whose target and method names were validated already (proxies validate once). Not
   * `async`: on the hot path the publish happens synchronously, without extra promise hops.
   */
  callChecked(
    target: { exchange: string; fqn: string },
    method: string,
    args: object | undefined,
    timeoutMs = this.defaultTimeoutMs,
  ): Promise<unknown> {
    if (this.closing) return Promise.reject(new FabricUnavailableError('connector is closing'));
    if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args)))
      return Promise.reject(new TypeError('RPC arguments must be an object of keyword arguments'));
    if (!Number.isFinite(timeoutMs) || timeoutMs < 1)
      return Promise.reject(new RangeError('timeoutMs must be a positive number of milliseconds'));
    const deadline = Date.now() + timeoutMs;
    let body: Buffer;
    try {
      body = Buffer.from(encodePythonJson(args ?? {}));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new TypeError(String(err)));
    }
    const { exchange, fqn } = target;
    const ch = this.readyChannel(exchange);
    if (ch) return this.send(ch, exchange, fqn, method, body, timeoutMs, deadline);
    return withDeadline(this.prepare(exchange, fqn, deadline), deadline, fqn, method, timeoutMs).then((c) =>
      this.send(c, exchange, fqn, method, body, timeoutMs, deadline),
    );
  }

  private send(
    ch: Channel,
    exchange: string,
    fqn: string,
    method: string,
    body: Buffer,
    timeoutMs: number,
    deadline: number,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = randomUUID();
      const remaining = Math.max(1, deadline - Date.now());
      const p: Pending = {
        id,
        exchange,
        method,
        fqn,
        timeoutMs,
        timer: setTimeout(() => this.onDeadline(id), remaining + EXPIRY_GRACE_MS),
        resolve,
        reject,
        ch,
      };
      this.pending.set(id, p);
      try {
        send(ch, exchange, methodQueue(exchange, method), body, {
          mandatory: true,
          contentType: 'application/json',
          correlationId: id,
          replyTo: this.replyQueue,
          headers: this.headers,
          type: 'call',
          deliveryMode: 1,
          priority: 5,
          expiration: String(remaining),
          timestamp: Math.floor(Date.now() / 1000),
        });
      } catch {
        // The channel closed between the lookup and the publish (connection lost): the caller may retry.
        this.settle(p, new FabricUnavailableError(`call to ${fqn}.${method} not sent: broker connection lost`));
      }
    });
  }

  /** The hot path: a live channel to a target known to exist. */
  private readyChannel(exchange: string): Channel | null {
    if (!this.known.has(exchange)) return null;
    const t = this.targets.get(exchange);
    if (!t?.ch) return null;
    t.lastUsed = Date.now();
    return t.ch;
  }

  /** Slow path: connect, start the reply queue, check the exchange exists, open its channel. */
  private async prepare(exchange: string, fqn: string, deadline: number): Promise<Channel> {
    await this.ensureStarted();
    if (!this.known.has(exchange)) {
      const exists = await this.checkExchange(exchange, deadline);
      if (!exists)
        throw new ServiceNotFoundError(`no service ${fqn} (exchange ${exchange} does not exist)`, 'no_service');
    }
    let t = this.targets.get(exchange);
    if (!t) {
      t = { exchange, ch: null, opening: null, lastUsed: Date.now() };
      this.targets.set(exchange, t);
      this.evictIdleTargets();
    }
    t.lastUsed = Date.now();
    if (t.ch) return t.ch;
    t.opening ??= this.openTarget(t, deadline).finally(() => {
      if (t) t.opening = null;
    });
    return t.opening;
  }

  private async openTarget(t: Target, deadline: number): Promise<Channel> {
    if (!(await this.link.waitConnected(deadline - Date.now())))
      throw new FabricUnavailableError('broker not connected');
    const model = this.link.model!;
    const ch = await model.createChannel();
    ch.on('error', (err: Error & { code?: number }) => {
      if (err.code === NOT_FOUND && err.message.includes(`'${t.exchange}'`)) this.onVanished(t.exchange, ch);
      else this.log.debug({ err: err.message, exchange: t.exchange }, 'fabric: rpc call channel error');
    });
    ch.on('close', () => {
      if (t.ch === ch) t.ch = null;
    });
    ch.on('return', (m: Message) => this.onReturn(m));
    t.ch = ch;
    return ch;
  }

  /**
   * The service went away (its auto-delete exchange with it) after we checked: every call sent on
   * that channel is lost with its queue, so all fail now rather than at their deadlines.
   */
  private onVanished(exchange: string, ch: Channel): void {
    this.known.delete(exchange);
    for (const p of [...this.pending.values()])
      if (p.ch === ch)
        this.settle(
          p,
          new ServiceNotFoundError(`no service ${p.fqn} (exchange ${exchange} no longer exists)`, 'no_service'),
        );
  }

  private evictIdleTargets(): void {
    if (this.targets.size <= MAX_TARGET_CHANNELS) return;
    const busy = new Set<Channel | null>();
    for (const p of this.pending.values()) busy.add(p.ch);
    const idle = [...this.targets.values()]
      .filter((t) => !t.opening && !busy.has(t.ch))
      .sort((a, b) => a.lastUsed - b.lastUsed);
    for (const t of idle.slice(0, this.targets.size - MAX_TARGET_CHANNELS)) {
      this.targets.delete(t.exchange);
      void t.ch?.close().catch(() => undefined);
    }
  }

  private async checkExchange(exchange: string, deadline: number): Promise<boolean> {
    let check = this.checking.get(exchange);
    if (!check) {
      check = (async () => {
        if (!(await this.link.waitConnected(deadline - Date.now())))
          throw new FabricUnavailableError('broker not connected');
        try {
          await this.link.withThrowawayChannel((ch) => ch.checkExchange(exchange));
          this.known.add(exchange);
          return true;
        } catch (err) {
          if ((err as { code?: number }).code === NOT_FOUND) return false;
          throw err;
        }
      })().finally(() => this.checking.delete(exchange));
      this.checking.set(exchange, check);
    }
    return check;
  }

  private onReturn(m: Message): void {
    const p = this.pending.get(m.properties.correlationId as string);
    if (!p) return;
    const f = m.fields as unknown as { replyCode?: number; replyText?: string };
    this.settle(
      p,
      new ServiceNotFoundError(
        `no route to ${p.fqn}.${p.method} (${f.replyCode} ${f.replyText}): unknown method, or the service is not running`,
        'no_route',
      ),
    );
  }

  private onReply(m: ConsumeMessage): void {
    const p = this.pending.get(m.properties.correlationId as string);
    if (!p) return; // late reply to a call that timed out, or a duplicate
    const type = m.properties.type as string | undefined;
    if (type === 'result') {
      try {
        this.settle(p, null, parsePythonJson(m.content));
      } catch (err) {
        this.settle(p, new FabricError(`reply of ${p.fqn}.${p.method} is not JSON: ${(err as Error).message}`));
      }
    } else if (type === 'error') {
      let body: unknown;
      try {
        body = parsePythonJson(m.content);
      } catch {
        body = m.content.toString('utf8');
      }
      this.settle(p, fromWireError(body));
    } else if (type === 'call') {
      // Our own call, dead-lettered through rpc.dlx: it expired in the queue or was rejected.
      const reason = m.properties.headers?.['x-first-death-reason'];
      this.settle(
        p,
        reason === 'rejected'
          ? new RpcTimeoutError(
              `${p.fqn}.${p.method} was rejected by the service without a reply`,
              'rejected',
              p.timeoutMs,
            )
          : new RpcTimeoutError(
              `${p.fqn}.${p.method} expired in the queue after ${p.timeoutMs} ms`,
              'expired',
              p.timeoutMs,
            ),
      );
    } else {
      this.settle(p, new FabricError(`unknown reply type ${JSON.stringify(type)} from ${p.fqn}.${p.method}`));
    }
  }

  private onDeadline(id: string): void {
    const p = this.pending.get(id);
    if (p)
      this.settle(
        p,
        new RpcTimeoutError(`${p.fqn}.${p.method} did not answer within ${p.timeoutMs} ms`, 'deadline', p.timeoutMs),
      );
  }

  private settle(p: Pending, err: unknown, value?: unknown): void {
    if (this.pending.get(p.id) !== p) return;
    this.pending.delete(p.id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
    if (this.pending.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Calls in flight. */
  get inflight(): number {
    return this.pending.size;
  }

  /** Refuses new calls, waits (bounded) for those in flight, then tears down. */
  async close(drainTimeoutMs: number): Promise<void> {
    this.closing = true;
    if (this.pending.size > 0) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => (t = setTimeout(r, drainTimeoutMs))),
      ]);
      clearTimeout(t);
    }
    for (const p of [...this.pending.values()]) this.settle(p, new FabricUnavailableError('connector closed'));
    const chans = [...this.targets.values()].map((t) => t.ch);
    this.targets.clear();
    await Promise.all([...chans.map(async (c) => c?.close().catch(() => undefined)), this.reply.close()]);
  }
}

async function withDeadline<T>(
  work: Promise<T>,
  deadline: number,
  fqn: string,
  method: string,
  timeoutMs: number,
): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        t = setTimeout(
          () =>
            reject(
              new RpcTimeoutError(`${fqn}.${method} could not be sent within ${timeoutMs} ms`, 'deadline', timeoutMs),
            ),
          Math.max(0, deadline - Date.now()),
        );
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}
