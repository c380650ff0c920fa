/**
 * Records every subscription queue's depth (and its dead-letter queue's) every
 * AMEBO_QUEUE_SAMPLE_MS, so backlog charts have a history: the broker only knows the present. One
 * bridge process per deployment samples each round (a Redis lock; while Redis is away each
 * process samples, and the primary key drops the doubles). Old samples are pruned hourly.
 */
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from '../src/log.js';
import type { Pool } from '../src/store/db.js';
import type { RedisNames } from '../src/redis-names.js';
import type { Topology } from '../src/broker/topology.js';
import type { RecoveringConnection } from '../src/broker/link.js';
import { queueDepths } from '../src/broker/depth.js';
import { listSubscriptions } from '../src/store/registry.js';
import { pruneQueueSamples, writeQueueSamples } from '../src/store/deliveries.js';

export interface SamplerEvents {
  /** One round written: how many subscriptions were sampled. */
  sampled: [count: number];
  /** Another process holds this round. */
  skipped: [];
  error: [err: Error];
}

export interface SamplerOptions {
  pool: Pool;
  redis: Redis;
  names: RedisNames;
  broker: RecoveringConnection;
  topology: Topology;
  log: Logger;
  intervalMs: number;
  keepDays: number;
}

export class QueueSampler extends EventEmitter<SamplerEvents> {
  private readonly o: SamplerOptions;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private lastPrune = 0;

  constructor(o: SamplerOptions) {
    super();
    this.o = o;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  /** One round (also callable directly); never throws. */
  async tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round()
      .catch((err: unknown) => {
        this.o.log.debug({ err: (err as Error).message }, 'queue sampler: round failed');
        if (this.listenerCount('error')) this.emit('error', err as Error);
      })
      .finally(() => (this.running = null));
    return this.running;
  }

  private async round(): Promise<void> {
    if (!(await this.mine())) {
      this.emit('skipped');
      return;
    }
    const subs = await listSubscriptions(this.o.pool, {});
    const t = this.o.topology;
    const queues = subs.flatMap((s) => [
      t.subscriptionQueue(s.application, s.name),
      t.deadQueue(s.application, s.name),
    ]);
    const depths = await queueDepths(this.o.broker, queues, Math.min(10_000, this.o.intervalMs));
    const at = new Date();
    const rows = subs.flatMap((s) => {
      const q = depths.get(t.subscriptionQueue(s.application, s.name));
      if (!q) return [];
      const d = depths.get(t.deadQueue(s.application, s.name));
      return [{ subscription: s.id, at, messages: q.messages, consumers: q.consumers, dead: d?.messages ?? null }];
    });
    await writeQueueSamples(this.o.pool, rows);
    if (Date.now() - this.lastPrune > 3600_000) {
      this.lastPrune = Date.now();
      await pruneQueueSamples(this.o.pool, this.o.keepDays * 86_400);
    }
    this.emit('sampled', rows.length);
  }

  /** This process samples this round: it got the lock, or Redis is away. */
  private async mine(): Promise<boolean> {
    if (this.o.redis.status !== 'ready') return true;
    try {
      const ok = await this.o.redis.set(
        this.o.names.samplerLock,
        String(process.pid),
        'PX',
        Math.max(100, this.o.intervalMs - 100),
        'NX',
      );
      return ok === 'OK';
    } catch {
      return true;
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
