/**
 * The relay when the broker refuses its publishes: a queue the events route to nacks them (here a
 * full queue with `reject-publish`; in production a quorum queue electing a leader), while the
 * other queue takes every copy. Each commit in backlog mode kicks the relay; without a pause each
 * kick republished the head event, one duplicate per commit on the queue that took it (355 in one
 * chaos run). The relay backs off instead, and publishes everything once the queue accepts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import { pino } from 'pino';
import { Broker } from '../src/broker/connection.js';
import { ConfirmPublisher } from '../src/broker/publisher.js';
import { Relay, type RelayTick } from '../src/relay.js';
import { insertEvents } from '../src/store/events.js';
import type { Pool } from '../src/store/db.js';
import { AMQP_URL, eventually, hex, newEvent, scratchDatabase } from './helpers/harness.js';

const db = scratchDatabase('relayref');
let pool: Pool;
let admin: ChannelModel;
let ch: Channel;
let broker: Broker;
let publisher: ConfirmPublisher;
const exchange = `amebo.t.refused.${hex()}`;
const taking = `${exchange}.taking`;
const full = `${exchange}.full`;

before(async () => {
  pool = await db.open();
  admin = await amqp.connect(AMQP_URL);
  ch = await admin.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
  await ch.assertQueue(taking, { exclusive: true });
  await ch.assertQueue(full, { exclusive: true, arguments: { 'x-max-length': 10, 'x-overflow': 'reject-publish' } });
  for (const q of [taking, full]) await ch.bindQueue(q, exchange, '#');
  for (let i = 0; i < 10; i++) ch.sendToQueue(full, Buffer.from('filler'));
  await eventually(async () => (await ch.checkQueue(full)).messageCount === 10, 10_000);
  broker = new Broker({ url: AMQP_URL, logger: pino({ level: 'silent' }), name: `relay-refused-${hex()}` });
  await broker.open(10_000);
  publisher = new ConfirmPublisher(broker, { logger: pino({ level: 'silent' }) });
  await publisher.start();
  assert.ok(await publisher.waitReady(10_000));
});
after(async () => {
  await publisher.close();
  await broker.close();
  await ch.deleteExchange(exchange).catch(() => undefined);
  await admin.close();
  await db.drop();
});

test('refused publishes are retried with a growing pause, not once per kick; all go out once the queue accepts', async () => {
  const now = new Date();
  const evs = Array.from({ length: 5 }, (_, i) =>
    newEvent({ action: 'x.refused', payloadJson: JSON.stringify({ i }), createdAt: now }),
  );
  await insertEvents(pool, evs, randomUUID());
  const relay = new Relay({
    pool,
    publisher,
    exchange,
    restrictedExchange: exchange,
    logger: pino({ level: 'silent' }),
    intervalMs: 1000,
    graceMs: 0,
  });
  const ticks: RelayTick[] = [];
  relay.on('tick', (t) => void ticks.push(t));
  relay.start();
  // Commits in backlog mode kick the relay: here one every 5 ms for 3 s (600 kicks).
  const kicker = setInterval(() => relay.kick(), 5);
  try {
    await new Promise((r) => setTimeout(r, 3000));
    const refused = ticks.filter((t) => t.failed > 0);
    assert.ok(refused.length >= 3, `the relay kept trying (${refused.length} refused passes)`);
    assert.ok(
      refused.length <= 15,
      `${refused.length} refused passes in 3 s under 600 kicks: it backs off (50 ms doubling to 1 s)`,
    );
    assert.ok(
      refused.every((t) => t.careful && t.published === 0),
      'one at a time, stopping at the refused head',
    );
    // Every refused try still put a copy on the queue that takes them: those are the duplicates.
    const copies = (await ch.checkQueue(taking)).messageCount;
    assert.ok(copies <= refused.length, `${copies} copies on the other queue, one per try`);
    // The queue accepts again: everything goes out, in order, within the longest pause.
    await ch.purgeQueue(full);
    await eventually(
      async () => (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox')).rows[0]!.n === 0,
      10_000,
      50,
    );
    const got: number[] = [];
    for (;;) {
      const m = await ch.get(full, { noAck: true });
      if (!m) break;
      got.push((JSON.parse(m.content.toString()) as { payload: { i: number } }).payload.i);
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
  } finally {
    clearInterval(kicker);
    await relay.stop();
  }
});
