import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from '../log.js';

// src/store/ when run from source, dist/src/store/ when built: the migrations sit at the package root.
const MIGRATIONS_DIR = ['../../migrations/', '../../../migrations/']
  .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
  .find((dir) => existsSync(dir))!;

export type Pool = pg.Pool;

export interface PoolOptions {
  url: string;
  max?: number;
  statementTimeoutMs?: number;
  applicationName?: string;
  logger: Logger;
}

/** A pg pool that never crashes the process on an idle client's error and bounds every query. */
export function createPool(opts: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max ?? 10,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    statement_timeout: opts.statementTimeoutMs ?? 15_000,
    query_timeout: (opts.statementTimeoutMs ?? 15_000) + 2000,
    application_name: opts.applicationName ?? 'amebo',
  });
  pool.on('error', (err) => opts.logger.warn({ err: err.message }, 'idle PostgreSQL client error'));
  // pg-pool listens for errors of idle clients only: a checked-out client whose connection dies
  // between two queries (the relay's transaction waiting on broker confirms, say) would emit an
  // unhandled 'error' and crash the process. Its queries fail anyway, and once released the pool
  // drops it (it is no longer queryable).
  pool.on('connect', (client) =>
    client.on('error', (err) => opts.logger.warn({ err: err.message }, 'PostgreSQL connection lost')),
  );
  return pool;
}

/** Creates the database named in `url` when it does not exist (connecting to the `postgres` database). */
export async function ensureDatabase(url: string): Promise<boolean> {
  const u = new URL(url);
  const name = decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres';
  u.pathname = '/postgres';
  const client = new pg.Client({ connectionString: u.toString(), connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined); // a lost connection fails the query in flight
  await client.connect();
  try {
    const r = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (r.rowCount) return false;
    try {
      await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    } catch (err) {
      // Two processes racing to create it: the loser sees duplicate_database, or the catalog's
      // unique index (unique_violation) when both passed the existence check at the same moment.
      const code = (err as { code?: string }).code;
      if (code !== '42P04' && code !== '23505') throw err;
    }
    return true;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Applies `migrations/NNN_*.sql` in order, each in its own transaction, under an advisory lock so
 * that several `amebo serve` starting together migrate once.
 */
export async function migrate(pool: pg.Pool, log?: Logger): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock(872163001)');
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set(
      (await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name),
    );
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d+_.*\.sql$/.test(f)).sort();
    for (const f of files) {
      if (done.has(f)) continue;
      const sql = await readFile(MIGRATIONS_DIR + f, 'utf8');
      await client.query('BEGIN');
      try {
        await client.query(sql);
        await client.query('INSERT INTO schema_migrations(name) VALUES ($1)', [f]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw new Error(`migration ${f} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(f);
      log?.info({ migration: f }, 'migration applied');
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock(872163001)').catch(() => undefined);
    client.release();
  }
  return applied;
}
