import type { ValidateFunction } from 'ajv';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { AmeboError } from './errors.js';
import type { Logger } from './log.js';
import { compatibilityProblems, compileSchema, normalizeSchema, type Compatibility } from './schema.js';
import { hashSecret, newSecret, newSigningSecret, SecretBox, sha256, verifySecret } from './secrets.js';
import type { Pool } from './store/db.js';
import * as sql from './store/registry.js';
import type { TopologySubscription } from './broker/topology.js';
import { uuidv7 } from './ids.js';

export const NAME = {
  application: /^[a-z0-9][a-z0-9._-]{0,62}$/,
  action: /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
  subscription: /^[a-z0-9][a-z0-9_-]{0,62}$/,
  pattern: /^(?:[A-Za-z0-9_-]+|\*|#)(?:\.(?:[A-Za-z0-9_-]+|\*|#))*$/,
} as const;

const CACHE_TTL_MS = 30_000;

interface CachedAction {
  row: sql.ActionRow;
  validate: ValidateFunction;
  at: number;
}

/**
 * The registry's rules over its SQL: names, secrets, schemas and their versions, subscription
 * settings. Hot lookups (an application's secret check, an action's compiled validator) are
 * cached per process and invalidated across API nodes through Redis pub/sub, with a TTL as a
 * safety net when a message is missed.
 */
export class Registry {
  readonly pool: Pool;
  readonly box: SecretBox;
  private readonly cfg: Config;
  private readonly log: Logger;
  private readonly apps = new Map<string, { row: sql.ApplicationRow | null; at: number }>();
  private readonly verified = new Map<string, number>();
  private readonly actions = new Map<string, CachedAction>();
  private redis: Redis | null = null;
  private readonly channel: string;

  constructor(pool: Pool, box: SecretBox, cfg: Config, log: Logger) {
    this.pool = pool;
    this.box = box;
    this.cfg = cfg;
    this.log = log;
    this.channel = `${cfg.redisPrefix}registry`;
  }

  /** Listens for invalidations from other nodes on a dedicated subscriber connection. */
  async attachRedis(pub: Redis): Promise<void> {
    this.redis = pub;
    const sub = pub.duplicate();
    sub.on('error', () => undefined);
    sub.on('message', (_ch: string, msg: string) => this.drop(msg));
    await sub
      .subscribe(this.channel)
      .catch((err: unknown) =>
        this.log.warn({ err: (err as Error).message }, 'registry invalidation channel unavailable'),
      );
    this.subscriber = sub;
  }
  private subscriber: Redis | null = null;

  async close(): Promise<void> {
    this.subscriber?.disconnect();
  }

  private drop(key: string): void {
    const [kind, name] = key.split(':', 2) as [string, string];
    if (kind === 'app') this.apps.delete(name);
    if (kind === 'action') this.actions.delete(name);
  }

  private invalidate(key: string): void {
    this.drop(key);
    this.redis?.publish(this.channel, key).catch(() => undefined);
  }

  // ---------------------------------------------------------------- applications

  async createApplication(input: { application: string; address?: string | null; secret?: string }) {
    const name = input.application;
    if (!NAME.application.test(name))
      throw new AmeboError('VALIDATION', 'application must match ^[a-z0-9][a-z0-9._-]{0,62}$', [
        { instancePath: '/application', message: 'invalid name' },
      ]);
    const address = input.address ? checkUrl(input.address, '/address') : null;
    const secret = input.secret ?? newSecret();
    if (secret.length < 16)
      throw new AmeboError('VALIDATION', 'secret must be at least 16 characters', [
        { instancePath: '/secret', message: 'too short' },
      ]);
    try {
      const row = await sql.insertApplication(this.pool, name, address, await hashSecret(secret));
      this.invalidate(`app:${name}`);
      return { row, secret };
    } catch (err) {
      if (err instanceof sql.UniqueViolation) throw new AmeboError('NAME_TAKEN', `application "${name}" exists`);
      throw err;
    }
  }

  async getApplication(name: string): Promise<sql.ApplicationRow | null> {
    const c = this.apps.get(name);
    if (c && Date.now() - c.at < CACHE_TTL_MS) return c.row;
    const row = await sql.getApplication(this.pool, name);
    this.apps.set(name, { row, at: Date.now() });
    return row;
  }

  async requireApplication(name: string): Promise<sql.ApplicationRow> {
    const row = await this.getApplication(name);
    if (!row) throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
    return row;
  }

  /** True when `secret` is the application's; successful checks are cached against the stored hash. */
  async authenticate(name: string, secret: string): Promise<boolean> {
    const row = await this.getApplication(name);
    if (!row) return false;
    const key = `${row.secret_hash}\u0000${sha256(secret)}`;
    const at = this.verified.get(key);
    if (at !== undefined && Date.now() - at < 10 * CACHE_TTL_MS) return true;
    // Single flight: a burst of requests with the same new credentials runs scrypt once.
    let p = this.verifying.get(key);
    if (!p) {
      p = verifySecret(secret, row.secret_hash).finally(() => this.verifying.delete(key));
      this.verifying.set(key, p);
    }
    if (!(await p)) return false;
    if (this.verified.size > 10_000) this.verified.clear();
    this.verified.set(key, Date.now());
    return true;
  }
  private readonly verifying = new Map<string, Promise<boolean>>();

  async rotateApplicationSecret(name: string, secret?: string): Promise<string> {
    const s = secret ?? newSecret();
    if (s.length < 16) throw new AmeboError('VALIDATION', 'secret must be at least 16 characters');
    const row = await sql.updateApplication(this.pool, name, { secret_hash: await hashSecret(s) });
    if (!row) throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
    this.invalidate(`app:${name}`);
    return s;
  }

  async updateApplication(name: string, address: string | null): Promise<sql.ApplicationRow> {
    const row = await sql.updateApplication(this.pool, name, {
      address: address ? checkUrl(address, '/address') : null,
    });
    if (!row) throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
    this.invalidate(`app:${name}`);
    return row;
  }

  async deleteApplication(name: string): Promise<boolean> {
    const subs = await sql.listSubscriptions(this.pool, { application: name });
    const actions = await sql.listActions(this.pool, { application: name });
    const ok = await sql.deleteApplication(this.pool, name);
    this.invalidate(`app:${name}`);
    for (const a of actions) this.invalidate(`action:${a.name}`);
    this.lastDeletedSubscriptions = subs;
    return ok;
  }
  /** Subscriptions removed with the last deleted application (their queues are the caller's to delete). */
  lastDeletedSubscriptions: sql.SubscriptionRow[] = [];

  // ---------------------------------------------------------------- actions

  async createAction(input: { action: string; application: string; schemata: unknown; description?: string | null }) {
    if (!NAME.action.test(input.action) || input.action.length > 255)
      throw new AmeboError('VALIDATION', 'action must be dotted segments of [A-Za-z0-9_-], at most 255 characters', [
        { instancePath: '/action', message: 'invalid name' },
      ]);
    await this.requireApplication(input.application);
    const schema = normalizeSchema(input.schemata ?? {}, this.cfg.maxSchemaBytes);
    compileSchema(schema);
    try {
      const row = await sql.insertAction(this.pool, {
        name: input.action,
        application: input.application,
        description: input.description ?? null,
        schemata: schema,
      });
      this.invalidate(`action:${row.name}`);
      return row;
    } catch (err) {
      if (err instanceof sql.UniqueViolation) throw new AmeboError('NAME_TAKEN', `action "${input.action}" exists`);
      throw err;
    }
  }

  /** The action with its compiled validator (cached per version). */
  async getAction(name: string): Promise<CachedAction | null> {
    const c = this.actions.get(name);
    if (c && Date.now() - c.at < CACHE_TTL_MS) return c;
    const row = await sql.getAction(this.pool, name);
    if (!row) return null;
    const entry = {
      row,
      validate: c && c.row.version === row.version ? c.validate : compileSchema(row.schemata),
      at: Date.now(),
    };
    this.actions.set(name, entry);
    return entry;
  }

  async requireAction(name: string): Promise<CachedAction> {
    const a = await this.getAction(name);
    if (!a) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
    return a;
  }

  async updateSchema(name: string, schemata: unknown, mode?: Compatibility): Promise<sql.ActionRow> {
    const current = await sql.getAction(this.pool, name);
    if (!current) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
    const schema = normalizeSchema(schemata, this.cfg.maxSchemaBytes);
    compileSchema(schema);
    const problems = compatibilityProblems(current.schemata, schema, mode ?? (this.cfg.compatibility as Compatibility));
    if (problems.length)
      throw new AmeboError(
        'SCHEMA_INCOMPATIBLE',
        `the new schema breaks ${mode ?? this.cfg.compatibility} compatibility with version ${current.version}`,
        problems.map((p) => ({ message: p })),
      );
    const row = await sql.addActionVersion(this.pool, name, current.version, schema);
    if (!row) throw new AmeboError('CONFLICT', 'the schema was updated concurrently; retry');
    this.invalidate(`action:${name}`);
    return row;
  }

  // ---------------------------------------------------------------- subscriptions

  async createSubscription(input: SubscriptionInput): Promise<{ row: sql.SubscriptionRow; signingSecret: string }> {
    if (!NAME.subscription.test(input.subscription))
      throw new AmeboError('VALIDATION', 'subscription must match ^[a-z0-9][a-z0-9_-]{0,62}$', [
        { instancePath: '/subscription', message: 'invalid name' },
      ]);
    if (!NAME.pattern.test(input.action) || input.action.length > 255)
      throw new AmeboError('VALIDATION', 'action must be an action name or a topic pattern (segments, * or #)', [
        { instancePath: '/action', message: 'invalid action or pattern' },
      ]);
    const app = await this.requireApplication(input.application);
    if (!input.action.includes('*') && !input.action.includes('#')) await this.requireAction(input.action);
    const transport = input.transport ?? 'http';
    let handler: string | null = null;
    if (transport === 'http') {
      if (!input.handler)
        throw new AmeboError('VALIDATION', 'handler is required for http subscriptions', [
          { instancePath: '/handler', message: 'required' },
        ]);
      handler = resolveHandler(input.handler, app.address);
    }
    const signingSecret = newSigningSecret();
    const s = this.settings(input);
    try {
      const row = await sql.insertSubscription(this.pool, {
        id: uuidv7(),
        application: input.application,
        name: input.subscription,
        action: input.action,
        transport,
        handler,
        ...s,
        ordered: input.ordered ?? false,
        signing_secrets: [{ sealed: this.box.seal(signingSecret), expires_at: null }],
      });
      return { row, signingSecret };
    } catch (err) {
      if (err instanceof sql.UniqueViolation)
        throw new AmeboError('NAME_TAKEN', `subscription "${input.subscription}" of "${input.application}" exists`);
      throw err;
    }
  }

  settings(input: Partial<SubscriptionInput>) {
    const schedule = input.retry_schedule ?? this.cfg.retrySchedule;
    if (
      !Array.isArray(schedule) ||
      schedule.length === 0 ||
      schedule.length > 50 ||
      schedule.some((n) => !(n > 0 && n <= 7 * 86400))
    )
      throw new AmeboError('VALIDATION', 'retry_schedule must be 1 to 50 delays in seconds, each in (0, 604800]');
    let key: string | null = null;
    if (input.encryption_key) {
      const raw = Buffer.from(input.encryption_key, 'base64');
      if (raw.length !== 32)
        throw new AmeboError('VALIDATION', 'encryption_key must be 32 bytes, base64', [
          { instancePath: '/encryption_key', message: 'not 32 bytes' },
        ]);
      key = this.box.seal(input.encryption_key);
    }
    return {
      max_attempts: input.max_attempts ?? this.cfg.maxAttempts,
      max_age: input.max_age ?? this.cfg.maxAgeSeconds,
      retry_schedule: schedule.map((n) => Math.round(n)),
      timeout_ms: input.timeout_ms ?? this.cfg.deliveryTimeoutMs,
      format: input.format ?? 'amebo',
      encryption_key: key,
      rate_limit: input.rate_limit ?? null,
      description: input.description ?? null,
    };
  }

  /** Signing secrets in force: the newest first, then old ones still inside their grace period. */
  signingSecrets(row: sql.SubscriptionRow): string[] {
    const now = Date.now();
    return row.signing_secrets
      .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now)
      .map((s) => this.box.open(s.sealed))
      .reverse();
  }

  topologyOf(row: sql.SubscriptionRow): TopologySubscription {
    return {
      application: row.application,
      name: row.name,
      patterns: [row.action],
      ordered: row.ordered,
      retryDelaysMs: row.retry_schedule.map((s) => s * 1000),
    };
  }
}

