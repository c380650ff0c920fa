/**
 * The one configuration module. Every option has an environment variable, a default and a doc
 * line; the common ones also have a CLI flag (see `src/cli.ts`). `amebo config` prints the table.
 */

import { RedisNames } from './redis-names.js';

export const ROLES = ['api', 'bridge', 'relay', 'presence'] as const;
export type Role = (typeof ROLES)[number];

interface OptionSpec<T> {
  env: string;
  doc: string;
  default: T;
  parse: (raw: string) => T;
}

const str = (d: string, doc: string, env: string): OptionSpec<string> => ({ env, doc, default: d, parse: (s) => s });
/**
 * Most events in one group commit: its INSERT takes 9 parameters per event (src/store/events.ts)
 * plus one, and PostgreSQL takes at most 65,535 parameters per statement.
 */
export const MAX_INSERT_ROWS = Math.floor((65_535 - 1) / 9);

const int = (d: number, doc: string, env: string, min = 0, max = Number.MAX_SAFE_INTEGER): OptionSpec<number> => ({
  env,
  doc,
  default: d,
  parse: (s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new ConfigError(
        `${env} must be an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}, got "${s}"`,
      );
    return n;
  },
});
const bool = (d: boolean, doc: string, env: string): OptionSpec<boolean> => ({
  env,
  doc,
  default: d,
  parse: (s) => {
    const v = s.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
    throw new ConfigError(`${env} must be true or false, got "${s}"`);
  },
});
const list = (d: number[], doc: string, env: string): OptionSpec<number[]> => ({
  env,
  doc,
  default: d,
  parse: (s) => {
    const out = s
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean)
      .map((x) => Number(x));
    if (out.length === 0 || out.some((n) => !Number.isFinite(n) || n <= 0))
      throw new ConfigError(`${env} must be a comma-separated list of positive seconds, got "${s}"`);
    return out;
  },
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const OPTIONS = {
  amqpUrl: str('amqp://guest:guest@127.0.0.1:5672', 'RabbitMQ URL (vhost in the path)', 'AMEBO_AMQP_URL'),
  databaseUrl: str(
    'postgres://postgres@127.0.0.1:5432/amebo',
    'PostgreSQL URL; the database is created when missing',
    'AMEBO_DATABASE_URL',
  ),
  redisUrl: str('redis://127.0.0.1:6379/0', 'Redis URL', 'AMEBO_REDIS_URL'),
  redisSentinels: str(
    '',
    'comma-separated host:port of Redis Sentinels; when set, Amebo asks them for the master named AMEBO_REDIS_SENTINEL_NAME (AMEBO_REDIS_URL then only gives the password and db)',
    'AMEBO_REDIS_SENTINELS',
  ),
  redisSentinelName: str('mymaster', 'the master name the Sentinels watch', 'AMEBO_REDIS_SENTINEL_NAME'),
  redisSentinelUsername: str(
    '',
    "user the Sentinels themselves require (their ACL); the master's user and password come from AMEBO_REDIS_URL",
    'AMEBO_REDIS_SENTINEL_USERNAME',
  ),
  redisSentinelPassword: str(
    '',
    'password the Sentinels themselves require (requirepass)',
    'AMEBO_REDIS_SENTINEL_PASSWORD',
  ),
  redisSentinelTls: bool(false, 'reach the Sentinels over TLS', 'AMEBO_REDIS_SENTINEL_TLS'),
  redisConnectTimeoutMs: int(
    10_000,
    'longest Amebo waits at start for Redis (through the Sentinels, when set) to answer, ms',
    'AMEBO_REDIS_CONNECT_TIMEOUT_MS',
    100,
  ),
  redisTlsCaFile: str(
    '',
    'PEM file of the CA that signed the Redis (and Sentinel) certificates, when not a public one; TLS to Redis itself is a rediss:// AMEBO_REDIS_URL',
    'AMEBO_REDIS_TLS_CA_FILE',
  ),
  adminToken: str(
    '',
    'admin bearer token; when empty one is generated at first start, stored and printed once',
    'AMEBO_ADMIN_TOKEN',
  ),
  secretKey: str(
    '',
    'key (any string, >= 16 chars) that seals signing secrets at rest; when empty, one is generated and kept in PostgreSQL (beside what it seals: set it in production)',
    'AMEBO_SECRET_KEY',
  ),
  secretKeyFile: str(
    '',
    'file holding AMEBO_SECRET_KEY (e.g. a mounted secret); wins over the variable',
    'AMEBO_SECRET_KEY_FILE',
  ),
  previousSecretKeys: str(
    '',
    'comma-separated keys that sealed secrets before a rotation: they still open, `amebo rotate-key` re-seals under the current key',
    'AMEBO_PREVIOUS_SECRET_KEYS',
  ),
  address: str('127.0.0.1:8701', 'HOST:PORT the HTTP API listens on', 'AMEBO_ADDRESS'),
  workers: int(1, 'number of processes (node:cluster) sharing the HTTP port', 'AMEBO_WORKERS', 1),
  roles: str('api,bridge,relay,presence', 'comma-separated roles this process runs', 'AMEBO_ROLES'),
  logLevel: str('info', 'pino log level (trace, debug, info, warn, error, fatal, silent)', 'AMEBO_LOG_LEVEL'),
  prefix: str(
    'amebo',
    'prefix of every RabbitMQ exchange and queue and of every Redis key and channel (`<prefix>:`) Amebo uses',
    'AMEBO_PREFIX',
  ),
  queueType: str('quorum', 'subscription queue type: quorum or classic', 'AMEBO_QUEUE_TYPE'),
  deliveryLimit: int(
    20,
    'x-delivery-limit of quorum subscription queues (poison message guard)',
    'AMEBO_DELIVERY_LIMIT',
    1,
  ),
  bodyLimit: int(1024 * 1024, 'largest accepted HTTP body, bytes', 'AMEBO_BODY_LIMIT', 1024),
  maxPayloadDepth: int(64, 'deepest nesting accepted in an event payload', 'AMEBO_MAX_PAYLOAD_DEPTH', 1),
  maxSchemaBytes: int(256 * 1024, 'largest accepted action schema, bytes', 'AMEBO_MAX_SCHEMA_BYTES', 16),
  schemaCompileMs: int(
    5000,
    'longest a schema may take to compile (on a worker thread) before it is refused, ms',
    'AMEBO_SCHEMA_COMPILE_MS',
    100,
  ),
  maxValidatorBytes: int(
    1024 * 1024,
    'largest validator a schema may compile to, bytes (the event loop loads it: ~0.13 ms per KB)',
    'AMEBO_MAX_VALIDATOR_BYTES',
    4096,
  ),
  confirmWaitMs: int(
    2000,
    'how long a publish waits for its broker confirm before the process routes events through the outbox (and a reply that waits for the confirm says published=false)',
    'AMEBO_CONFIRM_WAIT_MS',
    1,
  ),
  maxUnconfirmed: int(
    4096,
    'most events answered before their broker confirm and still waiting for it; past it, publish replies wait for their confirms (back-pressure from a slow broker)',
    'AMEBO_MAX_UNCONFIRMED',
    1,
  ),
  replyAfterConfirm: bool(
    false,
    'publish replies wait for the broker confirm (bounded by AMEBO_CONFIRM_WAIT_MS) instead of going out on the commit; one request asks for it with the header Prefer: wait=<seconds>',
    'AMEBO_REPLY_AFTER_CONFIRM',
  ),
  confirmWindow: int(2048, 'most unconfirmed publishes in flight per publisher channel', 'AMEBO_CONFIRM_WINDOW', 1),
  groupCommitMax: int(500, 'most events in one group-committed INSERT', 'AMEBO_GROUP_COMMIT_MAX', 1, MAX_INSERT_ROWS),
  groupCommits: int(
    2,
    'group commits in flight at once (fewer: larger batches, less CPU per event; more: less waiting for a commit)',
    'AMEBO_GROUP_COMMITS',
    1,
  ),
  relayIntervalMs: int(
    1000,
    'how often the relay looks for committed but unconfirmed or due events',
    'AMEBO_RELAY_INTERVAL_MS',
    10,
  ),
  relayGraceMs: int(5000, "age after which an unconfirmed event is the relay's to publish", 'AMEBO_RELAY_GRACE_MS', 0),
  dbPoolSize: int(10, 'PostgreSQL pool size per process', 'AMEBO_DB_POOL', 1),
  statementTimeoutMs: int(15000, 'PostgreSQL statement_timeout', 'AMEBO_STATEMENT_TIMEOUT_MS', 100),
  compatibility: str(
    'BACKWARD',
    'schema compatibility mode on update: BACKWARD, FORWARD, FULL or NONE',
    'AMEBO_SCHEMA_COMPATIBILITY',
  ),
  retrySchedule: list(
    [5, 30, 120, 600, 3600, 10800, 21600, 43200, 86400],
    'default retry schedule, seconds',
    'AMEBO_RETRY_SCHEDULE',
  ),
  maxAttempts: int(10, 'default max delivery attempts of a subscription', 'AMEBO_MAX_ATTEMPTS', 1),
  maxAgeSeconds: int(3 * 86400, 'default max age of an undelivered event, seconds', 'AMEBO_MAX_AGE', 1),
  deliveryTimeoutMs: int(15000, 'default whole-attempt timeout of a webhook delivery', 'AMEBO_DELIVERY_TIMEOUT_MS', 1),
  connectTimeoutMs: int(5000, 'webhook connect timeout', 'AMEBO_CONNECT_TIMEOUT_MS', 1),
  prefetch: int(200, 'bridge prefetch per subscription consumer', 'AMEBO_PREFETCH', 1),
  queueSampleMs: int(
    30_000,
    "how often one bridge process records every subscription queue's depth (for the backlog charts)",
    'AMEBO_QUEUE_SAMPLE_MS',
    200,
  ),
  queueSampleKeepDays: int(7, 'how long queue-depth samples are kept, days', 'AMEBO_QUEUE_SAMPLE_KEEP_DAYS', 1),
  blockPrivateTargets: bool(
    true,
    'refuse webhook targets on loopback, private, link-local/metadata, CGNAT, unique/site-local, multicast and unspecified addresses (and IPv6 forms embedding them)',
    'AMEBO_BLOCK_PRIVATE_TARGETS',
  ),
  allowedTargets: str(
    '',
    'comma-separated host names, host:port, addresses and CIDRs exempt from AMEBO_BLOCK_PRIVATE_TARGETS',
    'AMEBO_ALLOWED_TARGETS',
  ),
  requestTimeoutMs: int(
    30_000,
    'longest time a client may take to send a whole HTTP request (headers and body)',
    'AMEBO_REQUEST_TIMEOUT_MS',
    100,
  ),
  keepAliveTimeoutMs: int(
    10_000,
    'idle time after which a keep-alive HTTP connection is closed',
    'AMEBO_KEEP_ALIVE_TIMEOUT_MS',
    100,
  ),
  maxConnections: int(10_000, 'most open HTTP connections per process (more are refused)', 'AMEBO_MAX_CONNECTIONS', 1),
  authFailLimit: int(
    20,
    'failed authentications per client address, and per application, within AMEBO_AUTH_FAIL_WINDOW before 429',
    'AMEBO_AUTH_FAIL_LIMIT',
    1,
  ),
  authFailWindowSeconds: int(60, 'window of the failed-authentication throttle, seconds', 'AMEBO_AUTH_FAIL_WINDOW', 1),
  streamMaxClients: int(100, 'most live-tail websocket clients per process', 'AMEBO_STREAM_MAX_CLIENTS', 1),
  trustProxy: str(
    '',
    'proxies whose X-Forwarded-For is believed: empty (none), true (any), or comma-separated addresses/CIDRs',
    'AMEBO_TRUST_PROXY',
  ),
  metricsToken: str('', 'when set, GET /metrics needs Authorization: Bearer <this token>', 'AMEBO_METRICS_TOKEN'),
  stateDir: str(
    '.amebo',
    'directory for generated local state (admin token, secret key) when not configured',
    'AMEBO_STATE_DIR',
  ),
  autoStartServices: bool(
    true,
    'start installed-but-stopped local services (RabbitMQ, PostgreSQL, Redis) on loopback at serve',
    'AMEBO_AUTOSTART',
  ),
  breaker: bool(true, 'circuit breaker per webhook endpoint (state shared in Redis)', 'AMEBO_BREAKER'),
  breakerThreshold: int(5, "failures within the window that open an endpoint's circuit", 'AMEBO_BREAKER_THRESHOLD', 1),
  breakerWindowMs: int(30_000, 'window in which breaker failures are counted', 'AMEBO_BREAKER_WINDOW_MS', 100),
  breakerCooldownMs: int(
    10_000,
    'how long an open circuit pauses its subscription before a probe',
    'AMEBO_BREAKER_COOLDOWN_MS',
    100,
  ),
  breakerMaxCooldownMs: int(
    12_000,
    'longest cool-down of an open circuit (it doubles after each failed probe up to this), so delivery resumes soon after an endpoint is back',
    'AMEBO_BREAKER_MAX_COOLDOWN_MS',
    100,
  ),
  orderedProbeMs: int(
    10_000,
    "an ordered subscription's held event is tried again at least this often while its retry step waits (probes do not count against max_attempts)",
    'AMEBO_ORDERED_PROBE_MS',
    100,
  ),
  url: str(
    '',
    'where the CLI tools reach a running Amebo (empty: http:// + AMEBO_ADDRESS, 0.0.0.0 read as 127.0.0.1)',
    'AMEBO_URL',
  ),
  discoveryExchange: str('msc.discovery', 'amqp-fabric discovery exchange (keep-alives)', 'AMEBO_DISCOVERY_EXCHANGE'),
  serviceTtlSeconds: int(
    10,
    'a service not heard from for this long is down (stale after a third of it)',
    'AMEBO_SERVICE_TTL',
    1,
  ),
} satisfies Record<string, OptionSpec<unknown>>;

type Options = typeof OPTIONS;
export type Config = { [K in keyof Options]: Options[K]['default'] } & {
  roleSet: Set<Role>;
  /** Every Redis key and channel, under `<prefix>:`. */
  redis: RedisNames;
};

/** Build the config from defaults, then environment, then explicit overrides (CLI flags, tests). */
export function loadConfig(
  overrides: Partial<{ [K in keyof Options]: Options[K]['default'] }> = {},
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(OPTIONS) as [string, OptionSpec<unknown>][]) {
    const raw = env[spec.env];
    out[key] = raw !== undefined && raw !== '' ? spec.parse(raw) : spec.default;
  }
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) out[k] = v;
  const cfg = out as Config;
  if (!['quorum', 'classic'].includes(cfg.queueType))
    throw new ConfigError('AMEBO_QUEUE_TYPE must be quorum or classic');
  if (!['BACKWARD', 'FORWARD', 'FULL', 'NONE'].includes(cfg.compatibility))
    throw new ConfigError('AMEBO_SCHEMA_COMPATIBILITY must be BACKWARD, FORWARD, FULL or NONE');
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(cfg.prefix)) throw new ConfigError('AMEBO_PREFIX must match [A-Za-z0-9_.-]{1,64}');
  parseAddress(cfg.address);
  const roles = cfg.roles
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  for (const r of roles)
    if (!(ROLES as readonly string[]).includes(r))
      throw new ConfigError(`unknown role "${r}" (roles: ${ROLES.join(', ')})`);
  cfg.roleSet = new Set(roles as Role[]);
  cfg.redis = new RedisNames(cfg.prefix);
  return cfg;
}

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(address) ?? /^()()(\d{1,5})$/.exec(address);
  if (!m) throw new ConfigError(`address must be HOST:PORT, got "${address}"`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`port out of range in "${address}"`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

/** Lines for `amebo config --help` and the README's configuration table. */
/**
 * The environment variables of the Python amqp-fabric (its names, not ours), read here so that a
 * service built on `amebo/fabric` picks the same exchanges as a Python service beside it.
 */
export function fabricEnv(env: NodeJS.ProcessEnv = process.env): {
  discoveryExchange?: string;
  dataExchangeSuffix?: string;
} {
  return {
    ...(env.DISCOVERY_EXCHANGE_NAME ? { discoveryExchange: env.DISCOVERY_EXCHANGE_NAME } : {}),
    ...(env.DATA_EXCHANGE_NAME ? { dataExchangeSuffix: env.DATA_EXCHANGE_NAME } : {}),
  };
}

/** Options whose value is a credential: `amebo config` says whether they are set, not what they are. */
const SECRET_OPTIONS = new Set(['adminToken', 'secretKey', 'previousSecretKeys', 'metricsToken']);
/** Options holding a URL that may carry a password. */
const URL_OPTIONS = new Set(['amqpUrl', 'databaseUrl', 'redisUrl']);

export interface EffectiveOption {
  option: string;
  env: string;
  value: unknown;
  source: 'default' | 'env' | 'flag';
  doc: string;
  /** `secret`: a credential (print whether it is set); `url`: may carry credentials (redact them). */
  kind?: 'secret' | 'url';
}

/**
 * The value in effect of every option and where it came from, after the same parsing and checks
 * as `serve` (a bad value throws ConfigError). `flags` are CLI flags named by their variable.
 */
export function effectiveOptions(
  flags: Record<string, string | undefined> = {},
  env: NodeJS.ProcessEnv = process.env,
): EffectiveOption[] {
  const cfg = configWithFlags(flags, env);
  return (Object.entries(OPTIONS) as [keyof Options, OptionSpec<unknown>][]).map(([key, spec]) => ({
    option: key,
    env: spec.env,
    value: cfg[key],
    source:
      flags[spec.env] !== undefined ? 'flag' : env[spec.env] !== undefined && env[spec.env] !== '' ? 'env' : 'default',
    doc: spec.doc,
    ...(SECRET_OPTIONS.has(key) ? { kind: 'secret' as const } : URL_OPTIONS.has(key) ? { kind: 'url' as const } : {}),
  }));
}

/** A config from CLI flags (named by their environment variable) over the environment: same parsing and checks. */
export function configWithFlags(
  flags: Record<string, string | undefined>,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const merged: NodeJS.ProcessEnv = { ...env };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) merged[k] = v;
  return loadConfig({}, merged);
}
