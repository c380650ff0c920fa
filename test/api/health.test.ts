/**
 * Operators' truth against the real broker: subscription health (backlog and dead letters from the
 * queues, the breaker, success rate, latency), stats in buckets, pending events from the event log,
 * subscriptions addressed by name, and every matching subscription's state in the event detail —
 * paused and circuit-open ones included although they never attempted the event.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeOf, bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from '../bridge/receiver.js';

const env = testEnv();
let srv: Running;
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];
const ids: Record<string, string> = {};

before(async () => {
  await rx.listen();
  rx.on('/down', () => ({ status: 503 }));
  srv = await start(env, {
    parts: [bridgeStarter({ breaker: { threshold: 2, windowMs: 60_000, cooldownMs: 120_000 } })],
    plugins: [deliveryPlugin],
  });
  APP = await seed(call, 'shop', ['order.placed']);
  const mk = async (name: string, extra: Record<string, unknown>) => {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'shop', subscription: name, action: 'order.*', ...extra },
      'admin',
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    ids[name] = r.body.id;
  };
  await mk('ok', { handler: rx.url('/ok') });
  await mk('down', { handler: rx.url('/down'), retry_schedule: [60] });
  await mk('held', { handler: rx.url('/held') });
  await mk('audit', { transport: 'amqp' });
  assert.equal((await call('POST', `/v1/subscriptions/${ids.held}/pause`, {}, 'admin')).status, 200);
  await eventually(() => !bridgeOf(srv.amebo)!.subscriptions().includes(ids.held!), 30_000);
});
after(async () => {
  await srv?.close();
  await rx.close();
  await destroy(env);
});

const events: string[] = [];

test('health: active, circuit open and paused, with the backlog the broker reports', async () => {
  const publish = async (n: number) => {
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { n } }, APP);
    assert.equal(r.status, 202);
    events.push(r.body.event);
  };
  // Two first: their failures open the circuit of `down`; the two after it wait in its queue.
  for (let n = 0; n < 2; n++) await publish(n);
  await eventually(async () => {
    const h = await call('GET', `/v1/subscriptions/${ids.down}/health?window=5m`, undefined, APP);
    return h.body.state === 'circuit_open';
  }, 30_000);
  for (let n = 2; n < 4; n++) await publish(n);
  await eventually(() => rx.ids('/ok').length === 4, 30_000);
  // The attempts are recorded off the delivery path (batched): wait for them.
  const ok = (await eventually(async () => {
    const h = await call('GET', `/v1/subscriptions/${ids.ok}/health?window=5m`, undefined, APP);
    return h.status !== 200 || h.body.attempts === 4 ? h : undefined;
  }, 30_000))!;
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.state, 'active');
  assert.equal(ok.body.success_rate, 1);
  assert.equal(ok.body.attempts, 4);
  assert.equal(ok.body.backlog, 0);
  assert.equal(ok.body.breaker.state, 'closed');
  assert.equal(typeof ok.body.latency_ms.p99, 'number');
  assert.ok(ok.body.last_success_at);

  // Two failures open the circuit; the rest wait in the queue.
  const down = (await eventually(async () => {
    const h = await call('GET', `/v1/subscriptions/${ids.down}/health?window=5m`, undefined, APP);
    return h.body.state === 'circuit_open' && h.body.backlog >= 1 ? h : undefined;
  }, 30_000))!;
  assert.equal(down.body.breaker.state, 'open');
  assert.ok(Date.parse(down.body.breaker.next_probe_at) > Date.now());
  assert.equal(down.body.success_rate, 0);
  assert.match(down.body.last_error, /503/);
  // The rest wait in its queue or on the ladder (one may be held unacked at the closed gate).
  assert.ok(down.body.retrying + down.body.backlog <= 4, JSON.stringify(down.body));

  const held = await call('GET', `/v1/subscriptions/${ids.held}/health`, undefined, APP);
  assert.deepEqual(
    [held.body.state, held.body.backlog, held.body.attempts, held.body.success_rate],
    ['paused', 4, 0, null],
  );
  assert.equal(held.body.dead, 0);
});

test('subscriptions by name: application/subscription works wherever an id does', async () => {
  const byName = await call('GET', `/v1/subscriptions/shop%2Fheld/health`, undefined, APP);
  assert.equal(byName.status, 200);
  assert.equal(byName.body.subscription, ids.held);
  assert.equal((await call('GET', `/v1/subscriptions/shop%2Fheld`, undefined, APP)).body.id, ids.held);
  const missing = await call('GET', `/v1/subscriptions/shop%2Fnope`, undefined, 'admin');
  assert.equal(missing.status, 404);
  assert.match(missing.body.error.message, /application\/subscription/);
});

test('stats: buckets over the window whose attempts add up', async () => {
  const s = await call('GET', `/v1/subscriptions/${ids.ok}/stats?window=5m`, undefined, APP);
  assert.equal(s.status, 200, JSON.stringify(s.body));
  assert.equal(s.body.bucket_seconds, 10);
  assert.ok(s.body.buckets.length >= 30 && s.body.buckets.length <= 32, String(s.body.buckets.length));
  const sum = s.body.buckets.reduce((n: number, b: { attempts: number }) => n + b.attempts, 0);
  assert.equal(sum, 4);
  assert.equal((await call('GET', `/v1/subscriptions/${ids.ok}/stats?window=7d`, undefined, APP)).status, 400);
});

test('pending: what waits for a paused subscription, oldest first, without touching its queue', async () => {
  const p = await call('GET', `/v1/subscriptions/shop%2Fheld/pending?limit=3`, undefined, APP);
  assert.equal(p.status, 200, JSON.stringify(p.body));
  assert.deepEqual(
    p.body.items.map((e: { id: string }) => e.id),
    events.slice(0, 3),
  );
  assert.deepEqual(p.body.items[0].payload, { n: 0 });
  const h = await call('GET', `/v1/subscriptions/${ids.held}/health`, undefined, APP);
  assert.equal(h.body.backlog, 4, 'still four in the queue: nothing was taken off it');
  const native = await call('GET', `/v1/subscriptions/${ids.audit}/pending`, undefined, APP);
  assert.equal(native.status, 409);
});

test('event detail: every matching subscription with its state, never-attempted ones included', async () => {
  const e = await call('GET', `/v1/events/${events[3]}`, undefined, APP);
  assert.equal(e.status, 200, JSON.stringify(e.body));
  const by = Object.fromEntries(
    (e.body.deliveries as { subscription_name: string }[]).map((d) => [d.subscription_name, d]),
  ) as Record<string, Record<string, any>>;
  assert.deepEqual(Object.keys(by).sort(), ['audit', 'down', 'held', 'ok']);
  assert.equal(by.ok!.state, 'delivered');
  assert.equal(by.ok!.attempts, 1);
  assert.equal(by.held!.state, 'paused');
  assert.equal(by.held!.backlog, 4);
  assert.equal(by.held!.attempts, 0);
  assert.equal(by.down!.state, 'circuit_open');
  assert.ok(by.down!.next_probe_at);
  assert.equal(by.audit!.state, 'native');
});
