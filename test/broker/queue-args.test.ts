import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { AMQP_URL, destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { NEVER_REACHED } from '../../src/broker/topology.js';

// Quorum queues carry an explicit x-delivery-limit (RabbitMQ 4.x applies 20 otherwise and drops
// what passes it): the subscription's, or one never reached for ordered and dead-letter queues.
// A queue an older Amebo declared without it keeps working.
const run = promisify(execFile);
const env = testEnv();
let srv: Running;
const APP: [string, string] = ['shop', 'shop-secret-0123456789'];
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

before(async () => {
  srv = await start(env);
  await call('POST', '/v1/applications', { application: 'shop', secret: APP[1] }, 'admin');
  await call('POST', '/v1/actions', { action: 'order.placed', application: 'shop', schemata: { type: 'object' } }, APP);
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

async function queueArgs(name: string): Promise<string> {
  const { stdout } = await run('rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name', 'arguments'], {
    timeout: 30_000,
  });
  return stdout.split('\n').find((l) => l.startsWith(`${name}\t`)) ?? '';
}

test(
  'quorum queues get explicit delivery limits',
  { skip: !process.getuid || process.getuid() !== 0 ? 'rabbitmqctl needs root' : false },
  async () => {
    const mk = async (subscription: string, ordered: boolean) =>
      (
        await call(
          'POST',
          '/v1/subscriptions',
          { application: 'shop', subscription, action: 'order.placed', transport: 'amqp', ordered },
          'admin',
        )
      ).body.queue as string;
    const bulk = await mk('bulk', false);
    const ordered = await mk('ordered', true);
    assert.match(await queueArgs(bulk), new RegExp(`"x-delivery-limit",${env.cfg.deliveryLimit}}`));
    assert.match(await queueArgs(ordered), new RegExp(`"x-delivery-limit",${NEVER_REACHED}}`));
    assert.match(
      await queueArgs(srv.amebo.topology.deadQueue('shop', 'ordered')),
      new RegExp(`"x-delivery-limit",${NEVER_REACHED}}`),
    );
  },
);

test('an ordered queue an older Amebo declared without a limit is kept and still receives', async () => {
  const q = srv.amebo.topology.subscriptionQueue('shop', 'legacy');
  const dq = srv.amebo.topology.deadQueue('shop', 'legacy');
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertQueue(dq, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await ch.assertQueue(q, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish',
      'x-dead-letter-exchange': srv.amebo.topology.dead,
      'x-dead-letter-routing-key': q,
      'x-single-active-consumer': true,
    },
  });
  await conn.close();
  const s = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'legacy', action: 'order.placed', transport: 'amqp', ordered: true },
    'admin',
  );
  assert.equal(s.status, 201, JSON.stringify(s.body));
  const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { legacy: true } }, APP);
  assert.equal(r.status, 202);
  // (basic.get is refused on a single-active-consumer quorum queue: count instead.)
  const got = await eventually(
    async () => (await srv.amebo.broker.withThrowawayChannel((c) => c.checkQueue(q))).messageCount === 1,
    10_000,
  );
  assert.ok(got);
});
