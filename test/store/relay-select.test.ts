/** Which outbox rows a relay takes: its own process's at once, another live process's only after the grace. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { Pool } from '../../src/store/db.js';
import { insertEvents, RELAY_SELECT, type NewEvent } from '../../src/store/events.js';
import { newEvent, scratchDatabase } from '../helpers/harness.js';

const db = scratchDatabase('relay');
let pool: Pool;

before(async () => {
  pool = await db.open();
});
after(() => db.drop());

const ev = (createdAt: Date, deliverAt: Date | null = null): NewEvent => newEvent({ createdAt, deliverAt });

async function select(graceMs: number, own: { owner: string; since: Date } | null): Promise<string[]> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    const r = await c.query<{ id: string }>(RELAY_SELECT, [graceMs, 100, own?.owner ?? null, own?.since ?? null]);
    await c.query('ROLLBACK');
    return r.rows.map((x) => x.id);
  } finally {
    c.release();
  }
}

test('a relay in backlog takes its own rows and a stopped process’s, not the in-flight rows of another live process', async () => {
  const mine = randomUUID();
  const other = randomUUID();
  const now = Date.now();
  const startedAt = new Date(now - 1000);
  const stopped = ev(new Date(now - 2000)); // committed before this process started, by one that stopped
  const inFlight = ev(new Date(now - 10)); // another live process, just committed, confirm in flight
  const stale = ev(new Date(now - 60_000)); // another process's, older than the grace: the relay's
  const own = ev(new Date(now - 5)); // this process, committed through the outbox
  const deferred = ev(new Date(now - 20), new Date(now + 3_600_000));
  await insertEvents(pool, [stopped, inFlight, stale], other);
  await insertEvents(pool, [own, deferred], mine);

  assert.deepEqual(
    await select(5000, { owner: mine, since: startedAt }),
    [stale.id, stopped.id, own.id],
    'in commit order; the live process’s young row and the future deferred one stay',
  );
  assert.deepEqual(await select(5000, null), [stale.id], 'live mode: only rows older than the grace');
  assert.deepEqual(await select(0, null), [stale.id, stopped.id, inFlight.id, own.id], 'grace 0: every due row');
});
