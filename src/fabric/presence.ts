/**
 * Amebo's presence role: listens to every keep-alive on the discovery exchange and keeps the fleet
 * in Redis, so several Amebo processes answer `GET /v1/services` alike and a restarted one still
 * knows what went down. Each process also announces status changes as `change` events (for
 * /v1/stream) from what it hears itself.
 *
 * Redis layout (all under `redisPrefix`):
 * - `fabric:services`: sorted set of FQNs by last keep-alive (ms);
 * - `fabric:svc:{fqn}`: hash of instance key → JSON `InstanceRecord`, expiring `rememberSeconds`
 *   after the last keep-alive of any instance.
 */
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { AmeboError, ERROR_BODY } from '../errors.js';
import {
  Directory,
  matches,
  parseBeat,
  recordOf,
  summarize,
  type Beat,
  type InstanceRecord,
  type ServiceChange,
  type ServiceInfo,
} from './discovery.js';
import { Link, type ConnectionObserver } from './link.js';
import { DECLARE, DEFAULT_DISCOVERY_EXCHANGE, MSG_TYPE } from './names.js';

export interface PresenceOptions {
  /** Broker URL. */
  amqpUrl: string;
  /** Shared store of the fleet; the caller owns (and closes) the connection. */
  redis: Redis;
  /**
   * Prefix of every key written.
   * @default 'amebo:'
   */
  redisPrefix?: string;
  /**
   * The discovery exchange keep-alives arrive on.
   * @default 'msc.discovery'
   */
  discoveryExchange?: string;
  /**
   * A service not heard from for this long is `down`; `stale` after a third of it. Fractions allowed.
   * @default 10
   */
  ttlSeconds?: number;
  /**
   * How long a down service stays listed before it is forgotten.
   * @default 3600
   */
  rememberSeconds?: number;
  /** @default a silent logger */
  logger?: Logger;
  /** Told of the listening connection's and channel's state (the presence role feeds `/metrics` from it). */
  observer?: ConnectionObserver;
}

/** A service as listed by `GET /v1/services`. */
export type ServiceItem = ServiceInfo;

export interface PresenceEvents {
  change: [ServiceChange];
}

/** Keep-alives of one instance are written at most this often (they come every 1–2 s anyway). */
const WRITE_EVERY_MS = 1000;

export class Presence extends EventEmitter<PresenceEvents> {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly exchange: string;
  private readonly ttlMs: number;
  private readonly rememberMs: number;
  private readonly log: Logger;
  private link: Link | null = null;
  private readonly amqpUrl: string;
  private readonly observer: ConnectionObserver | undefined;
  private readonly directory: Directory;
  private readonly queue: string;
  private readonly lastWrite = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private started = false;

  constructor(opts: PresenceOptions) {
    super();
    this.redis = opts.redis;
    this.amqpUrl = opts.amqpUrl;
    this.observer = opts.observer;
    this.prefix = opts.redisPrefix ?? 'amebo:';
    this.exchange = opts.discoveryExchange ?? DEFAULT_DISCOVERY_EXCHANGE;
    this.ttlMs = (opts.ttlSeconds ?? 10) * 1000;
    this.rememberMs = (opts.rememberSeconds ?? 3600) * 1000;
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.directory = new Directory(this.thresholds(), this.rememberMs);
    this.queue = `amebo.presence.${hostname()}.${process.pid}.${randomBytes(3).toString('hex')}`;
  }

  private thresholds(): { staleAfterMs: number; downAfterMs: number } {
    return { staleAfterMs: this.ttlMs / 3, downAfterMs: this.ttlMs };
  }

  private key(...parts: string[]): string {
    return this.prefix + parts.join(':');
  }

  /** Connects and starts listening; waits at most `timeoutMs` for the broker. */
  async start(timeoutMs = 10_000): Promise<void> {
    if (this.started) return;
    this.started = true;
    // A new link per start: one whose first open failed is closed for good.
    const link = new Link({
      url: this.amqpUrl,
      name: `amebo-presence:${hostname()}:${process.pid}`,
      logger: this.log,
      heartbeatSeconds: 10,
      reconnectInitialDelayMs: 200,
      reconnectMaxDelayMs: 5000,
      observer: this.observer,
    });
    try {
      await link.open(timeoutMs);
      // One recovery path (ManagedChannel): rebuilt on reconnect, after a channel-level close and a cancel.
      const mc = link.channel({ name: 'presence', setup: (ch) => this.setup(ch, () => mc.reset()) });
      await mc.open();
    } catch (err) {
      this.started = false;
      await link.close();
      throw err;
    }
    this.link = link;
    this.sweepTimer = setInterval(() => {
      for (const c of this.directory.sweep()) this.emit('change', c);
    }, 500);
    this.sweepTimer.unref();
  }

  private async setup(ch: Channel, cancelled: () => void): Promise<void> {
    await ch.assertExchange(this.exchange, 'headers', DECLARE.durableHeaders);
    await ch.assertQueue(this.queue, DECLARE.privateQueue);
    for (const t of [MSG_TYPE.keepAlive, MSG_TYPE.goodbye])
      await ch.bindQueue(this.queue, this.exchange, '', { 'x-match': 'all', msg_type: t });
    await ch.consume(this.queue, (m) => (m ? this.onBeat(m) : cancelled()), { noAck: true });
  }

