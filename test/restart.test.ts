import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, drainQueue, eventually, http, start, testEnv } from './helpers/harness.js';

// Restarting Amebo loses nothing; two `serve` against the same stores are safe.
const env = testEnv();
after(() => destroy(env));
const APP: [string, string] = ['billing', 'billing-secret-0123456789'];

test('restart keeps registry, events and queued messages', async () => {
  const a = await start(env);
  const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
    http(a.url, env, m, p, body, auth);
  await call('POST', '/v1/applications', { application: 'billing', secret: APP[1] }, 'admin');
  await call(
    'POST',
    '/v1/actions',
    { action: 'invoice.paid', application: 'billing', schemata: { type: 'object', required: ['n'] } },
    APP,
  );
  const sub = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'billing', subscription: 'ledger', action: 'invoice.*', transport: 'amqp' },
    'admin',
  );
  const ids: string[] = [];
  for (let i = 0; i < 10; i++)
    ids.push((await call('POST', '/v1/events', { action: 'invoice.paid', payload: { n: i } }, APP)).body.event);
  await a.close();

  const b = await start(env);
  const call2 = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
    http(b.url, env, m, p, body, auth);
  try {
    assert.equal(
      (await call2('GET', '/v1/applications/billing', undefined, APP)).status,
      200,
      'the application and its secret survive',
    );
    assert.equal((await call2('GET', '/v1/actions/invoice.paid', undefined, APP)).body.schemata.required[0], 'n');
    const s = await call2('GET', `/v1/subscriptions/${sub.body.id}`, undefined, 'admin');
    assert.equal(s.status, 200);
    const listed = await call2('GET', '/v1/events?limit=100', undefined, 'admin');
    assert.deepEqual(listed.body.items.map((e: { id: string }) => e.id).sort(), [...ids].sort());
    const msgs = await drainQueue(sub.body.queue, 10);
    assert.deepEqual(msgs.map((m) => JSON.parse(m.content.toString()).id).sort(), [...ids].sort());
    // Deduplication survives the restart too.
    const d1 = await call2('POST', '/v1/events', { action: 'invoice.paid', payload: { n: 1 }, deduper: 'k' }, APP);
    assert.equal(d1.status, 202);
  } finally {
    await b.close();
  }
});

test('two serve processes against the same stores: both migrate safely and serve, no duplicates', async () => {
  const [a, b] = await Promise.all([start(env), start(env)]);
  try {
    const sub = await http(
      a.url,
      env,
      'POST',
      '/v1/subscriptions',
      { application: 'billing', subscription: 'twin', action: 'invoice.paid', transport: 'amqp' },
      'admin',
    );
    assert.equal(sub.status, 201);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        http(
          i % 2 ? a.url : b.url,
          env,
          'POST',
          '/v1/events',
          { action: 'invoice.paid', payload: { n: i }, deduper: `twin-${i % 20}` },
          APP,
        ),
      ),
    );
    assert.equal(results.filter((r) => r.status === 202).length, 20);
    assert.equal(results.filter((r) => r.status === 200).length, 20);
    const msgs = await drainQueue(sub.body.queue, 20);
    assert.equal(new Set(msgs.map((m) => JSON.parse(m.content.toString()).id)).size, 20);
    assert.equal(
      (await drainQueue(sub.body.queue, 1, 700)).length,
      0,
      'each event was published once (both relays idle)',
    );
    // A schema change on one node is enforced promptly by the other: well within the 30 s cache
    // TTL, because the invalidation travels over Redis.
    const put = await http(
      a.url,
      env,
      'PUT',
      '/v1/actions/invoice.paid/schema?compatibility=NONE',
      { schemata: { type: 'object', required: ['n', 'currency'] } },
      'admin',
    );
    assert.equal(put.status, 200);
    await eventually(
      async () =>
        (await http(b.url, env, 'POST', '/v1/events', { action: 'invoice.paid', payload: { n: 1 } }, APP)).status ===
        422,
      2000,
      20,
    );
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});
