import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import Fastify from 'fastify';
import { AMQP_URL, destroy, http, start, testEnv, type Running } from '../helpers/harness.js';
import { extraPlugins } from '../../src/plugins.js';
import { AmeboError } from '../../src/errors.js';
import { BrokerUnavailableError } from '../../src/broker/connection.js';
import { toAmeboError } from '../../src/api/server.js';
import { decodeCursor, encodeCursor, page } from '../../src/api/paging.js';
import { addSharedSchemas, replies, SHARED, typed } from '../../src/api/schemas.js';
import { dataException, storeUnreachable } from '../../src/store/errors.js';

// fastify as the contract (issue 11 §3): every route documents its answers, handlers are typed by
// their schemas, errors are coded by class, and the registry's deletes say what they deleted.

const env = testEnv();
let srv: Running;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

before(async () => {
  srv = await start(env, { plugins: await extraPlugins(env.cfg) });
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

async function queueExists(name: string): Promise<boolean> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.checkQueue(name);
    return true;
  } catch {
    return false;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

describe('OpenAPI document', () => {
  test('every route documents its success answer and the coded error shape; /v1/stream is listed', async () => {
    const spec = (await call('GET', '/openapi.json')).body;
    const schemas = Object.keys(spec.components.schemas as object);
    for (const s of SHARED) assert.ok(schemas.includes(s.$id), `components.schemas has ${s.$id}`);
    let n = 0;
    for (const [path, ops] of Object.entries(spec.paths as Record<string, Record<string, any>>))
      for (const [method, op] of Object.entries(ops)) {
        if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
        n++;
        const where = `${method.toUpperCase()} ${path}`;
        const codes = Object.keys(op.responses ?? {});
        const ok = codes.filter((c) => /^2\d\d$/.test(c) || (path === '/v1/stream' && c === '101'));
        assert.ok(ok.length > 0, `${where} documents a success answer (has ${codes.join(', ')})`);
        for (const c of ok)
          if (c !== '204' && c !== '101')
            assert.ok(op.responses[c].content?.['application/json']?.schema, `${where} ${c} has a schema`);
        for (const c of ['4XX', '5XX']) {
          // The API's routes use the shared schema; the fabric's (usable without the API) inline it.
          const schema = op.responses[c]?.content?.['application/json']?.schema;
          assert.ok(
            schema?.$ref === '#/components/schemas/Error' || schema?.properties?.error?.required?.includes('code'),
            `${where} ${c} is the error shape`,
          );
        }
      }
    assert.ok(n >= 40, `${n} operations`);
    assert.ok(spec.paths['/v1/stream']?.get, '/v1/stream is documented');
    assert.ok(spec.paths['/v1/stream'].get.responses['101']);
  });

  test('response schemas keep what clients read: a subscription with its secret, an event with its deliveries', async () => {
    await call('POST', '/v1/applications', { application: 'shape', secret: 'shape-secret-0123456789' }, 'admin');
    await call('POST', '/v1/actions', { action: 'shape.made', application: 'shape', schemata: {} }, 'admin');
    const sub = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'shape', subscription: 'tap', action: 'shape.made', transport: 'amqp' },
      'admin',
    );
    assert.equal(sub.status, 201);
    for (const k of ['id', 'queue', 'dead_letter_queue', 'retry_schedule', 'encrypted', 'paused', 'created_at'])
      assert.ok(k in sub.body, k);
    assert.match(sub.body.signing_secret, /^whsec_/);
    assert.equal(typeof sub.body.queue_declared, 'boolean');
    const rotated = await call('POST', `/v1/subscriptions/${sub.body.id}/rotate-secret`, undefined, 'admin');
    assert.equal(rotated.status, 200);
    assert.ok(rotated.body.signing_secret && rotated.body.previous_valid_until && rotated.body.queue);
    const ev = await call('POST', '/v1/events', { action: 'shape.made', payload: { n: 1 } }, 'admin');
    assert.equal(ev.status, 202);
    const detail = await call('GET', `/v1/events/${ev.body.event}`, undefined, 'admin');
    assert.deepEqual(detail.body.payload, { n: 1 });
    assert.ok(Array.isArray(detail.body.deliveries));
    assert.match(detail.body.created_at, /^\d{4}-\d\d-\d\dT/);
    const list = await call('GET', '/v1/events?limit=1', undefined, 'admin');
    assert.equal(list.body.items.length, 1);
    assert.equal(typeof list.body.next_cursor, 'string');
    const bad = await call('GET', '/v1/events?cursor=bm90LWEtdXVpZA', undefined, 'admin');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'AMEBO_ERR_VALIDATION');
  });
});

