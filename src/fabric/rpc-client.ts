/**
 * The calling side of RPC. One reply queue per connector (bound to `rpc.dlx` with its own name in
 * `From`, so expired calls come back), one confirm channel for calls. Every call has a deadline:
 * the message's `expiration` (so an abandoned call dies in the queue) and a local timer.
 *
 * Unroutable calls fail at once: the target exchange is checked passively on a throwaway channel
 * (404 → no such service; amqp-fabric declares it instead, which leaks an exchange per target that
 * never runs), then the call is published `mandatory` (basic.return 312 → no such method).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message } from 'amqplib';
import type { Logger } from 'pino';
import { FabricError, FabricUnavailableError, fromWireError, RpcTimeoutError, ServiceNotFoundError } from './errors.js';
import { encodePythonJson, parsePythonJson } from './json.js';
import { quiet, type Link } from './link.js';
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
  body: Buffer;
  timeoutMs: number;
  deadline: number;
  timer: NodeJS.Timeout;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  /** The channel the call was last published on and not yet confirmed there. */
  unconfirmedOn: ConfirmChannel | null;
}

const NOT_FOUND = 404;

export class RpcClient {
  private readonly link: Link;
  private readonly log: Logger;
  private readonly defaultTimeoutMs: number;
  readonly replyQueue: string;
  private pub: ConfirmChannel | null = null;
  private replyCh: Channel | null = null;
  private readonly pending = new Map<string, Pending>();
  /** Exchanges seen to exist on the current connection; dropped when a publish hits 404. */
  private readonly known = new Set<string>();
  private readonly checking = new Map<string, Promise<boolean>>();
  /** Calls waiting for a publish channel (reconnecting, or recreating one after a channel error). */
  private waiting: Pending[] = [];
  private channelErrors = new WeakMap<Channel, Error>();
  private started: Promise<void> | null = null;
  private closing = false;
  private idleWaiters: Array<() => void> = [];
  private readonly hook = (model: ChannelModel): Promise<void> => this.setup(model);

  constructor(link: Link, log: Logger, ownFqn: string, defaultTimeoutMs: number) {
    this.link = link;
    this.log = log;
    this.defaultTimeoutMs = defaultTimeoutMs;
    // Private to this connector (exclusive); the name only has to be unique and recognisable.
    this.replyQueue = `${ownFqn}.reply-${randomBytes(8).toString('hex')}`;
  }

  /** Sets up the reply queue on first use; most services never call anyone. */
  ensureStarted(): Promise<void> {
    this.started ??= this.link.addSetup(this.hook).catch((err: unknown) => {
      this.started = null;
      throw err;
    });
    return this.started;
  }

  private async setup(model: ChannelModel): Promise<void> {
    if (this.closing) return;
    this.known.clear();
    const rc = quiet(await model.createChannel(), this.log, 'rpc reply');
    await rc.assertExchange(RPC_DLX, 'headers', DECLARE.dlx);
    await rc.assertQueue(this.replyQueue, DECLARE.privateQueue);
    await rc.bindQueue(this.replyQueue, RPC_DLX, '', { From: this.replyQueue, 'x-match': 'any' });
    await rc.consume(this.replyQueue, (m) => this.onReply(m), { noAck: true, exclusive: true });
    this.replyCh = rc;
    await this.openPublisher(model);
  }

  private async openPublisher(model: ChannelModel): Promise<void> {
    const ch = await model.createConfirmChannel();
    ch.on('error', (err: Error) => {
      this.channelErrors.set(ch, err);
      this.log.debug({ err: err.message }, 'fabric: rpc call channel error');
    });
    ch.on('return', (m: Message) => this.onReturn(m));
    ch.on('close', () => {
      if (this.pub === ch) this.pub = null;
      // A server-side channel error (404 on a vanished exchange) leaves the connection up: carry on
      // with a new channel. A lost connection is rebuilt by setup.
      const live = this.link.model;
      if (!this.closing && live === model && this.channelErrors.has(ch))
        this.openPublisher(model).catch((err: Error) =>
          this.log.warn({ err: err.message }, 'fabric: could not reopen the call channel'),
        );
    });
    this.pub = ch;
    const queued = this.waiting;
    this.waiting = [];
    for (const p of queued) if (this.pending.get(p.id) === p) this.publish(p);
  }

