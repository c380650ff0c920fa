/**
 * Two deployments sharing one RabbitMQ and one Redis (pub/sub ignores database numbers), told apart
 * only by AMEBO_PREFIX: neither sees the other's events, delivery notes, service changes, tickets or
 * failed-login counts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { destroy, http, start, testEnv, type Running, type TestEnv } from './helpers/harness.js';
import { bridgeStarter } from '../bridge/index.js';
import { announceStream } from '../src/api/stream.js';
import { Receiver, seed } from './bridge/receiver.js';

interface Side {
  env: TestEnv;
  srv: Running;
  app: [string, string];
  messages: Record<string, any>[];
  ws: WebSocket;
}

const rx = new Receiver();
const sides: Side[] = [];

async function side(name: string): Promise<Side> {
  const env = testEnv({ authFailLimit: 3 });
  const srv = await start(env, { parts: [bridgeStarter({ breaker: false })] });
  const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
    http(srv.url, env, m, p, body, auth);
  const app = await seed(call, 'shop', ['order.placed']);
  const sub = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'hook', action: 'order.placed', handler: rx.url(`/${name}`) },
    'admin',
  );
  assert.equal(sub.status, 201, JSON.stringify(sub.body));
  const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/v1/stream`, {
    headers: { authorization: `Bearer ${env.adminToken}` },
  });
  const messages: Record<string, any>[] = [];
  ws.on('message', (d) => messages.push(JSON.parse((d as Buffer).toString())));
  await new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', resolve);
  });
  return { env, srv, app, messages, ws };
}

/** Waits until `pred` holds for some message of `s` (no wall-clock bound beyond the test's own). */
async function seen(s: Side, pred: (m: Record<string, any>) => boolean): Promise<void> {
  while (!s.messages.some(pred)) await new Promise((r) => s.ws.once('message', r));
}

before(async () => {
  await rx.listen();
  sides.push(await side('a'), await side('b'));
});
after(async () => {
  for (const s of sides) {
    s.ws.close();
    await s.srv.close();
    await destroy(s.env);
  }
  await rx.close();
});

test('two prefixes on one Redis: events, deliveries and service changes stay on their side', async () => {
  const [a, b] = sides as [Side, Side];
  assert.notEqual(a.env.cfg.redis.root, b.env.cfg.redis.root);
  await seen(a, (m) => m.type === 'hello');
  await seen(b, (m) => m.type === 'hello');
  // B first, then A: once A's own event, its delivery and its service note have reached A's tail,
  // B's (sent before them, on the same Redis) would have too.
  const eb = await http(b.srv.url, b.env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 'b' } }, b.app);
  assert.equal(eb.status, 202);
  await announceStream(b.srv.amebo.redis, b.env.cfg.redis, { type: 'service', fqn: 'b.svc.1', status: 'up' });
  await seen(b, (m) => m.type === 'delivery' && m.event === eb.body.event && m.state === 'delivered');
  const ea = await http(a.srv.url, a.env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 'a' } }, a.app);
  assert.equal(ea.status, 202);
  await announceStream(a.srv.amebo.redis, a.env.cfg.redis, { type: 'service', fqn: 'a.svc.1', status: 'up' });
  await seen(a, (m) => m.type === 'delivery' && m.event === ea.body.event && m.state === 'delivered');
  await seen(a, (m) => m.type === 'service' && m.fqn === 'a.svc.1');
  await seen(a, (m) => m.type === 'event' && m.event.id === ea.body.event);

  const foreign = (m: Record<string, any>, ev: string, fqn: string) =>
    m.event === ev || m.event?.id === ev || m.fqn === fqn;
  assert.deepEqual(
    a.messages.filter((m) => foreign(m, eb.body.event, 'b.svc.1')),
    [],
    'A saw nothing of B',
  );
  await seen(b, (m) => m.type === 'event' && m.event.id === eb.body.event);
  assert.deepEqual(
    b.messages.filter((m) => foreign(m, ea.body.event, 'a.svc.1')),
    [],
    'B saw nothing of A',
  );
  assert.deepEqual(rx.ids('/a'), [ea.body.event], 'each webhook got its own deployment’s event');
  assert.deepEqual(rx.ids('/b'), [eb.body.event]);
});

test('two prefixes on one Redis: a ticket and a failed-login count do not cross', async () => {
  const [a, b] = sides as [Side, Side];
  const t = await http(b.srv.url, b.env, 'POST', '/v1/stream/tickets', {}, 'admin');
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`${a.srv.url.replace('http', 'ws')}/v1/stream?ticket=${t.body.ticket}`);
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
  });
  assert.equal(status, 401, "B's ticket does not open A's stream");
  // Lock B's `shop` out (limit 3 per application and address); A keeps its own counts.
  const wrong: [string, string] = ['shop', 'wrong-secret-0123456789'];
  for (let i = 0; i < 3; i++)
    assert.equal((await http(b.srv.url, b.env, 'GET', '/v1/applications/shop', undefined, wrong)).status, 401);
  assert.equal((await http(b.srv.url, b.env, 'GET', '/v1/applications/shop', undefined, wrong)).status, 429);
  assert.equal(
    (await http(a.srv.url, a.env, 'GET', '/v1/applications/shop', undefined, wrong)).status,
    401,
    'A is not throttled by failures against B (a wrong secret is still checked: 401, not 429)',
  );
});
