import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import pg from 'pg';
import { AMQP_URL, destroy, drainQueue, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { extraPlugins } from '../../src/plugins.js';
import { FabricConnector } from '../../src/fabric/index.js';
import { Receiver } from '../bridge/receiver.js';

// Tenancy (issue "safe to expose" §4, §7): an auth matrix over every route of /openapi.json, and what
// one application's credentials can do to another's events, subscriptions and the fabric.

// The failed-auth throttle has its own test (limits.test.ts); the matrix sends many wrong credentials on purpose.
const env = testEnv({ authFailLimit: 100_000 });
let srv: Running;
const rx = new Receiver();
let svc: FabricConnector;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

const A: [string, string] = ['alpha', 'alpha-secret-0123456789'];
const B: [string, string] = ['beta', 'beta-secret-0123456789'];
const G: [string, string] = ['gamma', 'gamma-secret-0123456789'];
/** What the matrix's admin DELETEs remove. */
const D: [string, string] = ['delta', 'delta-secret-0123456789'];
const DOMAIN = `d${env.id}`;
/** Per application: its action, subscription id, an event it published, that event's delivery. */
const own: Record<string, { action: string; sub: string; event: string }> = {};

before(async () => {
  await rx.listen();
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: await extraPlugins(env.cfg) });
  svc = new FabricConnector({ amqpUrl: AMQP_URL, domain: DOMAIN, type: 'pricing', id: 'p1', keepAliveMs: 0 });
  await svc.open({ timeoutMs: 10_000 });
  await svc.rpcRegister({ quote: ({ sku }: { sku: string }) => ({ sku, price: 1 }), shutdown: () => 'bye' });
  for (const [name, secret] of [A, B, G, D]) {
    const r = await call('POST', '/v1/applications', { application: name, secret }, 'admin');
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const act = await call('POST', '/v1/actions', { action: `${name}.thing`, application: name, schemata: {} }, [
      name,
      secret,
    ]);
    assert.equal(act.status, 201, JSON.stringify(act.body));
    const sub = await call(
      'POST',
      '/v1/subscriptions',
      { application: name, subscription: 'mine', action: `${name}.*`, handler: rx.url(`/${name}/mine`) },
      [name, secret],
    );
    assert.equal(sub.status, 201, JSON.stringify(sub.body));
    const ev = await call('POST', '/v1/events', { action: `${name}.thing`, payload: { owner: name } }, [name, secret]);
    assert.equal(ev.status, 202);
    own[name] = { action: `${name}.thing`, sub: sub.body.id, event: ev.body.event };
  }
  await eventually(() => rx.at('/alpha/mine').length >= 1 && rx.at('/beta/mine').length >= 1, 15_000);
});
after(async () => {
  await svc?.close();
  await srv?.close();
  await rx.close();
  await destroy(env);
});

type Kind = 'none' | 'wrong' | 'own' | 'other' | 'admin';
type Policy = 'public' | 'admin' | 'owner' | 'any' | 'grant';

/**
 * Who may call each route. Every route in /openapi.json must be here (and nothing else), so a new
 * route cannot ship without a decision.
 */
