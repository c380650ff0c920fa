import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { compactDecrypt } from 'jose';
import WebSocket from 'ws';
import amqp from 'amqplib';
import { AMQP_URL, destroy, eventually, http, nextEvent, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeOf, bridgeStarter, type Bridge } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from './receiver.js';

// Every event reaches every matching subscription, signed (verified with standardwebhooks), encrypted
// when asked (decrypted with jose), in the envelope or CloudEvents format; records and the API follow.
const env = testEnv();
let srv: Running;
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let SHOP: [string, string];
const key = randomBytes(32);
const subs: Record<string, { id: string; signing_secret: string }> = {};
const bridge = (): Bridge => bridgeOf(srv.amebo)!;
/** Resolves once the bridge has applied the registry's announcement about `id` (start it before the change). */
const applied = (id: string, running: boolean) =>
  nextEvent(bridge(), 'applied', (a) => a.subscription === id && a.running === running);

before(async () => {
  await rx.listen();
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  SHOP = await seed(call, 'shop', ['order.placed', 'order.cancelled']);
  const mk = async (name: string, action: string, extra: Record<string, unknown> = {}) => {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'shop', subscription: name, action, handler: rx.url(`/${name}`), ...extra },
      'admin',
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    subs[name] = r.body;
  };
  await mk('plain', 'order.placed');
  await mk('sealed', 'order.*', { encryption_key: key.toString('base64') });
  await mk('cloud', 'order.placed', { format: 'cloudevents' });
});
after(async () => {
  await srv?.close();
  await rx.close();
  await destroy(env);
});

const publish = async (action: string, payload: unknown) => {
  const r = await call('POST', '/v1/events', { action, payload }, SHOP);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.event as string;
};

