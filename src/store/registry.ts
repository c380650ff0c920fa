import type pg from 'pg';
import type { Pool } from './db.js';

/** A pool, or a client inside a transaction. */
export type Queryable = Pool | pg.PoolClient;

/** All registry SQL: applications, actions and their schema versions, subscriptions, settings. */

export interface ApplicationRow {
  name: string;
  address: string | null;
  secret_hash: string;
  /** RPC methods this application may call through the gateway (`domain.type.method`, `*` per segment). */
  rpc_grants: string[];
  created_at: Date;
  updated_at: Date;
}

export interface ActionRow {
  name: string;
  application: string;
  description: string | null;
  /** Applications allowed to subscribe besides the owner; null: every application. */
  subscribers: string[] | null;
  version: number;
  schemata: Record<string, unknown>;
  created_at: Date;
  updated_at: Date;
}

export interface SubscriptionRow {
  id: string;
  application: string;
  name: string;
  action: string;
  transport: 'http' | 'amqp';
  handler: string | null;
  max_attempts: number;
  max_age: number;
  retry_schedule: number[];
  timeout_ms: number;
  format: 'amebo' | 'cloudevents';
  encryption_key: string | null;
  ordered: boolean;
  rate_limit: number | null;
  description: string | null;
  signing_secrets: { sealed: string; expires_at: string | null }[];
  paused: boolean;
  disabled_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

const isUnique = (err: unknown): boolean => (err as { code?: string }).code === '23505';
const isMissingReference = (err: unknown): boolean => (err as { code?: string }).code === '23503';
export class UniqueViolation extends Error {}
/** A row names a parent that does not exist (anymore): e.g. its application was deleted meanwhile. */
export class MissingReference extends Error {}

export async function getSetting(pool: Pool, key: string): Promise<string | null> {
  const r = await pool.query<{ value: string }>('SELECT value FROM settings WHERE key = $1', [key]);
  return r.rows[0]?.value ?? null;
}

/** Sets a setting only when absent; returns the value that won (first writer wins across processes). */
export async function initSetting(pool: Pool, key: string, value: string): Promise<string> {
  await pool.query('INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
  return (await getSetting(pool, key))!;
}

export async function setSetting(pool: Pool, key: string, value: string): Promise<void> {
  await pool.query(
    'INSERT INTO settings(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now()',
    [key, value],
  );
}

// ---- applications

export async function insertApplication(
  pool: Pool,
  name: string,
  address: string | null,
  secretHash: string,
  rpcGrants: string[] = [],
): Promise<ApplicationRow> {
  try {
    const r = await pool.query<ApplicationRow>(
      'INSERT INTO applications(name, address, secret_hash, rpc_grants) VALUES ($1, $2, $3, $4) RETURNING *',
      [name, address, secretHash, rpcGrants],
    );
    return r.rows[0]!;
  } catch (err) {
    if (isUnique(err)) throw new UniqueViolation(name);
    throw err;
  }
}

export async function getApplication(pool: Pool, name: string): Promise<ApplicationRow | null> {
  const r = await pool.query<ApplicationRow>('SELECT * FROM applications WHERE name = $1', [name]);
  return r.rows[0] ?? null;
}

export async function listApplications(pool: Pool, q?: string): Promise<ApplicationRow[]> {
  const r = await pool.query<ApplicationRow>(
    `SELECT * FROM applications WHERE ($1::text IS NULL OR name ILIKE '%' || $1 || '%') ORDER BY name LIMIT 1000`,
    [q ?? null],
  );
  return r.rows;
}

export async function updateApplication(
  pool: Pool,
  name: string,
  fields: { address?: string | null; secret_hash?: string; rpc_grants?: string[] },
): Promise<ApplicationRow | null> {
  const r = await pool.query<ApplicationRow>(
    `UPDATE applications SET address = CASE WHEN $2 THEN $3 ELSE address END,
       secret_hash = COALESCE($4, secret_hash), rpc_grants = COALESCE($5, rpc_grants), updated_at = now()
     WHERE name = $1 RETURNING *`,
    [name, 'address' in fields, fields.address ?? null, fields.secret_hash ?? null, fields.rpc_grants ?? null],
  );
  return r.rows[0] ?? null;
}

/** What deleting an application removed with it (its actions and subscriptions cascade). */
export interface DeletedApplication {
  application: string;
  actions: string[];
  subscriptions: Pick<SubscriptionRow, 'id' | 'application' | 'name'>[];
}

/**
 * Deletes an application and returns exactly what went with it, in one transaction: the row is
 * locked first, so a subscription or action being inserted for it concurrently either commits
 * before (and is deleted, and returned, here) or fails on the missing application after.
 */
export async function deleteApplication(pool: Pool, name: string): Promise<DeletedApplication | null> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const app = await client.query('SELECT name FROM applications WHERE name = $1 FOR UPDATE', [name]);
    if (!app.rowCount) {
      await client.query('ROLLBACK');
      return null;
    }
    const subs = await client.query<Pick<SubscriptionRow, 'id' | 'application' | 'name'>>(
      'DELETE FROM subscriptions WHERE application = $1 RETURNING id, application, name',
      [name],
    );
    const actions = await client.query<{ name: string }>('DELETE FROM actions WHERE application = $1 RETURNING name', [
      name,
    ]);
    await client.query('DELETE FROM applications WHERE name = $1', [name]);
    await client.query('COMMIT');
    return { application: name, actions: actions.rows.map((a) => a.name), subscriptions: subs.rows };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

// ---- actions

const ACTION_SELECT = `SELECT a.name, a.application, a.description, a.subscribers, a.version, v.schemata, a.created_at, a.updated_at
  FROM actions a JOIN action_versions v ON v.action = a.name AND v.version = a.version`;

export async function insertAction(
  pool: Pool,
  a: { name: string; application: string; description: string | null; subscribers: string[] | null; schemata: unknown },
): Promise<ActionRow> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    // A name used before continues after its last version (see migrations/006): the events stored
    // under it keep their schema_version, which must not come to name another schema.
    await client.query(
      `INSERT INTO actions(name, application, description, subscribers, version)
       VALUES ($1, $2, $3, $4, 1 + coalesce((SELECT last_version FROM action_tombstones WHERE name = $1), 0))`,
      [a.name, a.application, a.description, a.subscribers],
    );
    await client.query(
      'INSERT INTO action_versions(action, version, schemata) SELECT name, version, $2 FROM actions WHERE name = $1',
      [a.name, JSON.stringify(a.schemata)],
    );
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (isUnique(err)) throw new UniqueViolation(a.name);
    if (isMissingReference(err)) throw new MissingReference(a.application);
    throw err;
  } finally {
    client.release();
  }
  return (await getAction(pool, a.name))!;
}