const POLICY: Record<string, Policy> = {
  'GET /health': 'public',
  'GET /ready': 'public',
  'GET /metrics': 'public',
  'POST /v1/applications': 'admin',
  'GET /v1/applications': 'admin',
  'POST /v1/producers': 'admin',
  'GET /v1/producers': 'admin',
  'GET /v1/applications/{name}': 'owner',
  'PATCH /v1/applications/{name}': 'owner',
  'DELETE /v1/applications/{name}': 'admin',
  'POST /v1/applications/{name}/secret': 'owner',
  'POST /v1/actions': 'owner',
  'GET /v1/actions': 'any',
  'GET /v1/actions/{name}': 'any',
  'PATCH /v1/actions/{name}': 'owner',
  'GET /v1/actions/{name}/versions': 'any',
  'PUT /v1/actions/{name}/schema': 'owner',
  'POST /v1/events': 'owner',
  'POST /v1/events/batch': 'owner',
  'GET /v1/events': 'any',
  'GET /v1/events/{id}': 'owner',
  'POST /v1/subscriptions': 'owner',
  'GET /v1/subscriptions': 'any',
  'GET /v1/subscriptions/{id}': 'owner',
  'GET /v1/subscriptions/{id}/health': 'owner',
  'GET /v1/subscriptions/{id}/stats': 'owner',
  'GET /v1/subscriptions/{id}/pending': 'owner',
  'PATCH /v1/subscriptions/{id}': 'owner',
  'DELETE /v1/subscriptions/{id}': 'owner',
  'POST /v1/subscriptions/{id}/pause': 'owner',
  'POST /v1/subscriptions/{id}/resume': 'owner',
  'POST /v1/subscriptions/{id}/rotate-secret': 'owner',
  'POST /v1/subscriptions/{id}/test': 'owner',
  'POST /v1/subscriptions/{id}/replay': 'owner',
  'GET /v1/subscriptions/{id}/dead-letters': 'owner',
  'POST /v1/subscriptions/{id}/dead-letters/resurrect': 'owner',
  'DELETE /v1/actions/{name}': 'owner',
  'POST /v1/actions/{name}/schema/check': 'owner',
  'GET /v1/deliveries': 'any',
  'GET /v1/deliveries/{event}/{subscription}/attempts': 'owner',
  'POST /v1/deliveries/{event}/{subscription}/retry': 'owner',
  'POST /v1/stream/tickets': 'admin',
  'GET /v1/stream': 'admin',
  'GET /v1/services': 'any',
  'POST /v1/rpc/{domain}/{type}/{id}/{method}': 'grant',
};

/** The path for a caller of `kind` acting on its own (own, admin) or on another's resources (other). */
function fill(path: string, kind: Kind, method: string): string {
  // The admin's destructive calls hit delta's resources, so the matrix does not delete what it tests.
  const who = kind === 'other' ? 'beta' : kind === 'admin' && method === 'DELETE' ? 'delta' : 'alpha';
  const o = own[who]!;
  return path
    .replace('{name}', path.startsWith('/v1/actions') ? o.action : who)
    .replace('{id}', path.startsWith('/v1/events') ? o.event : o.sub)
    .replace('{event}', o.event)
    .replace('{subscription}', o.sub)
    .replace('{domain}', DOMAIN)
    .replace('{type}', 'pricing')
    .replace('{id}', 'p1')
    .replace('{method}', 'quote');
}

function bodyFor(route: string, kind: Kind): unknown {
  const who = kind === 'other' ? 'beta' : 'alpha';
  const action = own[who]!.action;
  switch (route) {
    // Rotating alpha's secret would lock the rest of the matrix out: rotate it to itself.
    case 'POST /v1/applications/{name}/secret':
      return { secret: kind === 'other' ? B[1] : A[1] };
    case 'POST /v1/actions':
      return { action: `${who}.m${kind}`, application: who, schemata: {} };
    case 'PUT /v1/actions/{name}/schema':
    case 'POST /v1/actions/{name}/schema/check':
      return { schemata: {} };
    case 'POST /v1/events':
      return { action, payload: {} };
    case 'POST /v1/events/batch':
      return { events: [{ action, payload: {} }] };
    case 'POST /v1/subscriptions':
      return { application: who, subscription: `m-${kind}`, action, handler: rx.url('/matrix') };
    case 'POST /v1/subscriptions/{id}/replay':
      return { from: new Date(Date.now() - 60_000).toISOString() };
    case 'POST /v1/rpc/{domain}/{type}/{id}/{method}':
      return { sku: 'x' };
  }
  return route.startsWith('GET') || route.startsWith('DELETE') ? undefined : {};
}

