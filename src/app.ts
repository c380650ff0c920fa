import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError, type Config } from './config.js';
import { parseAddress } from './config.js';
import type { Logger } from './log.js';
import { Broker, BrokerUnreachableError, redactUrl } from './broker/connection.js';
import { Topology } from './broker/topology.js';
import { ConfirmPublisher } from './broker/publisher.js';
import { createPool, ensureDatabase, migrate, type Pool } from './store/db.js';
import { deleteSetting, getSetting, initSetting, resealSubscriptions } from './store/registry.js';
import { Registry } from './registry.js';
import { SecretBox, sha256 } from './secrets.js';
import { PublishPipeline } from './publish.js';
import { Relay } from './relay.js';
import { Authenticator, AuthThrottle } from './api/auth.js';
import { buildApi, type ApiContext } from './api/server.js';

/** A store Amebo cannot reach: says which, where, and how to start it. */
export class ServiceUnreachableError extends Error {
  override name = 'ServiceUnreachableError';
  readonly service: string;
  constructor(service: string, url: string, cause: string, hint: string) {
    super(
      `${service} is unreachable at ${redactUrl(url)} (${cause}).\n  Start it with: ${hint}\n  Or run: bash scripts/services.sh`,
    );
    this.service = service;
  }
}

const HINTS = {
  postgresql:
    'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start   (or: apt-get install postgresql)',
  redis: 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""   (or: apt-get install redis-server)',
  rabbitmq: 'rabbitmq-server -detached   (or: apt-get install rabbitmq-server)',
};

/** Creates the database if needed and applies migrations (`amebo migrate`, and `serve` at start). */
export async function prepareDatabase(cfg: Config, log: Logger): Promise<void> {
  try {
    if (await ensureDatabase(cfg.databaseUrl)) log.info('database created');
  } catch (err) {
    throw new ServiceUnreachableError('PostgreSQL', cfg.databaseUrl, (err as Error).message, HINTS.postgresql);
  }
  const pool = createPool({ url: cfg.databaseUrl, max: 1, logger: log, applicationName: 'amebo-migrate' });
  try {
    await migrate(pool, log);
  } finally {
    await pool.end();
  }
}

export interface Amebo {
  cfg: Config;
  pool: Pool;
  redis: Redis;
  broker: Broker;
  topology: Topology;
  registry: Registry;
  publisher: ConfirmPublisher;
  pipeline: PublishPipeline;
  relay: Relay | null;
  api: FastifyInstance | null;
  ctx: ApiContext;
  /** The admin token when this process generated it (first start), else null. */
  generatedAdminToken: string | null;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Listen on cfg.address. Tests pass false and use `api.inject` or listen themselves. @default true */
  listen?: boolean;
  /** Extra API plugins (bridge, fabric, dashboard). */
  plugins?: ApiContext['plugins'];
  /** Skip migrations (the cluster primary ran them). */
  skipMigrate?: boolean;
  /** Parts started once the core is up (bridge, presence...), closed before it, in reverse order. */
  parts?: PartStarter[];
}

/** A part of Amebo beyond the core: started with the running core, closed before it. */
export type PartStarter = (amebo: Amebo) => Promise<{ close(): Promise<void> }>;

async function adminTokenHash(
  cfg: Config,
  pool: Pool,
  log: Logger,
): Promise<{ hash: string; generated: string | null }> {
  if (cfg.adminToken) return { hash: sha256(cfg.adminToken), generated: null };
  const token = `amebo_admin_${randomBytes(24).toString('base64url')}`;
  const hash = await initSetting(pool, 'admin_token_sha256', sha256(token));
  if (hash !== sha256(token)) return { hash, generated: null };
  const file = path.resolve(cfg.stateDir, 'admin-token');
  try {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, token + '\n', { mode: 0o600 });
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'could not save the generated admin token');
  }
  return { hash, generated: token };
}

