import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  destroy,
  drainQueue,
  eventually,
  http,
  nextEvent,
  start,
  testEnv,
  type Running,
  type TestEnv,
} from './helpers/harness.js';
import { TcpProxy } from './helpers/proxy.js';
import { createPool } from '../src/store/db.js';
import { createLogger } from '../src/log.js';

// PostgreSQL going away is Amebo's store failing, not bad input: 503 AMEBO_ERR_UNAVAILABLE, no
// crash, and everything works again when it returns, without a restart.
const proxy = new TcpProxy(5432);
let env: TestEnv;
let srv: Running;
const APP: [string, string] = ['shop', 'shop-secret-0123456789'];

before(async () => {
  const port = await proxy.listen();
  env = testEnv({ relayIntervalMs: 100, statementTimeoutMs: 2000 });
  env.overrides.databaseUrl = env.cfg.databaseUrl.replace(':5432/', `:${port}/`);
  srv = await start(env);
  await http(srv.url, env, 'POST', '/v1/applications', { application: 'shop', secret: APP[1] }, 'admin');
  await http(srv.url, env, 'POST', '/v1/actions', { action: 'order.placed', application: 'shop', schemata: {} }, APP);
});
after(async () => {
  await srv?.close();
  await proxy.close();
  await destroy(env);
});

test('PostgreSQL unreachable → 503 with a code; back → accepted again, relay and API recover by themselves', async () => {
  const sub = await http(
    srv.url,
    env,
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'audit', action: 'order.placed', transport: 'amqp' },
    'admin',
  );
  // The relay's passes fail while PostgreSQL is away (and it goes on trying).
  const relay = srv.amebo.relay!;
  const failing = nextEvent(relay, 'error');
  proxy.refuse(true);
  proxy.cut();
  const r = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 1 } }, APP);
  assert.equal(r.status, 503, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'AMEBO_ERR_UNAVAILABLE');
  const list = await http(srv.url, env, 'GET', '/v1/events', undefined, 'admin');
  assert.equal(list.status, 503);
  const ready = await http(srv.url, env, 'GET', '/ready');
  assert.equal(ready.status, 503);
  assert.notEqual(ready.body.checks.postgresql, 'ok');
  await failing;
  await nextEvent(relay, 'error'); // and again: the loop survived its first failure
  const recovered = nextEvent(relay, 'drained');
  proxy.refuse(false);
  const ok = await eventually(
    async () => {
      const x = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 2 } }, APP);
      return x.status === 202 ? x : null;
    },
    10_000,
    200,
  );
  // Attempts made while PostgreSQL was coming back may have committed and still answered 503 (the
  // client retries; at-least-once). What matters: the event answered 202 reaches the queue.
  const seen: string[] = [];
  await eventually(
    async () => {
      for (const m of await drainQueue(sub.body.queue, 1, 500)) seen.push(JSON.parse(m.content.toString()).id);
      return seen.includes(ok!.body.event);
    },
    10_000,
    50,
  );
  assert.ok(seen.includes(ok!.body.event), JSON.stringify(seen));
  await recovered; // the relay's passes succeed again
  assert.equal((await http(srv.url, env, 'GET', '/ready')).status, 200);
});

test('a checked-out client whose connection dies between queries does not crash the process', async () => {
  const pool = createPool({ url: env.overrides.databaseUrl!, max: 2, logger: createLogger('silent') });
  const uncaught: Error[] = [];
  const onUncaught = (err: Error): void => void uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    const c = await pool.connect(); // held between queries, as the relay holds its transaction
    await c.query('BEGIN');
    // 'end' comes after the client handled the lost connection, its 'error' event included (not
    // events.once, which would reject on that 'error').
    const ended = new Promise((r) => c.once('end', r));
    proxy.cut();
    await ended;
    await assert.rejects(c.query('SELECT 1'));
    c.release();
    assert.deepEqual(uncaught, []);
    // The pool dropped the dead client and opens a fresh one.
    assert.equal((await pool.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    process.off('uncaughtException', onUncaught);
    await pool.end();
  }
});
