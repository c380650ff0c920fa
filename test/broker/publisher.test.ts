/** The confirm publisher against the real broker: confirms, order, window, and coalesced writes. */
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import amqp from 'amqplib';
import { Broker } from '../../src/broker/connection.js';
import { ConfirmPublisher } from '../../src/broker/publisher.js';
import { createLogger } from '../../src/log.js';
import { AMQP_URL, drainQueue } from '../helpers/harness.js';

const queue = `t-publisher-${process.pid}`;
const log = createLogger('silent');
let broker: Broker;
let publisher: ConfirmPublisher;

before(async () => {
  const c = await amqp.connect(AMQP_URL);
  const ch = await c.createChannel();
  await ch.assertQueue(queue, { durable: false, autoDelete: false });
  await c.close();
  broker = new Broker({ url: AMQP_URL, logger: log, name: 'publisher test' });
  await broker.open();
  publisher = new ConfirmPublisher(broker, { window: 16, logger: log });
  await publisher.start();
});
after(async () => {
  await publisher.close();
  await broker.close();
  const c = await amqp.connect(AMQP_URL);
  await (await c.createChannel()).deleteQueue(queue);
  await c.close();
});

test('a burst of publishes in one turn is confirmed in order, through the window, in a few socket writes', async () => {
  const model = (broker as unknown as { model: { connection: { stream: Socket } } }).model;
  const sock = model.connection.stream;
  let writes = 0;
  const w = sock._write.bind(sock);
  const wv = sock._writev!.bind(sock);
  sock._write = (...a: Parameters<Socket['_write']>) => (writes++, w(...a));
  sock._writev = (...a: Parameters<NonNullable<Socket['_writev']>>) => (writes++, wv(...a));
  const n = 64;
  await Promise.all(
    Array.from({ length: n }, (_, i) => publisher.publish('', queue, Buffer.from(String(i)), { persistent: false })),
  );
  sock._write = w;
  sock._writev = wv;
  assert.equal(publisher.inFlight, 0);
  // 64 messages through a window of 16: four bursts, each one write (plus at most a few stragglers).
  assert.ok(writes <= 8, `expected the burst coalesced, saw ${writes} socket writes for ${n} publishes`);
  const got = await drainQueue(queue, n);
  assert.deepEqual(
    got.map((m) => Number(m.content.toString())),
    Array.from({ length: n }, (_, i) => i),
  );
});

test('a publish to a missing exchange rejects (the channel dies) and the publisher comes back', async () => {
  const reopened = once(publisher.events, 'ready');
  await assert.rejects(publisher.publish('no-such-exchange-' + process.pid, 'x', Buffer.from('x')));
  await reopened; // the publisher opened a new channel (bounded by the test timeout)
  assert.ok(await publisher.waitReady(30_000), 'the publisher is ready on it');
  await publisher.publish('', queue, Buffer.from('again'));
  const [m] = await drainQueue(queue, 1);
  assert.equal(m?.content.toString(), 'again');
});