export async function getAction(pool: Pool, name: string): Promise<ActionRow | null> {
  const r = await pool.query<ActionRow>(`${ACTION_SELECT} WHERE a.name = $1`, [name]);
  return r.rows[0] ?? null;
}

export async function listActions(pool: Pool, f: { application?: string; q?: string }): Promise<ActionRow[]> {
  const r = await pool.query<ActionRow>(
    `${ACTION_SELECT} WHERE ($1::text IS NULL OR a.application = $1)
       AND ($2::text IS NULL OR a.name ILIKE '%' || $2 || '%' OR a.description ILIKE '%' || $2 || '%')
     ORDER BY a.name LIMIT 1000`,
    [f.application ?? null, f.q ?? null],
  );
  return r.rows;
}

/** Changes who may subscribe (null: everyone) and/or the description. */
export async function updateAction(
  pool: Pool,
  name: string,
  fields: { subscribers?: string[] | null; description?: string | null },
): Promise<ActionRow | null> {
  const r = await pool.query(
    `UPDATE actions SET subscribers = CASE WHEN $2 THEN $3::text[] ELSE subscribers END,
       description = CASE WHEN $4 THEN $5 ELSE description END, updated_at = now()
     WHERE name = $1`,
    [name, 'subscribers' in fields, fields.subscribers ?? null, 'description' in fields, fields.description ?? null],
  );
  return r.rowCount ? getAction(pool, name) : null;
}

/**
 * Deletes an action with its schema versions (they cascade) and keeps its last version number (a
 * tombstone: the name registered again continues after it), unless a subscription names it
 * exactly: then nothing is deleted and those subscriptions are returned. The action row is locked
 * first, so a concurrent schema update or delete waits for this decision. Null: no such action.
 */
