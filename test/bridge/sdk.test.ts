import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import amqp from 'amqplib';
import { pino } from 'pino';
import { AMQP_URL, destroy, drainQueue, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { consume, PermanentError, type Consumer } from '../../src/sdk/consume.js';
import { seed } from './receiver.js';

// Native AMQP subscriptions: the SDK consumer acks after the handler and its confirmed publishes,
// retries through the amebo.retry.<ms> queues and dead-letters like the bridge.
const env = testEnv();
let srv: Running;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];
let sub: { id: string; queue: string };
const outQueue = `${env.cfg.prefix}.test.out`;
const consumers: Consumer[] = [];

before(async () => {
  srv = await start(env, { plugins: [deliveryPlugin] });
  APP = await seed(call, 'inventory', ['stock.changed']);
  const r = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'inventory',
      subscription: 'native',
      action: 'stock.changed',
      transport: 'amqp',
      retry_schedule: [1],
      max_attempts: 3,
    },
    'admin',
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
  sub = r.body;
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertQueue(outQueue, { durable: false });
  await conn.close();
});
after(async () => {
  for (const c of consumers) await c.close(1000);
  await srv?.close();
  await destroy(env);
});

const publish = async (payload: unknown) => {
  const r = await call('POST', '/v1/events', { action: 'stock.changed', payload }, APP);
  assert.equal(r.status, 202);
  return r.body.event as string;
};

test('consume: retry ladder, confirmed publishes before the ack, dead letters with the reason', async () => {
  const seen: { sku: string; attempt: number; at: number }[] = [];
  const c = await consume<{ sku: string }>({
    amqpUrl: AMQP_URL,
    queue: sub.queue,
    prefix: env.cfg.prefix,
    retrySchedule: [1],
    maxAttempts: 3,
    handler: async (e, ctx) => {
      seen.push({ sku: e.payload.sku, attempt: ctx.attempt, at: Date.now() });
      assert.equal(e.action, 'stock.changed');
      if (e.payload.sku === 'flaky' && ctx.attempt === 1) throw new Error('first try fails');
      if (e.payload.sku === 'broken') throw new Error('always broken');
      if (e.payload.sku === 'poison') throw new PermanentError('cannot ever work');
      await ctx.publish('', outQueue, { from: e.id, sku: e.payload.sku });
    },
  });
  consumers.push(c);
  const ok = await publish({ sku: 'fine' });
  const flaky = await publish({ sku: 'flaky' });
  const broken = await publish({ sku: 'broken' });
  const poison = await publish({ sku: 'poison' });

  const out = await drainQueue(outQueue, 2, 30_000);
  assert.deepEqual(out.map((m) => JSON.parse(m.content.toString()).from).sort(), [ok, flaky].sort());
  const f = seen.filter((s) => s.sku === 'flaky');
  assert.deepEqual(
    f.map((s) => s.attempt),
    [1, 2],
  );
  assert.ok(f[1]!.at - f[0]!.at >= 950, 'the retry came back after the 1 s step');

  const dl = await eventually(async () => {
    const r = await call('GET', `/v1/subscriptions/${sub.id}/dead-letters`, undefined, APP);
    return r.body.count === 2 ? r.body : null;
  }, 30_000);
  const byEvent = new Map(dl.items.map((i: any) => [i.event, i]));
  assert.equal((byEvent.get(broken) as any).reason, 'max_attempts');
  assert.equal((byEvent.get(broken) as any).attempts, 3);
  assert.equal((byEvent.get(broken) as any).last_error, 'always broken');
  assert.equal((byEvent.get(poison) as any).reason, 'permanent_error');
  assert.deepEqual(
    seen.filter((s) => s.sku === 'broken').map((s) => s.attempt),
    [1, 2, 3],
  );
  assert.equal(seen.filter((s) => s.sku === 'poison').length, 1, 'a permanent error is not retried');
  await c.close();
  consumers.pop();
});

test('a message is not acked until the handler resolves: a consumer that stops mid-handler loses nothing', async () => {
  let release!: () => void;
  const first = await consume({
    amqpUrl: AMQP_URL,
    queue: sub.queue,
    prefix: env.cfg.prefix,
    handler: () => new Promise<void>((r) => (release = r)),
  });
  const id = await publish({ sku: 'slow' });
  await eventually(() => release !== undefined, 30_000);
  await first.close(200); // the handler has not resolved: the message must come back
  release();
  const got: string[] = [];
  const second = await consume<{ sku: string }>({
    amqpUrl: AMQP_URL,
    queue: sub.queue,
    prefix: env.cfg.prefix,
    handler: async (e) => {
      got.push(e.id);
    },
  });
  consumers.push(second);
  await eventually(() => got.includes(id), 30_000);
});

test('a consumer whose queue is deleted and declared again consumes again, without a restart', async () => {
  const q = `${env.cfg.prefix}.test.recreated`;
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  try {
    await ch.assertQueue(q, { durable: true });
    const got: string[] = [];
    // What the consumer logs: the test waits for it to have seen the broker cancel it.
    const logged: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logged.push(String((JSON.parse(chunk.toString()) as { msg?: string }).msg));
        done();
      },
    });
    const c = await consume<{ n: number }>({
      amqpUrl: AMQP_URL,
      queue: q,
      prefix: env.cfg.prefix,
      logger: pino({ level: 'warn' }, sink),
      handler: async (e) => {
        got.push(String(e.payload.n));
      },
    });
    consumers.push(c);
    const tries: { scope: string; attempt: number; error: string }[] = [];
    c.on('reconnecting', (r) => void tries.push({ scope: r.scope, attempt: r.attempt, error: r.error.message }));
    const recovered: string[] = [];
    c.on('recovered', (r) => void recovered.push(r.queue));
    const send = (n: number) =>
      ch.sendToQueue(q, Buffer.from(JSON.stringify({ id: `e${n}`, action: 'x', payload: { n } })), {
        persistent: true,
      });
    send(1);
    await eventually(() => got.includes('1'), 30_000);
    await ch.deleteQueue(q); // the broker cancels the consumer
    await eventually(() => logged.some((m) => m.includes('the broker cancelled the consumer')), 30_000);
    // While the queue is missing, each failed rebuild of the consumer's channel is reported.
    await eventually(() => tries.length >= 1, 30_000);
    assert.equal(tries[0]!.scope, 'channel', 'the connection stayed up; the channel could not be set up');
    assert.equal(tries[0]!.attempt, 1);
    assert.match(tries[0]!.error, /NOT_FOUND/);
    await ch.assertQueue(q, { durable: true });
    send(2);
    await eventually(() => got.includes('2'), 30_000);
    assert.deepEqual(recovered, [q]);
  } finally {
    await ch.deleteQueue(q).catch(() => undefined);
    await conn.close();
  }
});
