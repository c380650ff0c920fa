import { test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { pino } from 'pino';
import { Broker } from '../../src/broker/connection.js';
import { Topology } from '../../src/broker/topology.js';
import { registry } from '../../src/metrics.js';
import type { SubscriptionRow } from '../../src/store/registry.js';
import { SubscriptionWorker, type WorkerChannelEvent, type WorkerDeps } from '../../bridge/worker.js';
import { AMQP_URL, eventually, hex } from '../helpers/harness.js';

/** A webhook subscription row with what a worker reads (the rest of the row does not matter here). */
const rowNamed = (name: string): SubscriptionRow =>
  ({
    id: name,
    application: 'app',
    name,
    ordered: false,
    retry_schedule: [1],
    max_attempts: 3,
    max_age: 60,
  }) as unknown as SubscriptionRow;

// Issue "Production on a RabbitMQ cluster" §1: the bridge worker rebuilt its channel on a fixed 1 s
// timer, then on its own backoff code. Its channel is now a ManagedChannel (`bridge <queue>`),
// rebuilt by the same code as every other AMQP user: a worker whose channel cannot be set up (its
// queue is missing) tries again with exponential backoff and jitter (half to all of 400 ms,
// 800 ms, 1.6 s... up to 5 s), reports each failed try, and shows the channel down in
// amebo_amqp_channels_ready until it is up; it comes up once the queue is there, on the same
// connection, and a stopped worker leaves no gauge behind.
test('a worker whose channel cannot be set up retries with exponential backoff and says so', async () => {
  const name = `reattach-${hex()}`;
  const topology = new Topology({ prefix: `amebo_t${hex()}`, queueType: 'quorum', deliveryLimit: 100 });
  const broker = new Broker({ url: AMQP_URL, logger: pino({ level: 'silent' }), name });
  await broker.open(10_000);
  const admin = await amqp.connect(AMQP_URL);
  const seen: WorkerChannelEvent[] = [];
  const row = rowNamed(name);
  const deps = {
    log: pino({ level: 'silent' }),
    prefetch: 4,
    topology,
    breaker: null,
    broker,
    channelState: (e: WorkerChannelEvent) => void seen.push(e),
  } as unknown as WorkerDeps;
  const target = { id: name, label: `app/${name}`, url: new URL('http://127.0.0.1:1/') };
  const w = new SubscriptionWorker(row, target as never, deps);
  const gauge = async () =>
    (await registry.getSingleMetric('amebo_amqp_channels_ready')?.get())?.values.find(
      (v) => v.labels.channel === `bridge ${w.queue}`,
    )?.value;
  let connects = 0;
  broker.on('connect', () => void connects++);
  try {
    await w.start(); // never throws: the queue is missing, the build is retried
    await eventually(() => seen.length >= 5, 30_000);
    assert.equal(await gauge(), 0, 'the channel gauge says down');
    const retries = seen.slice(0, 5) as Extract<WorkerChannelEvent, { state: 'reconnecting' }>[];
    assert.deepEqual(
      retries.map((e) => [e.state, e.attempt]),
      [1, 2, 3, 4, 5].map((n) => ['reconnecting', n]),
    );
    retries.forEach((e, i) => {
      const step = Math.min(5000, 200 * 2 ** (i + 1));
      assert.ok(
        e.delayMs >= step / 2 && e.delayMs <= step,
        `try ${i + 1}: ${e.delayMs} ms within [${step / 2}, ${step}]`,
      );
      assert.match(e.error, /NOT_FOUND/);
    });
    // It comes up once the queue is there, and says so; the connection was never re-opened.
    const ch = await admin.createChannel();
    await ch.assertQueue(w.queue, { durable: false });
    await eventually(() => seen.some((e) => e.state === 'ready'), 30_000);
    assert.equal(await gauge(), 1, 'the channel gauge says up');
    assert.equal(connects, 0, 'the connection stayed up throughout');
    assert.ok(broker.connected);
    const q = await ch.checkQueue(w.queue);
    assert.equal(q.consumerCount, 1, 'the worker consumes');
  } finally {
    await w.stop(0);
    const ch = await admin.createChannel();
    await ch.deleteQueue(w.queue).catch(() => undefined);
    await admin.close();
    await broker.close();
  }
  assert.equal(await gauge(), undefined, 'a stopped worker leaves no gauge behind');
});

// A deleted subscription loses its queue before the registry's notice stops its worker: the broker
// cancels the consumer first. That is routine and logged at debug; a queue lost while its
// subscription still exists (deleted by hand, or a node failure) is a warning.
test('a consumer cancelled because its subscription was deleted is not a warning; a lost queue is', async () => {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as never) });
  const topology = new Topology({ prefix: `amebo_t${hex()}`, queueType: 'quorum', deliveryLimit: 100 });
  const broker = new Broker({ url: AMQP_URL, logger: pino({ level: 'silent' }), name: `cancel-${hex()}` });
  await broker.open(10_000);
  const admin = await amqp.connect(AMQP_URL);
  const ach = await admin.createChannel();
  try {
    for (const exists of [false, true]) {
      const name = `cancel-${hex()}`;
      const row = rowNamed(name);
      let redeclared = 0;
      const deps = {
        log,
        prefetch: 4,
        topology,
        breaker: null,
        broker,
        channelState: () => undefined,
        redeclare: async () => {
          redeclared++;
          if (exists) await ach.assertQueue(w.queue, { durable: false });
          return exists;
        },
      } as unknown as WorkerDeps;
      const target = { id: name, label: `app/${name}`, url: new URL('http://127.0.0.1:1/') };
      const w = new SubscriptionWorker(row, target as never, deps);
      await ach.assertQueue(w.queue, { durable: false });
      await w.start();
      await eventually(async () => (await ach.checkQueue(w.queue)).consumerCount === 1, 10_000);
      lines.length = 0;
      await ach.deleteQueue(w.queue);
      await eventually(() => redeclared === 1 && lines.some((l) => /cancel/.test(l.msg)), 10_000);
      const about = lines.filter((l) => /cancel/.test(l.msg));
      if (exists) {
        assert.deepEqual(
          about.map((l) => l.level),
          [40],
          'a queue lost under a live subscription: one warning',
        );
        // …and the worker consumes from the queue declared again.
        await eventually(async () => (await ach.checkQueue(w.queue)).consumerCount === 1, 30_000);
      } else
        assert.deepEqual(
          about.map((l) => [l.level, l.msg]),
          [[20, 'consumer cancelled: the subscription was deleted']],
        );
      await w.stop(0);
      await ach.deleteQueue(w.queue).catch(() => undefined);
    }
  } finally {
    await admin.close().catch(() => undefined);
    await broker.close();
  }
});
