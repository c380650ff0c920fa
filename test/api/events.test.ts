import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, drainQueue, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';

const env = testEnv({ bodyLimit: 256 * 1024 });
let srv: Running;
const call = (
  m: Parameters<typeof http>[2],
  p: string,
  body?: unknown,
  auth?: Parameters<typeof http>[5],
  h?: Record<string, string>,
) => http(srv.url, env, m, p, body, auth, h);
const USER: [string, string] = ['user-service', 'user-service-secret'];
const ORDER: [string, string] = ['order-service', 'order-service-secret'];
const q = (app: string, sub: string) => `${env.cfg.prefix}.sub.${app}.${sub}`;

// Seed 002's e-commerce platform.
before(async () => {
  srv = await start(env);
  for (const [application, address] of [
    ['user-service', 'https://users.myapp.com'],
    ['order-service', 'https://orders.myapp.com'],
    ['email-service', 'https://email.myapp.com'],
    ['analytics-service', 'https://analytics.myapp.com'],
  ])
    assert.equal(
      (await call('POST', '/v1/applications', { application, address, secret: `${application}-secret` }, 'admin'))
        .status,
      201,
    );
  const u = await call(
    'POST',
    '/v1/actions',
    {
      action: 'user.created',
      application: 'user-service',
      schemata: {
        type: 'object',
        properties: {
          user_id: { type: 'string' },
          email: { type: 'string', format: 'email' },
          name: { type: 'string' },
          plan: { type: 'string', enum: ['free', 'premium'] },
        },
        required: ['user_id', 'email', 'name'],
      },
    },
    USER,
  );
  assert.equal(u.status, 201);
  const o = await call(
    'POST',
    '/v1/actions',
    {
      action: 'order.placed',
      application: 'order-service',
      schemata: {
        type: 'object',
        properties: {
          order_id: { type: 'string' },
          user_id: { type: 'string' },
          items: { type: 'array' },
          total: { type: 'number' },
          currency: { type: 'string' },
        },
        required: ['order_id', 'user_id', 'items', 'total'],
      },
    },
    ORDER,
  );
  assert.equal(o.status, 201);
  await call('POST', '/v1/actions', { action: 'free.form', application: 'user-service', schemata: {} }, USER);
  // amqp transport so the test can read the queues directly (the bridge is another issue's part)
  for (const [application, subscription, action] of [
    ['email-service', 'welcome-emails', 'user.created'],
    ['analytics-service', 'user-analytics', 'user.created'],
    ['analytics-service', 'order-analytics', 'order.placed'],
    ['analytics-service', 'everything', '#'],
  ])
    assert.equal(
      (await call('POST', '/v1/subscriptions', { application, subscription, action, transport: 'amqp' }, 'admin'))
        .status,
      201,
    );
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

describe('the e-commerce flow', () => {
  test('an accepted event is in PostgreSQL and reaches every matching subscription queue', async () => {
    const r = await call(
      'POST',
      '/v1/events',
      { action: 'user.created', payload: { user_id: 'u1', email: 'ada@example.com', name: 'Ada', plan: 'premium' } },
      USER,
      { prefer: 'respond-async, wait=5' },
    );
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.published, true, 'Prefer: wait: the reply went after the broker confirm');
    assert.equal(r.headers['preference-applied'], 'wait=5');
    const o = await call(
      'POST',
      '/v1/events',
      {
        action: 'order.placed',
        payload: { order_id: 'o1', user_id: 'u1', items: ['book'], total: 55, currency: 'USD' },
      },
      ORDER,
    );
    assert.equal(o.status, 202);
    assert.equal(o.body.published, false, 'the reply went on the commit, before the confirm');
    assert.equal(o.headers['preference-applied'], undefined);
    const row = (await srv.amebo.pool.query('SELECT * FROM events WHERE id = $1', [r.body.event])).rows[0];
    assert.equal(row.action, 'user.created');
    assert.deepEqual(row.payload, { user_id: 'u1', email: 'ada@example.com', name: 'Ada', plan: 'premium' });
    await eventually(async () => (await call('GET', `/v1/events/${r.body.event}`, undefined, 'admin')).body.published);

    const [welcome] = await drainQueue(q('email-service', 'welcome-emails'), 1);
    const body = JSON.parse(welcome!.content.toString());
    assert.equal(body.id, r.body.event);
    assert.equal(body.action, 'user.created');
    assert.equal(body.payload.email, 'ada@example.com');
    assert.equal(welcome!.properties.messageId, r.body.event);
    assert.equal(welcome!.properties.appId, 'user-service');
    assert.equal(welcome!.properties.deliveryMode, 2);
    assert.match(String(welcome!.properties.headers?.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(welcome!.properties.headers?.conversation_id, r.body.event);

    const ua = await drainQueue(q('analytics-service', 'user-analytics'), 1);
    assert.equal(JSON.parse(ua[0]!.content.toString()).id, r.body.event);
    const oa = await drainQueue(q('analytics-service', 'order-analytics'), 1);
    assert.equal(JSON.parse(oa[0]!.content.toString()).id, o.body.event);
    const all = await drainQueue(q('analytics-service', 'everything'), 2);
    assert.deepEqual(all.map((m) => JSON.parse(m.content.toString()).id).sort(), [r.body.event, o.body.event].sort());
  });

  test('seed 000 field names, body secret, traceparent and conversation id are honoured', async () => {
    const parent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const r = await call(
      'POST',
      '/v1/events',
      { event: 'free.form', microservice: 'user-service', secret: 'user-service-secret', payload: { any: ['thing'] } },
      undefined,
      { traceparent: parent, 'x-conversation-id': 'conv-42' },
    );
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const [m] = await drainQueue(q('analytics-service', 'everything'), 1);
    assert.equal(JSON.parse(m!.content.toString()).id, r.body.event);
    assert.match(String(m!.properties.headers?.traceparent), /^00-0af7651916cd43dd8448eb211c80319c-/);
    assert.equal(m!.properties.headers?.conversation_id, 'conv-42');
  });

  test('a repeated deduper answers 200 with the original id, never 500, even concurrently', async () => {
    const body = { action: 'free.form', payload: { n: 1 }, deduper: 'signup-123' };
    const first = await call('POST', '/v1/events', body, USER);
    assert.equal(first.status, 202);
    const again = await Promise.all(Array.from({ length: 20 }, () => call('POST', '/v1/events', body, USER)));
    for (const a of again) {
      assert.equal(a.status, 200);
      assert.equal(a.body.duplicate, true);
      assert.equal(a.body.event, first.body.event);
    }
    // Concurrent first publishes of a new key: exactly one is created.
    const race = await Promise.all(
      Array.from({ length: 10 }, () => call('POST', '/v1/events', { ...body, deduper: 'race-1' }, USER)),
    );
    assert.equal(race.filter((r) => r.status === 202).length, 1);
    assert.equal(new Set(race.map((r) => r.body.event)).size, 1);
    const n = await srv.amebo.pool.query(
      "SELECT count(*)::int AS n FROM events WHERE deduper IN ('signup-123', 'race-1')",
    );
    assert.equal(n.rows[0].n, 2);
    // The same key from another application is another event.
    await call('POST', '/v1/actions', { action: 'order.free', application: 'order-service', schemata: {} }, ORDER);
    const other = await call('POST', '/v1/events', { action: 'order.free', payload: {}, deduper: 'signup-123' }, ORDER);
    assert.equal(other.status, 202);
    await drainQueue(q('analytics-service', 'everything'), 3);
  });

  test('batch: one result per item, good ones accepted, bad ones explained', async () => {
    const r = await call(
      'POST',
      '/v1/events/batch',
      {
        events: [
          { action: 'user.created', payload: { user_id: 'u2', email: 'b@example.com', name: 'B' } },
          { action: 'user.created', payload: { user_id: 'u3' } },
          { action: 'nope.nope', payload: {} },
          { action: 'order.placed', payload: { order_id: 'x', user_id: 'u', items: [], total: 1 } },
          { action: 'free.form', payload: { i: 5 }, deduper: 'batch-dup' },
          { action: 'free.form', payload: { i: 6 }, deduper: 'batch-dup' },
        ],
      },
      USER,
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const s = r.body.results.map((x: { status: number }) => x.status);
    assert.deepEqual(s, [202, 422, 404, 403, 202, 200]);
    assert.equal(r.body.results[1].error.code, 'AMEBO_ERR_PAYLOAD_INVALID');
    assert.ok(
      r.body.results[1].error.details.some((d: { instancePath: string }) => d.instancePath === '/events/1/payload'),
    );
    assert.equal(r.body.results[5].event, r.body.results[4].event);
    assert.equal(r.body.accepted, 2);
    assert.equal(r.body.rejected, 3);
    assert.equal((await call('POST', '/v1/events/batch', { events: [] }, USER)).status, 400);
    assert.equal(
      (await call('POST', '/v1/events/batch', { events: Array(1001).fill({ action: 'free.form' }) }, USER)).status,
      400,
    );
    await drainQueue(q('analytics-service', 'everything'), 2);
  });
});

describe('bad input is a clear 4xx, never a 5xx', () => {
  const cases: [string, () => Promise<{ status: number; body: any }>, number, string][] = [
    ['malformed JSON', () => call('POST', '/v1/events', '{"action": ', USER), 400, 'AMEBO_ERR_MALFORMED_JSON'],
    [
      'empty JSON body',
      () => call('POST', '/v1/events', '', USER, { 'content-type': 'application/json' }),
      400,
      'AMEBO_ERR_MALFORMED_JSON',
    ],
    [
      'wrong content type',
      () =>
        call('POST', '/v1/events', 'action=user.created', USER, {
          'content-type': 'application/x-www-form-urlencoded',
        }),
      415,
      'AMEBO_ERR_UNSUPPORTED_MEDIA_TYPE',
    ],
    [
      'text/plain',
      () => call('POST', '/v1/events', '{}', USER, { 'content-type': 'text/plain' }),
      415,
      'AMEBO_ERR_UNSUPPORTED_MEDIA_TYPE',
    ],
    [
      'oversized body',
      () => call('POST', '/v1/events', { action: 'free.form', payload: { s: 'x'.repeat(300 * 1024) } }, USER),
      413,
      'AMEBO_ERR_BODY_TOO_LARGE',
    ],
    ['a JSON array body', () => call('POST', '/v1/events', [1, 2], USER), 400, 'AMEBO_ERR_VALIDATION'],
    ['no action', () => call('POST', '/v1/events', { payload: {} }, USER), 400, 'AMEBO_ERR_VALIDATION'],
    ['action not a string', () => call('POST', '/v1/events', { action: 42 }, USER), 400, 'AMEBO_ERR_VALIDATION'],
    [
      'unknown action',
      () => call('POST', '/v1/events', { action: 'no.such', payload: {} }, USER),
      404,
      'AMEBO_ERR_ACTION_NOT_FOUND',
    ],
    [
      'missing credentials',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {} }),
      401,
      'AMEBO_ERR_UNAUTHENTICATED',
    ],
    [
      'wrong secret',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {} }, ['user-service', 'not-the-secret-0000']),
      401,
      'AMEBO_ERR_UNAUTHENTICATED',
    ],
    [
      'wrong body secret',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {}, secret: 'guess-guess-guess' }),
      401,
      'AMEBO_ERR_UNAUTHENTICATED',
    ],
    [
      'garbage basic auth',
      () => call('POST', '/v1/events', { action: 'free.form' }, 'Basic %%%%'),
      401,
      'AMEBO_ERR_UNAUTHENTICATED',
    ],
    [
      "another application's action",
      () => call('POST', '/v1/events', { action: 'order.placed', payload: {} }, USER),
      403,
      'AMEBO_ERR_FORBIDDEN',
    ],
    [
      'bad deliver_at',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {}, deliver_at: 'tomorrow' }, USER),
      400,
      'AMEBO_ERR_VALIDATION',
    ],
    [
      'empty deduper',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {}, deduper: '' }, USER),
      400,
      'AMEBO_ERR_VALIDATION',
    ],
    [
      'huge deduper',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {}, deduper: 'd'.repeat(256) }, USER),
      400,
      'AMEBO_ERR_VALIDATION',
    ],
    [
      'odd action name',
      () => call('POST', '/v1/events', { action: "'; DROP TABLE events;--", payload: {} }, USER),
      404,
      'AMEBO_ERR_ACTION_NOT_FOUND',
    ],
    [
      'unicode action name',
      () => call('POST', '/v1/events', { action: 'ünï.cødé\u0000', payload: {} }, USER),
      404,
      'AMEBO_ERR_ACTION_NOT_FOUND',
    ],
    [
      'NUL in deduper',
      () => call('POST', '/v1/events', { action: 'free.form', payload: {}, deduper: 'a\u0000b' }, USER),
      400,
      'AMEBO_ERR_VALIDATION',
    ],
    ['unknown route', () => call('GET', '/v1/nothing-here', undefined, 'admin'), 404, 'AMEBO_ERR_ROUTE_NOT_FOUND'],
    [
      'event id not a uuid',
      () => call('GET', '/v1/events/%27or%201=1', undefined, 'admin'),
      404,
      'AMEBO_ERR_EVENT_NOT_FOUND',
    ],
    ['bad cursor', () => call('GET', '/v1/events?cursor=zzz', undefined, 'admin'), 400, 'AMEBO_ERR_VALIDATION'],
    ['bad limit', () => call('GET', '/v1/events?limit=-3', undefined, 'admin'), 400, 'AMEBO_ERR_VALIDATION'],
    ['bad timeline', () => call('GET', '/v1/events?timeline=year', undefined, 'admin'), 400, 'AMEBO_ERR_VALIDATION'],
    [
      '__proto__ in body',
      () => call('POST', '/v1/events', '{"action":"free.form","__proto__":{"x":1}}', USER),
      400,
      'AMEBO_ERR_MALFORMED_JSON',
    ],
  ];
  for (const [name, run, status, code] of cases)
    test(name, async () => {
      const r = await run();
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.error.code, code);
      assert.equal(typeof r.body.error.message, 'string');
    });

  test('a lone surrogate escape is valid JSON: stored and published as sent', async () => {
    const r = await call('POST', '/v1/events', '{"action":"free.form","payload":{"s":"\\ud800"}}', USER);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const [m] = await drainQueue(q('analytics-service', 'everything'), 1);
    assert.equal(JSON.parse(m!.content.toString()).id, r.body.event);
  });

  test('a payload violating the schema lists each violation with its pointer', async () => {
    const r = await call(
      'POST',
      '/v1/events',
      { action: 'user.created', payload: { user_id: 7, email: 'not-an-email', plan: 'gold' } },
      USER,
    );
    assert.equal(r.status, 422);
    assert.equal(r.body.error.code, 'AMEBO_ERR_PAYLOAD_INVALID');
    const got = r.body.error.details
      .map((d: { instancePath: string; keyword: string }) => `${d.instancePath} ${d.keyword}`)
      .sort();
    assert.deepEqual(
      got,
      ['/payload required', '/payload/email format', '/payload/plan enum', '/payload/user_id type'].sort(),
    );
  });

  test('huge and deeply nested payloads: deep → 422, wide but within the limit → accepted', async () => {
    for (const n of [65, 5000, 40_000]) {
      const deep = `{"action":"free.form","payload":${'{"d":'.repeat(n)}"x"${'}'.repeat(n)}}`;
      const r = await call('POST', '/v1/events', deep, USER);
      assert.equal(r.status, 422, `depth ${n}`);
      assert.equal(r.body.error.code, 'AMEBO_ERR_PAYLOAD_TOO_DEEP');
    }
    const arrays = `{"action":"free.form","payload":${'['.repeat(60_000)}${']'.repeat(60_000)}}`;
    assert.equal((await call('POST', '/v1/events', arrays, USER)).status, 422);
    const wide = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, 'ü'.repeat(10)]));
    const w = await call('POST', '/v1/events', { action: 'free.form', payload: wide }, USER);
    assert.equal(w.status, 202, JSON.stringify(w.body).slice(0, 300));
    const [m] = await drainQueue(q('analytics-service', 'everything'), 1);
    assert.equal(Object.keys(JSON.parse(m!.content.toString()).payload).length, 5000);
  });
});

