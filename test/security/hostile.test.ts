import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { destroy, http, start, testEnv, type Running } from '../helpers/harness.js';
import { extraPlugins } from '../../src/plugins.js';

// A corpus of hostile requests (issue "safe to expose" §7), generated from /openapi.json: every
// route with hostile path parameters, query strings and bodies, plus hand-written schema, event and
// subscription cases. Bad input is a 4xx with a code, never a 5xx, and the process stays up.

const env = testEnv();
let srv: Running;
const SHOP: [string, string] = ['shop', 'shop-secret-0123456789'];
let subId = '';
let eventId = '';

before(async () => {
  srv = await start(env, { plugins: await extraPlugins(env.cfg) });
  const call = (m: Parameters<typeof http>[2], p: string, body?: unknown) => http(srv.url, env, m, p, body, 'admin');
  await call('POST', '/v1/applications', { application: 'shop', secret: SHOP[1] });
  await call('POST', '/v1/actions', { action: 'order.placed', application: 'shop', schemata: { type: 'object' } });
  subId = (
    await call('POST', '/v1/subscriptions', {
      application: 'shop',
      subscription: 's',
      action: 'order.placed',
      transport: 'amqp',
    })
  ).body.id;
  eventId = (await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: {} }, SHOP)).body.event;
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

interface Req {
  method: string;
  path: string;
  body?: string | Buffer;
  contentType?: string | null;
  auth?: string;
}

const deep = (n: number, leaf: string): string => '{"a":'.repeat(n) + leaf + '}'.repeat(n);
const deepArr = (n: number): string => '['.repeat(n) + ']'.repeat(n);

const PATH_VALUES = [
  '%00',
  '..%2F..%2Fetc%2Fpasswd',
  'a'.repeat(300),
  '%F0%9F%92%A9',
  "'%3B%20DROP%20TABLE%20events%3B--",
  '%ZZ',
  '00000000-0000-0000-0000-000000000000',
  '-1',
  '%C0%AE',
];
const QUERIES = [
  'limit=-1',
  'limit=abc',
  'limit=99999999999999999999999',
  'cursor=!!!',
  `cursor=${Buffer.from('x|y|z').toString('base64url')}`,
  'from=not-a-date&to=2020-13-45T99:99:99Z',
  'state=evil',
  'timeout_ms=1e9',
  'a[b][c]=1&__proto__[admin]=true',
  'window=99y',
  'actions=' + encodeURIComponent('#.'.repeat(40) + '#'),
  'q=' + '%'.repeat(200),
  'application=' + 'x'.repeat(500),
];
const BODIES: [string | Buffer, string | null][] = [
  ['{', 'application/json'],
  ['[]', 'application/json'],
  ['null', 'application/json'],
  ['"string"', 'application/json'],
  ['123', 'application/json'],
  [deep(5000, '1'), 'application/json'],
  [deepArr(5000), 'application/json'],
  ['{"__proto__":{"admin":true},"constructor":{"prototype":{"admin":true}}}', 'application/json'],
  [JSON.stringify({ secret: 'x'.repeat(900_000) }), 'application/json'],
  [Buffer.alloc(2 * 1024 * 1024, 'a'), 'application/json'],
  ['{"application":"a\\u0000b","action":"x\\u0000","subscription":"\\ud800","secret":"\\u0000"}', 'application/json'],
  [
    '{"application":1,"action":[],"subscription":{},"handler":true,"payload":"x","events":"y","schemata":5}',
    'application/json',
  ],
  ['{"a":1}', 'text/plain'],
  ['{"a":1}', null],
  ['{"a":1}', 'application/json; charset=utf-16'],
  ['<xml/>', 'application/xml'],
  [Buffer.from([0xff, 0xfe, 0x00, 0x7b]), 'application/json'],
  ['', 'application/json'],
];

