import { test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { pino } from 'pino';
import { Broker } from '../../src/broker/connection.js';
import type { HookFailure } from '../../src/broker/link.js';
import { AMQP_URL, eventually, hex } from '../helpers/harness.js';

// Issue "Production on a RabbitMQ cluster" §1: each AMQP user declares what it needs (exchanges,
// queues, bindings) as data. A ManagedChannel's `declare` is asserted on every new channel before
// its setup, so what went missing behind its back is there again after a rebuild; a `passive`
// entry (someone else's queue) holds the channel back, retried, until it exists.
test('a channel spec declares exchanges, queues and bindings as data, again on every rebuild', async () => {
  const id = hex();
  const exchange = `declare-x-${id}`;
  const queue = `declare-q-${id}`;
  const theirs = `declare-theirs-${id}`;
  const b = new Broker({ url: AMQP_URL, logger: pino({ level: 'silent' }), name: `declare-${id}` });
  await b.open(10_000);
  const admin = await amqp.connect(AMQP_URL);
  const ach = await admin.createChannel();
  ach.on('error', () => undefined);
  try {
    const mc = b.channel({
      name: `declare ${id}`,
      declare: {
        exchanges: [{ name: exchange, type: 'direct', options: { durable: false, autoDelete: false } }],
        queues: [{ name: queue, options: { durable: false } }],
        bindings: [{ queue, exchange, routingKey: 'k' }],
      },
    });
    await mc.open();
    const routed = async () => {
      ach.publish(exchange, 'k', Buffer.from('x'));
      return eventually(async () => (await ach.get(queue, { noAck: true })) || null, 5000);
    };
    assert.ok(await routed(), 'declared and bound before ready');

    // Deleted behind its back: the next build declares and binds them again.
    await ach.deleteQueue(queue);
    await ach.deleteExchange(exchange);
    const back = new Promise((r) => mc.once('ready', r));
    mc.reset();
    await back;
    assert.ok(await routed(), 'declared and bound again after the rebuild');

    // A passive queue (someone else's) holds the channel back until it exists.
    const waiting = b.channel({ name: `passive ${id}`, declare: { queues: [{ name: theirs, passive: true }] } });
    await assert.rejects(waiting.open(), /NOT_FOUND/, 'a first build the caller waits for is the caller’s');
    const failures: HookFailure[] = [];
    const patient = b.channel({ name: `passive ${id}`, declare: { queues: [{ name: theirs, passive: true }] } });
    patient.on('failed', (f) => void failures.push(f));
    await patient.open({ retry: true });
    await eventually(() => failures.length >= 2, 30_000);
    assert.equal(patient.ready, false);
    await ach.assertQueue(theirs, { durable: false });
    assert.ok(await patient.waitReady(30_000), 'ready once the queue exists');
    assert.ok(mc.ready, 'the other channel was never disturbed');
    await patient.close();
    await mc.close();
  } finally {
    await ach.deleteQueue(queue).catch(() => undefined);
    await ach.deleteQueue(theirs).catch(() => undefined);
    await ach.deleteExchange(exchange).catch(() => undefined);
    await admin.close().catch(() => undefined);
    await b.close();
  }
});
