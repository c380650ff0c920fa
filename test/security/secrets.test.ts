import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { pino } from 'pino';
import { request } from 'undici';
import { Webhook } from 'standardwebhooks';
import { destroy, eventually, hex, http, start, testEnv, type TestEnv } from '../helpers/harness.js';
import { runCli } from '../helpers/cli.js';
import { loadConfig } from '../../src/config.js';
import { startAmebo, type Amebo } from '../../src/app.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { bridgeStarter } from '../../bridge/index.js';
import { redactUrl } from '../../src/log.js';
import { SecretBox } from '../../src/secrets.js';
import { Receiver } from '../bridge/receiver.js';

// Secrets (issue "safe to expose" §6): the sealing key's warning, file and rotation; credentials
// redacted; no-store; the documentation page's CSP; /metrics behind a token.

const rx = new Receiver();
const envs: TestEnv[] = [];
after(async () => {
  await rx.close();
  for (const e of envs) await destroy(e);
});

const cliEnv = (e: TestEnv, extra: Record<string, string>): Record<string, string> => ({
  AMEBO_AMQP_URL: e.cfg.amqpUrl,
  AMEBO_DATABASE_URL: e.cfg.databaseUrl,
  AMEBO_REDIS_URL: e.cfg.redisUrl,
  AMEBO_PREFIX: e.cfg.prefix,
  AMEBO_LOG_LEVEL: 'warn',
  AMEBO_SECRET_KEY: '',
  ...extra,
});