test('auth matrix: every route of /openapi.json × no, wrong, own, another application’s and admin credentials', async () => {
  const spec = await call('GET', '/openapi.json');
  assert.equal(spec.status, 200);
  const routes: string[] = [];
  for (const [path, ops] of Object.entries(spec.body.paths as Record<string, Record<string, unknown>>))
    for (const m of Object.keys(ops))
      if (['get', 'post', 'put', 'patch', 'delete'].includes(m)) routes.push(`${m.toUpperCase()} ${path}`);
  assert.deepEqual(
    routes.filter((r) => !(r in POLICY)),
    [],
    'every documented route has a policy here',
  );
  assert.deepEqual(
    Object.keys(POLICY).filter((r) => !routes.includes(r)),
    [],
    'every policy is a documented route',
  );
  // alpha may call one method of the fabric; beta none.
  assert.equal(
    (await call('PATCH', '/v1/applications/alpha', { rpc_grants: [`${DOMAIN}.pricing.quote`] }, 'admin')).status,
    200,
  );

  const creds: Record<Kind, Parameters<typeof http>[5]> = {
    none: undefined,
    wrong: ['alpha', 'not-the-secret-at-all'],
    own: A,
    other: A,
    admin: 'admin',
  };
  const failures: string[] = [];
  // DELETE last: they remove what the others use.
  const ordered = [...routes].sort((x, y) => Number(x.startsWith('DELETE')) - Number(y.startsWith('DELETE')));
  for (const kind of ['none', 'wrong', 'other', 'own', 'admin'] as Kind[]) {
    for (const route of ordered) {
      const [method, path] = route.split(' ') as [Parameters<typeof http>[2], string];
      const policy = POLICY[route]!;
      if (kind === 'own' && method === 'DELETE') continue; // the admin's DELETE runs on delta's instead
      if (kind === 'other' && policy === 'grant') continue; // beta (no grant at all) is checked below
      const r = await call(method, fill(path, kind, method), bodyFor(route, kind), creds[kind]);
      const code = r.body?.error?.code as string | undefined;
      let ok: boolean;
      if (r.status >= 500 && !(route.startsWith('GET /ready') || code === 'AMEBO_ERR_RPC_TIMEOUT')) ok = false;
      else if (policy === 'public') ok = r.status !== 401 && r.status !== 403;
      else if (kind === 'none' || kind === 'wrong') ok = r.status === 401 && code === 'AMEBO_ERR_UNAUTHENTICATED';
      else if (kind === 'admin') ok = r.status !== 401 && r.status !== 403;
      else if (policy === 'admin') ok = r.status === 403 && code === 'AMEBO_ERR_FORBIDDEN';
      else if (policy === 'any') ok = r.status !== 401 && r.status !== 403;
      // The batch answers 200 with one result per item: each item of another's action is refused.
      else if (route === 'POST /v1/events/batch' && kind === 'other')
        ok =
          r.status === 200 &&
          r.body.results.every((x: { error?: { code: string } }) => x.error?.code === 'AMEBO_ERR_FORBIDDEN');
      else if (policy === 'grant') ok = kind === 'own' ? r.status !== 401 && r.status !== 403 : r.status === 403;
      // owner: alpha on its own things passes; alpha on beta's things is refused (403, or 404 hiding it)
      else ok = kind === 'own' ? r.status !== 401 && r.status !== 403 : r.status === 403 || r.status === 404;
      if (!ok) failures.push(`${kind.padEnd(5)} ${route} → ${r.status} ${code ?? ''}`);
    }
  }
  // For `other` on the gateway, beta has no grant at all.
  const beta = await call('POST', fill('/v1/rpc/{domain}/{type}/{id}/{method}', 'own', 'POST'), {}, B);
  if (beta.status !== 403) failures.push(`beta without a grant → ${beta.status}`);
  assert.deepEqual(failures, []);
  // Unauthenticated requests are refused before their bodies are read: a bad body still answers 401.
  const bad = await call('POST', '/v1/subscriptions', { nonsense: [1, 2, 3] });
  assert.equal(bad.status, 401);
  assert.match(bad.body.error.message, /Authorization: Bearer <token>.*HTTP Basic/);
  // So on every protected route that takes a body, with no credentials and with wrong ones (a 400
  // would tell an anonymous caller about the route's schema).
  const early: string[] = [];
  for (const route of routes) {
    const [method, path] = route.split(' ') as [Parameters<typeof http>[2], string];
    if (POLICY[route] === 'public' || !['POST', 'PUT', 'PATCH'].includes(method)) continue;
    for (const auth of [undefined, creds.wrong]) {
      const r = await call(method, fill(path, 'own', method), { nonsense: [1, 2, 3], action: 5 }, auth);
      if (r.status !== 401) early.push(`${auth ? 'wrong' : 'none'} ${route} → ${r.status}`);
    }
  }
  assert.deepEqual(early, []);
});

