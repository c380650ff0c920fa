/** The group commit's INSERT: every size (prepared or not), dedupers, deferred rows and payloads stored as sent. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { Pool } from '../../src/store/db.js';
import { insertEvents, MAX_INSERT_ROWS, type NewEvent } from '../../src/store/events.js';
import { newEvent, scratchDatabase } from '../helpers/harness.js';

const db = scratchDatabase('insert');
let pool: Pool;

before(async () => {
  pool = await db.open();
});
after(() => db.drop());

const ev = (i: number, over: Partial<NewEvent> = {}): NewEvent =>
  newEvent({
    schemaVersion: 3,
    payloadJson: JSON.stringify({ i, s: 'quote " backslash \\ tab \t é 😀' }),
    conversationId: `conv-${i}`,
    ...over,
  });

test('batches of 1, 64 (prepared) and 65, 700 (parsed each time) store every column and an outbox row each', async () => {
  const owner = randomUUID();
  for (const size of [1, 64, 65, 700]) {
    const evs = Array.from({ length: size }, (_, i) => ev(i));
    const inserted = await insertEvents(pool, evs, owner);
    assert.equal(inserted.size, size);
    const rows = (
      await pool.query<{ id: string; payload: string; schema_version: number; conversation_id: string; owner: string }>(
        `SELECT e.id, e.payload::text AS payload, e.schema_version, e.conversation_id, o.owner
           FROM events e JOIN outbox o ON o.id = e.id WHERE e.id = ANY($1::uuid[])`,
        [evs.map((e) => e.id)],
      )
    ).rows;
    assert.equal(rows.length, size, `size ${size}: every event has its outbox row`);
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const e of evs) {
      const r = byId.get(e.id)!;
      assert.equal(r.payload, e.payloadJson, 'the payload text is stored as sent');
      assert.equal(r.schema_version, 3);
      assert.equal(r.conversation_id, e.conversationId);
      assert.equal(r.owner, owner);
    }
  }
});

test('a deduper seen before, or twice in one batch, is inserted once; a deferred event is due at its deliver_at', async () => {
  const owner = randomUUID();
  const first = ev(1, { deduper: 'd-1' });
  assert.deepEqual([...(await insertEvents(pool, [first], owner))], [first.id]);
  const again = ev(2, { deduper: 'd-1' });
  const twiceA = ev(3, { deduper: 'd-2' });
  const twiceB = ev(4, { deduper: 'd-2' });
  const at = new Date(Date.now() + 3_600_000);
  const later = ev(5, { deliverAt: at });
  const got = await insertEvents(pool, [again, twiceA, twiceB, later], owner);
  assert.deepEqual([...got].sort(), [twiceA.id, later.id].sort());
  const o = await pool.query<{ due_at: Date; deferred: boolean }>('SELECT due_at, deferred FROM outbox WHERE id = $1', [
    later.id,
  ]);
  assert.equal(o.rows[0]!.deferred, true);
  assert.equal(o.rows[0]!.due_at.getTime(), at.getTime());
});

test('more events than PostgreSQL has parameters for are refused before they are sent', async () => {
  const evs = Array.from({ length: MAX_INSERT_ROWS + 1 }, (_, i) => ev(i));
  await assert.rejects(insertEvents(pool, evs, randomUUID()), RangeError);
});
