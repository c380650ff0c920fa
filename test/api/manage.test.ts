/**
 * What the dashboard's Manage console needs from the API (issue 13): a schema's compatibility
 * answer before saving (nothing stored), deleting an action (refused while a subscription names it),
 * and resurrecting only the dead letters that died since a time (the older ones stay, in order).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { AMQP_URL, destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { HEADER } from '../../src/broker/message.js';
import { flakyAndSteady, Receiver, seed } from '../bridge/receiver.js';

const env = testEnv();
const rx = new Receiver();
let srv: Running;
let APP: [string, string];
let OTHER: [string, string];
const subs: Record<string, string> = {};
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

let failing = true;
before(async () => {
  await rx.listen();
  rx.on('/flaky', () => ({ status: failing ? 500 : 200 }));
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  APP = await seed(call, 'mgr', ['mgr.done']);
  OTHER = await seed(call, 'other', []);
  Object.assign(subs, await flakyAndSteady(call, rx, 'mgr', 'mgr.done'));
});
after(async () => {
  await srv?.close();
  await rx.close();
  await destroy(env);
});

const v1 = { type: 'object', properties: { email: { type: 'string' } }, required: ['email'] };

test('schema check: the compatibility answer a save would get, and nothing stored', async () => {
  assert.equal(
    (await call('POST', '/v1/actions', { action: 'mgr.contact', application: 'mgr', schemata: v1 }, APP)).status,
    201,
  );
  const before = (await call('GET', '/v1/actions/mgr.contact/versions', undefined, 'admin')).body;
  const widened = { ...v1, properties: { ...v1.properties, name: { type: 'string' } } };
  const ok = await call('POST', '/v1/actions/mgr.contact/schema/check', { schemata: widened }, APP);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.deepEqual(ok.body, {
    action: 'mgr.contact',
    compatible: true,
    mode: 'BACKWARD',
    current_version: 1,
    version: 2,
    violations: [],
  });

  const breaking = { ...v1, properties: { ...v1.properties, phone: { type: 'string' } }, required: ['email', 'phone'] };
  const no = await call('POST', '/v1/actions/mgr.contact/schema/check', { schemata: breaking }, 'admin');
  assert.equal(no.status, 200, JSON.stringify(no.body));
  assert.equal(no.body.compatible, false);
  assert.equal(no.body.mode, 'BACKWARD');
  assert.equal(no.body.version, undefined);
  assert.ok(no.body.violations.length >= 1 && no.body.violations.some((v: string) => /phone|required/.test(v)));
  // The same answer as the real save gives (409 with the same breaks).
  const put = await call('PUT', '/v1/actions/mgr.contact/schema', { schemata: breaking }, 'admin');
  assert.equal(put.status, 409);
  assert.deepEqual(
    put.body.error.details.map((d: { message: string }) => d.message),
    no.body.violations,
  );
  const none = await call(
    'POST',
    '/v1/actions/mgr.contact/schema/check?compatibility=NONE',
    { schemata: breaking },
    APP,
  );
  assert.deepEqual([none.body.compatible, none.body.mode, none.body.version], [true, 'NONE', 2]);

  // Not a JSON Schema: refused as a save would be; another application: forbidden; unknown: 404.
  const bad = await call('POST', '/v1/actions/mgr.contact/schema/check', { schemata: { type: 'nope' } }, APP);
  assert.equal(bad.status, 422);
  assert.equal((await call('POST', '/v1/actions/mgr.contact/schema/check', { schemata: widened }, OTHER)).status, 403);
  assert.equal((await call('POST', '/v1/actions/mgr.nope/schema/check', { schemata: v1 }, 'admin')).status, 404);

  // Nothing changed: still version 1, the same versions.
  const after = (await call('GET', '/v1/actions/mgr.contact/versions', undefined, 'admin')).body;
  assert.deepEqual(after, before);
  assert.equal((await call('GET', '/v1/actions/mgr.contact', undefined, 'admin')).body.version, 1);
});

test('delete an action: refused while a subscription names it, then deleted with its versions; events stay', async () => {
  assert.equal(
    (await call('POST', '/v1/actions', { action: 'mgr.old', application: 'mgr', schemata: { type: 'object' } }, APP))
      .status,
    201,
  );
  assert.equal(
    (
      await call(
        'PUT',
        '/v1/actions/mgr.old/schema',
        { schemata: { type: 'object', properties: { n: { type: 'number' } } } },
        APP,
      )
    ).status,
    200,
  );
  const ev = await call('POST', '/v1/events', { action: 'mgr.old', payload: { n: 1 } }, APP);
  assert.equal(ev.status, 202, JSON.stringify(ev.body));
  const exact = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'mgr', subscription: 'old', action: 'mgr.old', handler: rx.url('/old') },
    'admin',
  );
  assert.equal(exact.status, 201, JSON.stringify(exact.body));
  // A pattern that matches it is not a reference: it does not block.
  const pattern = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'other', subscription: 'all', action: 'mgr.#', handler: rx.url('/all') },
    'admin',
  );
  assert.equal(pattern.status, 201, JSON.stringify(pattern.body));

  // Another application may not delete it; the owner is refused while `old` names it.
  const foreign = await call('DELETE', '/v1/actions/mgr.old', undefined, OTHER);
  assert.equal(foreign.status, 403);
  assert.equal(foreign.body.error.code, 'AMEBO_ERR_FORBIDDEN');
  const refused = await call('DELETE', '/v1/actions/mgr.old', undefined, APP);
  assert.equal(refused.status, 409, JSON.stringify(refused.body));
  assert.equal(refused.body.error.code, 'AMEBO_ERR_CONFLICT');
  assert.deepEqual(refused.body.error.details, [{ subscription: exact.body.id, name: 'mgr/old' }]);
  assert.equal((await call('GET', '/v1/actions/mgr.old', undefined, 'admin')).body.version, 2);

  assert.equal((await call('DELETE', `/v1/subscriptions/${exact.body.id}`, undefined, APP)).status, 204);
  const deleted = await call('DELETE', '/v1/actions/mgr.old', undefined, APP);
  assert.equal(deleted.status, 204, JSON.stringify(deleted.body));
  assert.equal((await call('GET', '/v1/actions/mgr.old', undefined, 'admin')).status, 404);
  const versions = await srv.amebo.pool.query('SELECT count(*)::int AS n FROM action_versions WHERE action = $1', [
    'mgr.old',
  ]);
  assert.equal(versions.rows[0].n, 0);
  // The stored event is history: still there, with its action name.
  const stored = await call('GET', `/v1/events/${ev.body.event}`, undefined, 'admin');
  assert.equal(stored.status, 200);
  assert.equal(stored.body.action, 'mgr.old');
  // Publishing to it now is refused; the pattern subscription lives on.
  assert.equal((await call('POST', '/v1/events', { action: 'mgr.old', payload: {} }, APP)).status, 404);
  assert.equal((await call('GET', `/v1/subscriptions/${pattern.body.id}`, undefined, 'admin')).status, 200);
  assert.equal((await call('DELETE', '/v1/actions/mgr.old', undefined, 'admin')).status, 404);

  // Registered again, the name continues after its last version (2): the stored event says
  // schema_version 2 of the old schema, and no new schema may take that number.
  assert.equal(stored.body.schema_version, 2);
  const again = await call(
    'POST',
    '/v1/actions',
    { action: 'mgr.old', application: 'mgr', schemata: { type: 'object', required: ['m'] } },
    APP,
  );
  assert.equal(again.status, 201, JSON.stringify(again.body));
  assert.equal(again.body.version, 3);
  const history = await call('GET', '/v1/actions/mgr.old/versions', undefined, 'admin');
  assert.deepEqual(
    (history.body.items as { version: number }[]).map((v) => v.version),
    [3],
  );
  const next = await call('POST', '/v1/events', { action: 'mgr.old', payload: { m: 1 } }, APP);
  assert.equal(next.status, 202, JSON.stringify(next.body));
  assert.equal((await call('GET', `/v1/events/${next.body.event}`, undefined, 'admin')).body.schema_version, 3);
});

const deadList = async () =>
  (await call('GET', `/v1/subscriptions/${subs.flaky}/dead-letters?limit=100`, undefined, 'admin')).body as {
    count: number;
    items: { event: string; dead_at: string | null }[];
  };

test('resurrect since T: only what died at or after T goes back; the older stay in order', async () => {
  const publish = async (n: number) => {
    const r = await call('POST', '/v1/events', { action: 'mgr.done', payload: { n } }, APP);
    assert.equal(r.status, 202);
    return r.body.event as string;
  };
  const old = [await publish(1), await publish(2)];
  await eventually(async () => (await deadList()).count === 2, 30_000);
  await new Promise((r) => setTimeout(r, 20));
  const since = new Date();
  const fresh = [await publish(3), await publish(4)];
  await eventually(async () => (await deadList()).count === 4, 30_000);
  // A dead letter that does not say when it died counts as older.
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createConfirmChannel();
    const deadQueue = (await call('GET', `/v1/subscriptions/${subs.flaky}`, undefined, 'admin')).body.dead_letter_queue;
    ch.sendToQueue(deadQueue, Buffer.from(JSON.stringify({ id: 'undated', action: 'mgr.done', payload: {} })), {
      messageId: 'undated',
      headers: { [HEADER.action]: 'mgr.done', [HEADER.reason]: 'max_attempts' },
      persistent: true,
    });
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
  const listed = await deadList();
  assert.equal(listed.count, 5);
  const order = listed.items.map((i) => i.event);
  assert.deepEqual(new Set(order.slice(0, 2)), new Set(old));
  assert.deepEqual(new Set(order.slice(2, 4)), new Set(fresh));
  assert.equal(order[4], 'undated');
  for (const i of listed.items.slice(2, 4)) assert.ok(Date.parse(i.dead_at!) >= since.getTime());

  const bad = await call(
    'POST',
    `/v1/subscriptions/${subs.flaky}/dead-letters/resurrect`,
    { since: 'yesterday' },
    'admin',
  );
  assert.equal(bad.status, 400);

  failing = false;
  const r = await call(
    'POST',
    `/v1/subscriptions/${subs.flaky}/dead-letters/resurrect`,
    { since: since.toISOString() },
    APP,
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body, { subscription: subs.flaky, resurrected: 2, skipped: 0, older: 3 });
  for (const id of fresh) await eventually(() => rx.at('/flaky').some((x) => x.headers['webhook-id'] === id), 30_000);
  // The older ones are still there, in the order they were in, none delivered.
  const left = await deadList();
  assert.equal(left.count, 3);
  assert.deepEqual(
    left.items.map((i) => i.event),
    [order[0], order[1], 'undated'],
  );
  // (each was attempted once, when it died)
  for (const id of old) assert.equal(rx.at('/flaky').filter((x) => x.headers['webhook-id'] === id).length, 1);

  // Without since: all of them, as before.
  const all = await call('POST', `/v1/subscriptions/${subs.flaky}/dead-letters/resurrect`, {}, 'admin');
  assert.deepEqual([all.body.resurrected, all.body.older], [3, 0]);
  for (const id of old)
    await eventually(() => rx.at('/flaky').filter((x) => x.headers['webhook-id'] === id).length >= 2, 30_000);
});

test('a subscription’s pattern changed: rebound, within what the application may receive; ordered stays', async () => {
  for (const [action, subscribers] of [
    ['mgr.x.y', null],
    ['mgr.secret', []],
  ] as const)
    assert.equal(
      (await call('POST', '/v1/actions', { action, application: 'mgr', schemata: {}, subscribers }, APP)).status,
      201,
    );
  const created = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'other', subscription: 'mover', action: 'mgr.done', handler: rx.url('/mover') },
    'admin',
  );
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  const publish = async (action: string) => {
    const r = await call('POST', '/v1/events', { action, payload: {} }, APP);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.event as string;
  };
  const got = (event: string) => rx.at('/mover').some((x) => x.headers['webhook-id'] === event);
  const first = await publish('mgr.done');
  await eventually(() => got(first), 30_000);

  // Refused: an action the application may not receive (403), an unknown one (404), a bad pattern
  // (400), a change of ordered (400 saying why); nothing changed.
  const forbidden = await call('PATCH', `/v1/subscriptions/${id}`, { action: 'mgr.secret' }, OTHER);
  assert.equal(forbidden.status, 403, JSON.stringify(forbidden.body));
  assert.equal((await call('PATCH', `/v1/subscriptions/${id}`, { action: 'mgr.nope' }, OTHER)).status, 404);
  assert.equal((await call('PATCH', `/v1/subscriptions/${id}`, { action: 'mgr..x' }, OTHER)).status, 400);
  const ordered = await call('PATCH', `/v1/subscriptions/${id}`, { ordered: true }, OTHER);
  assert.equal(ordered.status, 400);
  assert.match(ordered.body.error.message, /creation only.*single active consumer/);
  assert.equal((await call('PATCH', `/v1/subscriptions/${id}`, { ordered: false }, OTHER)).status, 200);
  assert.equal((await call('GET', `/v1/subscriptions/${id}`, undefined, 'admin')).body.action, 'mgr.done');

  // A pattern over the namespace: mgr.x.y and mgr.done arrive; mgr.secret (restricted to mgr) never.
  const moved = await call('PATCH', `/v1/subscriptions/${id}`, { action: 'mgr.#' }, OTHER);
  assert.equal(moved.status, 200, JSON.stringify(moved.body));
  assert.equal(moved.body.action, 'mgr.#');
  const secret = await publish('mgr.secret');
  const xy = await publish('mgr.x.y');
  const done = await publish('mgr.done');
  await eventually(() => got(xy) && got(done), 30_000);
  // Then a narrower one: mgr.x.* only; the old binding is gone.
  const narrowed = await call('PATCH', `/v1/subscriptions/${id}`, { action: 'mgr.x.*' }, 'admin');
  assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
  const notAnyMore = await publish('mgr.done');
  const xy2 = await publish('mgr.x.y');
  await eventually(() => got(xy2), 30_000);
  await eventually(() => rx.at('/steady').some((x) => x.headers['webhook-id'] === notAnyMore), 30_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!got(notAnyMore), 'mgr.done no longer reaches mgr.x.*');
  assert.ok(!got(secret), 'a restricted action never reaches an application it leaves out');
});