  /** Calls `method` on the service at `address` with keyword arguments `args`. */
  async call(
    address: ServiceAddress,
    method: string,
    args: object | undefined,
    opts: CallOptions = {},
  ): Promise<unknown> {
    if (this.closing) throw new FabricUnavailableError('connector is closing');
    assertAddress(address);
    assertMethod(method);
    if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args)))
      throw new TypeError('RPC arguments must be an object of keyword arguments');
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 1)
      throw new RangeError('timeoutMs must be a positive number of milliseconds');
    const deadline = Date.now() + timeoutMs;
    const exchange = rpcExchange(address);
    const fqn = fqnOf(address);
    if (!this.started) await withDeadline(this.ensureStarted(), deadline, fqn, method, timeoutMs);
    if (!this.known.has(exchange)) {
      const exists = await withDeadline(this.checkExchange(exchange, deadline), deadline, fqn, method, timeoutMs);
      if (!exists)
        throw new ServiceNotFoundError(`no service ${fqn} (exchange ${exchange} does not exist)`, 'no_service');
    }
    const body = Buffer.from(encodePythonJson(args ?? {}));
    return new Promise((resolve, reject) => {
      const id = randomUUID();
      const remaining = Math.max(1, deadline - Date.now());
      const p: Pending = {
        id,
        exchange,
        method,
        fqn,
        body,
        timeoutMs,
        deadline,
        timer: setTimeout(() => this.onDeadline(id), remaining),
        resolve,
        reject,
        unconfirmedOn: null,
      };
      this.pending.set(id, p);
      this.publish(p);
    });
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

  private publish(p: Pending): void {
    const ch = this.pub;
    if (!ch) {
      this.waiting.push(p);
      return;
    }
    const remaining = p.deadline - Date.now();
    if (remaining <= 0) return; // the timer settles it
    p.unconfirmedOn = ch;
    try {
      ch.publish(
        p.exchange,
        methodQueue(p.exchange, p.method),
        p.body,
        {
          mandatory: true,
          contentType: 'application/json',
          correlationId: p.id,
          replyTo: this.replyQueue,
          headers: { From: this.replyQueue },
          type: 'call',
          deliveryMode: 1,
          priority: 5,
          expiration: String(Math.ceil(remaining)),
          timestamp: Math.floor(Date.now() / 1000),
        },
        (err) => this.onConfirm(p, ch, err as Error | null),
      );
    } catch {
      // The channel closed under us (IllegalOperationError): wait for the next one.
      p.unconfirmedOn = null;
      this.waiting.push(p);
    }
  }

  private onConfirm(p: Pending, ch: ConfirmChannel, err: Error | null): void {
    if (p.unconfirmedOn !== ch) return;
    p.unconfirmedOn = null;
    if (!err || this.pending.get(p.id) !== p) return;
    const chErr = this.channelErrors.get(ch);
    if (!chErr) {
      // Either a broker nack or a lost connection. After a nack nothing was routed; after a lost
      // connection the call may have been delivered, so it is left to its deadline rather than sent twice.
      if (err.message === 'message nacked')
        this.settle(p, new FabricError(`call to ${p.fqn}.${p.method} was refused by the broker`));
      return;
    }
    if ((chErr as { code?: number }).code === NOT_FOUND && chErr.message.includes(`'${p.exchange}'`)) {
      // The service went away between the check and the publish: its auto-delete exchange is gone.
      this.known.delete(p.exchange);
      this.settle(
        p,
        new ServiceNotFoundError(`no service ${p.fqn} (exchange ${p.exchange} does not exist)`, 'no_service'),
      );
      return;
    }
    // Another call's error closed the channel; the broker discards what followed it, so send again.
    this.publish(p);
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

  private onReply(m: ConsumeMessage | null): void {
    if (!m) return;
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
    this.link.removeSetup(this.hook);
    if (this.pending.size > 0) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => (t = setTimeout(r, drainTimeoutMs))),
      ]);
      clearTimeout(t);
    }
    for (const p of [...this.pending.values()]) this.settle(p, new FabricUnavailableError('connector closed'));
    const pub = this.pub;
    const rc = this.replyCh;
    this.pub = null;
    this.replyCh = null;
    await Promise.all([pub?.close().catch(() => undefined), rc?.close().catch(() => undefined)]);
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
              new RpcTimeoutError(
                `${fqn}.${method} did not answer within ${timeoutMs} ms (broker not reachable)`,
                'deadline',
                timeoutMs,
              ),
            ),
          Math.max(0, deadline - Date.now()),
        );
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}