describe('listing and detail', () => {
  test('filters, cursor pagination, timeline and detail with deliveries', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++)
      ids.push(
        (await call('POST', '/v1/events', { action: 'free.form', payload: { i }, deduper: `page-${i}` }, USER)).body
          .event,
      );
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await call(
        'GET',
        `/v1/events?action=free.form&limit=3${cursor ? `&cursor=${cursor}` : ''}`,
        undefined,
        USER,
      );
      assert.equal(page.status, 200);
      seen.push(...page.body.items.map((e: { id: string }) => e.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    assert.deepEqual(seen.slice(0, 7), [...ids].reverse(), 'newest first, no gaps or repeats across pages');
    assert.equal(new Set(seen).size, seen.length);
    const d = await call('GET', `/v1/events?deduper=page-3&timeline=today`, undefined, 'admin');
    assert.deepEqual(
      d.body.items.map((e: { id: string }) => e.id),
      [ids[3]],
    );
    const future = await call('GET', `/v1/events?from=2999-01-01T00:00:00Z`, undefined, 'admin');
    assert.deepEqual(future.body.items, []);
    const mine = await call('GET', '/v1/events?application=user-service', undefined, ORDER);
    assert.equal(mine.status, 403);
    const own = await call('GET', '/v1/events', undefined, ORDER);
    assert.ok(own.body.items.every((e: { application: string }) => e.application === 'order-service'));
    const detail = await call('GET', `/v1/events/${ids[0]}`, undefined, USER);
    assert.equal(detail.status, 200);
    assert.deepEqual(detail.body.payload, { i: 0 });
    assert.ok(Array.isArray(detail.body.deliveries));
    assert.equal((await call('GET', `/v1/events/${ids[0]}`, undefined, ORDER)).status, 403);
    await drainQueue(q('analytics-service', 'everything'), 7);
  });

  test('deliver_at in the future is held, then published by the relay when due', async () => {
    const at = new Date(Date.now() + 1500).toISOString();
    const r = await call('POST', '/v1/events', { action: 'free.form', payload: { later: true }, deliver_at: at }, USER);
    assert.equal(r.status, 202);
    assert.equal(r.body.published, false);
    assert.equal(r.body.deliver_at, at);
    const early = await drainQueue(q('analytics-service', 'everything'), 1, 500);
    assert.equal(early.length, 0, 'not before its time');
    const [m] = await drainQueue(q('analytics-service', 'everything'), 1, 6000);
    assert.equal(JSON.parse(m!.content.toString()).id, r.body.event);
    assert.ok(Date.now() >= Date.parse(at));
  });
});

describe('operations', () => {
  test('health, ready, metrics and the OpenAPI document are public', async () => {
    assert.equal((await call('GET', '/health')).status, 200);
    const ready = await call('GET', '/ready');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body.checks, { postgresql: 'ok', redis: 'ok', rabbitmq: 'ok' });
    const m = await call('GET', '/metrics');
    assert.match(m.body, /amebo_events_accepted_total \d+/);
    const spec = await call('GET', '/openapi.json');
    assert.equal(spec.body.openapi.startsWith('3'), true);
    assert.ok(spec.body.paths['/v1/events']);
    const docs = await call('GET', '/docs/');
    assert.equal(docs.status, 200);
  });
});