test('fan-out: each event once to each matching subscription, signed, encrypted, in its format', async () => {
  const placed: string[] = [];
  const cancelled: string[] = [];
  for (let i = 0; i < 20; i++) placed.push(await publish('order.placed', { n: i, sku: `s-${i}` }));
  for (let i = 0; i < 5; i++) cancelled.push(await publish('order.cancelled', { n: i }));
  await eventually(
    () => rx.at('/plain').length >= 20 && rx.at('/sealed').length >= 25 && rx.at('/cloud').length >= 20,
    30_000,
  );
  // Nothing extra arrives: a later event reaches every subscription, and nothing more came before it.
  const marker = await publish('order.placed', { n: -1, sku: 's--1' });
  await eventually(() => ['/plain', '/sealed', '/cloud'].every((p) => rx.ids(p).includes(marker)), 30_000);
  const ids = (p: string) => rx.ids(p).filter((id) => id !== marker);
  assert.deepEqual([...ids('/plain')].sort(), [...placed].sort(), 'plain: every order.placed exactly once');
  assert.deepEqual([...ids('/cloud')].sort(), [...placed].sort());
  assert.deepEqual([...ids('/sealed')].sort(), [...placed, ...cancelled].sort(), 'the pattern gets both actions');
  placed.push(marker);

  for (const r of rx.at('/plain')) {
    const wh = new Webhook(subs.plain!.signing_secret);
    wh.verify(r.body, r.headers as Record<string, string>); // throws when the signature is wrong
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-amebo-action'], 'order.placed');
    assert.equal(r.headers['x-amebo-attempt'], '1');
    assert.equal(r.headers['x-amebo-subscription'], 'shop/plain');
    assert.match(String(r.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);
    assert.ok(Math.abs(Number(r.headers['webhook-timestamp']) - Date.now() / 1000) < 60);
    const e = r.json;
    assert.deepEqual(Object.keys(e).sort(), [
      'action',
      'application',
      'attempt',
      'conversation_id',
      'deduper',
      'id',
      'payload',
      'schema_version',
      'subscription',
      'timestamp',
    ]);
    assert.equal(e.id, r.headers['webhook-id']);
    assert.equal(e.application, 'shop');
    assert.equal(e.attempt, 1);
    assert.equal(e.payload.sku, `s-${e.payload.n}`);
  }
  // A wrong secret does not verify: the check above is a real one.
  const other = new Webhook(`whsec_${randomBytes(24).toString('base64')}`);
  assert.throws(() => other.verify(rx.at('/plain')[0]!.body, rx.at('/plain')[0]!.headers as Record<string, string>));

  for (const r of rx.at('/sealed')) {
    new Webhook(subs.sealed!.signing_secret).verify(r.body, r.headers as Record<string, string>);
    assert.equal(typeof r.json.payload, 'string', 'the payload is a JWE compact string');
    const { plaintext, protectedHeader } = await compactDecrypt(r.json.payload, key);
    assert.equal(protectedHeader.alg, 'dir');
    assert.equal(protectedHeader.enc, 'A256GCM');
    const p = JSON.parse(new TextDecoder().decode(plaintext));
    assert.equal(typeof p.n, 'number');
  }

  for (const r of rx.at('/cloud')) {
    new Webhook(subs.cloud!.signing_secret).verify(r.body, r.headers as Record<string, string>);
    assert.equal(r.headers['content-type'], 'application/cloudevents+json');
    const ce = r.json;
    assert.equal(ce.specversion, '1.0');
    assert.equal(ce.type, 'order.placed');
    assert.equal(ce.id, r.headers['webhook-id']);
    assert.equal(ce.source, '/amebo/applications/shop');
    assert.equal(ce.data.sku, `s-${ce.data.n}`);
  }

  // Delivery records, written in batches: 21 delivered for plain (the marker too), each with one attempt.
  const d = await eventually(async () => {
    const r = await call('GET', `/v1/deliveries?subscription=${subs.plain!.id}&limit=100`, undefined, 'admin');
    return r.body.items.length === 21 && r.body.items.every((x: any) => x.state === 'delivered') ? r : null;
  }, 30_000);
  assert.equal(d!.body.items[0].attempts, 1);
  assert.equal(d!.body.items[0].last_status, 200);
  const att = await call('GET', `/v1/deliveries/${placed[0]}/${subs.plain!.id}/attempts`, undefined, SHOP);
  assert.equal(att.status, 200);
  assert.equal(att.body.items.length, 1);
  assert.equal(att.body.items[0].status, 200);
  assert.equal(typeof att.body.items[0].latency_ms, 'number');
  const ev = await call('GET', `/v1/events/${placed[0]}`, undefined, 'admin');
  assert.equal(ev.status, 200);
  assert.equal(ev.body.deliveries.length, 3, 'the event shows one delivery per matching subscription');
  assert.ok(ev.body.deliveries.every((x: any) => x.state === 'delivered'));
  // Pagination and filters.
  const page = await call('GET', `/v1/deliveries?subscription=${subs.sealed!.id}&limit=10`, undefined, 'admin');
  assert.equal(page.body.items.length, 10);
  const page2 = await call(
    'GET',
    `/v1/deliveries?subscription=${subs.sealed!.id}&limit=100&cursor=${page.body.next_cursor}`,
    undefined,
    'admin',
  );
  assert.equal(page2.body.items.length, 16);
  assert.equal((await call('GET', '/v1/deliveries?state=dead', undefined, 'admin')).body.items.length, 0);
});

test('secret rotation: old and new signatures side by side, both verify', async () => {
  const rotated = applied(subs.plain!.id, true);
  const rot = await call('POST', `/v1/subscriptions/${subs.plain!.id}/rotate-secret`, undefined, 'admin');
  assert.equal(rot.status, 200);
  await rotated; // the bridge signs with the new secret from now on
  const before = rx.at('/plain').length;
  const id = await publish('order.placed', { n: 99, sku: 's-99' });
  await eventually(() => rx.at('/plain').length > before, 30_000);
  const r = rx.at('/plain').find((x) => x.headers['webhook-id'] === id)!;
  assert.equal(String(r.headers['webhook-signature']).split(' ').length, 2);
  new Webhook(rot.body.signing_secret).verify(r.body, r.headers as Record<string, string>);
  new Webhook(subs.plain!.signing_secret).verify(r.body, r.headers as Record<string, string>);
  subs.plain!.signing_secret = rot.body.signing_secret;
});

test('pause stops delivery, resume delivers what waited', async () => {
  const paused = applied(subs.cloud!.id, false);
  assert.equal((await call('POST', `/v1/subscriptions/${subs.cloud!.id}/pause`, undefined, SHOP)).status, 200);
  await paused; // the bridge stopped its consumer
  const before = rx.at('/cloud').length;
  const id = await publish('order.placed', { n: 100, sku: 's-100' });
  await eventually(() => rx.ids('/plain').includes(id), 30_000);
  // Nothing delivered while paused: the event waits in the subscription's queue, which nobody consumes.
  const queue = (subs.cloud as unknown as { queue: string }).queue;
  const q = await eventually(async () => {
    const x = await srv.amebo.broker.withThrowawayChannel((ch) => ch.checkQueue(queue));
    return x.messageCount === 1 ? x : null;
  }, 30_000);
  assert.equal(q!.consumerCount, 0, 'no consumer while paused');
  assert.equal(rx.at('/cloud').length, before, 'nothing delivered while paused');
  assert.equal((await call('POST', `/v1/subscriptions/${subs.cloud!.id}/resume`, undefined, SHOP)).status, 200);
  await eventually(() => rx.ids('/cloud').includes(id), 30_000);
});

test('/test sends a signed synthetic event and reports the outcome', async () => {
  const r = await call('POST', `/v1/subscriptions/${subs.plain!.id}/test`, undefined, SHOP);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.delivered, true);
  assert.equal(r.body.status, 200);
  const got = rx.at('/plain').find((x) => x.headers['webhook-id'] === r.body.event)!;
  assert.ok(got, 'the receiver got it');
  new Webhook(subs.plain!.signing_secret).verify(got.body, got.headers as Record<string, string>);
  assert.equal(got.json.payload.test, true);
  rx.on('/plain', () => ({ status: 500, body: 'boom' }));
  const bad = await call('POST', `/v1/subscriptions/${subs.plain!.id}/test`, undefined, SHOP);
  assert.equal(bad.body.delivered, false);
  assert.equal(bad.body.status, 500);
  assert.equal(bad.body.response_excerpt, 'boom');
  rx.on('/plain', () => ({}));
  // Another application may not test (or read) this subscription.
  const OTHER = await seed(call, 'other', []);
  assert.equal((await call('POST', `/v1/subscriptions/${subs.plain!.id}/test`, undefined, OTHER)).status, 403);
  assert.equal(
    (await call('GET', `/v1/deliveries/${r.body.event}/${subs.plain!.id}/attempts`, undefined, OTHER)).status,
    403,
  );
  const mine = await call('GET', '/v1/deliveries', undefined, OTHER);
  assert.equal(mine.body.items.length, 0, 'applications list only their own deliveries');
});

