/** Queue depths sampled over time (for the backlog charts): one process per round, the real broker. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, http, nextEvent, seedShop, SHOP, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter, samplerOf } from '../../bridge/index.js';

const env = testEnv({ queueSampleMs: 300 });
let a: Running;
let b: Running;

before(async () => {
  a = await start(env, { parts: [bridgeStarter({ breaker: false })] });
  b = await start(env, { parts: [bridgeStarter({ breaker: false })] });
});
after(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await destroy(env);
});

test('every subscription queue is sampled, by one process per round', async () => {
  await seedShop(a, env, 'audit'); // an amqp subscription: nobody consumes it here
  for (let i = 0; i < 5; i++)
    assert.equal(
      (await http(a.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { i } }, SHOP)).status,
      202,
    );
  const sa = samplerOf(a.amebo)!;
  const sb = samplerOf(b.amebo)!;
  // Wait for a round that saw all five (the relay or the live publish may lag a round).
  const pool = a.amebo.ctx.pool;
  for (;;) {
    await Promise.race([nextEvent(sa, 'sampled'), nextEvent(sb, 'sampled')]);
    const r = await pool.query<{ messages: number }>('SELECT messages FROM queue_samples ORDER BY at DESC LIMIT 1');
    if (r.rows[0]?.messages === 5) break;
  }
  const rounds = await pool.query<{ at: Date; n: number }>(
    'SELECT at, count(*)::int AS n FROM queue_samples GROUP BY at ORDER BY at',
  );
  assert.ok(rounds.rows.length >= 1);
  for (const r of rounds.rows) assert.equal(r.n, 1, 'one subscription, one row per round');
  // Both processes ran rounds; a round one of them held, the other skipped.
  const [skipA, skipB] = await Promise.race([
    Promise.all([nextEvent(sa, 'skipped').then(() => 'a'), nextEvent(sb, 'sampled').then(() => 'b')]),
    Promise.all([nextEvent(sb, 'skipped').then(() => 'b'), nextEvent(sa, 'sampled').then(() => 'a')]),
  ]);
  assert.notEqual(skipA, skipB);
  const dead = await pool.query<{ dead: number | null }>('SELECT dead FROM queue_samples ORDER BY at DESC LIMIT 1');
  assert.equal(dead.rows[0]!.dead, 0, 'the dead-letter queue is sampled too');
});
