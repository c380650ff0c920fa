import { RedisNames } from '../src/redis-names.js';
import type { Redis } from 'ioredis';
import { redactUrl, type Logger } from '../src/log.js';

export interface BreakerOptions {
  /** Failures within `windowMs` that open the circuit. @default 5 */
  threshold?: number;
  /** @default 30000 */
  windowMs?: number;
  /** First cool-down; doubles after each failed probe up to `maxCooldownMs`. @default 10000 */
  cooldownMs?: number;
  /** Longest cool-down (serve passes AMEBO_BREAKER_MAX_COOLDOWN_MS). @default 12000 */
  maxCooldownMs?: number;
}

export interface BreakerState {
  /** When the cool-down ends and one probe may go. */
  until: number;
  cooldownMs: number;
}

/**
 * A circuit breaker per endpoint whose state lives in Redis, so every bridge worker of every
 * process agrees: failures are counted in a short window; past the threshold the endpoint is open
 * for a cool-down (workers stop consuming, messages wait in the queue); then one worker wins the
 * probe lock and sends one delivery: success closes the circuit for all, failure reopens it longer.
 * Changes are announced on `<prefix>:breaker` so other workers react at once. When Redis is
 * unreachable the breaker fails open (deliveries go on; the retry ladder still bounds them).
 */
export class Breaker {
  readonly channel: string;
  private readonly redis: Redis;
  private readonly names: RedisNames;
  private readonly log: Logger;
  readonly threshold: number;
  readonly windowMs: number;
  readonly cooldownMs: number;
  readonly maxCooldownMs: number;
  /** Endpoints this process saw fail lately: only those pay a Redis round trip on success. */
  private readonly failing = new Set<string>();

  constructor(redis: Redis, names: RedisNames, log: Logger, o: BreakerOptions = {}) {
    this.redis = redis;
    this.names = names;
    this.log = log;
    this.channel = names.breakerChannel;
    this.threshold = o.threshold ?? 5;
    this.windowMs = o.windowMs ?? 30_000;
    this.cooldownMs = o.cooldownMs ?? 10_000;
    this.maxCooldownMs = o.maxCooldownMs ?? 12_000;
  }

  static id(endpoint: string): string {
    return RedisNames.endpointId(endpoint);
  }
  private key(kind: string, endpoint: string): string {
    return this.names.breaker(kind, Breaker.id(endpoint));
  }

  /**
   * Redis is away: the breaker fails open at once (every call would otherwise wait for the command
   * timeout, and a delivery behind it), and says so once per outage.
   */
  private away(): boolean {
    if (this.redis.status === 'ready') {
      if (this.wasAway) this.log.warn('breaker: Redis is back; circuits are shared again');
      this.wasAway = false;
      return false;
    }
    if (!this.wasAway) this.log.warn('breaker: Redis unavailable; circuits stay closed (fail open) until it is back');
    this.wasAway = true;
    return true;
  }
  private wasAway = false;

  /** Counts a failure; returns the new state when this failure opened the circuit. */
  async failure(endpoint: string): Promise<BreakerState | null> {
    this.failing.add(endpoint);
    if (this.away()) return null;
    try {
      const fk = this.key('fail', endpoint);
      const res = await this.redis.multi().incr(fk).pexpire(fk, this.windowMs).exec();
      const n = Number(res?.[0]?.[1] ?? 0);
      if (n < this.threshold) return null;
      return await this.open(endpoint, this.cooldownMs);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'breaker: redis unavailable, failing open');
      return null;
    }
  }

  /** Opens (or reopens) the circuit; only the first opener of a period wins, others read its state. */
  async open(endpoint: string, cooldownMs: number): Promise<BreakerState | null> {
    const state: BreakerState = { until: Date.now() + cooldownMs, cooldownMs };
    const sk = this.key('state', endpoint);
    const ok = await this.redis.set(sk, JSON.stringify(state), 'PX', cooldownMs + this.maxCooldownMs * 2, 'NX');
    if (ok !== 'OK') return this.state(endpoint);
    await this.redis.del(this.key('fail', endpoint));
    await this.redis.publish(this.channel, `open ${endpoint}`);
    this.log.warn({ endpoint: redactUrl(endpoint), cooldownMs }, 'circuit opened: the endpoint keeps failing');
    return state;
  }

  /** After a failed probe: open again for twice as long. */
  async reopen(endpoint: string, previous: BreakerState | null): Promise<BreakerState | null> {
    if (this.away()) return null;
    try {
      await this.redis.del(this.key('state', endpoint), this.key('probe', endpoint));
      const cd = Math.min((previous?.cooldownMs ?? this.cooldownMs) * 2, this.maxCooldownMs);
      return await this.open(endpoint, cd);
    } catch {
      return null;
    }
  }

  /** A success: closes the circuit when it was open or failures were being counted. */
  async success(endpoint: string, force = false): Promise<void> {
    if (!force && !this.failing.has(endpoint)) return;
    this.failing.delete(endpoint);
    if (this.away()) return;
    try {
      const n = await this.redis.del(
        this.key('fail', endpoint),
        this.key('state', endpoint),
        this.key('probe', endpoint),
      );
      if (force || n > 0) await this.redis.publish(this.channel, `closed ${endpoint}`);
      if (force) this.log.info({ endpoint: redactUrl(endpoint) }, 'circuit closed: the probe succeeded');
    } catch {
      /* fail open */
    }
  }

  async state(endpoint: string): Promise<BreakerState | null> {
    if (this.away()) return null;
    try {
      const v = await this.redis.get(this.key('state', endpoint));
      return v ? (JSON.parse(v) as BreakerState) : null;
    } catch {
      return null;
    }
  }

  /** One worker across all processes gets to probe per cool-down. */
  async tryProbe(endpoint: string, holdMs: number): Promise<boolean> {
    if (this.away()) return true;
    try {
      return (await this.redis.set(this.key('probe', endpoint), String(process.pid), 'PX', holdMs, 'NX')) === 'OK';
    } catch {
      return true;
    }
  }
}
