import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import WebSocket from 'ws';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';

// Limits (issue "safe to expose" §5): request timeouts, the failed-auth throttle shared through
// Redis, an unknown application costing what a wrong secret costs, and the live-tail cap.

const env = testEnv({
  requestTimeoutMs: 600,
  keepAliveTimeoutMs: 500,
  authFailLimit: 5,
  authFailWindowSeconds: 60,
  streamMaxClients: 2,
  // X-Forwarded-For is believed from loopback here, so one test can speak from several addresses.
  trustProxy: '127.0.0.1',
});
let a: Running;
let b: Running; // a second API process on the same stores
const SHOP: [string, string] = ['shop', 'shop-secret-0123456789'];
const OTHER: [string, string] = ['other', 'other-secret-0123456789'];
const from = (ip: string) => ({ 'x-forwarded-for': ip });

before(async () => {
  a = await start(env);
  b = await start(env);
  for (const [name, secret] of [SHOP, OTHER])
    assert.equal(
      (await http(a.url, env, 'POST', '/v1/applications', { application: name, secret }, 'admin')).status,
      201,
    );
});
after(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await destroy(env);
});

/** Opens `n` connections that send headers and part of a body, then nothing; resolves when all are closed. */
async function slowloris(url: string, n: number): Promise<string[]> {
  const { port } = new URL(url);
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<string>((resolve, reject) => {
          const s = connect(Number(port), '127.0.0.1', () => {
            s.write(
              'POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"act',
            );
          });
          let got = '';
          s.on('data', (d) => (got += d.toString()));
          s.on('error', reject);
          s.on('close', () => resolve(got.split('\r\n')[0] ?? ''));
        }),
    ),
  );
}

test('a request that never finishes its body is cut after AMEBO_REQUEST_TIMEOUT_MS (200 at once)', async () => {
  const firstLines = await slowloris(a.url, 200);
  // Every one was closed by the server (the promise resolves on close), most with a 408.
  assert.equal(firstLines.length, 200);
  assert.ok(
    firstLines.every((l) => l === '' || /^HTTP\/1\.1 408/.test(l)),
    firstLines.find((l) => l && !/408/.test(l)),
  );
  // And the server still answers.
  assert.equal((await http(a.url, env, 'GET', '/health')).status, 200);
});

test('an idle keep-alive connection is closed after AMEBO_KEEP_ALIVE_TIMEOUT_MS', async () => {
  const { port } = new URL(a.url);
  const closed = await new Promise<string>((resolve) => {
    const s = connect(Number(port), '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'));
    let got = '';
    s.on('data', (d) => (got += d.toString()));
    s.on('close', () => resolve(got));
  });
  assert.match(closed, /^HTTP\/1\.1 200/);
});

test('failed authentications are throttled per address and per application, across processes, with Retry-After', async () => {
  // A client whose credentials were verified before the attack keeps working through it.
  assert.equal((await http(a.url, env, 'GET', '/v1/actions', undefined, SHOP, from('10.0.0.7'))).status, 200);
  for (let i = 0; i < 5; i++) {
    const r = await http(a.url, env, 'GET', '/v1/actions', undefined, ['shop', `wrong-${i}`], from('10.6.6.6'));
    assert.equal(r.status, 401);
  }
  const blocked = await http(a.url, env, 'GET', '/v1/actions', undefined, ['shop', 'wrong-again'], from('10.6.6.6'));
  assert.equal(blocked.status, 429);
  assert.equal(blocked.body.error.code, 'AMEBO_ERR_RATE_LIMITED');
  assert.ok(Number(blocked.headers['retry-after']) > 0 && Number(blocked.headers['retry-after']) <= 60);
  // Per application: the attack on `shop` from any address is throttled, on the other process too
  // (the counts live in Redis) — even with the right secret, which that process has not verified yet.
  const elsewhere = await http(b.url, env, 'GET', '/v1/actions', undefined, SHOP, from('10.1.1.1'));
  assert.equal(elsewhere.status, 429);
  // ...but the client verified before the attack is let through.
  assert.equal((await http(a.url, env, 'GET', '/v1/actions', undefined, SHOP, from('10.0.0.7'))).status, 200);
  // Also once the application's cached row is gone (it expires after 30 s; an update drops it at
  // once): the credentials it verified are checked against the row read again, not refused.
  assert.equal((await http(a.url, env, 'PATCH', '/v1/applications/shop', { rpc_grants: [] }, 'admin')).status, 200);
  assert.equal((await http(a.url, env, 'GET', '/v1/actions', undefined, SHOP, from('10.0.0.7'))).status, 200);
  // Not the guesser, whose wrong secrets were never verified.
  assert.equal(
    (await http(a.url, env, 'GET', '/v1/actions', undefined, ['shop', 'wrong-0'], from('10.9.9.9'))).status,
    429,
  );
  // Per address: 10.6.6.6 is throttled whatever it tries; another address and application are not.
  assert.equal((await http(b.url, env, 'GET', '/v1/actions', undefined, OTHER, from('10.6.6.6'))).status, 429);
  assert.equal((await http(b.url, env, 'GET', '/v1/actions', undefined, OTHER, from('10.2.2.2'))).status, 200);
  // Wrong admin tokens count against the address as well.
  for (let i = 0; i < 5; i++)
    assert.equal(
      (await http(a.url, env, 'GET', '/v1/applications', undefined, `Bearer nope-${i}`, from('10.3.3.3'))).status,
      401,
    );
  assert.equal(
    (await http(a.url, env, 'GET', '/v1/applications', undefined, `Bearer nope`, from('10.3.3.3'))).status,
    429,
  );
});