test('retry, replay and resurrect deliver only what the subscription could have received', async () => {
  // The attack: alpha retries beta's event into alpha's own webhook.
  const before = rx.at('/alpha/mine').length;
  const r = await call('POST', `/v1/deliveries/${own.beta!.event}/${own.alpha!.sub}/retry`, undefined, A);
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'AMEBO_ERR_EVENT_NOT_FOUND');
  // Its own event is retried.
  const mine = await call('POST', `/v1/deliveries/${own.alpha!.event}/${own.alpha!.sub}/retry`, undefined, A);
  assert.equal(mine.status, 202);
  await eventually(() => rx.at('/alpha/mine').length > before, 10_000);
  // Replay over all time: only alpha's actions come back.
  const alphaEvents = (await call('GET', '/v1/events?application=alpha', undefined, 'admin')).body.items.length;
  const rp = await call('POST', `/v1/subscriptions/${own.alpha!.sub}/replay`, { from: '2000-01-01T00:00:00Z' }, A);
  assert.equal(rp.status, 202);
  assert.equal(rp.body.count, alphaEvents, 'every alpha event, and only those');
  await eventually(() => rx.at('/alpha/mine').length >= before + 1 + alphaEvents, 10_000);
  // (the matrix's /test sends come from `amebo` itself)
  const senders = new Set(rx.at('/alpha/mine').map((x) => x.json.application as string));
  assert.deepEqual([...senders].sort(), ['alpha', 'amebo'], 'no event of another application arrived');
});