describe('typed handlers', () => {
  test('req.body, req.query and the reply are typed by the route schema', async () => {
    const app = Fastify();
    addSharedSchemas(app);
    typed(app).post(
      '/sum/:id',
      {
        schema: {
          params: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
          querystring: { type: 'object', properties: { times: { type: 'integer', default: 1 } } },
          body: {
            type: 'object',
            additionalProperties: false,
            properties: { numbers: { type: 'array', items: { type: 'number' } } },
            required: ['numbers'],
          },
          response: replies({
            200: {
              type: 'object',
              additionalProperties: false,
              properties: { id: { type: 'string' }, sum: { type: 'number' } },
              required: ['id', 'sum'],
            },
          }),
        },
      },
      async (req) => {
        // Typed, not cast: `numbers` is number[], `times` a number (its default makes it present).
        const sum: number = req.body.numbers.reduce((a, b) => a + b, 0) * req.query.times;
        // @ts-expect-error the schema has no such property
        void req.body.count;
        const out = { id: req.params.id, sum, secret: 'not in the schema' };
        return out;
      },
    );
    const r = await app.inject({ method: 'POST', url: '/sum/x?times=2', payload: { numbers: [1, 2, 3] } });
    // The response schema is the serializer: what it does not declare is not sent.
    assert.deepEqual(r.json(), { id: 'x', sum: 12 });
    await app.close();
  });
});

describe('errors are coded by class and code, never by message', () => {
  test('store and broker failures, framework errors, anything else', () => {
    const refused = Object.assign(new Error('whatever the text'), { code: 'ECONNREFUSED' });
    assert.equal(storeUnreachable(refused), true);
    assert.equal(storeUnreachable(new Error('timeout exceeded when trying to connect')), true);
    assert.equal(storeUnreachable(Object.assign(new Error('x'), { code: '23505' })), false);
    assert.equal(dataException(Object.assign(new Error('x'), { code: '22021' })), '22021');
    assert.equal(dataException(new Error('x')), null);
    assert.equal(toAmeboError(refused).code, 'AMEBO_ERR_UNAVAILABLE');
    assert.equal(toAmeboError(new BrokerUnavailableError()).code, 'AMEBO_ERR_UNAVAILABLE');
    assert.equal(toAmeboError(Object.assign(new Error('x'), { code: '22P05' })).status, 400);
    assert.equal(toAmeboError(new Error('Channel closed')).code, 'AMEBO_ERR_INTERNAL');
    const ae = new AmeboError('CONFLICT', 'busy');
    assert.equal(toAmeboError(ae), ae);
    assert.deepEqual(ae.toJSON(), { error: { code: 'AMEBO_ERR_CONFLICT', message: 'busy' } });
  });
});

describe('cursor paging', () => {
  test('one helper: a full page has a next cursor; a foreign cursor is a 400', () => {
    const parse = (p: string[]) => (p.length === 2 ? { a: p[0]!, b: p[1]! } : undefined);
    const c = encodeCursor(['1', '2']);
    assert.deepEqual(decodeCursor(c, parse), { a: '1', b: '2' });
    assert.equal(decodeCursor(undefined, parse), undefined);
    assert.throws(
      () => decodeCursor(encodeCursor(['1']), parse),
      (e: AmeboError) => e.code === 'AMEBO_ERR_VALIDATION',
    );
    const rows = [{ k: 'x' }, { k: 'y' }];
    assert.deepEqual(
      page(
        rows,
        2,
        (r) => r.k,
        (r) => [r.k],
      ),
      { items: ['x', 'y'], next_cursor: encodeCursor(['y']) },
    );
    assert.equal(
      page(
        rows,
        3,
        (r) => r.k,
        (r) => [r.k],
      ).next_cursor,
      null,
    );
  });
});

