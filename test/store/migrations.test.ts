/**
 * Upgrading a database that has only 001 applied: 002 moves unpublished events into the outbox, 003 adds
 * tenancy, 004 outbox owners, 007 tombstones for actions deleted before 006.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { createPool, ensureDatabase, migrate } from '../../src/store/db.js';
import { createLogger } from '../../src/log.js';
import { hex, PG_BASE } from '../helpers/harness.js';

const name = `amebo_t_mig_${hex()}`;
const url = `${PG_BASE}/${name}`;

after(async () => {
  const c = new pg.Client({ connectionString: `${PG_BASE}/postgres` });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await c.end();
});

test('002_outbox: unpublished events (immediate and deferred) move to the outbox, published ones do not; 003 keeps what exists open', async () => {
  await ensureDatabase(url);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(await readFile(new URL('../../migrations/001_init.sql', import.meta.url), 'utf8'));
    await c.query(
      'CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    await c.query(`INSERT INTO schema_migrations(name) VALUES ('001_init.sql')`);
    const ins = `INSERT INTO events (id, action, application, schema_version, payload, created_at, deliver_at, published_at)
                 VALUES ($1, 'x.y', 'a', 1, '{}', now() - interval '1 minute', $2, $3)`;
    await c.query(ins, ['00000000-0000-7000-8000-000000000001', null, null]); // unpublished
    await c.query(ins, ['00000000-0000-7000-8000-000000000002', null, new Date()]); // published
    await c.query(ins, ['00000000-0000-7000-8000-000000000003', new Date(Date.now() + 3600_000), null]); // deferred
    // Events of an action deleted before 006 (no row left), up to its version 3.
    const gone = `INSERT INTO events (id, action, application, schema_version, payload, created_at, published_at)
                  VALUES ($1, 'gone.z', 'a', $2, '{}', now() - interval '1 day', now())`;
    await c.query(gone, ['00000000-0000-7000-8000-000000000004', 1]);
    await c.query(gone, ['00000000-0000-7000-8000-000000000005', 3]);
    await c.query(`INSERT INTO applications(name, secret_hash) VALUES ('a', 'x')`);
    await c.query(`INSERT INTO actions(name, application) VALUES ('x.y', 'a')`);
  } finally {
    await c.end();
  }
  const pool = createPool({ url, max: 2, logger: createLogger('silent') });
  try {
    assert.deepEqual(await migrate(pool), [
      '002_outbox.sql',
      '003_tenancy.sql',
      '004_outbox_owner.sql',
      '005_health.sql',
      '006_action_tombstones.sql',
      '007_tombstones_backfill.sql',
    ]);
    const rows = (await pool.query('SELECT id, deferred, due_at > now() AS future, owner FROM outbox ORDER BY id'))
      .rows;
    assert.deepEqual(rows, [
      { id: '00000000-0000-7000-8000-000000000001', deferred: false, future: false, owner: null },
      { id: '00000000-0000-7000-8000-000000000003', deferred: true, future: true, owner: null },
    ]);
    const cols = (
      await pool.query(`SELECT column_name FROM information_schema.columns WHERE table_name = 'events'`)
    ).rows.map((r) => r.column_name as string);
    assert.ok(!cols.includes('published_at'));
    // 003: existing actions stay open to every subscriber; existing applications hold no RPC grant.
    assert.deepEqual((await pool.query('SELECT subscribers FROM actions')).rows, [{ subscribers: null }]);
    assert.deepEqual((await pool.query('SELECT rpc_grants FROM applications')).rows, [{ rpc_grants: [] }]);
    // 007: the action deleted before 006 has a tombstone at its last version seen; the live one has none.
    assert.deepEqual((await pool.query('SELECT name, last_version FROM action_tombstones')).rows, [
      { name: 'gone.z', last_version: 3 },
    ]);
    assert.deepEqual(await migrate(pool), [], 'applied once');
  } finally {
    await pool.end();
  }
});
