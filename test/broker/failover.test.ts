import { once } from 'node:events';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  destroy,
  drainQueue,
  eventually,
  http,
  seedShop,
  SHOP,
  start,
  testEnv,
  type Running,
  type TestEnv,
} from '../helpers/harness.js';
import { TcpProxy } from '../helpers/proxy.js';
import { amqpNodes, backoffMs } from '../../src/broker/link.js';

// AMEBO_AMQP_URL lists the nodes of a cluster: when the node Amebo is connected to goes away for
// good, Amebo moves to another at once (two proxies in front of the shared broker stand for two
// nodes), instead of stalling until the lost node is back.
const node1 = new TcpProxy(5672);
const node2 = new TcpProxy(5672);
let env: TestEnv;
let srv: Running;
const APP = SHOP;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let queue = '';

before(async () => {
  const [p1, p2] = [await node1.listen(), await node2.listen()];
  env = testEnv({ amqpUrl: `amqp://guest:guest@127.0.0.1:${p1},amqp://guest:guest@127.0.0.1:${p2}` });
  srv = await start(env);
  queue = await seedShop(srv, env);
});
after(async () => {
  await srv?.close();
  await node1.close();
  await node2.close();
  await destroy(env);
});

test('the connected node goes away for good: Amebo moves to the other one at once and keeps publishing', async () => {
  assert.match(srv.amebo.broker.node ?? '', new RegExp(`:${node1.port}`));
  // "At once": the first attempt after the loss goes to the other node, with no failed attempt
  // (and so no backoff) before it.
  const failed: unknown[] = [];
  const onFailed = (e: unknown): void => void failed.push(e);
  srv.amebo.broker.on('reconnecting', onFailed);
  const moved = once(srv.amebo.broker, 'connect');
  node1.refuse(true);
  node1.cut();
  await moved;
  srv.amebo.broker.off('reconnecting', onFailed);
  assert.match(srv.amebo.broker.node ?? '', new RegExp(`:${node2.port}`), 'connected to the other node');
  assert.deepEqual(failed, [], 'no failed attempt, no backoff before the other node');
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { i } }, APP);
    assert.equal(r.status, 202);
    ids.push(r.body.event);
  }
  await eventually(async () => (await srv.amebo.pool.query('SELECT 1 FROM outbox')).rowCount === 0, 30_000);
  const got = new Set((await drainQueue(queue, 10, 30_000)).map((m) => JSON.parse(m.content.toString()).id as string));
  for (const id of ids) assert.ok(got.has(id), `${id} reached the queue through the other node`);
});

test('node lists and backoff', () => {
  assert.deepEqual(amqpNodes(' amqp://a:1 , amqp://b:2?heartbeat=5 ', 10), [
    'amqp://a:1?heartbeat=10',
    'amqp://b:2?heartbeat=5',
  ]);
  assert.throws(() => amqpNodes('http://x', 10), /not an amqp/);
  assert.throws(() => amqpNodes(' , ', 10), /no AMQP URL/);
  for (let a = 0; a < 30; a++) {
    const d = backoffMs(a, 100, 5000);
    const step = Math.min(5000, 100 * 2 ** a);
    assert.ok(d >= step / 2 && d <= step, `attempt ${a}: ${d} ms`);
  }
});
