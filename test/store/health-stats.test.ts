/** Subscription stats and health figures from the attempt log and the queue samples (real PostgreSQL). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Pool } from '../../src/store/db.js';
import {
  pendingForSubscription,
  pruneQueueSamples,
  subscriptionHealthFigures,
  subscriptionStats,
  writeAttempts,
  writeDeliveries,
  writeQueueSamples,
} from '../../src/store/deliveries.js';
import { insertEvents } from '../../src/store/events.js';
import { uuidv7 } from '../../src/ids.js';
import { scratchDatabase } from '../helpers/harness.js';

const db = scratchDatabase('health');
let pool: Pool;
const SUB = '00000000-0000-7000-8000-0000000000a1';

before(async () => {
  pool = await db.open();
  await pool.query(`INSERT INTO applications(name, secret_hash) VALUES ('a', 'x')`);
  await pool.query(`INSERT INTO actions(name, application) VALUES ('x.y', 'a'), ('x.z', 'a')`);
  await pool.query(
    `INSERT INTO subscriptions(id, application, name, action, transport, handler, max_attempts, max_age,
                               retry_schedule, timeout_ms, created_at)
     VALUES ($1, 'a', 's', 'x.*', 'http', 'http://h/', 10, 3600, '{5}', 1000, now() - interval '2 hours')`,
    [SUB],
  );
});
after(() => db.drop());

test('stats in buckets: attempts, successes, failures, p50/p99 and the sampled backlog', async () => {
  const now = Date.now();
  const ev = uuidv7(now);
  const attempt = (secsAgo: number, status: number | null, latencyMs: number, n: number) => ({
    event: ev,
    subscription: SUB,
    attempt: n,
    status,
    latencyMs,
    errorClass: status === null ? 'timeout' : null,
    error: status === null ? 'timed out after 15000 ms' : null,
    excerpt: null,
    at: new Date(now - secsAgo * 1000),
  });
  await writeAttempts(pool, [
    attempt(3000, 200, 10, 1), // outside a 5-minute window
    attempt(200, 500, 30, 1),
    attempt(150, null, 1000, 2),
    attempt(100, 200, 20, 3),
    attempt(90, 200, 40, 1),
  ]);
  await writeQueueSamples(pool, [
    { subscription: SUB, at: new Date(now - 120_000), messages: 7, consumers: 1, dead: 0 },
    { subscription: SUB, at: new Date(now - 110_000), messages: 9, consumers: 1, dead: 0 },
    { subscription: '00000000-0000-7000-8000-0000000000ff', at: new Date(now), messages: 1, consumers: 0, dead: 0 },
  ]);
  const from = new Date(now - 300_000);
  const buckets = await subscriptionStats(pool, SUB, from, 60);
  assert.ok(buckets.length >= 5 && buckets.length <= 7, `${buckets.length} one-minute buckets over 5 minutes`);
  const sum = (k: 'attempts' | 'successes' | 'failures') => buckets.reduce((s, b) => s + b[k], 0);
  assert.deepEqual([sum('attempts'), sum('successes'), sum('failures')], [4, 2, 2]);
  assert.equal(Math.max(...buckets.map((b) => b.backlog ?? 0)), 9, 'the largest sample of its bucket');
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.at > buckets[i - 1]!.at, 'oldest first');

  const h = await subscriptionHealthFigures(pool, SUB, from);
  assert.deepEqual([h.attempts, h.successes], [4, 2]);
  assert.equal(h.p50_ms, 35);
  assert.ok(h.p99_ms! > 900 && h.p99_ms! <= 1000);
  assert.equal(h.last_error, 'timed out after 15000 ms');
  assert.ok(h.last_success_at!.getTime() > h.last_failure_at!.getTime());
  assert.equal(await pruneQueueSamples(pool, 115), 1, 'the sample older than 115 s goes');
});

test('pending: events of its actions since it was created with no final state, oldest first', async () => {
  const now = Date.now();
  const mk = (action: string, ago: number) => {
    const id = uuidv7(now - ago);
    return {
      id,
      action,
      application: 'a',
      schemaVersion: 1,
      payloadJson: `{"ago":${ago}}`,
      deduper: null,
      conversationId: id,
      deliverAt: null,
      createdAt: new Date(now - ago),
    };
  };
  const [old, delivered, waiting, retrying, other] = [
    mk('x.y', 3 * 3600_000),
    mk('x.y', 60_000),
    mk('x.z', 50_000),
    mk('x.y', 40_000),
    mk('q.q', 30_000),
  ];
  await insertEvents(pool, [old, delivered, waiting, retrying, other], '00000000-0000-4000-8000-000000000000');
  const rec = (event: string, state: 'delivered' | 'retrying') => ({
    event,
    subscription: SUB,
    state,
    attempts: 1,
    lastStatus: 200,
    lastError: null,
    nextAttemptAt: null,
    at: new Date(),
  });
  await writeDeliveries(pool, [rec(delivered.id, 'delivered'), rec(retrying.id, 'retrying')]);
  const since = new Date(now - 2 * 3600_000);
  const p = await pendingForSubscription(pool, SUB, ['x.y', 'x.z'], since, 10);
  assert.deepEqual(
    p.map((e) => [e.id, e.state]),
    [
      [waiting.id, null],
      [retrying.id, 'retrying'],
    ],
  );
  assert.equal((await pendingForSubscription(pool, SUB, ['x.y', 'x.z'], since, 1)).length, 1);
});