/** A logger whose lines are kept, to check what the process says. */
/** Listens on a free loopback port and registers application `shop` with action `a.b`; the base URL. */
async function listenWithShop(amebo: Amebo, e: TestEnv): Promise<string> {
  await amebo.api!.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(amebo.api!.server.address() as { port: number }).port}`;
  await http(url, e, 'POST', '/v1/applications', { application: 'shop', secret: 'shop-secret-0123456789' }, 'admin');
  await http(url, e, 'POST', '/v1/actions', { action: 'a.b', application: 'shop', schemata: {} }, 'admin');
  return url;
}

function capture(): { log: pino.Logger; lines: () => { level: number; msg: string }[] } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c.toString());
      cb();
    },
  });
  return {
    log: pino({ level: 'info' }, sink),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string }),
  };
}

test('sealed secrets: a warning without AMEBO_SECRET_KEY; `amebo rotate-key` re-seals under a key from a file', async () => {
  await rx.listen();
  const e = testEnv({ secretKey: '' });
  envs.push(e);
  // 1. Started without a key: one is generated into PostgreSQL, and the log says so at warn level.
  const c = capture();
  const first = await startAmebo(loadConfig(e.overrides, {}), c.log, { listen: false, plugins: [deliveryPlugin] });
  const url1 = await listenWithShop(first, e);
  const warn = c.lines().find((l) => l.level === 40 && /AMEBO_SECRET_KEY is not set/.test(l.msg));
  assert.ok(warn, 'a warn-level line names the risk');
  assert.match(warn.msg, /beside them/);
  const sub = await http(
    url1,
    e,
    'POST',
    '/v1/subscriptions',
    {
      application: 'shop',
      subscription: 's',
      action: 'a.b',
      handler: rx.url('/s'),
      encryption_key: Buffer.alloc(32, 7).toString('base64'),
    },
    'admin',
  );
  assert.equal(sub.status, 201);
  await first.close();
  const db = new pg.Client({ connectionString: e.cfg.databaseUrl });
  await db.connect();
  try {
    const stored = (await db.query(`SELECT value FROM settings WHERE key = 'secret_key'`)).rows[0]?.value as string;
    assert.ok(stored, 'the generated key sits in PostgreSQL');

    // 2. rotate-key without a new key refuses (exit 2), changing nothing.
    const none = runCli(['rotate-key'], cliEnv(e, {}));
    assert.equal(await none.done, 2, none.err());
    assert.match(none.err(), /AMEBO_SECRET_KEY/);

    // 3. With the new key in a file: everything is re-sealed, the stored key is gone.
    const keyFile = path.join(tmpdir(), `amebo-key-${hex()}`);
    const newKey = `new-key-${hex(16)}`;
    await writeFile(keyFile, newKey + '\n', { mode: 0o600 });
    const run = runCli(['rotate-key'], cliEnv(e, { AMEBO_SECRET_KEY_FILE: keyFile }));
    assert.equal(await run.done, 0, run.err());
    assert.match(run.out(), /re-sealed 1 of 1 subscriptions/);
    assert.match(run.out(), /deleted/);
    assert.equal((await db.query(`SELECT value FROM settings WHERE key = 'secret_key'`)).rowCount, 0);
    const row = (await db.query('SELECT signing_secrets, encryption_key FROM subscriptions')).rows[0];
    const box = new SecretBox(newKey);
    for (const s of row.signing_secrets as { sealed: string }[]) assert.ok(box.isCurrent(s.sealed));
    assert.equal(box.open(row.encryption_key as string), Buffer.alloc(32, 7).toString('base64'));
    assert.throws(() => new SecretBox(stored).open(row.encryption_key as string), /does not have/);
    // Running it again has nothing left to do.
    const again = runCli(['rotate-key'], cliEnv(e, { AMEBO_SECRET_KEY_FILE: keyFile }));
    assert.equal(await again.done, 0, again.err());
    assert.match(again.out(), /re-sealed 0 of 1/);

    // 4. Amebo started with the key file signs with the same signing secret as before the rotation.
    const second = await start(e, { plugins: [deliveryPlugin] }, { secretKey: '', secretKeyFile: keyFile });
    try {
      const t = await http(second.url, e, 'POST', `/v1/subscriptions/${sub.body.id}/test`, undefined, 'admin');
      assert.equal(t.body.delivered, true, JSON.stringify(t.body));
      const got = rx.at('/s').at(-1)!;
      new Webhook(sub.body.signing_secret).verify(got.body, got.headers as Record<string, string>);
    } finally {
      await second.close();
    }
  } finally {
    await db.end();
  }
});

test('credentials in webhook URLs are redacted in API output and logs', async () => {
  assert.equal(redactUrl('https://user:pa55@hooks.example/x'), 'https://user:***@hooks.example/x');
  assert.equal(redactUrl('https://tok3n@hooks.example/x'), 'https://***@hooks.example/x');
  assert.equal(redactUrl('amqp://guest:guest@127.0.0.1:5672'), 'amqp://guest:***@127.0.0.1:5672');
  const e = testEnv();
  envs.push(e);
  const s = await start(e);
  try {
    await http(
      s.url,
      e,
      'POST',
      '/v1/applications',
      { application: 'shop', secret: 'shop-secret-0123456789' },
      'admin',
    );
    await http(s.url, e, 'POST', '/v1/actions', { action: 'a.b', application: 'shop', schemata: {} }, 'admin');
    const r = await http(
      s.url,
      e,
      'POST',
      '/v1/subscriptions',
      { application: 'shop', subscription: 's', action: 'a.b', handler: `http://hook:s3cr3t@127.0.0.1:${rx.port}/s` },
      'admin',
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.handler, `http://hook:***@127.0.0.1:${rx.port}/s`);
    const list = await http(s.url, e, 'GET', '/v1/subscriptions', undefined, 'admin');
    assert.ok(!JSON.stringify(list.body).includes('s3cr3t'));
    // An application's address (relative handlers resolve against it) is redacted the same way.
    const addr = `http://app:s3cr3t@127.0.0.1:${rx.port}/base/`;
    const patched = await http(s.url, e, 'PATCH', '/v1/applications/shop', { address: addr }, 'admin');
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal(patched.body.address, `http://app:***@127.0.0.1:${rx.port}/base/`);
    const created = await http(s.url, e, 'POST', '/v1/applications', { application: 'crm', address: addr }, 'admin');
    assert.equal(created.status, 201);
    assert.equal(created.body.address, `http://app:***@127.0.0.1:${rx.port}/base/`);
    for (const p of ['/v1/applications', '/v1/applications/shop', '/v1/applications/crm']) {
      const r = await http(s.url, e, 'GET', p, undefined, 'admin');
      assert.equal(r.status, 200);
      assert.ok(!JSON.stringify(r.body).includes('s3cr3t'), p);
    }
    // ...while a relative handler still resolves against the whole address, credentials included.
    const rel = await http(
      s.url,
      e,
      'POST',
      '/v1/subscriptions',
      { application: 'shop', subscription: 'rel', action: 'a.b', handler: 'hook' },
      'admin',
    );
    assert.equal(rel.status, 201, JSON.stringify(rel.body));
    assert.equal(rel.body.handler, `http://app:***@127.0.0.1:${rx.port}/base/hook`);
  } finally {
    await s.close();
  }
});

