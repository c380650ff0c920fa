import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Amebo } from '../src/app.js';
import { redactUrl, type Logger } from '../src/log.js';
import type { SubscriptionRow } from '../src/store/registry.js';
import { Breaker, type BreakerOptions } from './breaker.js';
import { secretKey } from './envelope.js';
import { Sender, type Target } from './sender.js';
import { activeHttpSubscriptions, disableSubscription, getSubscription } from '../src/store/registry.js';
import { Recorder } from './recorder.js';
import { SubscriptionWorker, type HeldState, type HeldStore } from './worker.js';

export interface BridgeOptions {
  /** Circuit breaker settings; `false` turns it off. */
  breaker?: BreakerOptions | false;
  /** Prefetch per subscription consumer. @default cfg.prefetch */
  prefetch?: number;
  /** Full resync with the registry, a safety net for missed announcements. @default 30000 */
  resyncMs?: number;
  /** Delivery-record batching. @default 75 ms / 500 rows */
  recordIntervalMs?: number;
}

/** Reserves the next delivery slot of a paced subscription; returns the wait in ms (see `reserveSlot`). */
const PACE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
return math.floor(tat - now)
`;
/**
 * What the bridge reports (for tests and operators; nothing in Amebo depends on them):
 * - `synced`: a full resync with the registry ended (at start, periodically, after Redis came
 *   back), with the ids of the subscriptions it now delivers;
 * - `applied`: a registry announcement about one subscription was applied (created, changed,
 *   paused, resumed, deleted, disabled); `running` says whether the bridge now delivers it;
 * - `worker-started` / `worker-stopped`: a subscription's consumer was set up / stopped (a change of
 *   `ordered` stops one and starts another);
 * - `worker-ready` / `worker-lost` / `worker-reconnecting`: a subscription's channel is up (after
 *   its start, a reconnect, or a rebuild after a channel-level close or a consumer cancel), was
 *   lost (rebuilt with backoff and jitter), or could not be set up (the next try in `delayMs`);
 *   `amebo_amqp_channels_ready{channel="bridge <queue>"}` follows the same state;
 * - `redis`: the bridge's Redis connection went away (`available: false`: ordered progress and pacing
 *   are kept in this process) or came back;
 * - `error`: applying a registry change or a resync failed (the next announcement or resync retries).
 *   Emitted only when someone listens, so an unobserved bridge never throws it.
 */
export interface BridgeEvents {
  synced: [{ subscriptions: string[] }];
  applied: [{ subscription: string; running: boolean }];
  'worker-started': [{ subscription: string; endpoint: string }];
  'worker-stopped': [{ subscription: string }];
  'worker-ready': [{ subscription: string; queue: string }];
  'worker-lost': [{ subscription: string; queue: string }];
  'worker-reconnecting': [{ subscription: string; queue: string; attempt: number; delayMs: number; error: string }];
  redis: [{ available: boolean }];
  error: [Error];
}

/**
 * The bridge role: one consumer per active HTTP subscription, kept in step with the registry
 * through the Redis announcements (`<prefix>subscriptions`) and a periodic resync; each on a
 * `ManagedChannel` of the process's connection, rebuilt on every broker reconnect and after a
 * channel-level close or a consumer cancel; Redis subscriptions restored by ioredis, followed by
 * a resync because announcements made while Redis was away are lost.
 */
export class Bridge extends EventEmitter<BridgeEvents> {
  private readonly a: Amebo;
  private readonly log: Logger;
  private readonly opts: BridgeOptions;
  readonly sender: Sender;
  readonly recorder: Recorder;
  private readonly workers = new Map<string, SubscriptionWorker>();
  private readonly byEndpoint = new Map<string, Set<SubscriptionWorker>>();
  private cmd: Redis | null = null;
  private sub: Redis | null = null;
  private breaker: Breaker | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();
  private readonly retryQueues = new Set<number>();
  private readonly subsChannel: string;

  constructor(amebo: Amebo, opts: BridgeOptions = {}) {
    super();
    this.a = amebo;
    this.opts = opts;
    this.log = amebo.ctx.log.child({ role: 'bridge' });
    this.subsChannel = amebo.cfg.redis.subscriptionsChannel;
    this.sender = new Sender({
      connectTimeoutMs: amebo.cfg.connectTimeoutMs,
      targets: amebo.registry.targets,
    });
    this.recorder = new Recorder({
      pool: amebo.pool,
      log: this.log,
      ...(opts.recordIntervalMs ? { intervalMs: opts.recordIntervalMs } : {}),
    });
  }

  /** Ordered subscriptions' held events, in Redis (in memory while Redis is away). */
  private readonly heldLocal = new Map<string, HeldState>();
  /** Redis is usable now; when it is not, callers fall back at once instead of waiting for the command timeout. */
  private redisUp(): boolean {
    const up = this.cmd?.status === 'ready';
    if (!up && !this.redisAway) {
      this.log.warn('Redis unavailable: ordered progress and pacing kept in this process until it is back');
      this.emit('redis', { available: false });
    } else if (up && this.redisAway) {
      this.log.warn('Redis is back: ordered progress and pacing shared again');
      this.emit('redis', { available: true });
    }
    this.redisAway = !up;
    return up;
  }
  private redisAway = false;

  private readonly held: HeldStore = {
    get: async (sub, ev) => {
      const k = this.a.cfg.redis.held(sub, ev);
      if (this.redisUp())
        try {
          const v = await this.cmd?.get(k);
          if (v) return JSON.parse(v) as HeldState;
        } catch {
          /* Redis away */
        }
      return this.heldLocal.get(k) ?? null;
    },
    set: async (sub, ev, st, ttlMs) => {
      const k = this.a.cfg.redis.held(sub, ev);
      if (this.heldLocal.size > 10_000) this.heldLocal.clear();
      this.heldLocal.set(k, st);
      if (this.redisUp()) await this.cmd?.set(k, JSON.stringify(st), 'PX', Math.round(ttlMs)).catch(() => undefined);
    },
    del: async (sub, ev) => {
      const k = this.a.cfg.redis.held(sub, ev);
      this.heldLocal.delete(k);
      if (this.redisUp()) await this.cmd?.del(k).catch(() => undefined);
    },
  };

  /**
   * `rate_limit` shared by every bridge process: one Redis key per subscription holds the next free
   * slot (GCRA's theoretical arrival time, on Redis's clock); each delivery reserves the next slot
   * atomically and learns how long to wait for it. Null when Redis is away: the worker then paces
   * on its own (per process) rather than stop delivering.
   */
  private async reserveSlot(sub: string, rate: number): Promise<number | null> {
    if (!this.cmd || !this.redisUp()) return null;
    try {
      const wait = await this.cmd.eval(PACE_LUA, 1, this.a.cfg.redis.pace(sub), String(1000 / rate));
      return Number(wait);
    } catch {
      return null;
    }
  }

  // Delivery notes for the live tail, coalesced into one Redis pipeline every 50 ms (at most 20
  // round trips a second, at most 5,000 notes waiting). Always published: gating them on whether
  // some API node has stream clients lost the notes of the first seconds after a client came.
  private notes: string[] = [];
  private noteTimer: NodeJS.Timeout | null = null;
  private get streamChannel(): string {
    return this.a.cfg.redis.streamChannel;
  }
  private note(n: Record<string, unknown>): void {
    if (this.notes.length >= 5000) return;
    this.notes.push(JSON.stringify(n));
    this.noteTimer ??= setTimeout(() => {
      this.noteTimer = null;
      const batch = this.notes;
      this.notes = [];
      if (!this.cmd || !batch.length) return;
      const p = this.cmd.pipeline();
      for (const x of batch) p.publish(this.streamChannel, x);
      p.exec().catch(() => undefined);
    }, 50);
  }

  /** Retry queues may be gone on a new connection (another node): declared again when next needed. */
  private readonly hook = async (): Promise<void> => {
    this.retryQueues.clear();
  };

  async start(): Promise<void> {
    const name = `amebo-bridge-${process.pid}`;
    this.cmd = this.a.redis.duplicate({ connectionName: name, lazyConnect: true });
    this.sub = this.a.redis.duplicate({ connectionName: `${name}-sub`, lazyConnect: true });
    for (const r of [this.cmd, this.sub]) r.on('error', (err: Error) => this.log.debug({ err: err.message }, 'redis'));
    await this.cmd.connect().catch(() => undefined);
    await this.sub.connect().catch(() => undefined);
    if (this.opts.breaker !== false)
      this.breaker = new Breaker(this.cmd, this.a.cfg.redis, this.log, this.opts.breaker ?? {});
    this.sub.on('message', (channel: string, msg: string) => {
      if (channel === this.subsChannel) this.enqueue(() => this.reload(msg));
      else if (this.breaker && channel === this.breaker.channel) void this.onBreakerMessage(msg);
    });
    let first = true;
    this.sub.on('ready', () => {
      if (first) return;
      this.log.info('redis back: resyncing subscriptions and circuits');
      this.enqueue(() => this.resync());
    });
    await this.sub
      .subscribe(this.subsChannel, ...(this.breaker ? [this.breaker.channel] : []))
      .catch((err: unknown) =>
        this.log.warn({ err: (err as Error).message }, 'subscription announcements unavailable'),
      );
    first = false;
    await this.resync();
    await this.a.broker.addHook(this.hook);
    this.timer = setInterval(() => this.enqueue(() => this.resync()), this.opts.resyncMs ?? 30_000);
    this.timer.unref();
    this.log.info({ subscriptions: this.workers.size }, 'bridge started');
  }

  /** Registry changes are applied one at a time, in arrival order. */
  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'bridge reload failed');
      if (this.listenerCount('error')) this.emit('error', err as Error);
    });
  }

  /** The subscriptions this bridge delivers now. */
  subscriptions(): string[] {
    return [...this.workers.keys()];
  }

  private targetOf(row: SubscriptionRow): Target {
    const reg = this.a.registry;
    return {
      id: row.id,
      label: `${row.application}/${row.name}`,
      url: new URL(row.handler!),
      timeoutMs: row.timeout_ms,
      format: row.format,
      keys: reg.signingSecrets(row).map(secretKey),
      encryptionKey: row.encryption_key ? Buffer.from(reg.box.open(row.encryption_key), 'base64') : null,
    };
  }

  private static active(row: SubscriptionRow | null): row is SubscriptionRow {
    return !!row && row.transport === 'http' && !!row.handler && !row.paused && row.disabled_reason === null;
  }

  private async apply(id: string, row: SubscriptionRow | null): Promise<void> {
    if (this.closed) return;
    const w = this.workers.get(id);
    if (!Bridge.active(row)) {
      if (w) await this.remove(w);
      return;
    }
    let target: Target;
    try {
      target = this.targetOf(row);
    } catch (err) {
      this.log.error({ err: (err as Error).message, subscription: id }, 'subscription cannot be delivered');
      if (w) await this.remove(w);
      return;
    }
    if (w && w.ordered === row.ordered) {
      if (w.endpoint !== target.url.toString()) {
        this.byEndpoint.get(w.endpoint)?.delete(w);
        w.update(row, target);
        this.index(w);
      } else w.update(row, target);
      return;
    }
    if (w) await this.remove(w);
    const worker = new SubscriptionWorker(row, target, {
      sender: this.sender,
      recorder: this.recorder,
      publisher: this.a.publisher,
      topology: this.a.topology,
      breaker: this.breaker,
      log: this.log,
      prefetch: this.opts.prefetch ?? this.a.cfg.prefetch,
      orderedProbeMs: this.a.cfg.orderedProbeMs,
      ensureRetryQueue: (ms) => this.ensureRetryQueue(ms),
      onGone: (r, reason) => this.gone(r, reason),
      broker: this.a.broker,
      redeclare: async (r) => {
        const fresh = await getSubscription(this.a.pool, r.id);
        if (!fresh) return false; // deleted: the registry's notice removes the worker
        if (!(await this.a.registry.declareQueues(fresh))) throw new Error('subscription queues not declared');
        return true;
      },
      held: this.held,
      reserveSlot: (sub, rate) => this.reserveSlot(sub, rate),
      note: (n) => this.note(n),
      channelState: (e) => {
        const at = { subscription: id, queue: worker.queue };
        if (e.state === 'ready') this.emit('worker-ready', at);
        else if (e.state === 'lost') this.emit('worker-lost', at);
        else this.emit('worker-reconnecting', { ...at, attempt: e.attempt, delayMs: e.delayMs, error: e.error });
      },
    });
    this.workers.set(id, worker);
    this.index(worker);
    if (this.breaker) {
      const st = await this.breaker.state(worker.endpoint);
      if (st) worker.onOpen(st);
    }
    // Its channel (`bridge <queue>`) is built now when connected, and on every (re)connect.
    await worker.start();
    this.emit('worker-started', { subscription: id, endpoint: worker.endpoint });
  }

  private index(w: SubscriptionWorker): void {
    let s = this.byEndpoint.get(w.endpoint);
    if (!s) this.byEndpoint.set(w.endpoint, (s = new Set()));
    s.add(w);
  }

  private async remove(w: SubscriptionWorker): Promise<void> {
    this.workers.delete(w.row.id);
    this.byEndpoint.get(w.endpoint)?.delete(w);
    await w.stop();
    this.emit('worker-stopped', { subscription: w.row.id });
  }

  private async reload(id: string): Promise<void> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return;
    await this.apply(id, await getSubscription(this.a.pool, id));
    if (this.closed) return;
    this.emit('applied', { subscription: id, running: this.workers.has(id) });
  }

  async resync(): Promise<void> {
    const rows = await activeHttpSubscriptions(this.a.pool);
    const seen = new Set(rows.map((r) => r.id));
    for (const w of [...this.workers.values()]) if (!seen.has(w.row.id)) await this.remove(w);
    for (const r of rows) await this.apply(r.id, r);
    if (this.breaker)
      for (const [ep, ws] of this.byEndpoint) {
        if (!ws.size) continue;
        const st = await this.breaker.state(ep);
        for (const w of ws)
          if (st) w.onOpen(st);
          else w.onClosed();
      }
    if (this.listenerCount('synced')) this.emit('synced', { subscriptions: [...this.workers.keys()] });
  }

  private async onBreakerMessage(msg: string): Promise<void> {
    const sp = msg.indexOf(' ');
    const kind = msg.slice(0, sp);
    const ep = msg.slice(sp + 1);
    const ws = this.byEndpoint.get(ep);
    if (!ws?.size || !this.breaker) return;
    if (kind === 'closed') for (const w of ws) w.onClosed();
    else if (kind === 'open') {
      const st = await this.breaker.state(ep);
      if (st) for (const w of ws) w.onOpen(st);
    }
  }

  private async ensureRetryQueue(delayMs: number): Promise<void> {
    if (this.retryQueues.has(delayMs)) return;
    await this.a.broker.withThrowawayChannel((ch) => this.a.topology.declareRetry(ch, delayMs));
    this.retryQueues.add(delayMs);
  }

  private async gone(row: SubscriptionRow, reason: string): Promise<void> {
    this.log.warn(
      { subscription: row.id, handler: row.handler && redactUrl(row.handler) },
      'handler answered 410: subscription disabled',
    );
    await disableSubscription(this.a.pool, row.id, reason).catch(() => false);
    await this.cmd?.publish(this.subsChannel, row.id).catch(() => undefined);
    this.enqueue(() => this.reload(row.id));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.noteTimer) clearTimeout(this.noteTimer);
    this.a.broker.removeHook(this.hook);
    await this.chain.catch(() => undefined);
    await Promise.all([...this.workers.values()].map((w) => w.stop()));
    this.workers.clear();
    await this.recorder.close();
    await this.sender.close();
    this.sub?.disconnect();
    this.cmd?.disconnect();
  }
}
