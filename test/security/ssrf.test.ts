import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { privateRange, TargetPolicy } from '../../src/targets.js';
import { seed } from '../bridge/receiver.js';

// Webhook targets (issue "safe to expose" §1). Live probes go to loopback only (127.0.0.0/8, ::1 and
// their other spellings); every other private range is checked by classification and by the
// registration check, which never connects. No packet leaves this machine.

/** Counts every request that reaches it: the assertion is that none does. */
class Listener {
  hits: string[] = [];
  private server: Server;
  private readonly host: string;
  port = 0;
  constructor(host: string, answer?: (path: string) => [number, Record<string, string>]) {
    this.host = host;
    this.server = createServer((req, res) => {
      this.hits.push(req.url ?? '');
      const [status, headers] = answer?.(req.url ?? '') ?? [200, {}];
      res.writeHead(status, headers).end('secret body from a private service');
    });
  }
  async listen(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, this.host, r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const v4 = new Listener('127.0.0.1');
const v6 = new Listener('::1');
// An allow-listed receiver (host:port) that redirects to the private listener.
let redirector: Listener;

/** Every loopback spelling tried by the attacker, pointing at the listeners. */
const loopback = (): Record<string, string> => ({
  dotted: `http://127.0.0.1:${v4.port}/dotted`,
  localhost: `http://localhost:${v4.port}/localhost`,
  hostname: `http://${hostname()}:${v4.port}/hostname`,
  hex: `http://0x7f.0.0.1:${v4.port}/hex`,
  decimal: `http://2130706433:${v4.port}/decimal`,
  octal: `http://0177.0.0.1:${v4.port}/octal`,
  short: `http://127.1:${v4.port}/short`,
  other: `http://127.0.0.2:${v4.port}/other`,
  v6: `http://[::1]:${v6.port}/v6`,
  v6long: `http://[0:0:0:0:0:0:0:1]:${v6.port}/v6long`,
  mapped: `http://[::ffff:127.0.0.1]:${v4.port}/mapped`,
  mappedhex: `http://[::ffff:7f00:1]:${v4.port}/mappedhex`,
  unspecified: `http://0.0.0.0:${v4.port}/unspecified`,
});

/** Private targets that are never connected to: classification and registration only. */
const OFF_MACHINE = [
  'http://10.0.0.1/',
  'http://172.16.0.1/',
  'http://192.168.1.1/',
  'http://169.254.169.254/latest/meta-data/',
  'http://100.64.0.1/',
  'http://100.100.100.200/', // Alibaba metadata, CGNAT space
  'http://198.18.0.1/',
  'http://224.0.0.1/',
  'http://240.0.0.1/',
  'http://255.255.255.255/',
  'http://[fd00:ec2::254]/', // AWS metadata over IPv6
  'http://[fe80::1]/',
  'http://[fec0::1]/',
  'http://[fc00::1]/',
  'http://[ff02::1]/',
  'http://[::]/',
  'http://[64:ff9b::7f00:1]/', // NAT64 of 127.0.0.1
  'http://[64:ff9b::a00:1]/', // NAT64 of 10.0.0.1
  'http://[64:ff9b:1::1]/', // local-use NAT64
  'http://[2002:7f00:1::]/', // 6to4 of 127.0.0.1
  'http://[2002:a9fe:a9fe::]/', // 6to4 of 169.254.169.254
  'http://[::127.0.0.1]/', // IPv4-compatible
  'http://[::ffff:0:7f00:1]/', // RFC 6145
  'http://[::ffff:a9fe:a9fe]/', // mapped metadata
  'http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/', // Teredo whose client is 127.0.0.1
  'http://metadata.localhost/',
];

test('classification: every private range and every IPv6 form embedding one is private; public is not', () => {
  for (const u of [...Object.values(loopback()), ...OFF_MACHINE]) {
    const host = new URL(u.replace(/:\d+\//, '/')).hostname;
    if (!/^[\d.]+$|^\[/.test(host)) continue; // names are resolved, not classified
    assert.notEqual(privateRange(host), null, `${u} (${host}) is private`);
  }
  for (const a of ['8.8.8.8', '93.184.216.34', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '172.32.0.1'])
    assert.equal(privateRange(a), null, `${a} is public`);
  assert.match(String(privateRange('::ffff:127.0.0.1')), /ipv4Mapped\(loopback\)/);
  assert.match(String(privateRange('2002:a9fe:a9fe::')), /6to4\(linkLocal\)/);
  // The allow list: a host name, a host:port, an address and a CIDR.
  const p = new TargetPolicy({ block: true, allowed: 'receiver, 127.0.0.1:9000, 10.1.0.0/16, [::1]:8080' });
  assert.ok(p.allows('receiver', 1, '172.18.0.2'));
  assert.ok(p.allows('x', 9000, '127.0.0.1'));
  assert.ok(!p.allows('x', 9001, '127.0.0.1'));
  assert.ok(p.allows('x', 80, '10.1.2.3') && p.allows('x', 80, '::ffff:10.1.2.3'));
  assert.ok(!p.allows('x', 80, '10.2.0.1'));
  assert.ok(p.allows('[::1]', 8080, '::1') && !p.allows('[::1]', 8081, '::1'));
  assert.throws(() => new TargetPolicy({ block: true, allowed: '10.0.0.0/99' }), /not a CIDR/);
});

const env = testEnv({ allowedTargets: '' }); // production defaults: block everything private
let srv: Running;
let SHOP: [string, string];
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
const ids: Record<string, string> = {};

before(async () => {
  await v4.listen();
  await v6.listen();
  redirector = await new Listener('127.0.0.1', () => [
    302,
    { location: `http://127.0.0.1:${v4.port}/via-redirect` },
  ]).listen();
  // Phase 1: subscriptions registered while loopback was allowed (a policy tightened later, or a
  // name that resolved elsewhere when it was registered: DNS rebinding).
  const loose = await start(
    env,
    { plugins: [deliveryPlugin] },
    {
      allowedTargets: `127.0.0.0/8,0.0.0.0/8,::1,localhost,${hostname()}`,
    },
  );
  try {
    srv = loose;
    SHOP = await seed(call, 'shop', ['probe', 'redirect', 'quiet']);
    for (const [name, url] of Object.entries(loopback())) {
      const r = await call(
        'POST',
        '/v1/subscriptions',
        { application: 'shop', subscription: name, action: 'probe', handler: url, max_attempts: 1 },
        'admin',
      );
      assert.equal(r.status, 201, `${name}: ${JSON.stringify(r.body)}`);
      ids[name] = r.body.id;
    }
  } finally {
    await loose.close();
  }
  // Phase 2: the real policy; only the redirecting receiver is allowed, by host:port.
  srv = await start(
    env,
    { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] },
    {
      allowedTargets: `127.0.0.1:${redirector.port}`,
    },
  );
});
after(async () => {
  await srv?.close();
  await Promise.all([v4.close(), v6.close(), redirector?.close()]);
  await destroy(env);
});

test('registration: every loopback spelling and every private range is refused with 422 naming the address', async () => {
  const urls = [...Object.values(loopback()), ...OFF_MACHINE];
  for (const [i, handler] of urls.entries()) {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      { application: 'shop', subscription: `reg-${i}`, action: 'quiet', handler },
      'admin',
    );
    assert.equal(r.status, 422, `${handler}: ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, 'AMEBO_ERR_TARGET_FORBIDDEN', handler);
    assert.ok(r.body.error.details[0].address, `${handler}: the address is named`);
    assert.match(r.body.error.message, /AMEBO_ALLOWED_TARGETS/);
  }
  // A host name resolving to loopback names what it resolved to.
  const named = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'named', action: 'quiet', handler: `http://${hostname()}:1/` },
    'admin',
  );
  assert.equal(named.status, 422);
  assert.match(named.body.error.message, new RegExp(`${hostname()} resolves to (127\\.|::1)`));
  // PATCH is checked too.
  const ok = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'shop',
      subscription: 'patched',
      action: 'quiet',
      handler: `http://127.0.0.1:${redirector.port}/quiet`,
    },
    'admin',
  );
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  const p = await call(
    'PATCH',
    `/v1/subscriptions/${ok.body.id}`,
    { handler: 'http://[::ffff:169.254.169.254]/' },
    'admin',
  );
  assert.equal(p.status, 422);
  assert.equal(p.body.error.code, 'AMEBO_ERR_TARGET_FORBIDDEN');
  // The allow rule is host:port: the same host on another port is refused.
  const other = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'shop',
      subscription: 'otherport',
      action: 'quiet',
      handler: `http://127.0.0.1:${redirector.port + 1}/`,
    },
    'admin',
  );
  assert.equal(other.status, 422);
  // A public address is accepted (nothing is sent to it: no event of `quiet` is ever published).
  const pub = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'public', action: 'quiet', handler: 'http://93.184.216.34/hook' },
    'admin',
  );
  assert.equal(pub.status, 201, JSON.stringify(pub.body));
  await call('DELETE', `/v1/subscriptions/${pub.body.id}`, undefined, 'admin');
});