describe('deletes return what they deleted', () => {
  test('an application deleted while subscriptions are created for it: every one created is returned, and its queues are gone', async () => {
    const { registry, topology } = srv.amebo;
    await registry.createApplication({ application: 'racer', secret: 'racer-secret-0123456789' });
    await registry.createAction({ action: 'racer.ran', application: 'racer', schemata: {} });
    const subscribe = (i: number) =>
      registry.subscribe({ application: 'racer', subscription: `s${i}`, action: 'racer.ran', transport: 'amqp' });
    const early = await Promise.all([0, 1, 2].map(subscribe));
    const racing = [3, 4, 5, 6, 7, 8, 9, 10, 11].map((i) =>
      subscribe(i).then(
        (r) => ({ ok: r.row }),
        (err: unknown) => ({ err }),
      ),
    );
    const deleted = await registry.deleteApplication('racer');
    const outcomes = await Promise.all(racing);
    assert.ok(deleted);
    const ids = new Set(deleted.subscriptions.map((s) => s.id));
    for (const e of early) assert.ok(ids.has(e.row.id), 'a subscription made before is returned');
    for (const o of outcomes) {
      if ('ok' in o) assert.ok(ids.has(o.ok.id), `${o.ok.name} was created, so it was deleted and returned`);
      else {
        // Too late: its application is gone (a 404, never a 500).
        assert.ok(o.err instanceof AmeboError, String(o.err));
        assert.equal(o.err.status, 404);
      }
    }
    assert.deepEqual(deleted.actions, ['racer.ran']);
    assert.deepEqual(await registry.listSubscriptions({ application: 'racer' }), []);
    for (const s of deleted.subscriptions)
      assert.equal(await queueExists(topology.subscriptionQueue(s.application, s.name)), false, s.name);
    assert.equal(await registry.deleteApplication('racer'), null, 'a second delete finds nothing');
  });

  test('concurrent deletes: each returns only its own rows; the same subscription is returned once', async () => {
    const { registry } = srv.amebo;
    const subs: string[] = [];
    for (const a of ['left', 'right']) {
      await registry.createApplication({ application: a, secret: `${a}-secret-0123456789` });
      await registry.createAction({ action: `${a}.did`, application: a, schemata: {} });
      for (let i = 0; i < 3; i++)
        subs.push(
          (await registry.subscribe({ application: a, subscription: `s${i}`, action: `${a}.did`, transport: 'amqp' }))
            .row.id,
        );
    }
    const [left, right] = await Promise.all([registry.deleteApplication('left'), registry.deleteApplication('right')]);
    assert.deepEqual(
      left!.subscriptions.map((s) => s.application),
      ['left', 'left', 'left'],
    );
    assert.deepEqual(
      right!.subscriptions.map((s) => s.application),
      ['right', 'right', 'right'],
    );

    await registry.createApplication({ application: 'solo', secret: 'solo-secret-0123456789' });
    await registry.createAction({ action: 'solo.did', application: 'solo', schemata: {} });
    const { row } = await registry.subscribe({
      application: 'solo',
      subscription: 'one',
      action: 'solo.did',
      transport: 'amqp',
    });
    const both = await Promise.all([registry.deleteSubscription(row.id), registry.deleteSubscription(row.id)]);
    assert.equal(both.filter((d) => d?.id === row.id).length, 1, 'exactly one delete returns it');
    assert.equal(both.filter((d) => d === null).length, 1);
    const http404 = await call('DELETE', `/v1/subscriptions/${row.id}`, undefined, 'admin');
    assert.equal(http404.status, 404);
    assert.equal(http404.body.error.code, 'AMEBO_ERR_SUBSCRIPTION_NOT_FOUND');
  });
});
