/**
 * Removes what killed test runs left behind on the shared services: a test file's database
 * (`amebo_t_<id>`) outlives it only when the run was killed before `destroy()`, so a database of
 * that name older than AMEBO_TEST_SWEEP_AGE_MIN minutes (default 120; no test file runs that long)
 * is dropped together with the RabbitMQ queues and exchanges of its prefix (`t<id>.`) and the Redis
 * keys under it. Run by scripts/test.sh before the suites; never touches anything younger, so
 * concurrent runs on the same machine are safe.
 */
import pg from 'pg';
import { Redis } from 'ioredis';
import { dropBrokerObjects, PG_BASE, REDIS_URL } from './harness.js';

export interface SweepOptions {
  /** Only databases older than this many minutes. */
  ageMin: number;
  /** Only these ids (a test sweeping its own leftovers, never its neighbours'). */
  only?: string[];
}

export async function sweep(o: SweepOptions): Promise<{ databases: number; brokerObjects: number; redisKeys: number }> {
  const c = new pg.Client({ connectionString: `${PG_BASE}/postgres`, connectionTimeoutMillis: 5000 });
  await c.connect();
  let ids: string[];
  try {
    // A database's age: the modification time of its PG_VERSION file, written once at CREATE DATABASE.
    const r = await c.query<{ datname: string }>(
      `SELECT datname FROM pg_database
        WHERE datname ~ '^amebo_t_[0-9a-f]{8}$'
          AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - make_interval(mins => $1::int)
          AND ($2::text[] IS NULL OR datname = ANY($2::text[]))`,
      [o.ageMin, o.only?.map((id) => `amebo_t_${id}`) ?? null],
    );
    ids = r.rows.map((x) => x.datname.slice('amebo_t_'.length));
    for (const id of ids) await c.query(`DROP DATABASE IF EXISTS "amebo_t_${id}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
  if (!ids.length) return { databases: 0, brokerObjects: 0, redisKeys: 0 };
  const brokerObjects = await dropBrokerObjects(ids.map((id) => `t${id}`));
  let redisKeys = 0;
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5000 });
  try {
    await redis.connect();
    for (const id of ids) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `t${id}:*`, 'COUNT', 500);
        cursor = next;
        if (keys.length) redisKeys += await redis.del(...keys);
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
  return { databases: ids.length, brokerObjects, redisKeys };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  sweep({ ageMin: Number(process.env.AMEBO_TEST_SWEEP_AGE_MIN ?? 120) })
    .then((r) => {
      if (r.databases)
        console.log(
          `sweep: removed ${r.databases} killed runs' databases, ${r.brokerObjects} broker objects, ${r.redisKeys} Redis keys`,
        );
    })
    .catch((e: unknown) => console.warn(`sweep: skipped (${(e as Error).message})`));
}
