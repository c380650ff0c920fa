/** The examples run as a reader would run them, against a real Amebo: they must keep working. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { destroy, eventually, http, start, testEnv, type Running } from './helpers/harness.js';
import { bridgeStarter } from '../bridge/index.js';
import { deliveryPlugin } from '../src/plugins.js';
import { deleteDomainExchanges } from './fabric/helpers.js';
import { runNode } from './helpers/cli.js';

const env = testEnv();
let srv: Running;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

/** Runs `examples/<file>` the way the README says (through tsx). */
const tsx = (file: string, args: string[], extra: Record<string, string>, timeoutMs = 60_000) =>
  runNode(['--import', 'tsx', new URL(`../examples/${file}`, import.meta.url).pathname, ...args], extra, timeoutMs);

const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });

before(async () => {
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

test('examples/ecommerce.ts registers seed 002’s platform, publishes its events and cleans up, every call 2xx', async () => {
  const p = tsx('ecommerce.ts', [], { AMEBO_ADMIN_TOKEN: env.adminToken, AMEBO_URL: `${srv.url}/` });
  assert.equal(await p.done, 0, p.err());
  const lines = p.out().trim().split('\n');
  assert.equal(lines.length, 15, p.out());
  for (const l of lines) assert.match(l, /^(POST|GET|DELETE) \S+ 2\d\d\s*$/, l);
  const events = await call('GET', '/v1/events?application=user-service', undefined, 'admin');
  assert.equal(events.body.items[0].action, 'user.created', 'the events stay in the event log');
  const apps = await call('GET', '/v1/applications', undefined, 'admin');
  assert.deepEqual(
    apps.body.items.map((a: { application: string }) => a.application).filter((n: string) => n.endsWith('-service')),
    [],
    'the applications it created (with their subscriptions and queues) are gone',
  );
  const subs = (await call('GET', '/v1/subscriptions', undefined, 'admin')).body.items as { application: string }[];
  assert.deepEqual(
    subs.filter((x) => x.application.endsWith('-service')),
    [],
  );
});

test('examples/webhook-receiver.ts verifies, decrypts and prints what Amebo delivers', async () => {
  const port = await freePort();
  await call('POST', '/v1/applications', { application: 'rcv', secret: 'rcv-secret-0123456789' }, 'admin');
  const APP: [string, string] = ['rcv', 'rcv-secret-0123456789'];
  await call('POST', '/v1/actions', { action: 'rcv.hello', application: 'rcv', schemata: {} }, APP);
  const key = randomBytes(32).toString('base64');
  const sub = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'rcv',
      subscription: 'example',
      action: 'rcv.hello',
      handler: `http://127.0.0.1:${port}/webhooks/amebo`,
      encryption_key: key,
    },
    'admin',
  );
  assert.equal(sub.status, 201, JSON.stringify(sub.body));
  const rcv = tsx('webhook-receiver.ts', [], {
    AMEBO_SIGNING_SECRET: sub.body.signing_secret,
    AMEBO_ENCRYPTION_KEY: key,
    PORT: String(port),
  });
  try {
    await eventually(() => rcv.out().includes('listening on'), 30_000);
    const e = await call('POST', '/v1/events', { action: 'rcv.hello', payload: { greeting: 'hi' } }, APP);
    assert.equal(e.status, 202);
    await eventually(() => rcv.out().includes(e.body.event), 30_000);
    assert.match(rcv.out(), new RegExp(`rcv\\.hello ${e.body.event} \\(attempt 1\\): \\{"greeting":"hi"\\}`));
  } finally {
    rcv.child.kill('SIGTERM');
    await rcv.done;
  }
});

test('examples/fabric-service.ts: a service, a typed call, a remote error and the listing', async () => {
  const domain = `ex${randomBytes(4).toString('hex')}`;
  const p = tsx('fabric-service.ts', [env.cfg.amqpUrl], { FABRIC_DOMAIN: domain });
  assert.equal(await p.done, 0, p.err());
  assert.match(p.out(), /^quote: \{"sku":"A-1","qty":3,"total":28\.5\}$/m);
  assert.match(p.out(), /^remote error: ValueError: unknown sku Z-9$/m);
  assert.match(p.out(), new RegExp(`^services: ${domain}\\.pricing\\.p1 up v1\\.0\\.0$`, 'm'));
  await deleteDomainExchanges([domain]);
});
