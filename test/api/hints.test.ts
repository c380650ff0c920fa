/** Errors that say how to fix them: a wrong content type, missing credentials (what the route takes). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { destroy, http, start, testEnv, type Running } from '../helpers/harness.js';

const env = testEnv();
let srv: Running;
before(async () => {
  srv = await start(env);
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

async function post(path: string, body: string, headers: Record<string, string>) {
  const r = await request(srv.url + path, { method: 'POST', body, headers, headersTimeout: 10_000 });
  return { status: r.statusCode, body: (await r.body.json()) as { error: { code: string; message: string } } };
}

test('415 names the content type received and the header to send', async () => {
  const auth = { authorization: `Bearer ${env.adminToken}` };
  const form = await post('/v1/applications', 'application=a&secret=b', {
    ...auth,
    'content-type': 'application/x-www-form-urlencoded',
  });
  assert.equal(form.status, 415);
  assert.equal(form.body.error.code, 'AMEBO_ERR_UNSUPPORTED_MEDIA_TYPE');
  assert.match(form.body.error.message, /sent as "application\/x-www-form-urlencoded"/);
  assert.match(form.body.error.message, /Content-Type: application\/json/);
  const none = await post('/v1/applications', '{"application":"a"}', auth);
  assert.equal(none.status, 415);
  assert.match(none.body.error.message, /without a Content-Type.*content-type: application\/json/);
});

test('401 says which credentials the route takes and how to send them', async () => {
  const adminOnly = await http(srv.url, env, 'POST', '/v1/applications', { application: 'a', secret: 'x'.repeat(20) });
  assert.equal(adminOnly.status, 401);
  assert.match(adminOnly.body.error.message, /this route takes the admin token: send Authorization: Bearer/);
  const either = await http(srv.url, env, 'GET', '/v1/events');
  assert.equal(either.status, 401);
  assert.match(either.body.error.message, /Bearer <token>.*HTTP Basic <application>:<secret> \(curl: -u/);
  const scheme = await http(srv.url, env, 'GET', '/v1/events', undefined, 'Token abc');
  assert.match(scheme.body.error.message, /unsupported Authorization scheme: send the admin token/);
});