test('the admin token is never taken in the live tail URL (?token=): 401 with the way to do it, even when right', async () => {
  for (const token of [env.adminToken, 'guess']) {
    const r = await http(a.url, env, 'GET', `/v1/stream?token=${encodeURIComponent(token)}`, undefined, undefined);
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, 'AMEBO_ERR_UNAUTHENTICATED');
    assert.match(r.body.error.message, /not taken in the URL.*Authorization: Bearer.*POST \/v1\/stream\/tickets/);
  }
  // The header still opens it (426: a plain GET, not an upgrade).
  const ok = await http(a.url, env, 'GET', '/v1/stream', undefined, 'admin');
  assert.equal(ok.status, 426, JSON.stringify(ok.body));
});

test('without a trusted proxy, X-Forwarded-For does not pick the address that is counted', async () => {
  const e2 = testEnv({ authFailLimit: 3 });
  const s = await start(e2);
  try {
    for (let i = 0; i < 3; i++)
      await http(s.url, e2, 'GET', '/v1/actions', undefined, `Bearer x-${i}`, from(`10.9.9.${i}`));
    const r = await http(s.url, e2, 'GET', '/v1/actions', undefined, 'Bearer y', from('10.9.9.200'));
    assert.equal(r.status, 429, 'a new X-Forwarded-For each time does not escape the throttle');
  } finally {
    await s.close();
    await destroy(e2);
  }
});

test('an unknown application costs the same CPU as a wrong secret (names cannot be told apart by timing)', async () => {
  const e3 = testEnv({ authFailLimit: 1000 });
  const s = await start(e3);
  try {
    await http(
      s.url,
      e3,
      'POST',
      '/v1/applications',
      { application: 'known', secret: 'known-secret-0123456789' },
      'admin',
    );
    const cpu = async (auth: [string, string]): Promise<number> => {
      const t0 = process.cpuUsage();
      for (let i = 0; i < 6; i++) {
        const r = await http(s.url, e3, 'GET', '/v1/actions', undefined, [auth[0], `${auth[1]}-${i}`]);
        assert.equal(r.status, 401);
      }
      const d = process.cpuUsage(t0);
      return d.user + d.system;
    };
    await cpu(['warmup', 'x']);
    const unknown = await cpu(['nobody-here', 'whatever-secret']);
    const wrong = await cpu(['known', 'not-the-secret']);
    const ratio = unknown / wrong;
    assert.ok(ratio > 0.5 && ratio < 2, `CPU of an unknown application / a wrong secret = ${ratio.toFixed(2)}`);
  } finally {
    await s.close();
    await destroy(e3);
  }
});

test('the live tail takes at most AMEBO_STREAM_MAX_CLIENTS clients per process; tickets open it once', async () => {
  const ws = (q: string, headers: Record<string, string> = {}) =>
    new Promise<WebSocket>((resolve, reject) => {
      const w = new WebSocket(`${a.url.replace('http', 'ws')}/v1/stream${q}`, { headers });
      w.on('message', (m: Buffer) => JSON.parse(m.toString()).type === 'hello' && resolve(w));
      w.on('unexpected-response', (_q, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      w.on('error', reject);
    });
  const admin = { authorization: `Bearer ${env.adminToken}` };
  const ticket = async () => {
    const r = await http(a.url, env, 'POST', '/v1/stream/tickets', undefined, 'admin');
    assert.equal(r.status, 201);
    assert.equal(r.headers['cache-control'], 'no-store');
    return r.body.ticket as string;
  };
  const t1 = await ticket();
  const one = await ws(`?ticket=${t1}`);
  await assert.rejects(ws(`?ticket=${t1}`), /HTTP 401/, 'a ticket opens one stream');
  const two = await ws('', admin);
  await assert.rejects(ws('', admin), /HTTP 429/);
  one.close();
  // A freed place is taken again once the server has seen the close.
  const three = await eventually(() => ws('', admin).catch(() => null), 5000);
  assert.ok(three, 'a freed place is taken again');
  two.close();
  three.close();
  // Only the admin gets tickets.
  assert.equal((await http(a.url, env, 'POST', '/v1/stream/tickets', undefined, SHOP, from('10.5.5.5'))).status, 403);
});
