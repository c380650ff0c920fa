import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChannelModel } from 'amqplib';
import { pino } from 'pino';
import { Topology } from '../../src/broker/topology.js';
import { registry } from '../../src/metrics.js';
import type { SubscriptionRow } from '../../src/store/registry.js';
import { SubscriptionWorker, type WorkerChannelEvent, type WorkerDeps } from '../../bridge/worker.js';
import { eventually, hex } from '../helpers/harness.js';

// Issue "Production on a RabbitMQ cluster" §1: the bridge worker rebuilt its channel on a fixed 1 s
// timer. A worker whose channel cannot be set up tries again with exponential backoff and jitter
// (link.ts's backoffMs: half to all of 200 ms, 400 ms, 800 ms... up to 5 s), reports each failed
// try, and shows the channel down in amebo_amqp_channels_ready until it is up.
test('a worker whose channel cannot be set up retries with exponential backoff and says so', async () => {
  const name = `reattach-${hex()}`;
  const topology = new Topology({ prefix: 'amebo_t', queueType: 'quorum', deliveryLimit: 100 });
  const seen: WorkerChannelEvent[] = [];
  let failing = true;
  let tries = 0;
  const channel = {
    on: () => undefined,
    prefetch: async () => undefined,
    consume: async () => ({ consumerTag: 'ctag' }),
    cancel: async () => undefined,
    close: async () => undefined,
  };
  const model = {
    createChannel: async () => {
      tries++;
      if (failing) throw new Error('NOT_FOUND - no queue');
      return channel;
    },
  } as unknown as ChannelModel;
  const row = {
    id: name,
    application: 'app',
    name,
    ordered: false,
    retry_schedule: [1],
    max_attempts: 3,
    max_age: 60,
  } as unknown as SubscriptionRow;
  const deps = {
    log: pino({ level: 'silent' }),
    prefetch: 4,
    topology,
    breaker: null,
    model: () => model,
    channelState: (e: WorkerChannelEvent) => void seen.push(e),
  } as unknown as WorkerDeps;
  const target = { id: name, label: `app/${name}`, url: new URL('http://127.0.0.1:1/') };
  const w = new SubscriptionWorker(row, target as never, deps);
  const gauge = async () =>
    (await registry.getSingleMetric('amebo_amqp_channels_ready')?.get())?.values.find(
      (v) => v.labels.channel === `bridge ${w.queue}`,
    )?.value;
  try {
    await w.attach(model);
    await eventually(() => seen.length >= 5, 30_000);
    assert.equal(await gauge(), 0, 'the channel gauge says down');
    const retries = seen.slice(0, 5) as Extract<WorkerChannelEvent, { state: 'reconnecting' }>[];
    assert.deepEqual(
      retries.map((e) => [e.state, e.attempt]),
      [1, 2, 3, 4, 5].map((n) => ['reconnecting', n]),
    );
    retries.forEach((e, i) => {
      const step = Math.min(5000, 200 * 2 ** i);
      assert.ok(
        e.delayMs >= step / 2 && e.delayMs <= step,
        `try ${i + 1}: ${e.delayMs} ms within [${step / 2}, ${step}]`,
      );
      assert.equal(e.error, 'NOT_FOUND - no queue');
    });
    // It comes up once the channel can be set up, and says so.
    failing = false;
    await eventually(() => seen.some((e) => e.state === 'ready'), 30_000);
    assert.equal(await gauge(), 1, 'the channel gauge says up');
    assert.ok(tries >= 6);
  } finally {
    await w.stop(0);
  }
  assert.equal(await gauge(), undefined, 'a stopped worker leaves no gauge behind');
});