test('connect time: registered loopback targets in every spelling are never reached (deliveries and /test)', async () => {
  const ev = await call('POST', '/v1/events', { action: 'probe', payload: { n: 1 } }, SHOP);
  assert.equal(ev.status, 202);
  // Each subscription's only attempt is blocked, and dead at once (retrying cannot help).
  await eventually(async () => {
    const d = await call('GET', `/v1/deliveries?event=${ev.body.event}`, undefined, 'admin');
    return (
      d.body.items.length === Object.keys(ids).length &&
      d.body.items.every((x: { state: string }) => x.state === 'dead')
    );
  }, 20_000);
  for (const [name, id] of Object.entries(ids)) {
    const a = await call('GET', `/v1/deliveries/${ev.body.event}/${id}/attempts`, undefined, 'admin');
    assert.equal(a.status, 200);
    const last = a.body.items[a.body.items.length - 1];
    assert.ok(['blocked', 'connection_refused'].includes(last.error_class), `${name}: ${JSON.stringify(last)}`);
    assert.equal(last.response_excerpt, null, `${name}: no private response body comes back`);
    const t = await call('POST', `/v1/subscriptions/${id}/test`, undefined, 'admin');
    assert.equal(t.status, 200);
    assert.equal(t.body.delivered, false, name);
    assert.equal(t.body.response_excerpt, null);
  }
  assert.deepEqual(v4.hits, [], 'nothing reached the IPv4 loopback listener');
  assert.deepEqual(v6.hits, [], 'nothing reached the IPv6 loopback listener');
});

test('a redirect from an allowed receiver to a private address is not followed', async () => {
  const r = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'shop',
      subscription: 'redirected',
      action: 'redirect',
      handler: `http://127.0.0.1:${redirector.port}/hook`,
      max_attempts: 1,
    },
    'admin',
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const ev = await call('POST', '/v1/events', { action: 'redirect', payload: {} }, SHOP);
  await eventually(async () => {
    const a = await call('GET', `/v1/deliveries/${ev.body.event}/${r.body.id}/attempts`, undefined, 'admin');
    return a.body.items?.length > 0 && a.body.items[0];
  }, 15_000);
  const a = await call('GET', `/v1/deliveries/${ev.body.event}/${r.body.id}/attempts`, undefined, 'admin');
  assert.equal(a.body.items[0].status, 302);
  assert.equal(a.body.items[0].error_class, 'redirect');
  assert.ok(redirector.hits.includes('/hook'));
  assert.deepEqual(v4.hits, [], 'the redirect target was never asked');
});
