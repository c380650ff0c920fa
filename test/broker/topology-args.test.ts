import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Channel } from 'amqplib';
import { NEVER_REACHED, Topology } from '../../src/broker/topology.js';

// Issue "Production on a RabbitMQ cluster" §2: quorum queues (the default) get explicit delivery-limit
// and dead-letter settings, so that RabbitMQ 4.x's default limit of 20 never drops anything. The
// declarations as Amebo sends them (a recording channel; test/broker/queue-args.test.ts reads them
// back from the broker).
function recorder(): { ch: Channel; queues: Map<string, Record<string, unknown>> } {
  const queues = new Map<string, Record<string, unknown>>();
  const ch = {
    assertQueue: async (name: string, o: { arguments?: Record<string, unknown> }) => {
      queues.set(name, o.arguments ?? {});
      return { queue: name, messageCount: 0, consumerCount: 0 };
    },
    assertExchange: async () => ({}),
    bindQueue: async () => ({}),
    unbindQueue: async () => ({}),
  } as unknown as Channel;
  return { ch, queues };
}

const sub = (name: string, ordered: boolean) => ({
  application: 'shop',
  name,
  patterns: ['order.placed'],
  restricted: { bind: [], unbind: [] },
  ordered,
  retryDelaysMs: [5000],
});

test('quorum: every subscription and dead-letter queue has an explicit delivery limit and dead-letter settings', async () => {
  const t = new Topology({ prefix: 'p', queueType: 'quorum', deliveryLimit: 50 });
  const { ch, queues } = recorder();
  await t.declareSubscription(ch, sub('bulk', false));
  await t.declareSubscription(ch, sub('ordered', true));
  const dlx = { 'x-dead-letter-exchange': 'p.dead', 'x-dead-letter-strategy': 'at-least-once' };
  assert.deepEqual(queues.get('p.sub.shop.bulk'), {
    'x-queue-type': 'quorum',
    'x-overflow': 'reject-publish', // at-least-once dead-lettering needs it
    ...dlx,
    'x-dead-letter-routing-key': 'p.sub.shop.bulk',
    'x-delivery-limit': 50,
  });
  assert.deepEqual(queues.get('p.sub.shop.ordered'), {
    'x-queue-type': 'quorum',
    'x-overflow': 'reject-publish',
    ...dlx,
    'x-dead-letter-routing-key': 'p.sub.shop.ordered',
    'x-single-active-consumer': true,
    'x-delivery-limit': NEVER_REACHED, // its head event is handed back every consumer_timeout
  });
  for (const dq of ['p.dead.shop.bulk', 'p.dead.shop.ordered'])
    assert.deepEqual(queues.get(dq), { 'x-queue-type': 'quorum', 'x-delivery-limit': NEVER_REACHED }, dq);
  // Retry steps are never consumed (messages expire back to their queue): no delivery to count.
  assert.deepEqual(queues.get('p.retry.5000'), {
    'x-queue-type': 'quorum',
    'x-overflow': 'reject-publish',
    'x-dead-letter-strategy': 'at-least-once',
    'x-message-ttl': 5000,
    'x-dead-letter-exchange': 'p.redeliver',
  });
});

test('classic queues get no quorum arguments', async () => {
  const t = new Topology({ prefix: 'p', queueType: 'classic', deliveryLimit: 50 });
  const { ch, queues } = recorder();
  await t.declareSubscription(ch, sub('bulk', false));
  assert.deepEqual(queues.get('p.sub.shop.bulk'), {
    'x-queue-type': 'classic',
    'x-dead-letter-exchange': 'p.dead',
    'x-dead-letter-routing-key': 'p.sub.shop.bulk',
  });
  assert.deepEqual(queues.get('p.dead.shop.bulk'), {});
});