  private onBeat(m: ConsumeMessage): void {
    const beat = parseBeat(m.properties, m.content);
    if (!beat) return;
    const now = Date.now();
    const change = this.directory.observe(beat, now);
    if (change) this.emit('change', change);
    this.store(beat, now).catch((err: Error) =>
      this.log.warn({ err: err.message }, 'presence: could not record a keep-alive in Redis'),
    );
  }

  private async store(b: Beat, now: number): Promise<void> {
    const k = `${b.fqn}|${b.instance}`;
    const prev = this.lastWrite.get(k);
    if (!b.goodbye && prev !== undefined && now - prev < WRITE_EVERY_MS) return;
    this.lastWrite.set(k, now);
    if (this.lastWrite.size > 10_000) this.lastWrite.clear();
    const rec: InstanceRecord = recordOf(b, now);
    const svc = this.key('fabric', 'svc', b.fqn);
    await this.redis
      .multi()
      .hset(svc, b.instance, JSON.stringify(rec))
      .pexpire(svc, this.rememberMs)
      .zadd(this.key('fabric', 'services'), 'GT', now, b.fqn)
      .exec();
  }

  /**
   * The fleet as all Amebo processes recorded it: every service heard within `rememberSeconds`,
   * `up`, `stale` or `down`, filtered exactly by domain and type.
   * @throws {AmeboError} `UNAVAILABLE` when Redis does not answer.
   */
  async list(filter: { domain?: string; type?: string } = {}): Promise<ServiceItem[]> {
    const now = Date.now();
    const zkey = this.key('fabric', 'services');
    let fqns: string[];
    let hashes: Array<Record<string, string>>;
    try {
      await this.redis.zremrangebyscore(zkey, '-inf', now - this.rememberMs);
      fqns = await this.redis.zrangebyscore(zkey, now - this.rememberMs, '+inf');
      const results = fqns.length
        ? await this.redis.pipeline(fqns.map((f) => ['hgetall', this.key('fabric', 'svc', f)])).exec()
        : [];
      hashes = (results ?? []).map(([, v]) => (v ?? {}) as Record<string, string>);
    } catch (err) {
      throw new AmeboError('UNAVAILABLE', `Redis unavailable: ${(err as Error).message}`);
    }
    const out: ServiceItem[] = [];
    fqns.forEach((fqn, i) => {
      const records: InstanceRecord[] = [];
      for (const json of Object.values(hashes[i] ?? {})) {
        try {
          const r = JSON.parse(json) as InstanceRecord;
          if (now - r.last_seen <= this.rememberMs) records.push(r);
        } catch {
          // a record we cannot read is skipped, not fatal to the listing
        }
      }
      const info = summarize(fqn, records, now, this.thresholds());
      if (info && matches(info, filter)) out.push(info);
    });
    return out.sort((a, b) => a.fqn.localeCompare(b.fqn));
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.started = false;
    const link = this.link;
    this.link = null;
    await link?.close();
  }
}

const SERVICE = {
  type: 'object',
  additionalProperties: false,
  properties: {
    domain: { type: 'string' },
    type: { type: 'string' },
    id: { type: 'string' },
    fqn: { type: 'string' },
    status: { type: 'string', description: 'up, degraded or down' },
    instances: { type: 'integer', description: 'instances heard within the TTL that have not said goodbye' },
    version: { type: ['string', 'null'] },
    host: { type: ['string', 'null'] },
    started_at: { type: ['string', 'null'] },
    last_seen: { type: 'string', description: 'time of the last keep-alive from any instance' },
  },
  required: ['domain', 'type', 'id', 'fqn', 'status', 'instances', 'version', 'host', 'started_at', 'last_seen'],
} as const;

/**
 * `GET /v1/services?domain=&type=` → `{ items: [...] }`. Authentication is the caller's hook.
 * Usable directly or as a plugin: `app.register(servicesRoutes, { presence })`.
 */
export async function servicesRoutes(scope: FastifyInstance, opts: { presence: Presence }): Promise<void> {
  const app = scope.withTypeProvider<JsonSchemaToTsProvider>();
  app.get(
    '/v1/services',
    {
      schema: {
        tags: ['services'],
        summary: 'The services of the fabric, as their keep-alives tell',
        querystring: {
          type: 'object',
          properties: { domain: { type: 'string', maxLength: 63 }, type: { type: 'string', maxLength: 63 } },
        },
        response: {
          200: {
            type: 'object',
            additionalProperties: false,
            properties: { items: { type: 'array', items: SERVICE } },
            required: ['items'],
          },
          '4xx': ERROR_BODY,
          '5xx': ERROR_BODY,
        },
      },
    },
    async (req) => {
      const q = req.query;
      const filter: { domain?: string; type?: string } = {};
      if (q.domain) filter.domain = q.domain;
      if (q.type) filter.type = q.type;
      return { items: await opts.presence.list(filter) };
    },
  );
}