test('a failing webhook whose URL carries credentials: what the process logs names it redacted', async () => {
  if (!rx.port) await rx.listen();
  rx.on('/failing', () => ({ status: 500 }));
  const e = testEnv({ breakerThreshold: 2 });
  envs.push(e);
  const c = capture();
  const amebo = await startAmebo(loadConfig(e.overrides, {}), c.log, {
    listen: false,
    parts: [bridgeStarter()],
    plugins: [deliveryPlugin],
  });
  try {
    const url = await listenWithShop(amebo, e);
    const sub = await http(
      url,
      e,
      'POST',
      '/v1/subscriptions',
      {
        application: 'shop',
        subscription: 'failing',
        action: 'a.b',
        handler: `http://hook:s3cr3t@127.0.0.1:${rx.port}/failing`,
        max_attempts: 1,
      },
      'admin',
    );
    assert.equal(sub.status, 201, JSON.stringify(sub.body));
    for (let i = 0; i < 3; i++) await http(url, e, 'POST', '/v1/events', { action: 'a.b', payload: { i } }, 'admin');
    // The endpoint keeps failing: the breaker opens and says which endpoint, at warn level.
    const opened = await eventually(() => c.lines().find((l) => /circuit opened/.test(l.msg)), 20_000);
    assert.match(JSON.stringify(opened), /hook:\*\*\*@127\.0\.0\.1/);
    const t = await http(url, e, 'POST', `/v1/subscriptions/${sub.body.id}/test`, undefined, 'admin');
    assert.equal(t.status, 200);
    assert.ok(!JSON.stringify(t.body).includes('s3cr3t'));
  } finally {
    await amebo.close();
  }
  const all = JSON.stringify(c.lines());
  assert.ok(c.lines().length > 0);
  assert.ok(!all.includes('s3cr3t'), 'no log line carries the password');
});

test('no-store on API answers, nosniff everywhere, a CSP on /docs, /metrics behind AMEBO_METRICS_TOKEN', async () => {
  const e = testEnv({ metricsToken: 'metrics-token-0123456789' });
  envs.push(e);
  const s = await start(e);
  try {
    const created = await http(s.url, e, 'POST', '/v1/applications', { application: 'shop' }, 'admin');
    assert.equal(created.status, 201);
    assert.ok(created.body.secret, 'the answer carries a secret');
    assert.equal(created.headers['cache-control'], 'no-store');
    assert.equal(created.headers['x-content-type-options'], 'nosniff');
    const err = await http(s.url, e, 'GET', '/v1/applications');
    assert.equal(err.headers['cache-control'], 'no-store');

    const docs = await request(`${s.url}/docs`);
    const body = await docs.body.text();
    assert.equal(docs.statusCode, 200, body.slice(0, 200));
    const csp = String(docs.headers['content-security-policy']);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /upgrade-insecure-requests|https:/, 'served over plain http on loopback, offline');
    assert.equal(docs.headers['x-content-type-options'], 'nosniff');

    assert.equal((await http(s.url, e, 'GET', '/metrics')).status, 401);
    assert.equal((await http(s.url, e, 'GET', '/metrics', undefined, 'Bearer wrong')).status, 401);
    const m = await http(s.url, e, 'GET', '/metrics', undefined, 'Bearer metrics-token-0123456789');
    assert.equal(m.status, 200);
    assert.match(String(m.body), /amebo_/);
  } finally {
    await s.close();
  }
});