test('subscribers: a restricted action reaches only the applications it names, whatever the pattern', async () => {
  // beta restricts beta.private to gamma. alpha subscribes to everything; gamma too.
  const act = await call(
    'POST',
    '/v1/actions',
    { action: 'beta.private', application: 'beta', schemata: {}, subscribers: ['gamma'] },
    B,
  );
  assert.equal(act.status, 201, JSON.stringify(act.body));
  assert.deepEqual(act.body.subscribers, ['gamma']);

  const mk = async (who: [string, string], name: string, action: string) =>
    call(
      'POST',
      '/v1/subscriptions',
      { application: who[0], subscription: name, action, handler: rx.url(`/${who[0]}/${name}`) },
      who,
    );
  const all = await mk(A, 'all', '#');
  assert.equal(all.status, 201, JSON.stringify(all.body));
  assert.equal((await mk(G, 'all', '#')).status, 201);
  // An exact subscription by an application not named is refused.
  const exact = await mk(A, 'exact', 'beta.private');
  assert.equal(exact.status, 403);
  assert.equal(exact.body.error.code, 'AMEBO_ERR_FORBIDDEN');
  assert.equal((await mk(G, 'exact', 'beta.private')).status, 201);

  const secret = await call('POST', '/v1/events', { action: 'beta.private', payload: { pin: 1234 } }, B);
  const open = await call('POST', '/v1/events', { action: 'beta.thing', payload: { hello: 1 } }, B);
  await eventually(
    () =>
      rx.ids('/gamma/all').includes(secret.body.event) &&
      rx.ids('/gamma/exact').includes(secret.body.event) &&
      rx.ids('/alpha/all').includes(open.body.event),
    15_000,
  );
  assert.ok(!rx.ids('/alpha/all').includes(secret.body.event), 'alpha’s # never receives beta.private');
  // Not by retry or replay either.
  const alphaAll = (await call('GET', '/v1/subscriptions?application=alpha', undefined, A)).body.items.find(
    (s: { subscription: string }) => s.subscription === 'all',
  );
  assert.equal(
    (await call('POST', `/v1/deliveries/${secret.body.event}/${alphaAll.id}/retry`, undefined, A)).status,
    404,
  );
  const rp = await call('POST', `/v1/subscriptions/${alphaAll.id}/replay`, { from: '2000-01-01T00:00:00Z' }, A);
  assert.equal(rp.status, 202);
  // Nor by a dead letter planted in alpha's dead-letter queue: resurrect skips it.
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createConfirmChannel();
    ch.publish(
      `${env.cfg.prefix}.dead`,
      `${env.cfg.prefix}.sub.alpha.all`,
      Buffer.from(JSON.stringify({ id: secret.body.event, action: 'beta.private', payload: {} })),
      {
        messageId: secret.body.event,
        headers: { 'x-amebo-action': 'beta.private', 'x-amebo-attempt': 3 },
        persistent: true,
      },
    );
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
  await eventually(
    async () => (await call('GET', `/v1/subscriptions/${alphaAll.id}/dead-letters`, undefined, A)).body.count === 1,
    5000,
  );
  const res = await call('POST', `/v1/subscriptions/${alphaAll.id}/dead-letters/resurrect`, {}, A);
  assert.equal(res.status, 200);
  assert.deepEqual([res.body.resurrected, res.body.skipped], [0, 1]);
  // Everything replayed has arrived by now (gamma got its copy): alpha still has nothing of it.
  await call('POST', '/v1/events', { action: 'beta.thing', payload: { marker: true } }, B);
  await eventually(() => rx.at('/alpha/all').some((x) => x.json?.payload?.marker === true), 10_000);
  assert.ok(!rx.ids('/alpha/all').includes(secret.body.event));

  // Naming alpha later lets it receive (the broker binding follows the list); removing it stops it.
  assert.equal((await call('PATCH', '/v1/actions/beta.private', { subscribers: ['gamma', 'alpha'] }, B)).status, 200);
  const second = await call('POST', '/v1/events', { action: 'beta.private', payload: { n: 2 } }, B);
  await eventually(() => rx.ids('/alpha/all').includes(second.body.event), 10_000);
  // Another application may not change beta's list.
  assert.equal((await call('PATCH', '/v1/actions/beta.private', { subscribers: null }, A)).status, 403);
  // A native AMQP consumer's queue is bound the same way: the broker keeps restricted events out.
  const q = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'alpha', subscription: 'native', action: 'beta.*', transport: 'amqp' },
    A,
  );
  assert.equal(q.status, 201);
  assert.equal((await call('PATCH', '/v1/actions/beta.private', { subscribers: ['gamma'] }, B)).status, 200);
  const third = await call('POST', '/v1/events', { action: 'beta.private', payload: { n: 3 } }, B);
  const marker = await call('POST', '/v1/events', { action: 'beta.thing', payload: { n: 3 } }, B);
  const got = await drainQueue(q.body.queue, 1, 5000);
  assert.deepEqual(
    got.map((m) => m.properties.messageId),
    [marker.body.event],
    'only the unrestricted event is queued',
  );
  await eventually(() => rx.ids('/gamma/all').includes(third.body.event), 10_000);
  assert.ok(!rx.ids('/alpha/all').includes(third.body.event));
});