/**
 * The keys that seal secrets at rest: AMEBO_SECRET_KEY_FILE or AMEBO_SECRET_KEY seals; previous
 * keys (AMEBO_PREVIOUS_SECRET_KEYS, and the key Amebo once generated into PostgreSQL) still open
 * until `amebo rotate-key` re-sealed everything. Without a configured key, one is generated and kept
 * in PostgreSQL beside what it seals, and a warning says so.
 */
export async function secretKeys(
  cfg: Config,
  pool: Pool,
): Promise<{ current: string | null; previous: string[]; stored: string | null }> {
  let current = cfg.secretKey;
  if (cfg.secretKeyFile) {
    try {
      current = (await readFile(cfg.secretKeyFile, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError(`AMEBO_SECRET_KEY_FILE cannot be read: ${(err as Error).message}`);
    }
  }
  if (current && current.length < 16) throw new ConfigError('the secret key must be at least 16 characters');
  const previous = cfg.previousSecretKeys
    .split(',')
    .map((k) => k.trim())
    .filter(Boolean);
  const stored = await getSetting(pool, 'secret_key');
  if (current && stored && stored !== current) previous.push(stored);
  return { current: current || null, previous, stored };
}

async function openSecretBox(cfg: Config, pool: Pool, log: Logger): Promise<SecretBox> {
  const keys = await secretKeys(cfg, pool);
  if (keys.current) return new SecretBox(keys.current, keys.previous);
  const generated = await initSetting(pool, 'secret_key', randomBytes(32).toString('base64url'));
  log.warn(
    'AMEBO_SECRET_KEY is not set: webhook signing secrets and encryption keys are sealed with a key stored in ' +
      'PostgreSQL, beside them, so anyone who can read the database can open them. Set AMEBO_SECRET_KEY or ' +
      'AMEBO_SECRET_KEY_FILE, then run `amebo rotate-key`.',
  );
  return new SecretBox(generated, keys.previous);
}

/**
 * `amebo rotate-key`: re-seals every sealed secret under the current key, in one transaction, with
 * the previous keys still opening what they sealed; then deletes the generated key from PostgreSQL,
 * which no longer seals anything.
 */
export async function rotateSecretKey(
  cfg: Config,
  log: Logger,
): Promise<{ rows: number; changed: number; keyId: string; droppedStoredKey: boolean }> {
  const pool = createPool({ url: cfg.databaseUrl, max: 1, logger: log, applicationName: 'amebo-rotate-key' });
  try {
    const keys = await secretKeys(cfg, pool);
    if (!keys.current)
      throw new ConfigError(
        'set AMEBO_SECRET_KEY (or AMEBO_SECRET_KEY_FILE) to the new key, and the old one in AMEBO_PREVIOUS_SECRET_KEYS ' +
          '(unless Amebo generated it: that one is found in PostgreSQL)',
      );
    const box = new SecretBox(keys.current, keys.previous);
    const r = await resealSubscriptions(pool, (sealed) =>
      box.isCurrent(sealed) ? sealed : box.seal(box.open(sealed)),
    );
    const drop = keys.stored !== null && keys.stored !== keys.current;
    if (drop) await deleteSetting(pool, 'secret_key');
    return { ...r, keyId: box.keyId, droppedStoredKey: drop };
  } finally {
    await pool.end();
  }
}

/** Starts the roles in `cfg.roleSet` against PostgreSQL, Redis and RabbitMQ. */
export async function startAmebo(cfg: Config, log: Logger, opts: StartOptions = {}): Promise<Amebo> {
  if (!opts.skipMigrate) await prepareDatabase(cfg, log);
  const pool = createPool({
    url: cfg.databaseUrl,
    max: cfg.dbPoolSize,
    statementTimeoutMs: cfg.statementTimeoutMs,
    logger: log,
    applicationName: `amebo-${[...cfg.roleSet].join('+')}`,
  });
  const cleanup: (() => Promise<unknown>)[] = [() => pool.end()];
  const fail = async (err: unknown): Promise<never> => {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    throw err;
  };

  const redisOptions: RedisOptions = {
    connectTimeout: 3000,
    commandTimeout: 3000,
    maxRetriesPerRequest: 2,
    lazyConnect: true,
    retryStrategy: (n: number) => Math.min(100 * 2 ** n, 3000),
  };
  let redis: Redis;
  try {
    redis = redisClient(cfg, redisOptions);
  } catch (err) {
    return fail(err);
  }
  let lastRedisError = '';
  redis.on('error', (err: Error) => {
    lastRedisError = err.message;
    log.debug({ err: err.message }, 'redis error');
  });
  // Bounded: through Sentinels that refuse us (a wrong password, no TLS), ioredis retries forever
  // and connect() never settles.
  let connectTimer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect().then(() => redis.ping()),
      new Promise((_, reject) => {
        connectTimer = setTimeout(
          () =>
            reject(
              new Error(
                `no answer within ${cfg.redisConnectTimeoutMs} ms${lastRedisError ? `: ${lastRedisError}` : ''}`,
              ),
            ),
          cfg.redisConnectTimeoutMs,
        );
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    return fail(new ServiceUnreachableError('Redis', cfg.redisUrl, (err as Error).message, HINTS.redis));
  } finally {
    clearTimeout(connectTimer);
  }
  cleanup.push(async () => redis.disconnect());

  const { hash, generated } = await adminTokenHash(cfg, pool, log).catch(fail);
  const box = await openSecretBox(cfg, pool, log).catch(fail);
  let registry: Registry;
  try {
    registry = new Registry(pool, box, cfg, log);
  } catch (err) {
    return fail(new ConfigError(`AMEBO_ALLOWED_TARGETS: ${(err as Error).message}`));
  }
  if (!cfg.blockPrivateTargets)
    log.warn('AMEBO_BLOCK_PRIVATE_TARGETS=false: webhooks may reach loopback, private networks and cloud metadata');
  else if (cfg.allowedTargets)
    log.info({ allowed: cfg.allowedTargets }, 'webhook targets on private networks allowed by AMEBO_ALLOWED_TARGETS');
  await registry.attachRedis(redis);
  cleanup.push(() => registry.close());

  const topology = new Topology(cfg);
  const broker = new Broker({
    url: cfg.amqpUrl,
    logger: log.child({ component: 'broker' }),
    name: `amebo ${process.pid}`,
  });
  const defaultDelays = cfg.retrySchedule.map((s) => s * 1000);
  // First hook: the registry is the source of truth for the topology, reconciled on every connect.
  await broker.addHook(async (model) => {
    const drift = await topology.reconcile(model, defaultDelays, await registry.topologies(), log);
    if (drift) log.error({ drift }, 'topology drift: some subscription queues could not be declared');
  });
  try {
    await broker.open(10_000);
  } catch (err) {
    const cause = err instanceof BrokerUnreachableError ? 'no connection within 10 s' : (err as Error).message;
    return fail(new ServiceUnreachableError('RabbitMQ', cfg.amqpUrl, cause, HINTS.rabbitmq));
  }
  cleanup.push(() => broker.close());
  registry.attachBroker(broker, topology);

  const publisher = new ConfirmPublisher(broker, { window: cfg.confirmWindow, logger: log });
  await publisher.start();
  cleanup.push(() => publisher.close());
  const pipeline = new PublishPipeline({
    pool,
    publisher,
    exchange: topology.events,
    restrictedExchange: topology.restrictedEvents,
    logger: log,
    maxBatch: cfg.groupCommitMax,
    maxFlushes: cfg.groupCommits,
    confirmWaitMs: cfg.confirmWaitMs,
    awaitConfirm: cfg.replyAfterConfirm,
    maxUnconfirmed: cfg.maxUnconfirmed,
  });

  let relay: Relay | null = null;
  if (cfg.roleSet.has('relay')) {
    relay = new Relay({
      pool,
      publisher,
      exchange: topology.events,
      restrictedExchange: topology.restrictedEvents,
      logger: log.child({ role: 'relay' }),
      intervalMs: cfg.relayIntervalMs,
      graceMs: cfg.relayGraceMs,
    });
    pipeline.attachRelay(relay);
    relay.start();
  }

  const ctx: ApiContext = {
    cfg,
    log,
    pool,
    redis,
    registry,
    broker,
    topology,
    publisher,
    pipeline,
    auth: new Authenticator(
      hash,
      registry,
      new AuthThrottle({
        redis,
        names: cfg.redis,
        limit: cfg.authFailLimit,
        windowSeconds: cfg.authFailWindowSeconds,
      }),
      { metricsTokenHash: cfg.metricsToken ? sha256(cfg.metricsToken) : null },
    ),
    plugins: opts.plugins ?? [],
  };
  let api: FastifyInstance | null = null;
  if (cfg.roleSet.has('api')) {
    void registry.warmSchemas(); // the first publish after a start does not wait for the worker to load
    api = await buildApi(ctx).catch(fail);
    if (opts.listen !== false) {
      const { host, port } = parseAddress(cfg.address);
      await api.listen({ host, port }).catch(fail);
    } else await api.ready();
  }

  let closed = false;
  const parts: { close(): Promise<void> }[] = [];
  const amebo: Amebo = {
    cfg,
    pool,
    redis,
    broker,
    topology,
    registry,
    publisher,
    pipeline,
    relay,
    api,
    ctx,
    generatedAdminToken: generated,
    async close() {
      if (closed) return;
      closed = true;
      // Drain order: stop taking requests, stop the parts, finish group commits and confirms, close stores.
      if (api) await api.close().catch(() => undefined);
      for (const p of parts.reverse())
        await p.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'part close failed'));
      await pipeline.close();
      if (relay) await relay.stop();
      await publisher.close();
      await registry.close();
      await broker.close();
      redis.disconnect();
      await pool.end().catch(() => undefined);
    },
  };
  for (const startPart of opts.parts ?? []) {
    try {
      parts.push(await startPart(amebo));
    } catch (err) {
      await amebo.close();
      throw err;
    }
  }
  return amebo;
}

/**
 * The Redis client `cfg` names: straight from AMEBO_REDIS_URL, or through Sentinel (ioredis asks the
 * Sentinels for the master and follows failovers). A rediss:// URL means TLS to Redis, and to the
 * master and replicas that Sentinels name; AMEBO_REDIS_TLS_CA_FILE adds a private CA. The URL's
 * user (an ACL user), password and db apply to the master either way; the Sentinels' own
 * credentials and TLS are separate settings.
 */
export function redisClient(cfg: Config, base: RedisOptions): Redis {
  const url = new URL(cfg.redisUrl);
  const tlsFromUrl = url.protocol === 'rediss:';
  let ca: Buffer | undefined;
  if (cfg.redisTlsCaFile) {
    try {
      ca = readFileSync(cfg.redisTlsCaFile);
    } catch (err) {
      throw new ConfigError(`AMEBO_REDIS_TLS_CA_FILE: cannot read ${cfg.redisTlsCaFile}: ${(err as Error).message}`);
    }
  }
  const tls = tlsFromUrl ? (ca ? { ca } : {}) : undefined;
  if (!cfg.redisSentinels) return new Redis(cfg.redisUrl, { ...base, ...(tls ? { tls } : {}) });
  return new Redis({
    ...base,
    sentinels: cfg.redisSentinels.split(',').map((hp) => {
      const [host, port] = hp.trim().split(':');
      return { host: host!, port: Number(port ?? 26379) };
    }),
    name: cfg.redisSentinelName,
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    db: Number(url.pathname.slice(1) || 0),
    ...(tls ? { tls, enableTLSForSentinelMode: true } : {}),
    ...(cfg.redisSentinelUsername ? { sentinelUsername: cfg.redisSentinelUsername } : {}),
    ...(cfg.redisSentinelPassword ? { sentinelPassword: cfg.redisSentinelPassword } : {}),
    ...(cfg.redisSentinelTls ? { sentinelTLS: ca ? { ca } : {} } : {}),
    // Each Sentinel query is bounded like every other call.
    sentinelCommandTimeout: 3000,
  });
}