test('delivery outcomes reach the live tail (GET /v1/stream)', async () => {
  const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/v1/stream?actions=order.*`, {
    headers: { authorization: `Bearer ${env.adminToken}` },
  });
  const notes: any[] = [];
  let hello: () => void;
  const ready = new Promise<void>((r) => (hello = r));
  ws.on('message', (d) => {
    const m = JSON.parse((d as Buffer).toString());
    if (m.type === 'hello') hello(); // the hub is subscribed: nothing published from now on is missed
    if (m.type === 'delivery') notes.push(m);
  });
  ws.once('error', (err) => assert.fail(err));
  try {
    await ready;
    const id = await publish('order.cancelled', { n: 7 });
    const n = await eventually(() => notes.find((m) => m.event === id), 30_000);
    assert.equal(n.state, 'delivered');
    assert.equal(n.action, 'order.cancelled');
    assert.equal(n.subscription, subs.sealed!.id);
    assert.equal(n.status, 200);
  } finally {
    ws.close();
  }
});

test('metrics: delivered, retried/failed, in-flight and latency per subscription', async () => {
  const r = await http(srv.url, env, 'GET', '/metrics');
  assert.equal(r.status, 200);
  const text = String(r.body);
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  assert.ok(value(/amebo_deliveries_total\{subscription="shop\/plain",outcome="delivered"\} (\d+)/) >= 20);
  assert.ok(value(/amebo_delivery_seconds_count\{subscription="shop\/sealed"\} (\d+)/) >= 25);
  assert.match(text, /amebo_deliveries_in_flight\{subscription="shop\/plain"\} 0/);
});

test('a subscription queue deleted behind Amebo’s back is declared again and delivery goes on', async () => {
  const queue = (subs.plain as unknown as { queue: string }).queue;
  assert.ok(queue, 'the subscription names its queue');
  // The worker's channel is observable like every other (issue "Production on a RabbitMQ cluster" §1).
  const gauge = async () =>
    new RegExp(`amebo_amqp_channels_ready\\{channel="bridge ${queue.replace(/\./g, '\\.')}"\\} (\\d)`).exec(
      String((await http(srv.url, env, 'GET', '/metrics')).body),
    )?.[1];
  assert.equal(await gauge(), '1', 'the channel gauge says up');
  const mine = (e: { subscription: string }) => e.subscription === subs.plain!.id;
  const lost = nextEvent(bridge(), 'worker-lost', mine);
  const back = nextEvent(bridge(), 'worker-ready', mine);
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
  } finally {
    await conn.close();
  }
  // The bridge declares it again (and binds it) before it consumes from it again.
  await eventually(
    async () =>
      (await srv.amebo.broker.withThrowawayChannel((ch) => ch.checkQueue(queue)).catch(() => null))?.consumerCount,
    30_000,
    100,
  );
  assert.equal((await lost)[0].queue, queue, 'the cancel closed the channel: reported lost');
  assert.equal((await back)[0].queue, queue, 'and rebuilt: reported ready');
  assert.equal(await gauge(), '1', 'the channel gauge says up again');
  const before = rx.at('/plain').length;
  const id = await publish('order.placed', { n: 'after-delete' });
  await eventually(() => rx.ids('/plain').includes(id), 30_000);
  assert.ok(rx.at('/plain').length > before);
});
