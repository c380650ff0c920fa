import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { drainQueue, eventually, http, type Running, type TestEnv, SHOP } from './helpers/harness.js';
import { shopBehindProxy, type TcpProxy } from './helpers/proxy.js';

// The promise: an event answered 2xx is in PostgreSQL and reaches every matching subscription
// queue, even when the broker connection is cut between the commit and the confirm.
let proxy: TcpProxy;
let close: () => Promise<void>;
let env: TestEnv;
let srv: Running;
const APP = SHOP;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let queue = '';

before(async () => {
  ({ proxy, env, srv, queue, close } = await shopBehindProxy({
    confirmWaitMs: 400,
    relayGraceMs: 800,
    relayIntervalMs: 150,
  }));
});
after(async () => {
  await close?.();
});

const inOutbox = async (id: string): Promise<boolean> =>
  (await srv.amebo.pool.query('SELECT 1 FROM outbox WHERE id = $1', [id])).rowCount === 1;

test('connection cut between commit and confirm: answered 202, then published by the relay', async () => {
  proxy.hold(); // the publish leaves, its confirm never comes back
  const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { order_id: 'o-1' } }, APP);
  assert.equal(r.status, 202);
  assert.equal(r.body.published, false, 'the reply says the broker did not confirm in time');
  const row = (await srv.amebo.pool.query('SELECT id FROM events WHERE id = $1', [r.body.event])).rows[0];
  assert.ok(row, 'committed before the reply');
  assert.ok(await inOutbox(r.body.event), 'waiting in the outbox');
  proxy.cut(); // the connection drops; amqplib reconnects through the proxy
  await eventually(async () => !(await inOutbox(r.body.event)), 30_000);
  const msgs = await drainQueue(queue, 1, 30_000);
  assert.ok(msgs.length >= 1);
  assert.equal(JSON.parse(msgs[0]!.content.toString()).id, r.body.event);
  await drainQueue(queue, 5, 300); // an at-least-once duplicate, if the broker got the first publish, is allowed
});

test('broker unreachable: publishes are still accepted and all reach the queue when it returns', async () => {
  proxy.refuse(true);
  proxy.cut();
  await eventually(() => !srv.amebo.broker.connected, 30_000);
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { i }, deduper: `outage-${i}` }, APP);
    assert.equal(r.status, 202);
    assert.equal(r.body.published, false);
    ids.push(r.body.event);
  }
  const ready = await call('GET', '/ready');
  assert.equal(ready.status, 503);
  assert.equal(ready.body.checks.rabbitmq, 'not connected');
  proxy.refuse(false);
  await eventually(async () => {
    const n = await srv.amebo.pool.query('SELECT count(*)::int AS n FROM outbox WHERE id = ANY($1::uuid[])', [ids]);
    return n.rows[0].n === 0;
  }, 30_000);
  const got = new Set(
    (await drainQueue(queue, ids.length, 30_000)).map((m) => JSON.parse(m.content.toString()).id as string),
  );
  for (const id of ids) assert.ok(got.has(id), `event ${id} reached the queue`);
});