/** Hand-written cases where a value gets deep into the registry, the schema compiler or PostgreSQL. */
function specific(): Req[] {
  const j = (method: string, path: string, body: unknown, auth?: string): Req => ({
    method,
    path,
    body: JSON.stringify(body),
    contentType: 'application/json',
    ...(auth ? { auth } : {}),
  });
  const out: Req[] = [];
  const schemas: unknown[] = [
    { $schema: 'http://json-schema.org/draft-06/schema#' },
    { $schema: 'http://json-schema.org/draft-04/schema#' },
    { $schema: 'https://evil.example/schema' },
    { $schema: 5 },
    { $schema: null },
    { $ref: '#/nowhere' },
    { $ref: 'http://127.0.0.1:1/remote.json' },
    { $id: 'x', $defs: { a: { $ref: '#/$defs/a' } }, $ref: '#/$defs/a' },
    { type: 5 },
    { type: 'nonsense' },
    { pattern: '(' },
    { pattern: '(?<=a)b' },
    { pattern: '\\1(a)' },
    { patternProperties: { '[': {} } },
    { format: 'not-a-format' },
    { minimum: 'x' },
    { required: 'x' },
    { properties: [] },
    { enum: [] },
    { allOf: [{ not: { not: { not: {} } } }] },
    JSON.parse(deep(40, '{}')),
    'not json',
    '{"type":',
    '',
    [],
    null,
    true,
    false,
  ];
  schemas.forEach((schemata, i) =>
    out.push(j('POST', '/v1/actions', { action: `hostile.s${i}`, application: 'shop', schemata })),
  );
  out.push({
    method: 'POST',
    path: '/v1/actions',
    body: `{"action":"hostile.deep","application":"shop","schemata":${deep(5000, '{}')}}`,
    contentType: 'application/json',
  });
  out.push({
    method: 'POST',
    path: '/v1/actions',
    body: JSON.stringify({ action: 'hostile.deepstr', application: 'shop', schemata: deep(5000, '{}') }),
    contentType: 'application/json',
  });
  schemas.forEach((schemata) => out.push(j('PUT', '/v1/actions/order.placed/schema', { schemata })));
  for (const action of ['a..b', '.a', 'a.', 'a b', 'a'.repeat(256), '#', '*', 'a.#', '\u0000', 'é.ü'])
    out.push(j('POST', '/v1/actions', { action, application: 'shop', schemata: {} }));
  for (const description of ['a\u0000b', '\ud800', 'x'.repeat(5000)])
    out.push(j('POST', '/v1/actions', { action: 'hostile.desc', application: 'shop', schemata: {}, description }));
  const events: unknown[] = [
    { action: 'order.placed', payload: JSON.parse(deep(100, '1')) },
    { action: 'order.placed', payload: {}, deduper: 'a\u0000b' },
    { action: 'order.placed', payload: {}, deduper: '' },
    { action: 'order.placed', payload: {}, deduper: 'x'.repeat(300) },
    { action: 'order.placed', payload: {}, conversation_id: '\u0000' },
    { action: 'order.placed', payload: {}, deliver_at: 'tomorrow' },
    { action: 'order.placed', payload: {}, deliver_at: '+275760-09-13T00:00:00.001Z' },
    { action: 'order.placed', payload: {}, deliver_at: '0000-00-00T00:00:00Z' },
    { action: 'order.placed', payload: 'not an object' },
    { action: 'order.placed', payload: { s: '\u0000\ud800' } },
    { action: 'nope.nope', payload: {} },
    { event: 'order.placed', microservice: 'shop', passphrase: 'wrong', payload: {} },
  ];
  for (const e of events)
    out.push(j('POST', '/v1/events', e, `Basic ${Buffer.from(SHOP.join(':')).toString('base64')}`));
  out.push(j('POST', '/v1/events/batch', { events: Array.from({ length: 1001 }, () => ({ action: 'order.placed' })) }));
  out.push(j('POST', '/v1/events/batch', { events: events }));
  const subs: Record<string, unknown>[] = [
    { handler: 'javascript:alert(1)' },
    { handler: 'file:///etc/passwd' },
    { handler: 'http://[::1' },
    { handler: 'http://' },
    { handler: 'gopher://127.0.0.1:6379/_FLUSHALL' },
    { handler: 'http://127.0.0.1:6379/' },
    { handler: '/relative/without/address' },
    { handler: 'http://x/' + 'a'.repeat(3000) },
    { retry_schedule: [0] },
    { retry_schedule: [-1] },
    { retry_schedule: [1e12] },
    { retry_schedule: Array(51).fill(1) },
    { retry_schedule: ['x'] },
    { encryption_key: 'short' },
    { encryption_key: '!!!!' },
    { rate_limit: 0 },
    { timeout_ms: 1e12 },
    { max_attempts: -5 },
    { format: 'xml' },
    { transport: 'smtp' },
    { action: '#'.repeat(300) },
    { action: Array(40).fill('*').join('.') },
    { subscription: 'UPPER' },
    { subscription: '\u0000' },
  ];
  for (const s of subs)
    out.push(
      j('POST', '/v1/subscriptions', {
        application: 'shop',
        subscription: 'h',
        action: 'order.placed',
        handler: 'http://93.184.216.34/hook',
        ...s,
      }),
    );
  for (const s of subs) out.push(j('PATCH', `/v1/subscriptions/${subId}`, s));
  for (const grants of [['*'], ['a.b'], ['a.b.c.d'], ['a b.c.d'], Array(101).fill('a.b.c'), 'x', [5]])
    out.push(j('PATCH', '/v1/applications/shop', { rpc_grants: grants }));
  for (const r of [{ from: 'x' }, { from: '2020-01-01T00:00:00Z', to: '2019-01-01T00:00:00Z' }, {}, { from: 5 }])
    out.push(j('POST', `/v1/subscriptions/${subId}/replay`, r));
  for (const l of [{ limit: 0 }, { limit: 1e9 }, { limit: 'x' }])
    out.push(j('POST', `/v1/subscriptions/${subId}/dead-letters/resurrect`, l));
  for (const p of ['a.b/c/d/e', 'd/t/i/__proto__', 'd/t/i/constructor', `d/t/i/${'m'.repeat(200)}`, 'd/t/%00/m'])
    out.push(j('POST', `/v1/rpc/${p}?timeout_ms=3000`, {}));
  out.push({ method: 'GET', path: `/v1/deliveries/${eventId}/${'x'.repeat(100)}/attempts` });
  out.push({ method: 'GET', path: '/v1/stream' });
  out.push({ method: 'GET', path: '/v1/stream?ticket=forged' });
  out.push({ method: 'TRACE', path: '/v1/events' });
  out.push({ method: 'OPTIONS', path: '/v1/events' });
  out.push({ method: 'GET', path: '/' + 'x/'.repeat(2000) });
  return out;
}

