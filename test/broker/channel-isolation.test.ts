import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { pino } from 'pino';
import { Broker } from '../../src/broker/connection.js';
import type { HookFailure, ReconnectAttempt } from '../../src/broker/link.js';
import { registry } from '../../src/metrics.js';
import { AMQP_URL, eventually, hex } from '../helpers/harness.js';
import { TcpProxy } from '../helpers/proxy.js';

// Issue "Production on a RabbitMQ cluster" §1, one recovery model: a channel whose setup fails at
// a reconnect (a consumer whose queue is missing on the new node) used to fail the whole
// connection, which was closed and tried again, so every other channel on it flapped. Its failure
// is now its own, as on a live connection: the connection and the other channels come up, and
// that channel alone is retried with backoff, reported (`failed`, not ready, its gauge at 0) and
// logged at warn with its name and node, until its cause is gone.
const node = new TcpProxy(5672);
let broker: Broker | null = null;
const queue = `isolation-${hex()}`;
after(async () => {
  await broker?.close();
  await node.close();
  const c = await amqp.connect(AMQP_URL);
  await (await c.createChannel()).deleteQueue(queue).catch(() => undefined);
  await c.close();
});

async function gauge(channel: string): Promise<number | null> {
  const m = await registry.getSingleMetric('amebo_amqp_channels_ready')?.get();
  return m?.values.find((v) => v.labels.channel === channel)?.value ?? null;
}

test('a channel whose setup fails at reconnect is retried alone; the connection and the other channels stay up', async () => {
  const port = await node.listen();
  const lines: { level: number; msg: string; channel?: string; node?: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as (typeof lines)[0]);
      done();
    },
  });
  const admin = await amqp.connect(AMQP_URL);
  const ach = await admin.createChannel();
  await ach.assertQueue(queue, { durable: false });

  broker = new Broker({
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    logger: pino({ level: 'debug' }, sink),
    name: `isolation-${hex()}`,
  });
  await broker.open(10_000);
  const b = broker;
  const steady = b.channel({
    name: `steady ${queue}`,
    setup: (ch) => ch.checkExchange('amq.direct').then(() => undefined),
  });
  const fragile = b.channel({
    name: `consumer ${queue}`,
    prefetch: 1,
    setup: async (ch) => {
      await ch.consume(queue, () => undefined);
    },
  });
  await steady.open();
  await fragile.open();
  assert.ok(steady.ready && fragile.ready);

  const connects: number[] = [];
  const reconnecting: ReconnectAttempt[] = [];
  b.on('connect', () => void connects.push(b.connects));
  b.on('reconnecting', (r) => void reconnecting.push(r));
  const failures: HookFailure[] = [];
  fragile.on('failed', (f) => void failures.push(f));
  let steadyLost = 0;
  steady.on('lost', () => void steadyLost++);

  // The queue goes away while the connection is down (as on a node that never had it).
  await ach.deleteQueue(queue);
  node.cut();
  // (Before: the connection was closed and tried again, the other channel with it.)
  await eventually(() => failures.length >= 3 || reconnecting.length > 1, 30_000);

  assert.equal(reconnecting.length, 0, 'no failed connection attempt');
  assert.equal(connects.length, 1, 'the connection came back once and was not re-opened');
  assert.ok(b.connected);
  assert.ok(steady.ready, 'the other channel is ready');
  assert.equal(steadyLost, 1, 'the other channel was lost once, with the connection, and did not flap');
  assert.equal(await gauge(`steady ${queue}`), 1);
  assert.equal(fragile.ready, false, 'the failing channel is not ready');
  assert.equal(await gauge(`consumer ${queue}`), 0, 'its gauge says down');
  assert.deepEqual(
    failures.slice(0, 3).map((f) => f.attempt),
    [1, 2, 3],
  );
  failures.slice(0, 3).forEach((f, i) => {
    const step = 200 * 2 ** (i + 1);
    assert.ok(f.delayMs >= step / 2 && f.delayMs <= step, `backoff ${f.delayMs} ms within [${step / 2}, ${step}]`);
    assert.match(f.error.message, /NOT_FOUND/);
    assert.equal(f.node, `amqp://guest:***@127.0.0.1:${port}?heartbeat=10`);
  });
  const logged = lines.filter(
    (l) => l.channel === `channel "consumer ${queue}"` && / failed; next try in /.test(l.msg),
  );
  assert.ok(logged.length >= 3, JSON.stringify(lines.map((l) => l.msg)));
  for (const l of logged) {
    assert.equal(l.level, 40, 'at warn');
    assert.equal(l.node, `amqp://guest:***@127.0.0.1:${port}?heartbeat=10`, 'names the node');
  }
  assert.ok(
    lines.every((l) => !/retrying the connection/.test(l.msg)),
    'the connection was not failed for it',
  );

  // The cause goes away: the channel comes up by itself, on the same connection.
  const back = new Promise((r) => fragile.once('ready', r));
  await ach.assertQueue(queue, { durable: false });
  await back;
  assert.ok(fragile.ready);
  assert.equal(await gauge(`consumer ${queue}`), 1);
  assert.equal(connects.length, 1);
  assert.equal(steadyLost, 1);
  await admin.close();
});
