/**
 * `send()` (src/broker/send.ts) skips amqplib's `Args.publish`, whose Object.create(headers) makes
 * every header table slow to encode. It must put on the wire exactly what `channel.publish` puts:
 * each case is published both ways to a real RabbitMQ and the two deliveries are compared.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options } from 'amqplib';
import { send } from '../../src/broker/send.js';
import { AMQP_URL, hex } from '../helpers/harness.js';

let conn: ChannelModel;
let ch: ConfirmChannel;
const q = `amebo.t.send.${hex()}`;
const cc = `${q}.cc`;
const got: ConsumeMessage[] = [];

before(async () => {
  conn = await amqp.connect(AMQP_URL);
  ch = await conn.createConfirmChannel();
  for (const name of [q, cc]) await ch.assertQueue(name, { exclusive: true, maxPriority: 10 });
  await ch.consume(q, (m) => m && got.push(m), { noAck: true });
});
after(async () => {
  await conn.close();
});

async function next(n: number): Promise<ConsumeMessage[]> {
  for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(got.length, n, `${n} deliveries`);
  return got.splice(0, n);
}

/** What a delivery carries that the publisher decided (not the broker's delivery tag or consumer). */
const wire = (m: ConsumeMessage) => ({
  exchange: m.fields.exchange,
  routingKey: m.fields.routingKey,
  properties: m.properties,
  content: m.content.toString('hex'),
});

const cases: Record<string, Options.Publish> = {
  'an event (persistent, typed headers, ids, timestamp)': {
    persistent: true,
    contentType: 'application/json',
    messageId: '0193a3c4-7e2b-7f00-8000-000000000000',
    appId: 'orders',
    type: 'order.placed',
    timestamp: 1_764_600_000,
    headers: {
      'x-amebo-action': 'order.placed',
      'x-amebo-attempt': 1,
      'x-amebo-big': 2 ** 40,
      'x-amebo-negative': -300,
      'x-amebo-float': 1.5,
      'x-amebo-flag': true,
      'x-amebo-list': ['a', 2],
      'x-amebo-table': { nested: 'yes', n: 7 },
      'x-amebo-unset': undefined,
      conversation_id: 'c-1',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    },
  },
  'an RPC call (mandatory, expiry, reply-to, priority, deliveryMode 1)': {
    mandatory: true,
    contentType: 'application/json',
    correlationId: 'corr-1',
    replyTo: 'amq.gen-reply',
    headers: { From: 'svc.caller' },
    type: 'call',
    deliveryMode: 1,
    priority: 5,
    expiration: 30000,
    timestamp: 1_764_600_001,
  },
  'nothing but a body': {},
  'deliveryMode as a boolean, encoding and user id': {
    deliveryMode: true,
    contentEncoding: 'gzip',
    userId: 'guest',
  },
};

for (const [name, options] of Object.entries(cases))
  test(`send() and channel.publish() deliver the same message: ${name}`, async () => {
    const body = Buffer.from(JSON.stringify({ case: name, é: '😀' }));
    const confirms: unknown[] = [];
    ch.publish('', q, body, options, (err) => confirms.push(err));
    const ok = send(ch, '', q, body, options, (err) => confirms.push(err));
    assert.equal(ok, true, 'no backpressure on an idle channel');
    await ch.waitForConfirms();
    assert.deepEqual(confirms, [null, null], 'both confirmed (ack)');
    const [a, b] = await next(2);
    assert.deepEqual(wire(b!), wire(a!));
  });

test('the fast path is taken: amqplib still has the two methods publish is made of', () => {
  // If an amqplib upgrade removes them, send() quietly falls back to publish(); this says so.
  const inner = ch as unknown as Record<string, unknown>;
  assert.equal(typeof inner.sendMessage, 'function');
  assert.equal(typeof inner.pushConfirmCallback, 'function');
});

test('without a confirm callback on a plain channel, and CC (publish() itself) still reaches both queues', async () => {
  const plain = await conn.createChannel();
  try {
    const body = Buffer.from('plain');
    plain.publish('', q, body, { headers: { k: 'v' } });
    send(plain, '', q, body, { headers: { k: 'v' } });
    const [a, b] = await next(2);
    assert.deepEqual(wire(b!), wire(a!));
  } finally {
    await plain.close();
  }
  send(ch, '', q, Buffer.from('cc'), { CC: cc }, () => undefined);
  await ch.waitForConfirms();
  const [m] = await next(1);
  assert.equal(m!.content.toString(), 'cc');
  const copy = await ch.get(cc, { noAck: true });
  assert.ok(copy, 'the CC queue got its copy');
});

test('a mandatory publish nobody can take comes back, as with publish(); a closed channel throws', async () => {
  const returned: string[] = [];
  ch.on('return', (m: ConsumeMessage) => returned.push(m.content.toString()));
  send(ch, '', `${q}.nobody`, Buffer.from('lost?'), { mandatory: true }, () => undefined);
  await ch.waitForConfirms();
  for (let i = 0; i < 100 && !returned.length; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(returned, ['lost?']);
  const gone = await conn.createConfirmChannel();
  await gone.close();
  assert.throws(() => send(gone, '', q, Buffer.from('x'), {}, () => undefined), /closed/i);
});