function generated(paths: Record<string, Record<string, unknown>>): Req[] {
  const out: Req[] = [];
  for (const [path, ops] of Object.entries(paths))
    for (const m of Object.keys(ops)) {
      const method = m.toUpperCase();
      if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) continue;
      const params = path.match(/\{[^}]+\}/g) ?? [];
      // Hostile path parameters (each in turn), with a plain body where one is expected.
      if (params.length)
        for (const v of PATH_VALUES)
          out.push({
            method,
            path: path.replace(/\{[^}]+\}/g, v),
            ...(method === 'GET' || method === 'DELETE' ? {} : { body: '{}', contentType: 'application/json' }),
          });
      const real = path
        .replace('{name}', path.startsWith('/v1/actions') ? 'order.placed' : 'shop')
        .replace('{id}', path.startsWith('/v1/events') ? eventId : subId)
        .replace('{event}', eventId)
        .replace('{subscription}', subId)
        .replace(/\{[^}]+\}/g, 'x');
      if (method === 'GET') for (const q of QUERIES) out.push({ method, path: `${real}?${q}` });
      if (method === 'POST' || method === 'PUT' || method === 'PATCH')
        for (const [body, contentType] of BODIES) out.push({ method, path: real, body, contentType });
    }
  return out;
}

async function send(r: Req): Promise<{ status: number; code?: string; text: string }> {
  const headers: Record<string, string> = { authorization: r.auth ?? `Bearer ${env.adminToken}` };
  if (r.contentType) headers['content-type'] = r.contentType;
  try {
    const res = await request(srv.url + r.path, {
      method: r.method as 'GET',
      headers,
      body: r.body,
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const text = await res.body.text();
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
    } catch {
      /* not JSON */
    }
    return { status: res.statusCode, ...(code ? { code } : {}), text };
  } catch (err) {
    // The server may cut a body it refuses (413) before reading it all: that is an answer too.
    const e = err as { code?: string };
    if (e.code === 'UND_ERR_SOCKET' || e.code === 'ECONNRESET' || e.code === 'EPIPE') return { status: 413, text: '' };
    throw err;
  }
}

test('at least 500 hostile requests: no 5xx, every error coded, the process alive and still working', async () => {
  const spec = await http(srv.url, env, 'GET', '/openapi.json');
  const corpus = [...generated(spec.body.paths), ...specific()];
  assert.ok(corpus.length >= 500, `corpus of ${corpus.length}`);
  const bad: string[] = [];
  const statuses = new Map<number, number>();
  for (const r of corpus) {
    const a = await send(r);
    statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
    const label = `${r.method} ${r.path.slice(0, 80)} ${String(r.body ?? '').slice(0, 60)}`;
    if (a.status >= 500) bad.push(`${a.status} ${a.code ?? ''} ← ${label} :: ${a.text.slice(0, 200)}`);
    else if (a.status >= 400 && a.text && !/^AMEBO_ERR_[A-Z_]+$/.test(a.code ?? ''))
      bad.push(`${a.status} without a code ← ${label} :: ${a.text.slice(0, 120)}`);
    // PostgreSQL's own words never reach a client.
    if (/syntax error at|invalid byte sequence|violates|relation "|pg_catalog/.test(a.text))
      bad.push(`PostgreSQL text reflected ← ${label} :: ${a.text.slice(0, 200)}`);
  }
  assert.deepEqual(bad, [], `statuses: ${JSON.stringify([...statuses])}`);
  assert.equal((await http(srv.url, env, 'GET', '/health')).status, 200);
  // The corpus rotated shop's secret (POST /v1/applications/shop/secret with a {} body): set it back.
  const reset = await http(srv.url, env, 'POST', '/v1/applications/shop/secret', { secret: SHOP[1] }, 'admin');
  assert.equal(reset.status, 200);
  const ok = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { ok: true } }, SHOP);
  assert.equal(ok.status, 202, 'still publishing');
});