test('RPC gateway: no grant, no call (whether or not the service exists); grants by pattern; admin only grants', async () => {
  const path = (m: string, type = 'pricing') => `/v1/rpc/${DOMAIN}/${type}/p1/${m}`;
  await call('PATCH', '/v1/applications/beta', { rpc_grants: [] }, 'admin');
  for (const p of [path('quote'), path('shutdown'), `/v1/rpc/nobody/here/x1/anything`]) {
    const r = await call('POST', p, {}, B);
    assert.equal(r.status, 403, p);
    assert.equal(r.body.error.code, 'AMEBO_ERR_FORBIDDEN');
  }
  // An application cannot grant itself.
  const self = await call('PATCH', '/v1/applications/beta', { rpc_grants: ['*.*.*'] }, B);
  assert.equal(self.status, 403);
  const bad = await call('PATCH', '/v1/applications/beta', { rpc_grants: ['not a grant'] }, 'admin');
  assert.equal(bad.status, 400);
  assert.equal(
    (await call('PATCH', '/v1/applications/beta', { rpc_grants: [`${DOMAIN}.pricing.quote`] }, 'admin')).status,
    200,
  );
  const q = await call('POST', path('quote'), { sku: 'A-1' }, B);
  assert.deepEqual([q.status, q.body.result], [200, { sku: 'A-1', price: 1 }]);
  assert.equal((await call('POST', path('shutdown'), {}, B)).status, 403);
  assert.equal((await call('PATCH', '/v1/applications/beta', { rpc_grants: [`${DOMAIN}.*.*`] }, 'admin')).status, 200);
  assert.equal((await call('POST', path('shutdown'), {}, B)).status, 200);
  const missing = await call('POST', path('quote', 'absent'), {}, B);
  assert.equal(missing.status, 404, 'granted, and the service does not exist');
  assert.equal((await call('POST', path('shutdown'), {}, 'admin')).status, 200);
  const view = await call('GET', '/v1/applications/beta', undefined, B);
  assert.deepEqual(view.body.rpc_grants, [`${DOMAIN}.*.*`]);
});

test('a revoke this API node has not seen yet, or one in flight, still stops a subscription to that action', async () => {
  const act = await call(
    'POST',
    '/v1/actions',
    { action: 'beta.revoked', application: 'beta', schemata: {}, subscribers: ['alpha'] },
    B,
  );
  assert.equal(act.status, 201, JSON.stringify(act.body));
  const subscribe = (name: string) =>
    call(
      'POST',
      '/v1/subscriptions',
      { application: 'alpha', subscription: name, action: 'beta.revoked', handler: rx.url(`/alpha/${name}`) },
      A,
    );
  // Allowed, and the action (with its grant) is now in this node's cache for 30 s.
  assert.equal((await subscribe('granted')).status, 201);
  const db = new pg.Client({ connectionString: env.cfg.databaseUrl });
  await db.connect();
  try {
    const stored = async (name: string) =>
      (await db.query("SELECT 1 FROM subscriptions WHERE application = 'alpha' AND name = $1", [name])).rowCount;
    // Revoked where this node's cache cannot see it (as by another API node whose invalidation is late).
    await db.query(`UPDATE actions SET subscribers = '{}' WHERE name = 'beta.revoked'`);
    const late = await subscribe('after-revoke');
    assert.equal(late.status, 403, JSON.stringify(late.body));
    assert.equal(late.body.error.code, 'AMEBO_ERR_FORBIDDEN');
    assert.equal(await stored('after-revoke'), 0, 'no row stored');

    // A revoke in flight: its transaction holds the action row; the subscription waits for it, then sees it.
    await db.query(`UPDATE actions SET subscribers = '{alpha}' WHERE name = 'beta.revoked'`);
    await db.query('BEGIN');
    await db.query(`UPDATE actions SET subscribers = '{}' WHERE name = 'beta.revoked'`);
    let answered = false;
    const during = subscribe('during-revoke').finally(() => (answered = true));
    // The subscription's transaction waits on the action row's lock (PostgreSQL says so).
    await eventually(async () => {
      const w = await db.query(
        `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
      );
      return (w.rowCount ?? 0) > 0;
    }, 30_000);
    assert.equal(answered, false, 'the subscription waits for the revoke to commit or roll back');
    await db.query('COMMIT');
    const r = await during;
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(await stored('during-revoke'), 0, 'no row stored');

    // Moving an existing subscription onto the revoked action is refused the same way.
    const own = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'alpha', subscription: 'mover', action: 'alpha.thing', handler: rx.url('/alpha/mover') },
      A,
    );
    assert.equal(own.status, 201);
    const moved = await call('PATCH', `/v1/subscriptions/${own.body.id}`, { action: 'beta.revoked' }, A);
    assert.equal(moved.status, 403, JSON.stringify(moved.body));
    const row = await db.query('SELECT action FROM subscriptions WHERE id = $1', [own.body.id]);
    assert.equal(row.rows[0].action, 'alpha.thing', 'the subscription keeps its action');
  } finally {
    await db.query('ROLLBACK').catch(() => undefined);
    await db.end();
  }
});
