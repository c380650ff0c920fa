import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Redis } from 'ioredis';
import { PG_BASE, REDIS_URL, destroy, start, testEnv } from '../helpers/harness.js';
import { sweep } from '../helpers/sweep.js';

const dbExists = async (name: string): Promise<boolean> => {
  const c = new pg.Client({ connectionString: `${PG_BASE}/postgres` });
  await c.connect();
  try {
    return (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
  } finally {
    await c.end();
  }
};

test('a killed run’s database, queues, exchanges and Redis keys are swept once old enough, and only then', async () => {
  const env = testEnv();
  const srv = await start(env);
  // What a run leaves when it is killed before destroy(): Amebo stopped, nothing dropped.
  const redis = new Redis(REDIS_URL);
  await redis.set(`${env.cfg.prefix}:leftover`, '1');
  await srv.close();
  try {
    assert.ok(await dbExists(`amebo_t_${env.id}`));
    // Young: a concurrent run's stores are never touched.
    assert.deepEqual(await sweep({ ageMin: 120, only: [env.id] }), { databases: 0, brokerObjects: 0, redisKeys: 0 });
    assert.ok(await dbExists(`amebo_t_${env.id}`));
    const r = await sweep({ ageMin: 0, only: [env.id] });
    assert.equal(r.databases, 1);
    assert.ok(r.brokerObjects >= 9, `the ladder and exchanges of the prefix: ${JSON.stringify(r)}`);
    assert.ok(r.redisKeys >= 1);
    assert.equal(await dbExists(`amebo_t_${env.id}`), false);
    assert.equal(await redis.exists(`${env.cfg.prefix}:leftover`), 0);
    assert.deepEqual(await sweep({ ageMin: 0, only: [env.id] }), { databases: 0, brokerObjects: 0, redisKeys: 0 });
  } finally {
    redis.disconnect();
    await destroy(env);
  }
});