export interface SubscriptionInput {
  application: string;
  subscription: string;
  action: string;
  handler?: string;
  transport?: 'http' | 'amqp';
  max_attempts?: number;
  max_age?: number;
  retry_schedule?: number[];
  timeout_ms?: number;
  format?: 'amebo' | 'cloudevents';
  encryption_key?: string;
  ordered?: boolean;
  rate_limit?: number;
  description?: string;
}

export function checkUrl(s: string, pointer: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new AmeboError('VALIDATION', `${pointer.slice(1)} must be an absolute http(s) URL`, [
      { instancePath: pointer, message: 'not a URL' },
    ]);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new AmeboError('VALIDATION', `${pointer.slice(1)} must use http or https`, [
      { instancePath: pointer, message: 'not http(s)' },
    ]);
  return u.toString();
}

/** A handler may be absolute or a path relative to the application's address. */
export function resolveHandler(handler: string, address: string | null): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(handler)) return checkUrl(handler, '/handler');
  if (!address)
    throw new AmeboError('VALIDATION', 'handler is relative but the application has no address', [
      { instancePath: '/handler', message: 'relative without address' },
    ]);
  return checkUrl(
    new URL(handler, address.endsWith('/') || handler.startsWith('/') ? address : address + '/').toString(),
    '/handler',
  );
}