export async function deleteAction(
  pool: Pool,
  name: string,
): Promise<{ deleted: ActionRow } | { subscribedBy: Pick<SubscriptionRow, 'id' | 'application' | 'name'>[] } | null> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const found = await client.query<ActionRow>(`${ACTION_SELECT} WHERE a.name = $1 FOR UPDATE OF a`, [name]);
    const row = found.rows[0];
    if (!row) {
      await client.query('ROLLBACK');
      return null;
    }
    const subs = await client.query<Pick<SubscriptionRow, 'id' | 'application' | 'name'>>(
      'SELECT id, application, name FROM subscriptions WHERE action = $1 ORDER BY application, name',
      [name],
    );
    if (subs.rowCount) {
      await client.query('ROLLBACK');
      return { subscribedBy: subs.rows };
    }
    await client.query('DELETE FROM actions WHERE name = $1', [name]);
    await client.query(
      `INSERT INTO action_tombstones(name, last_version) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET last_version = greatest(action_tombstones.last_version, excluded.last_version),
                                        deleted_at = now()`,
      [name, row.version],
    );
    await client.query('COMMIT');
    return { deleted: row };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Actions that name their subscribers: the ones routed through the restricted exchange. */
export async function listRestrictedActions(pool: Pool): Promise<RestrictedAction[]> {
  const r = await pool.query<RestrictedAction>(
    'SELECT name, application, subscribers FROM actions WHERE subscribers IS NOT NULL',
  );
  return r.rows;
}

export interface RestrictedAction {
  name: string;
  application: string;
  subscribers: string[];
}

/** Every sealed value, for `amebo rotate-key`. */
export async function resealSubscriptions(
  pool: Pool,
  reseal: (sealed: string) => string,
): Promise<{ rows: number; changed: number }> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const r = await client.query<Pick<SubscriptionRow, 'id' | 'signing_secrets' | 'encryption_key'>>(
      'SELECT id, signing_secrets, encryption_key FROM subscriptions ORDER BY id FOR UPDATE',
    );
    let changed = 0;
    for (const row of r.rows) {
      const secrets = row.signing_secrets.map((s) => ({ ...s, sealed: reseal(s.sealed) }));
      const key = row.encryption_key === null ? null : reseal(row.encryption_key);
      if (JSON.stringify(secrets) === JSON.stringify(row.signing_secrets) && key === row.encryption_key) continue;
      await client.query('UPDATE subscriptions SET signing_secrets = $2, encryption_key = $3 WHERE id = $1', [
        row.id,
        JSON.stringify(secrets),
        key,
      ]);
      changed++;
    }
    await client.query('COMMIT');
    return { rows: r.rows.length, changed };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export async function deleteSetting(pool: Pool, key: string): Promise<void> {
  await pool.query('DELETE FROM settings WHERE key = $1', [key]);
}

/** Adds a schema version, guarded by the version the caller checked compatibility against. */
export async function addActionVersion(
  pool: Pool,
  name: string,
  expectedVersion: number,
  schemata: unknown,
): Promise<ActionRow | null> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const r = await client.query(
      'UPDATE actions SET version = version + 1, updated_at = now() WHERE name = $1 AND version = $2 RETURNING version',
      [name, expectedVersion],
    );
    if (!r.rowCount) {
      await client.query('ROLLBACK');
      return null;
    }
    await client.query('INSERT INTO action_versions(action, version, schemata) VALUES ($1, $2, $3)', [
      name,
      (r.rows[0] as { version: number }).version,
      JSON.stringify(schemata),
    ]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  return getAction(pool, name);
}

export async function listActionVersions(
  pool: Pool,
  name: string,
): Promise<{ version: number; schemata: unknown; created_at: Date }[]> {
  const r = await pool.query(
    'SELECT version, schemata, created_at FROM action_versions WHERE action = $1 ORDER BY version',
    [name],
  );
  return r.rows;
}

// ---- subscriptions

export type NewSubscription = Omit<SubscriptionRow, 'created_at' | 'updated_at' | 'paused' | 'disabled_reason'>;

export async function insertSubscription(pool: Queryable, s: NewSubscription): Promise<SubscriptionRow> {
  try {
    const r = await pool.query<SubscriptionRow>(
      `INSERT INTO subscriptions(id, application, name, action, transport, handler, max_attempts, max_age, retry_schedule,
         timeout_ms, format, encryption_key, ordered, rate_limit, description, signing_secrets)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) RETURNING *`,
      [
        s.id,
        s.application,
        s.name,
        s.action,
        s.transport,
        s.handler,
        s.max_attempts,
        s.max_age,
        s.retry_schedule,
        s.timeout_ms,
        s.format,
        s.encryption_key,
        s.ordered,
        s.rate_limit,
        s.description,
        JSON.stringify(s.signing_secrets),
      ],
    );
    return r.rows[0]!;
  } catch (err) {
    if (isUnique(err)) throw new UniqueViolation(s.name);
    if (isMissingReference(err)) throw new MissingReference(s.application);
    throw err;
  }
}

