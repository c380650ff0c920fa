import type { Channel } from 'amqplib';
import type { ValidateFunction } from 'ajv';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { AmeboError } from './errors.js';
import type { Logger } from './log.js';
import { compatibilityProblems, normalizeSchema, type Compatibility } from './schema.js';
import { SchemaCompiler } from './schema-compiler.js';
import { hashSecret, newSecret, newSigningSecret, SecretBox, sha256, verifySecret } from './secrets.js';
import type { Pool } from './store/db.js';
import * as sql from './store/registry.js';
import type { Topology, TopologySubscription } from './broker/topology.js';
import type { Broker } from './broker/connection.js';
import { uuidv7 } from './ids.js';
import { TargetForbiddenError, TargetPolicy } from './targets.js';
import { backtracks, BINDING_PATTERN_RULES, isBindablePattern, isWildcard, topicMatcher } from './delivery/topic.js';

export const NAME = {
  application: /^[a-z0-9][a-z0-9._-]{0,62}$/,
  action: /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
  subscription: /^[a-z0-9][a-z0-9_-]{0,62}$/,
} as const;

const CACHE_TTL_MS = 30_000;

/** Grace period during which a rotated-out signing secret still signs (both signatures are sent). */
export const ROTATION_GRACE_MS = 24 * 3600_000;

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
  /** application + sha256(secret) of credentials verified, and when (see `recentlyVerified`). */
  private readonly verifiedNames = new Map<string, number>();
  private readonly actions = new Map<string, CachedAction>();
  /** Schemas compile on a worker thread, never on the event loop (see SchemaCompiler). */
  private readonly compiler: SchemaCompiler;
  /** Validators being compiled for `getAction`, by `name@version`: concurrent misses share one. */
  private readonly compiling = new Map<string, Promise<ValidateFunction>>();
  private redis: Redis | null = null;
  private readonly channel: string;
  /** Which addresses webhooks may reach (registration here, connect time in the bridge). */
  readonly targets: TargetPolicy;

  constructor(pool: Pool, box: SecretBox, cfg: Config, log: Logger) {
    this.pool = pool;
    this.box = box;
    this.cfg = cfg;
    this.log = log;
    this.channel = cfg.redis.registryChannel;
    this.targets = new TargetPolicy({ block: cfg.blockPrivateTargets, allowed: cfg.allowedTargets });
    this.compiler = new SchemaCompiler({
      timeoutMs: cfg.schemaCompileMs,
      maxCodeBytes: cfg.maxValidatorBytes,
      logger: log,
    });
  }

  /** Starts the schema compiler's worker ahead of the first compile (see `SchemaCompiler.warm`). */
  warmSchemas(): Promise<void> {
    return this.compiler.warm();
  }

  /** 422 TARGET_FORBIDDEN when a handler URL reaches (or resolves to) an address the policy refuses. */
  async checkTarget(handler: string): Promise<void> {
    try {
      await this.targets.checkUrl(new URL(handler));
    } catch (err) {
      if (!(err instanceof TargetForbiddenError)) throw err;
      throw new AmeboError(
        'TARGET_FORBIDDEN',
        `${err.message}: webhook targets on private networks are refused (AMEBO_ALLOWED_TARGETS exempts known ones)`,
        [{ instancePath: '/handler', address: err.address, range: err.range }],
      );
    }
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
    await this.compiler.close();
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

  async createApplication(input: {
    application: string;
    address?: string | null;
    secret?: string;
    rpc_grants?: string[];
  }) {
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
      const grants = checkGrants(input.rpc_grants ?? []);
      const row = await sql.insertApplication(this.pool, name, address, await hashSecret(secret), grants);
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

  /**
   * True when `secret` is the application's; successful checks are cached against the stored hash.
   * An unknown application costs the same scrypt as a wrong secret, so timing does not tell which
   * application names exist.
   */
  async authenticate(name: string, secret: string): Promise<boolean> {
    const row = await this.getApplication(name);
    const stored = row?.secret_hash ?? (await this.decoyHash());
    const key = `${stored}\u0000${sha256(secret)}`;
    const at = this.verified.get(key);
    if (row && at !== undefined && Date.now() - at < 10 * CACHE_TTL_MS) return true;
    // Single flight: a burst of requests with the same new credentials runs scrypt once.
    let p = this.verifying.get(key);
    if (!p) {
      p = verifySecret(secret, stored).finally(() => this.verifying.delete(key));
      this.verifying.set(key, p);
    }
    if (!(await p) || !row) return false;
    if (this.verified.size > 10_000) this.verified.clear();
    if (this.verifiedNames.size > 10_000) this.verifiedNames.clear();
    this.verified.set(key, Date.now());
    this.verifiedNames.set(`${name}\u0000${sha256(secret)}`, Date.now());
    return true;
  }

  /**
   * True when these exact credentials were verified recently (no scrypt): a cache lookup while the
   * application's row is cached. A verified entry is renewed each time it admits a request, so
   * credentials in steady use stay known as long as the stored secret is the one they match.
   */
  knownGood(name: string, secret: string): boolean {
    const c = this.apps.get(name);
    const row = c && Date.now() - c.at < CACHE_TTL_MS ? c.row : null;
    if (!row) return false;
    return this.renew(`${row.secret_hash}\u0000${sha256(secret)}`);
  }

  /**
   * Where `knownGood` said no because the row's cache entry expired or was invalidated: credentials
   * this process verified recently are checked against the row read again (no scrypt). Only
   * credentials that were verified before cost that read, so a guesser cannot use it to reach the
   * database.
   */
  async recentlyVerified(name: string, secret: string): Promise<boolean> {
    const digest = sha256(secret);
    const seen = this.verifiedNames.get(`${name}\u0000${digest}`);
    if (seen === undefined || Date.now() - seen >= 10 * CACHE_TTL_MS) return false;
    const row = await this.getApplication(name);
    return row !== null && this.renew(`${row.secret_hash}\u0000${digest}`);
  }

  /** Whether a verified entry is fresh; if so, it is renewed. */
  private renew(key: string): boolean {
    const at = this.verified.get(key);
    if (at === undefined || Date.now() - at >= 10 * CACHE_TTL_MS) return false;
    this.verified.set(key, Date.now());
    return true;
  }

  private decoy: Promise<string> | null = null;
  private decoyHash(): Promise<string> {
    return (this.decoy ??= hashSecret(newSecret()));
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

  /** Changes an application's address and/or its RPC grants (the caller checked who may). */
  async updateApplication(
    name: string,
    fields: { address?: string | null; rpc_grants?: string[] },
  ): Promise<sql.ApplicationRow> {
    const row = await sql.updateApplication(this.pool, name, {
      ...('address' in fields ? { address: fields.address ? checkUrl(fields.address, '/address') : null } : {}),
      ...(fields.rpc_grants ? { rpc_grants: checkGrants(fields.rpc_grants) } : {}),
    });
    if (!row) throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
    this.invalidate(`app:${name}`);
    return row;
  }

  /** True when the application holds a grant for `domain.type.method` (the RPC gateway). */
  async rpcAllowed(application: string, domain: string, type: string, method: string): Promise<boolean> {
    const row = await this.getApplication(application);
    if (!row) return false;
    const want = [domain, type, method];
    return row.rpc_grants.some((g) => g.split('.').every((seg, i) => seg === '*' || seg === want[i]));
  }

  async listApplications(q?: string): Promise<sql.ApplicationRow[]> {
    return sql.listApplications(this.pool, q);
  }

  /**
   * Deletes an application with its actions and subscriptions, and the subscriptions' queues.
   * Returns what it deleted (null: no such application), decided in one transaction, so two
   * concurrent calls never see or clean up each other's rows.
   */
  async deleteApplication(name: string): Promise<sql.DeletedApplication | null> {
    const deleted = await sql.deleteApplication(this.pool, name);
    this.invalidate(`app:${name}`);
    if (!deleted) return null;
    for (const a of deleted.actions) this.invalidate(`action:${a}`);
    for (const s of deleted.subscriptions) {
      await this.removeQueues(s.application, s.name);
      await this.announceSubscription(s.id);
    }
    return deleted;
  }

  // ---------------------------------------------------------------- actions

  async createAction(input: {
    action: string;
    application: string;
    schemata: unknown;
    description?: string | null;
    subscribers?: string[] | null;
  }) {
    if (!NAME.action.test(input.action) || input.action.length > 255)
      throw new AmeboError('VALIDATION', 'action must be dotted segments of [A-Za-z0-9_-], at most 255 characters', [
        { instancePath: '/action', message: 'invalid name' },
      ]);
    await this.requireApplication(input.application);
    const schema = normalizeSchema(input.schemata ?? {}, this.cfg.maxSchemaBytes);
    await this.compiler.compile(schema);
    try {
      const row = await sql.insertAction(this.pool, {
        name: input.action,
        application: input.application,
        description: input.description ?? null,
        subscribers: checkSubscribers(input.subscribers),
        schemata: schema,
      });
      this.invalidate(`action:${row.name}`);
      if (row.subscribers) await this.rebindRestricted(row);
      return row;
    } catch (err) {
      if (err instanceof sql.UniqueViolation) throw new AmeboError('NAME_TAKEN', `action "${input.action}" exists`);
      if (err instanceof sql.MissingReference)
        throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${input.application}"`);
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
      validate: c && c.row.version === row.version ? c.validate : await this.validator(row),
      at: Date.now(),
    };
    this.actions.set(name, entry);
    return entry;
  }

  private validator(row: sql.ActionRow): Promise<ValidateFunction> {
    const key = `${row.name}@${row.version}`;
    let p = this.compiling.get(key);
    if (!p) {
      p = this.compiler.compile(row.schemata, true).finally(() => this.compiling.delete(key));
      this.compiling.set(key, p);
    }
    return p;
  }

  async listActions(f: { application?: string; q?: string }): Promise<sql.ActionRow[]> {
    return sql.listActions(this.pool, f);
  }

  /** Every schema version of an action, oldest first (404 when there is no such action). */
  async listActionVersions(name: string): Promise<{ version: number; schemata: unknown; created_at: Date }[]> {
    await this.requireAction(name);
    return sql.listActionVersions(this.pool, name);
  }

  async requireAction(name: string): Promise<CachedAction> {
    const a = await this.getAction(name);
    if (!a) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
    return a;
  }

  /**
   * Changes who may subscribe to an action (null: everyone) or its description. Subscriptions whose
   * pattern matches it are bound to it on the restricted exchange, or unbound, to match.
   */
  async updateAction(
    name: string,
    fields: { subscribers?: string[] | null; description?: string | null },
  ): Promise<sql.ActionRow> {
    const patch: { subscribers?: string[] | null; description?: string | null } = {};
    if ('subscribers' in fields) patch.subscribers = checkSubscribers(fields.subscribers);
    if ('description' in fields) patch.description = fields.description ?? null;
    const row = await sql.updateAction(this.pool, name, patch);
    if (!row) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
    this.invalidate(`action:${name}`);
    if ('subscribers' in fields) await this.rebindRestricted(row);
    return row;
  }

  /**
   * Deletes an action with its schema versions. Refused (409 CONFLICT, the subscriptions in the
   * details) while a subscription names it exactly: deleting would leave it bound to a name no
   * producer can publish, silently. Topic patterns that match it are not references and do not
   * block. Stored events keep their action name (no foreign key: the log is history, not registry).
   * Null when there was no such action.
   */
  async deleteAction(name: string): Promise<sql.ActionRow | null> {
    const r = await sql.deleteAction(this.pool, name);
    if (r === null) return null;
    if ('subscribedBy' in r)
      throw new AmeboError(
        'CONFLICT',
        `action "${name}" is still subscribed by ${r.subscribedBy
          .slice(0, 5)
          .map((s) => `${s.application}/${s.name}`)
          .join(
            ', ',
          )}${r.subscribedBy.length > 5 ? ` and ${r.subscribedBy.length - 5} more` : ''}: delete those subscriptions first`,
        r.subscribedBy.map((s) => ({ subscription: s.id, name: `${s.application}/${s.name}` })),
      );
    this.invalidate(`action:${name}`);
    // A restricted action had its own bindings (by name) for the patterns that matched it.
    if (r.deleted.subscribers !== null) await this.rebindRestricted(r.deleted, false);
    return r.deleted;
  }

  /** True when `application` may receive events of `action` (the owner, everyone, or listed). */
  async mayReceive(application: string, action: string): Promise<boolean> {
    const a = await this.getAction(action);
    return a !== null && canSubscribe(application, a.row);
  }

  /**
   * The compatibility check a schema update runs, without storing anything: the current version,
   * the normalized new schema, the mode applied and each break (none: a save would be accepted).
   * A schema that is not valid JSON Schema is refused here as on save (422 SCHEMA_INVALID).
   */
  async checkSchema(
    name: string,
    schemata: unknown,
    mode?: Compatibility,
  ): Promise<{ current: sql.ActionRow; schema: unknown; mode: Compatibility; problems: string[] }> {
    const current = await sql.getAction(this.pool, name);
    if (!current) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
    const schema = normalizeSchema(schemata, this.cfg.maxSchemaBytes);
    await this.compiler.compile(schema);
    const applied = mode ?? (this.cfg.compatibility as Compatibility);
    return { current, schema, mode: applied, problems: compatibilityProblems(current.schemata, schema, applied) };
  }

  async updateSchema(name: string, schemata: unknown, mode?: Compatibility): Promise<sql.ActionRow> {
    const { current, schema, mode: applied, problems } = await this.checkSchema(name, schemata, mode);
    if (problems.length)
      throw new AmeboError(
        'SCHEMA_INCOMPATIBLE',
        `the new schema breaks ${applied} compatibility with version ${current.version}`,
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
    await this.checkSubscribable(input.application, input.action);
    const app = await this.requireApplication(input.application);
    const transport = input.transport ?? 'http';
    let handler: string | null = null;
    if (transport === 'http') {
      if (!input.handler)
        throw new AmeboError('VALIDATION', 'handler is required for http subscriptions', [
          { instancePath: '/handler', message: 'required' },
        ]);
      handler = resolveHandler(input.handler, app.address);
      await this.checkTarget(handler);
    }
    const signingSecret = newSigningSecret();
    const s = this.settings(input);
    try {
      const row = await this.underGrant(input.application, input.action, (q) =>
        sql.insertSubscription(q, {
          id: uuidv7(),
          application: input.application,
          name: input.subscription,
          action: input.action,
          transport,
          handler,
          ...s,
          ordered: input.ordered ?? false,
          signing_secrets: [{ sealed: this.box.seal(signingSecret), expires_at: null }],
        }),
      );
      return { row, signingSecret };
    } catch (err) {
      if (err instanceof sql.UniqueViolation)
        throw new AmeboError('NAME_TAKEN', `subscription "${input.subscription}" of "${input.application}" exists`);
      if (err instanceof sql.MissingReference)
        throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${input.application}"`);
      throw err;
    }
  }

  /**
   * Runs `write` (the insert or update that points a subscription of `application` at `pattern`)
   * where it cannot race a revoke: for an exact action, inside a transaction that share-locks the
   * action's row and checks the grant again against it. `checkSubscribable` ran before against the
   * cached action, which another API node may have changed since.
   */
  private async underGrant<T>(
    application: string,
    pattern: string,
    write: (q: sql.Queryable) => Promise<T>,
  ): Promise<T> {
    if (isWildcard(pattern)) return write(this.pool);
    return sql.withActionShared(this.pool, application, pattern, async (client, action) => {
      if (!action) throw new AmeboError('ACTION_NOT_FOUND', `no action "${pattern}"`);
      if (!canSubscribe(application, action))
        throw new AmeboError('FORBIDDEN', `application "${application}" may not subscribe to "${pattern}"`);
      return write(client);
    });
  }

  /**
   * An application may subscribe to a topic pattern, or to an action that exists and lets it
   * subscribe (the owner, everyone, or listed); restricted actions a pattern matches are bound
   * only where allowed (topologyOf). The same rule on create and on a pattern change.
   */
  private async checkSubscribable(application: string, pattern: string): Promise<void> {
    if (!isBindablePattern(pattern))
      throw new AmeboError(
        'VALIDATION',
        `action must be ${BINDING_PATTERN_RULES}: RabbitMQ matches every # of a binding by backtracking`,
        [{ instancePath: '/action', message: 'invalid action or pattern' }],
      );
    if (!isWildcard(pattern)) {
      const action = await this.requireAction(pattern);
      if (!canSubscribe(application, action.row))
        throw new AmeboError('FORBIDDEN', `application "${application}" may not subscribe to "${pattern}"`);
    }
  }

  /**
   * Subscribes: the row, then its queues and bindings (false when RabbitMQ is away: the next
   * reconcile declares them), then a note to every bridge. The signing secret is returned once.
   */
  async subscribe(
    input: SubscriptionInput,
  ): Promise<{ row: sql.SubscriptionRow; signingSecret: string; queueDeclared: boolean }> {
    const { row, signingSecret } = await this.createSubscription(input);
    const queueDeclared = await this.declareQueues(row);
    // Deleted meanwhile (its application was): whoever deleted it removed the queues, maybe before
    // they were declared here, so they go again.
    if (queueDeclared && !(await sql.getSubscription(this.pool, row.id)))
      await this.removeQueues(row.application, row.name);
    await this.announceSubscription(row.id);
    return { row, signingSecret, queueDeclared };
  }

  async getSubscription(id: string): Promise<sql.SubscriptionRow | null> {
    return sql.getSubscription(this.pool, id);
  }

  async getSubscriptionByName(application: string, name: string): Promise<sql.SubscriptionRow | null> {
    return sql.getSubscriptionByName(this.pool, application, name);
  }

  async listSubscriptions(f: { application?: string; action?: string } = {}): Promise<sql.SubscriptionRow[]> {
    return sql.listSubscriptions(this.pool, f);
  }

  /**
   * Changes a subscription's settings: a new handler is resolved against the application's
   * address and checked against the target policy; unchanged settings keep their values; a new
   * retry step gets its queue. Null when the subscription was deleted meanwhile.
   */
  async updateSubscription(row: sql.SubscriptionRow, change: SubscriptionChange): Promise<sql.SubscriptionRow | null> {
    const patch: sql.SubscriptionPatch = {};
    const moving = change.action !== undefined && change.action !== row.action ? change.action : null;
    if (moving !== null) {
      await this.checkSubscribable(row.application, moving);
      patch.action = moving;
    }
    if (change.handler !== undefined) {
      if (row.transport !== 'http')
        throw new AmeboError('VALIDATION', 'amqp subscriptions have no handler', [{ instancePath: '/handler' }]);
      patch.handler = resolveHandler(change.handler, (await this.requireApplication(row.application)).address);
      await this.checkTarget(patch.handler);
    }
    const merged = this.settings({
      max_attempts: change.max_attempts ?? row.max_attempts,
      max_age: change.max_age ?? row.max_age,
      retry_schedule: change.retry_schedule ?? row.retry_schedule,
      timeout_ms: change.timeout_ms ?? row.timeout_ms,
      format: change.format ?? row.format,
      rate_limit: change.rate_limit === undefined ? (row.rate_limit ?? undefined) : (change.rate_limit ?? undefined),
      description:
        change.description === undefined ? (row.description ?? undefined) : (change.description ?? undefined),
      encryption_key: change.encryption_key ?? undefined,
    });
    Object.assign(patch, merged);
    if (change.encryption_key === undefined) delete patch.encryption_key;
    if (change.encryption_key === null) patch.encryption_key = null;
    // A new pattern is bound before the row says so, and the old one unbound only after: an event
    // matching both is never missed (a duplicate at worst, which webhook-id deduplicates).
    if (moving !== null) await this.bindPattern({ ...row, action: moving });
    let updated: sql.SubscriptionRow | null;
    try {
      updated =
        moving !== null
          ? await this.underGrant(row.application, moving, (q) => sql.updateSubscription(q, row.id, patch))
          : await sql.updateSubscription(this.pool, row.id, patch);
    } catch (err) {
      if (moving !== null) await this.unbindPattern({ ...row, action: moving }, row);
      throw err;
    }
    if (!updated) {
      if (moving !== null) await this.removeQueues(row.application, row.name); // deleted meanwhile
      return null;
    }
    if (moving !== null) await this.unbindPattern(row, updated);
    await this.declareQueues(updated); // a new retry step needs its queue
    await this.announceSubscription(row.id);
    return updated;
  }

  /**
   * Binds a subscription's queue to its (new) pattern, and to the restricted actions it matches and
   * may receive. Refused with 503 when RabbitMQ is away: the reconcile on reconnect adds bindings
   * but never removes one, so a pattern change must happen on a live broker or not at all.
   */
  private async bindPattern(next: sql.SubscriptionRow): Promise<void> {
    // The whole declaration, idempotent: also right when the queue was never declared (RabbitMQ away
    // at create), and it unbinds restricted actions the pattern matches but may not receive.
    if (!(await this.declareQueues(next)))
      throw new AmeboError(
        'UNAVAILABLE',
        'RabbitMQ is not connected: a new pattern needs its binding; try again shortly',
      );
  }

  /**
   * Removes what `old`'s pattern bound and `next`'s does not: the old pattern on the events
   * exchange, and restricted actions only the old pattern matched. A failure is logged (the queue
   * then receives the old pattern's events too, until the binding is removed by hand).
   */
  private async unbindPattern(old: sql.SubscriptionRow, next: sql.SubscriptionRow): Promise<void> {
    const { broker, topology } = this;
    if (!topology || !broker) return;
    const restricted = await sql.listRestrictedActions(this.pool);
    const keep = new Set(this.topologyOf(next, restricted).restricted.bind);
    const drop = this.topologyOf(old, restricted).restricted.bind.filter((a) => !keep.has(a));
    const q = topology.subscriptionQueue(old.application, old.name);
    await broker
      .withThrowawayChannel(async (ch) => {
        if (old.action !== next.action) await ch.unbindQueue(q, topology.events, old.action);
        for (const a of drop) await ch.unbindQueue(q, topology.restrictedEvents, a);
      })
      .catch((err: unknown) =>
        this.log.error(
          { err: (err as Error).message, subscription: old.id, pattern: old.action },
          'could not unbind the previous pattern',
        ),
      );
  }

  /** Pauses, or resumes (clearing a disabled reason). Null when the subscription is gone. */
  async setPaused(id: string, paused: boolean): Promise<sql.SubscriptionRow | null> {
    const updated = await sql.updateSubscription(
      this.pool,
      id,
      paused ? { paused } : { paused, disabled_reason: null },
    );
    if (updated) await this.announceSubscription(id);
    return updated;
  }

  /**
   * A new signing secret; the ones in force keep signing for ROTATION_GRACE_MS (both signatures
   * are sent meanwhile). The new secret is returned once, never stored in clear.
   */
  async rotateSigningSecret(
    row: sql.SubscriptionRow,
  ): Promise<{ row: sql.SubscriptionRow; secret: string; previousValidUntil: string | null } | null> {
    const secret = newSigningSecret();
    const now = Date.now();
    const graceUntil = new Date(now + ROTATION_GRACE_MS).toISOString();
    const kept = row.signing_secrets
      .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now)
      .map((s) => ({ sealed: s.sealed, expires_at: s.expires_at ?? graceUntil }));
    const updated = await sql.updateSubscription(this.pool, row.id, {
      signing_secrets: [...kept, { sealed: this.box.seal(secret), expires_at: null }],
    });
    if (!updated) return null;
    await this.announceSubscription(row.id);
    return { row: updated, secret, previousValidUntil: kept.length ? graceUntil : null };
  }

  /** Deletes a subscription and its queues; returns the row it deleted (null: already gone). */
  async deleteSubscription(id: string): Promise<sql.SubscriptionRow | null> {
    const deleted = await sql.deleteSubscription(this.pool, id);
    if (!deleted) return null;
    await this.removeQueues(deleted.application, deleted.name);
    await this.announceSubscription(id);
    return deleted;
  }

  /** Tells bridge workers (all processes) that a subscription changed (best effort). */
  private async announceSubscription(id: string): Promise<void> {
    await this.redis?.publish(this.cfg.redis.subscriptionsChannel, id).catch(() => undefined);
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

  /**
   * How a subscription is bound. Events of actions that name their subscribers go to the restricted
   * exchange, where a subscription is bound to each such action by name, only when it may receive
   * it: the broker itself keeps them out of every other queue, native AMQP consumers included.
   */
  topologyOf(row: sql.SubscriptionRow, restricted: sql.RestrictedAction[]): TopologySubscription {
    const matches = topicMatcher(row.action);
    const bind: string[] = [];
    const unbind: string[] = [];
    for (const a of restricted) if (matches(a.name)) (canSubscribe(row.application, a) ? bind : unbind).push(a.name);
    // A pattern stored before the API refused more than one `#` would make RabbitMQ backtrack on
    // every publish (TOPIC_LIMITS): it is unbound, not bound, until its owner changes it. (Other
    // limits that came later, such as 32 segments, cost the broker nothing: those stay bound.)
    const bindable = !backtracks(row.action);
    return {
      application: row.application,
      name: row.name,
      patterns: bindable ? [row.action] : [],
      ...(bindable ? {} : { unboundPatterns: [row.action] }),
      restricted: { bind, unbind },
      ordered: row.ordered,
      retryDelaysMs: row.retry_schedule.map((s) => s * 1000),
    };
  }

  /** Every subscription's topology, from the registry (the broker's reconcile on each connect). */
  async topologies(): Promise<TopologySubscription[]> {
    const [subs, restricted] = await Promise.all([
      sql.listSubscriptions(this.pool),
      sql.listRestrictedActions(this.pool),
    ]);
    const unbindable = subs.filter((s) => backtracks(s.action));
    if (unbindable.length)
      this.log.warn(
        { subscriptions: unbindable.map((s) => ({ id: s.id, name: `${s.application}/${s.name}`, pattern: s.action })) },
        `subscriptions whose pattern has more than one # (stored before the limit) are not bound and receive ` +
          `nothing: each would make RabbitMQ backtrack on every publish; change their pattern (PATCH /v1/subscriptions/:id)`,
      );
    return subs.map((s) => this.topologyOf(s, restricted));
  }

  // ---------------------------------------------------------------- broker objects

  private broker: Broker | null = null;
  private topology: Topology | null = null;

  /** The broker the registry declares subscription queues on (set when the core starts). */
  attachBroker(broker: Broker, topology: Topology): void {
    this.broker = broker;
    this.topology = topology;
  }

  /** Declares a subscription's queues and bindings; false when RabbitMQ is away (reconciled later). */
  async declareQueues(row: sql.SubscriptionRow): Promise<boolean> {
    const { broker, topology } = this;
    if (!broker?.connected || !topology) return false;
    try {
      const t = this.topologyOf(row, await sql.listRestrictedActions(this.pool));
      const model = broker.model;
      if (!model) return false;
      const opened: Channel[] = [];
      const open = async (): Promise<Channel> => {
        const ch = await model.createChannel();
        ch.on('error', () => undefined);
        opened.push(ch);
        return ch;
      };
      const legacy: string[] = [];
      try {
        await topology.declareSubscription(await open(), t, open, legacy);
      } finally {
        for (const ch of opened) await ch.close().catch(() => undefined);
      }
      if (legacy.length) this.log.warn({ queues: legacy }, 'queues declared by an older Amebo keep their arguments');
      return true;
    } catch (err) {
      this.log.error({ err: (err as Error).message, subscription: row.id }, 'could not declare subscription queues');
      return false;
    }
  }

  async removeQueues(application: string, name: string): Promise<void> {
    const { broker, topology } = this;
    if (!broker?.connected || !topology) return;
    await broker
      .withThrowawayChannel((ch) => topology.deleteSubscription(ch, application, name))
      .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'could not delete subscription queues'));
  }

  /**
   * Binds (or unbinds) each subscription whose pattern matches `action` on the restricted exchange;
   * `bindable` false unbinds them all (the action is gone).
   */
  private async rebindRestricted(action: sql.ActionRow, bindable = true): Promise<void> {
    const { broker, topology } = this;
    if (!broker?.connected || !topology) return; // the next reconcile does it
    const subs = (await sql.listSubscriptions(this.pool)).filter((s) => topicMatcher(s.action)(action.name));
    await broker
      .withThrowawayChannel(async (ch) => {
        for (const s of subs)
          await topology.bindRestricted(
            ch,
            s.application,
            s.name,
            action.name,
            bindable && action.subscribers !== null && canSubscribe(s.application, action),
          );
      })
      .catch((err: unknown) =>
        this.log.error({ err: (err as Error).message, action: action.name }, 'could not rebind restricted action'),
      );
  }
}

/** The owner, every application when the action names none, or the applications it names. */
export function canSubscribe(application: string, a: { application: string; subscribers: string[] | null }): boolean {
  return a.subscribers === null || a.application === application || a.subscribers.includes(application);
}

const GRANT = /^(?:[A-Za-z0-9_-]{1,63}|\*)\.(?:[A-Za-z0-9_-]{1,63}|\*)\.(?:[A-Za-z_][A-Za-z0-9_]{0,127}|\*)$/;

function checkGrants(grants: string[]): string[] {
  if (!Array.isArray(grants) || grants.length > 100)
    throw new AmeboError('VALIDATION', 'rpc_grants must be a list of at most 100 patterns', [
      { instancePath: '/rpc_grants' },
    ]);
  grants.forEach((g, i) => {
    if (typeof g !== 'string' || !GRANT.test(g))
      throw new AmeboError('VALIDATION', 'each RPC grant is domain.type.method, with * for any one segment', [
        { instancePath: `/rpc_grants/${i}`, message: 'not domain.type.method' },
      ]);
  });
  return [...new Set(grants)];
}

function checkSubscribers(list: string[] | null | undefined): string[] | null {
  if (list === undefined || list === null) return null;
  if (!Array.isArray(list) || list.length > 1000)
    throw new AmeboError('VALIDATION', 'subscribers must be a list of at most 1000 application names', [
      { instancePath: '/subscribers' },
    ]);
  list.forEach((a, i) => {
    if (typeof a !== 'string' || !NAME.application.test(a))
      throw new AmeboError('VALIDATION', 'subscribers must be application names', [
        { instancePath: `/subscribers/${i}`, message: 'invalid name' },
      ]);
  });
  return [...new Set(list)];
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

/** What PATCH may change on a subscription (absent: unchanged; null: cleared where allowed). */
export interface SubscriptionChange {
  /** The action name or topic pattern: the queue is rebound (new binding first). */
  action?: string;
  handler?: string;
  max_attempts?: number;
  max_age?: number;
  retry_schedule?: number[];
  timeout_ms?: number;
  format?: 'amebo' | 'cloudevents';
  encryption_key?: string | null;
  rate_limit?: number | null;
  description?: string | null;
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
