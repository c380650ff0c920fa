import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { AMQP_URL, destroy, http, start, testEnv, type Running } from '../helpers/harness.js';

const env = testEnv();
let srv: Running;
const call = (
  m: Parameters<typeof http>[2],
  p: string,
  body?: unknown,
  auth?: Parameters<typeof http>[5],
  h?: Record<string, string>,
) => http(srv.url, env, m, p, body, auth, h);

before(async () => {
  srv = await start(env);
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

describe('applications', () => {
  test('admin registers an application; the secret is shown once and stored hashed', async () => {
    const r = await call(
      'POST',
      '/v1/applications',
      { application: 'user-service', address: 'https://users.myapp.com', secret: 'user-service-secret' },
      'admin',
    );
    assert.equal(r.status, 201);
    assert.equal(r.body.secret, 'user-service-secret');
    assert.equal(r.body.application, 'user-service');
    const row = await srv.amebo.pool.query('SELECT secret_hash FROM applications WHERE name = $1', ['user-service']);
    assert.match(row.rows[0].secret_hash, /^scrypt\$/);
    assert.ok(!row.rows[0].secret_hash.includes('user-service-secret'));
    const got = await call('GET', '/v1/applications/user-service', undefined, ['user-service', 'user-service-secret']);
    assert.equal(got.status, 200);
    assert.equal(got.body.secret, undefined);
  });

  test('generated secrets work; seed 000 dialect /v1/producers is an alias', async () => {
    const r = await call(
      'POST',
      '/v1/producers',
      {
        microservice: 'customers',
        passphrase: 'some-super-duper-secret-of-the-module',
        location: 'http://0.0.0.0:3300',
      },
      'admin',
    );
    assert.equal(r.status, 201);
    assert.equal(r.body.application, 'customers');
    assert.equal(r.body.address, 'http://0.0.0.0:3300/');
    const g = await call('POST', '/v1/applications', { application: 'gen-app' }, 'admin');
    assert.equal(g.status, 201);
    assert.ok(g.body.secret.length >= 32);
    assert.equal((await call('GET', '/v1/applications/gen-app', undefined, ['gen-app', g.body.secret])).status, 200);
    const list = await call('GET', '/v1/producers', undefined, 'admin');
    assert.deepEqual(
      list.body.items
        .map((a: { application: string }) => a.application)
        .filter((n: string) => ['customers', 'gen-app'].includes(n)),
      ['customers', 'gen-app'],
    );
  });

  test('auth: none → 401, wrong secret → 401, application acting for another → 403, admin-only routes → 403', async () => {
    assert.equal((await call('GET', '/v1/applications')).status, 401);
    assert.equal(
      (await call('GET', '/v1/applications', undefined, 'Bearer nope')).body.error.code,
      'AMEBO_ERR_UNAUTHENTICATED',
    );
    assert.equal(
      (await call('GET', '/v1/applications/user-service', undefined, ['user-service', 'wrong-secret-123456'])).status,
      401,
    );
    assert.equal(
      (await call('GET', '/v1/applications/customers', undefined, ['user-service', 'user-service-secret'])).status,
      403,
    );
    const r = await call('GET', '/v1/applications', undefined, ['user-service', 'user-service-secret']);
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'AMEBO_ERR_FORBIDDEN');
    assert.equal((await call('GET', '/v1/applications', undefined, 'Digest x')).status, 401);
  });

  test('names are checked, duplicates are 409, short secrets 400', async () => {
    for (const name of ['Bad Name', '-x', 'a'.repeat(64), 'üser', '../etc', '']) {
      const r = await call('POST', '/v1/applications', { application: name }, 'admin');
      assert.equal(r.status, 400, `${name}: ${JSON.stringify(r.body)}`);
      assert.ok(r.body.error.code.startsWith('AMEBO_ERR_'));
    }
    const dup = await call('POST', '/v1/applications', { application: 'user-service' }, 'admin');
    assert.equal(dup.status, 409);
    assert.equal(dup.body.error.code, 'AMEBO_ERR_NAME_TAKEN');
    assert.equal(
      (await call('POST', '/v1/applications', { application: 'shorty', secret: 'short' }, 'admin')).status,
      400,
    );
    assert.equal(
      (await call('POST', '/v1/applications', { application: 'ftp-app', address: 'ftp://x' }, 'admin')).status,
      400,
    );
  });

  test('rotation: the new secret works at once, the old one stops', async () => {
    await call('POST', '/v1/applications', { application: 'rot-app', secret: 'rot-app-secret-0001' }, 'admin');
    const r = await call('POST', '/v1/applications/rot-app/secret', {}, ['rot-app', 'rot-app-secret-0001']);
    assert.equal(r.status, 200);
    assert.notEqual(r.body.secret, 'rot-app-secret-0001');
    assert.equal((await call('GET', '/v1/applications/rot-app', undefined, ['rot-app', r.body.secret])).status, 200);
    assert.equal(
      (await call('GET', '/v1/applications/rot-app', undefined, ['rot-app', 'rot-app-secret-0001'])).status,
      401,
    );
  });

  test('patch address and delete', async () => {
    await call('POST', '/v1/applications', { application: 'tmp-app', secret: 'tmp-app-secret-00001' }, 'admin');
    const p = await call('PATCH', '/v1/applications/tmp-app', { address: 'http://127.0.0.1:9/' }, [
      'tmp-app',
      'tmp-app-secret-00001',
    ]);
    assert.equal(p.body.address, 'http://127.0.0.1:9/');
    assert.equal((await call('DELETE', '/v1/applications/tmp-app', undefined, 'admin')).status, 204);
    assert.equal((await call('GET', '/v1/applications/tmp-app', undefined, 'admin')).status, 404);
    assert.equal(
      (await call('DELETE', '/v1/applications/tmp-app', undefined, 'admin')).body.error.code,
      'AMEBO_ERR_APPLICATION_NOT_FOUND',
    );
  });
});

describe('actions', () => {
  const schemata = {
    type: 'object',
    properties: {
      user_id: { type: 'string' },
      email: { type: 'string', format: 'email' },
      name: { type: 'string' },
      plan: { type: 'string', enum: ['free', 'premium'] },
    },
    required: ['user_id', 'email', 'name'],
  };

  test('the owner registers an action with a body secret (Amebo client style); versions start at 1', async () => {
    const r = await call('POST', '/v1/actions', {
      action: 'user.created',
      application: 'user-service',
      secret: 'user-service-secret',
      schemata,
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.version, 1);
    assert.deepEqual(r.body.schemata, schemata);
    const s = await call(
      'POST',
      '/v1/actions',
      { action: 'customers.v1.created', microservice: 'customers', schemata: JSON.stringify({ type: 'object' }) },
      'admin',
    );
    assert.equal(s.status, 201);
    assert.deepEqual(s.body.schemata, { type: 'object' });
  });

  test('bad schemas are 422 with details; bad names 400; another application 403; unknown app 404; taken 409', async () => {
    const bad = await call(
      'POST',
      '/v1/actions',
      { action: 'user.bad', application: 'user-service', schemata: { type: 'web' } },
      'admin',
    );
    assert.equal(bad.status, 422);
    assert.equal(bad.body.error.code, 'AMEBO_ERR_SCHEMA_INVALID');
    assert.ok(bad.body.error.details.length > 0);
    assert.equal(
      (
        await call(
          'POST',
          '/v1/actions',
          { action: 'user.bad', application: 'user-service', schemata: '{nope' },
          'admin',
        )
      ).status,
      422,
    );
    for (const name of ['user..x', '.x', 'x.', 'sp ace', 'a*b', 'x'.repeat(256)])
      assert.equal(
        (await call('POST', '/v1/actions', { action: name, application: 'user-service', schemata: {} }, 'admin'))
          .status,
        400,
        name,
      );
    const other = await call(
      'POST',
      '/v1/actions',
      { action: 'customers.hijack', application: 'customers', schemata: {} },
      ['user-service', 'user-service-secret'],
    );
    assert.equal(other.status, 403);
    assert.equal(
      (await call('POST', '/v1/actions', { action: 'ghost.x', application: 'ghost', schemata: {} }, 'admin')).status,
      404,
    );
    const taken = await call(
      'POST',
      '/v1/actions',
      { action: 'user.created', application: 'customers', schemata: {} },
      'admin',
    );
    assert.equal(taken.status, 409);
  });

  test('listing filters by application and substring; detail and versions', async () => {
    const l = await call('GET', '/v1/actions?application=user-service', undefined, [
      'customers',
      'some-super-duper-secret-of-the-module',
    ]);
    assert.deepEqual(
      l.body.items.map((a: { action: string }) => a.action),
      ['user.created'],
    );
    const q = await call('GET', '/v1/actions?q=v1.cre', undefined, 'admin');
    assert.deepEqual(
      q.body.items.map((a: { action: string }) => a.action),
      ['customers.v1.created'],
    );
    assert.equal((await call('GET', '/v1/actions/user.created', undefined, 'admin')).body.version, 1);
    assert.equal(
      (await call('GET', '/v1/actions/nope.nope', undefined, 'admin')).body.error.code,
      'AMEBO_ERR_ACTION_NOT_FOUND',
    );
  });

  test('schema updates: compatible → new version; incompatible → 409 listing the breaks', async () => {
    const next = structuredClone(schemata) as any;
    next.properties.created_at = { type: 'string' };
    const ok = await call('PUT', '/v1/actions/user.created/schema', { schemata: next }, [
      'user-service',
      'user-service-secret',
    ]);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.version, 2);
    const breaking = structuredClone(next);
    breaking.required.push('plan');
    const no = await call('PUT', '/v1/actions/user.created/schema', { schemata: breaking }, 'admin');
    assert.equal(no.status, 409);
    assert.equal(no.body.error.code, 'AMEBO_ERR_SCHEMA_INCOMPATIBLE');
    assert.ok(no.body.error.details.some((d: { message: string }) => d.message.includes('"plan" became required')));
    const forced = await call(
      'PUT',
      '/v1/actions/user.created/schema?compatibility=NONE',
      { schemata: breaking },
      'admin',
    );
    assert.equal(forced.body.version, 3);
    const v = await call('GET', '/v1/actions/user.created/versions', undefined, 'admin');
    assert.deepEqual(
      v.body.items.map((x: { version: number }) => x.version),
      [1, 2, 3],
    );
    // back to a schema without the extra requirement for the rest of the file
    await call('PUT', '/v1/actions/user.created/schema', { schemata: next }, 'admin');
  });
});

describe('subscriptions', () => {
  let subId = '';
  test('create declares and binds the queue; signing secret shown once', async () => {
    await call(
      'POST',
      '/v1/applications',
      { application: 'email-service', address: 'https://email.myapp.com', secret: 'email-service-secret' },
      'admin',
    );
    const r = await call('POST', '/v1/subscriptions', {
      application: 'email-service',
      subscription: 'welcome-emails',
      action: 'user.created',
      handler: '/webhooks/user-created',
      secret: 'email-service-secret',
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    subId = r.body.id;
    assert.match(r.body.signing_secret, /^whsec_/);
    assert.equal(r.body.handler, 'https://email.myapp.com/webhooks/user-created');
    assert.equal(r.body.queue, `${env.cfg.prefix}.sub.email-service.welcome-emails`);
    assert.equal(r.body.queue_declared, true);
    assert.equal(await queueExists(r.body.queue), true);
    assert.equal(await queueExists(r.body.dead_letter_queue), true);
    const g = await call('GET', `/v1/subscriptions/${subId}`, undefined, ['email-service', 'email-service-secret']);
    assert.equal(g.status, 200);
    assert.equal(g.body.signing_secret, undefined);
    assert.deepEqual(g.body.retry_schedule, env.cfg.retrySchedule);
  });

  test('amqp transport and topic patterns; invalid input is 4xx', async () => {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'email-service', subscription: 'all-users', action: 'user.*', transport: 'amqp' },
      'admin',
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.transport, 'amqp');
    assert.equal(await queueExists(r.body.queue), true);
    const cases: [unknown, number][] = [
      [{ application: 'email-service', subscription: 'x1', action: 'user.created' }, 400], // http without handler
      [{ application: 'email-service', subscription: 'x2', action: 'user.created', handler: 'ftp://h/x' }, 400],
      [{ application: 'email-service', subscription: 'x3', action: 'nope.none', handler: 'http://h/x' }, 404],
      [{ application: 'email-service', subscription: 'Bad.Name', action: 'user.created', handler: 'http://h/x' }, 400],
      [{ application: 'email-service', subscription: 'x4', action: 'a.**', transport: 'amqp' }, 400],
      [
        { application: 'email-service', subscription: 'welcome-emails', action: 'user.created', handler: 'http://h/x' },
        409,
      ],
      [
        {
          application: 'email-service',
          subscription: 'x5',
          action: 'user.created',
          handler: 'http://h/x',
          retry_schedule: [],
        },
        400,
      ],
      [
        {
          application: 'email-service',
          subscription: 'x6',
          action: 'user.created',
          handler: 'http://h/x',
          encryption_key: 'c2hvcnQ=',
        },
        400,
      ],
      [
        {
          application: 'email-service',
          subscription: 'x7',
          action: 'user.created',
          handler: 'http://h/x',
          max_attempts: 0,
        },
        400,
      ],
    ];
    for (const [body, status] of cases) {
      const res = await call('POST', '/v1/subscriptions', body, 'admin');
      assert.equal(res.status, status, `${JSON.stringify(body)} → ${JSON.stringify(res.body)}`);
    }
    const forbidden = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'email-service', subscription: 'x8', action: 'user.created', handler: 'http://h/x' },
      ['user-service', 'user-service-secret'],
    );
    assert.equal(forbidden.status, 403);
  });

  test('list, patch, pause/resume, rotate, delete removes the queues', async () => {
    const l = await call('GET', '/v1/subscriptions?application=email-service', undefined, 'admin');
    assert.deepEqual(
      l.body.items.map((s: { subscription: string }) => s.subscription),
      ['all-users', 'welcome-emails'],
    );
    const p = await call('PATCH', `/v1/subscriptions/${subId}`, { max_attempts: 3, retry_schedule: [1, 2] }, 'admin');
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.max_attempts, 3);
    assert.deepEqual(p.body.retry_schedule, [1, 2]);
    assert.equal(await queueExists(`${env.cfg.prefix}.retry.2000`), true);
    assert.equal((await call('POST', `/v1/subscriptions/${subId}/pause`, undefined, 'admin')).body.paused, true);
    assert.equal((await call('POST', `/v1/subscriptions/${subId}/resume`, undefined, 'admin')).body.paused, false);
    const rot = await call('POST', `/v1/subscriptions/${subId}/rotate-secret`, undefined, [
      'email-service',
      'email-service-secret',
    ]);
    assert.match(rot.body.signing_secret, /^whsec_/);
    assert.ok(rot.body.previous_valid_until);
    const row = (await srv.amebo.pool.query('SELECT * FROM subscriptions WHERE id = $1', [subId])).rows[0];
    const secrets = srv.amebo.registry.signingSecrets(row);
    assert.equal(secrets.length, 2, 'old and new secrets sign side by side during the grace period');
    assert.equal(secrets[0], rot.body.signing_secret);
    assert.equal((await call('GET', `/v1/subscriptions/not-a-uuid`, undefined, 'admin')).status, 404);
    assert.equal(
      (await call('GET', `/v1/subscriptions/${subId}`, undefined, ['user-service', 'user-service-secret'])).status,
      403,
    );
    const q = p.body.queue as string;
    assert.equal((await call('DELETE', `/v1/subscriptions/${subId}`, undefined, 'admin')).status, 204);
    assert.equal(await queueExists(q), false);
    assert.equal((await call('GET', `/v1/subscriptions/${subId}`, undefined, 'admin')).status, 404);
  });
});