/**
 * Runs `fn` in a transaction that holds a share lock on action `name`'s row (`fn` gets null when
 * there is no such action). A change of who may subscribe to it (an UPDATE, or its delete) waits
 * for this transaction, or commits first and `fn` sees it: a subscription checked against the row
 * here cannot be stored after its grant was revoked.
 */
export async function withActionShared<T>(
  pool: Pool,
  application: string,
  name: string,
  fn: (client: pg.PoolClient, action: Pick<ActionRow, 'application' | 'subscribers'> | null) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    // The subscribing application first, as deleteApplication locks it before the actions it
    // deletes: the same order both ways, so the two cannot deadlock.
    await client.query('SELECT 1 FROM applications WHERE name = $1 FOR KEY SHARE', [application]);
    const a = await client.query<Pick<ActionRow, 'application' | 'subscribers'>>(
      'SELECT application, subscribers FROM actions WHERE name = $1 FOR SHARE',
      [name],
    );
    const out = await fn(client, a.rows[0] ?? null);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

export async function getSubscription(pool: Queryable, id: string): Promise<SubscriptionRow | null> {
  const r = await pool.query<SubscriptionRow>('SELECT * FROM subscriptions WHERE id = $1', [id]);
  return r.rows[0] ?? null;
}

export async function getSubscriptionByName(
  pool: Pool,
  application: string,
  name: string,
): Promise<SubscriptionRow | null> {
  const r = await pool.query<SubscriptionRow>('SELECT * FROM subscriptions WHERE application = $1 AND name = $2', [
    application,
    name,
  ]);
  return r.rows[0] ?? null;
}

export async function listSubscriptions(
  pool: Pool,
  f: { application?: string; action?: string } = {},
): Promise<SubscriptionRow[]> {
  const r = await pool.query<SubscriptionRow>(
    `SELECT * FROM subscriptions WHERE ($1::text IS NULL OR application = $1) AND ($2::text IS NULL OR action = $2)
     ORDER BY application, name`,
    [f.application ?? null, f.action ?? null],
  );
  return r.rows;
}

const SUB_PATCHABLE = [
  'action',
  'handler',
  'max_attempts',
  'max_age',
  'retry_schedule',
  'timeout_ms',
  'format',
  'encryption_key',
  'rate_limit',
  'description',
  'paused',
  'disabled_reason',
  'signing_secrets',
] as const;
export type SubscriptionPatch = Partial<Pick<SubscriptionRow, (typeof SUB_PATCHABLE)[number]>>;

export async function updateSubscription(
  pool: Queryable,
  id: string,
  patch: SubscriptionPatch,
): Promise<SubscriptionRow | null> {
  const sets: string[] = [];
  const vals: unknown[] = [id];
  for (const k of SUB_PATCHABLE) {
    if (!(k in patch)) continue;
    const v = patch[k];
    vals.push(k === 'signing_secrets' ? JSON.stringify(v) : v);
    sets.push(`${k} = $${vals.length}`);
  }
  if (!sets.length) return getSubscription(pool, id);
  const r = await pool.query<SubscriptionRow>(
    `UPDATE subscriptions SET ${sets.join(', ')}, updated_at = now() WHERE id = $1 RETURNING *`,
    vals,
  );
  return r.rows[0] ?? null;
}

/** Deletes a subscription; returns the row deleted (null when there was none, e.g. a concurrent delete won). */
export async function deleteSubscription(pool: Pool, id: string): Promise<SubscriptionRow | null> {
  const r = await pool.query<SubscriptionRow>('DELETE FROM subscriptions WHERE id = $1 RETURNING *', [id]);
  return r.rows[0] ?? null;
}

/** 410 Gone: the subscription stops (paused with a reason) until someone resumes it. */
export async function disableSubscription(pool: Pool, id: string, reason: string): Promise<boolean> {
  const r = await pool.query(
    `UPDATE subscriptions SET paused = true, disabled_reason = $2, updated_at = now() WHERE id = $1 AND NOT paused`,
    [id, reason],
  );
  return (r.rowCount ?? 0) > 0;
}

/** HTTP subscriptions the bridge consumes (not paused, not disabled). */
export async function activeHttpSubscriptions(pool: Pool): Promise<SubscriptionRow[]> {
  const r = await pool.query<SubscriptionRow>(
    `SELECT * FROM subscriptions WHERE transport = 'http' AND NOT paused AND disabled_reason IS NULL ORDER BY id`,
  );
  return r.rows;
}
