import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { destroy, http, nextEvent, start, testEnv, type Running } from '../helpers/harness.js';
import { announceStream, streamHubOf } from '../../src/api/stream.js';
import { topicMatcher } from '../../src/delivery/topic.js';

const env = testEnv();
let srv: Running;
const APP: [string, string] = ['shop', 'shop-secret-0123456789'];

before(async () => {
  srv = await start(env);
  await http(srv.url, env, 'POST', '/v1/applications', { application: 'shop', secret: APP[1] }, 'admin');
  for (const action of ['user.created', 'order.placed'])
    await http(srv.url, env, 'POST', '/v1/actions', { action, application: 'shop', schemata: {} }, APP);
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

test('topic patterns match like RabbitMQ', () => {
  const m = (p: string, k: string) => topicMatcher(p)(k);
  assert.equal(m('orders.*', 'orders.placed'), true);
  assert.equal(m('orders.*', 'orders.v1.placed'), false);
  assert.equal(m('#.created', 'user.created'), true);
  assert.equal(m('#.created', 'created'), true);
  assert.equal(m('#', 'a.b.c'), true);
  assert.equal(m('a.#.c', 'a.c'), true);
  assert.equal(m('a.#.c', 'a.x.y.c'), true);
  assert.equal(m('a.#.c', 'a.x.y.d'), false);
  assert.equal(m('user.created', 'user.created'), true);
  assert.equal(m('user.created', 'user.createdx'), false);
});

/** Opens the live tail; `admin` sends the admin token in the Authorization header. */
function connect(
  query: string,
  admin = false,
): Promise<{ ws: WebSocket; messages: any[]; next: (pred: (m: any) => boolean, ms?: number) => Promise<any> }> {
  const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/v1/stream${query}`, {
    headers: admin ? { authorization: `Bearer ${env.adminToken}` } : {},
  });
  const messages: any[] = [];
  const waiters: { pred: (m: any) => boolean; resolve: (m: any) => void }[] = [];
  ws.on('message', (d) => {
    const m = JSON.parse((d as Buffer).toString());
    messages.push(m);
    for (const w of [...waiters])
      if (w.pred(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
  });
  const next = (pred: (m: any) => boolean, ms = 5000) =>
    new Promise<any>((resolve, reject) => {
      const found = messages.find(pred);
      if (found) return resolve(found);
      const t = setTimeout(() => reject(new Error('no such stream message within ' + ms + ' ms')), ms);
      waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
    ws.once('open', () => resolve({ ws, messages, next }));
  });
}

test('the stream sends matching events and delivery notes; other actions are filtered out', async () => {
  const hub = streamHubOf(srv.amebo)!;
  const ready = hub.listening ? null : nextEvent(hub, 'ready');
  const { ws, messages, next } = await connect('?actions=user.*', true);
  try {
    await next((m) => m.type === 'hello');
    await ready; // the tap queue is bound and the notes channel subscribed
    const o = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 1 } }, APP);
    const u = await http(srv.url, env, 'POST', '/v1/events', { action: 'user.created', payload: { n: 2 } }, APP);
    const got = await next((m) => m.type === 'event');
    assert.equal(got.event.id, u.body.event);
    assert.deepEqual(got.event.payload, { n: 2 });
    await announceStream(srv.amebo.redis, env.cfg.redis, {
      type: 'delivery',
      action: 'user.created',
      event: u.body.event,
      state: 'delivered',
    });
    await announceStream(srv.amebo.redis, env.cfg.redis, { type: 'service', fqn: 'd.t.i', status: 'up' });
    assert.equal((await next((m) => m.type === 'delivery')).event, u.body.event);
    assert.equal((await next((m) => m.type === 'service')).status, 'up');
    assert.ok(
      !messages.some((m) => m.type === 'event' && m.event.id === o.body.event),
      'order.placed was filtered out',
    );
    // The last client gone, the hub closes its tap and its notes subscription.
    const closed = nextEvent(hub, 'closed');
    ws.close();
    await closed;
    assert.equal(hub.listening, false);
  } finally {
    ws.close();
  }
});

test('the stream refuses a wrong token or a bad pattern', async () => {
  await assert.rejects(connect(''), /HTTP 401/);
  // The admin token is not taken in the URL, even the right one.
  await assert.rejects(connect(`?token=${env.adminToken}`), /HTTP 401/);
  await assert.rejects(connect('?actions=a..b', true), /HTTP 400/);
});
