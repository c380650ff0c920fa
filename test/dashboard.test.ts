/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core) against a real
 * Amebo, one test per promise of issue 13: sign in (shared with the session's other tabs); the home
 * view and a subscription's page with uPlot charts; the event explorer (wildcard, application,
 * delivery-state and time filters) and an event's page (every subscription's state, paused and
 * circuit-open included, every attempt with its response excerpt, a timeline); Manage (applications,
 * actions with the schema editor, its compatibility check and a diff, deleting an action,
 * subscriptions, test send, secret rotation, replay, bulk resurrect since a time); Fabric (services
 * filtered, a call through the gateway); the live tail; ids copyable, empty states, 375 px, hostile
 * payloads kept as text. Any console error (a CSP violation, a failed
 * module import, a runtime exception) fails the test that caused it. AMEBO_SCREENSHOTS=1 also saves
 * docs/screenshots/{home,subscription,event,manage}.png.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { destroy, eventually, http, start, testEnv, type Running } from './helpers/harness.js';
import { extraParts, extraPlugins } from '../src/plugins.js';
import { loadConfig } from '../src/config.js';
import { FabricConnector, ServiceError } from '../src/fabric/index.js';
import { flakyAndSteady, Receiver, seed } from './bridge/receiver.js';
import { bridgeOf } from '../bridge/index.js';
import { AMQP_URL, uniqueDomain } from './fabric/helpers.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', process.env.AMEBO_CHROMIUM ?? ''].find(
  (p) => p && existsSync(p),
);
// Without Chromium the browser tests fail with the command that installs it (issue 13: they are not
// silently skipped); AMEBO_SKIP_BROWSER_TESTS=1 skips them on purpose.
const INSTALL = 'bash scripts/services.sh --extras';
const optOut = process.env.AMEBO_SKIP_BROWSER_TESTS === '1';
const run = Boolean(CHROMIUM) && !optOut;
const skip = run ? false : optOut ? 'AMEBO_SKIP_BROWSER_TESTS=1' : `no Chromium: ${INSTALL}`;
if (!CHROMIUM && !optOut)
  test('Chromium is installed for the dashboard browser tests', () => {
    assert.fail(
      `no Chromium at /usr/bin/chromium or $AMEBO_CHROMIUM: install it with \`${INSTALL}\` (AMEBO_SKIP_BROWSER_TESTS=1 skips these tests on purpose)`,
    );
  });

// Three failures open an endpoint's circuit (flaky fails only twice), and it stays open for the run.
const env = testEnv({ breakerThreshold: 3, breakerCooldownMs: 300_000, breakerMaxCooldownMs: 300_000 });
const rx = new Receiver();
const domain = uniqueDomain();
let srv: Running;
let browser: Browser;
let page: Page;
let svc: FabricConnector;
let APP: [string, string];
const subs: Record<string, string> = {};
const events: string[] = [];
/** order.shipped events: `down` (503) opened its circuit on the first three; `held` is paused. */
const shipped: string[] = [];
/** An order.refunded event: its subscription `gone` answered 410 and was disabled. */
let refunded = '';
const consoleErrors: string[] = [];
let failing = true;
/** AMEBO_SCREENSHOTS=1 saves the views the README shows (docs/screenshots/); normal runs do not. */
const shot = async (name: string) => {
  if (process.env.AMEBO_SCREENSHOTS !== '1') return;
  mkdirSync('docs/screenshots', { recursive: true });
  await page.screenshot({ path: `docs/screenshots/${name}.png`, fullPage: true });
};
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

before(async () => {
  if (!run) return;
  await rx.listen();
  rx.on('/flaky', () => ({ status: failing ? 500 : 200 }));
  rx.on('/down', () => ({ status: 503, body: 'down for maintenance' }));
  rx.on('/gone', () => ({ status: 410 }));
  const cfg = loadConfig(env.overrides, {});
  srv = await start(env, { plugins: await extraPlugins(cfg), parts: await extraParts(cfg) });
  APP = await seed(call, 'shop', ['order.placed', 'order.shipped']);
  const schema = await call(
    'POST',
    '/v1/actions',
    {
      action: 'order.refunded',
      application: 'shop',
      schemata: { type: 'object', properties: { sku: { type: 'string' } } },
    },
    APP,
  );
  assert.equal(schema.status, 201, JSON.stringify(schema.body));
  const v2 = await call(
    'PUT',
    '/v1/actions/order.refunded/schema',
    { schemata: { type: 'object', properties: { sku: { type: 'string' }, amount: { type: 'number' } } } },
    APP,
  );
  assert.equal(v2.status, 200, JSON.stringify(v2.body));
  Object.assign(subs, await flakyAndSteady(call, rx, 'shop', 'order.placed'));
  for (let i = 0; i < 2; i++) {
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { sku: `sku-${i}` } }, APP);
    events.push(r.body.event);
  }
  for (const [name, handler] of [
    ['down', '/down'],
    ['held', '/held'],
  ] as const) {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      {
        application: 'shop',
        subscription: name,
        action: 'order.shipped',
        handler: rx.url(handler),
        retry_schedule: [60],
      },
      'admin',
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    subs[name] = r.body.id;
  }
  assert.equal((await call('POST', `/v1/subscriptions/${subs.held}/pause`, {}, 'admin')).status, 200);
  await eventually(() => !bridgeOf(srv.amebo)!.subscriptions().includes(subs.held!), 30_000);
  const ship = async () => {
    const r = await call('POST', '/v1/events', { action: 'order.shipped', payload: { n: shipped.length } }, APP);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    shipped.push(r.body.event);
  };
  for (let i = 0; i < 3; i++) await ship();
  await eventually(async () => {
    const h = await call('GET', `/v1/subscriptions/${subs.down}/health?window=5m`, undefined, 'admin');
    return h.body.state === 'circuit_open';
  }, 30_000);
  await ship(); // never attempted by `down`: its circuit is open
  const gone = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'gone', action: 'order.refunded', handler: rx.url('/gone') },
    'admin',
  );
  assert.equal(gone.status, 201, JSON.stringify(gone.body));
  subs.gone = gone.body.id;
  refunded = (await call('POST', '/v1/events', { action: 'order.refunded', payload: { sku: 'r-1' } }, APP)).body.event;
  await eventually(
    async () => (await call('GET', `/v1/subscriptions/${subs.gone}`, undefined, 'admin')).body.disabled_reason,
    30_000,
  );
  svc = new FabricConnector({
    amqpUrl: AMQP_URL,
    domain,
    type: 'pricing',
    id: 'p1',
    version: '1.4.2',
    keepAliveMs: 300,
  });
  await svc.open({ timeoutMs: 10_000 });
  await svc.rpcRegister({
    multiply: ({ x, y }: { x: number; y: number }) => x * y,
    fail: () => {
      throw new ServiceError('ValueError', 'no <b>price</b> for that', { code: 7 });
    },
    slow: () => new Promise((r) => setTimeout(r, 3000)),
  });
  browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true, args: ['--no-sandbox'] });
  page = await (await browser.newContext()).newPage();
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  page.setDefaultTimeout(15_000);
});
// Any console error (CSP violation, failed import, exception) fails the test that caused it.
afterEach(() => {
  if (!run) return;
  const errors = consoleErrors.splice(0);
  assert.deepEqual(errors, []);
});
after(async () => {
  await browser?.close();
  await svc?.close();
  await srv?.close();
  await rx.close();
  if (run) await destroy(env);
});

test('sign in: a wrong token is refused with the code, the right one opens the events view', { skip }, async () => {
  await page.goto(srv.url + '/');
  const csp = (await page.request.get(srv.url + '/')).headers()['content-security-policy'];
  assert.match(csp ?? '', /script-src 'self' 'sha256-/);
  await page.fill('input[name=token]', 'wrong-token');
  await page.click('button[type=submit]');
  await page.getByRole('alert').filter({ hasText: 'AMEBO_ERR_UNAUTHENTICATED' }).waitFor();
  consoleErrors.length = 0; // the refused sign-in logged its 401
  await page.fill('input[name=token]', env.adminToken);
  await page.click('button[type=submit]');
  await page.getByTestId('home').waitFor();
  await page.click('[data-testid=nav-events]');
  await page.getByTestId('events').waitFor();
  for (const id of events) await page.getByTestId('events').getByRole('link', { name: id }).waitFor();
});

test('event detail: each subscription’s state, attempts, and retry of a dead delivery', { skip }, async () => {
  await eventually(async () => {
    const d = await call('GET', `/v1/events/${events[0]}`, undefined, 'admin');
    return d.body.deliveries?.length === 2 && d.body.deliveries.every((x: { state: string }) => x.state !== 'pending');
  }, 30_000);
  await page.getByTestId('events').getByRole('link', { name: events[0] }).click();
  await page.getByTestId('event-detail').waitFor();
  assert.match(await page.getByTestId('payload').innerText(), /"sku": "sku-0"/);
  assert.equal(await page.getByTestId('delivery-flaky').getByTestId('badge').innerText(), 'dead');
  assert.equal(await page.getByTestId('delivery-steady').getByTestId('badge').innerText(), 'delivered');
  // Every attempt of every delivery, with the handler's response excerpt.
  await page.getByTestId('attempts-flaky').getByRole('cell', { name: '500', exact: true }).waitFor();
  assert.equal(await page.getByTestId('attempts-flaky').getByTestId('excerpt').innerText(), 'ok');
  failing = false;
  await page.getByTestId('retry-flaky').click();
  await page.getByText('retry queued').waitFor();
  await eventually(() => rx.at('/flaky').some((r) => r.headers['webhook-id'] === events[0] && r.json), 30_000);
  await page.reload();
  await eventually(
    async () => (await page.getByTestId('delivery-flaky').getByTestId('badge').innerText()) === 'delivered',
    15_000,
    300,
  ).catch(async () => {
    await page.reload();
    assert.equal(await page.getByTestId('delivery-flaky').getByTestId('badge').innerText(), 'delivered');
  });
});

test('event page: a paused subscription and an open circuit, neither ever attempted', { skip }, async () => {
  await page.goto(`${srv.url}/#/events/${shipped[3]}`);
  await page.getByTestId('event-detail').waitFor();
  const held = page.getByTestId('delivery-held');
  const down = page.getByTestId('delivery-down');
  assert.equal(await held.getByTestId('badge').innerText(), 'paused');
  assert.equal(await held.getByTestId('delivery-attempts').innerText(), '0');
  assert.match(await held.getByTestId('delivery-reason').innerText(), /paused · 4 in its queue/);
  assert.equal(await down.getByTestId('badge').innerText(), 'circuit_open');
  assert.equal(await down.getByTestId('delivery-attempts').innerText(), '0');
  assert.match(await down.getByTestId('delivery-reason').innerText(), /circuit is open.*next probe/);
  // The first shipped event was attempted once by `down` (503) before its circuit opened.
  await page.goto(`${srv.url}/#/events/${shipped[0]}`);
  await page.getByRole('heading', { name: shipped[0] }).waitFor();
  assert.equal(await page.getByTestId('delivery-down').getByTestId('delivery-attempts').innerText(), '1');
  assert.equal(await page.getByTestId('delivery-held').getByTestId('badge').innerText(), 'paused');
});

test('event explorer: wildcard action, application, delivery state and time range filters', { skip }, async () => {
  // The API: a pattern is matched against the registry's actions, never run as SQL.
  const api = async (q: string) => {
    const r = await call('GET', `/v1/events?${q}`, undefined, 'admin');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.items as { id: string; delivery_states?: Record<string, number> }[];
  };
  const ids = (xs: { id: string }[]) => xs.map((x) => x.id).sort();
  assert.deepEqual(ids(await api('action=order.*&limit=100')), [...events, ...shipped, refunded].sort());
  assert.deepEqual(ids(await api('action=%23.shipped')), [...shipped].sort());
  assert.deepEqual(ids(await api('action=order.*&state=retrying')), shipped.slice(0, 3).sort());
  assert.deepEqual(await api('action=nothing.%23'), []);
  const withStates = await api(`action=order.shipped&with=states`);
  assert.deepEqual(withStates.find((e) => e.id === shipped[0])!.delivery_states, { retrying: 1 });
  assert.deepEqual(withStates.find((e) => e.id === shipped[3])!.delivery_states, {});
  assert.equal((await call('GET', '/v1/events?action=order.*.(', undefined, 'admin')).status, 400);

  await page.click('[data-testid=nav-events]');
  const form = page.getByTestId('event-filters');
  const rows = page.getByTestId('events').locator('tbody tr');
  const shown = async (n: number) => eventually(async () => (await rows.count()) === n, 10_000, 100);
  await form.locator('input[name=action]').fill('order.#');
  await form.locator('select[name=state]').selectOption('retrying');
  await form.getByRole('button', { name: 'Filter' }).click();
  await shown(3);
  for (const id of shipped.slice(0, 3)) await rows.getByRole('link', { name: id }).waitFor();
  // The delivery-state column.
  const first = rows.filter({ has: page.getByRole('link', { name: shipped[0] }) });
  assert.equal(await first.getByTestId('event-states').innerText(), 'retrying');
  await form.locator('select[name=state]').selectOption('');
  await form.locator('input[name=action]').fill('order.*');
  await form.locator('input[name=application]').fill('shop');
  await form.getByRole('button', { name: 'Filter' }).click();
  await rows.getByRole('link', { name: shipped[3] }).waitFor();
  assert.equal(
    await rows
      .filter({ has: page.getByRole('link', { name: shipped[3] }) })
      .getByTestId('event-states')
      .innerText(),
    'no attempt yet',
  );
  assert.match(
    await rows
      .filter({ has: page.getByRole('link', { name: events[0] }) })
      .getByTestId('event-states')
      .innerText(),
    /delivered/,
  );
  // A time range in the future: nothing, and the empty state says what to try.
  const tomorrow = new Date(Date.now() + 86400_000 - new Date().getTimezoneOffset() * 60_000)
    .toISOString()
    .slice(0, 16);
  await form.locator('input[name=from]').fill(tomorrow);
  await form.getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId('empty').getByText('No event matches these filters').waitFor();
  await form.locator('input[name=from]').fill('');
  await form.locator('input[name=application]').fill('nobody');
  await form.getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId('empty').waitFor();
  assert.equal(await rows.count(), 0);
});

test('event page: every attempt with its response excerpt, and a timeline', { skip }, async () => {
  await page.goto(`${srv.url}/#/events/${shipped[0]}`);
  await page.getByRole('heading', { name: shipped[0] }).waitFor();
  const attempts = page.getByTestId('attempts-down');
  await attempts.getByRole('cell', { name: '503', exact: true }).waitFor();
  assert.equal(await attempts.getByTestId('excerpt').innerText(), 'down for maintenance');
  const timeline = page.getByTestId('timeline');
  const lines = await timeline.locator('li').allInnerTexts();
  assert.match(lines[0]!, /created shop/);
  assert.ok(
    lines.some((l) => /attempt 1: 503.*shop\/down/.test(l)),
    lines.join('\n'),
  );
  assert.ok(
    lines.some((l) => /next probe \(circuit open\) shop\/down/.test(l)),
    lines.join('\n'),
  );
  // Never attempted by the paused subscription: no attempt row for it.
  assert.equal(await page.getByTestId('attempts-held').count(), 0);
  await shot('event');
});

test('hostile input stays text; a 4xx is shown with its code, never a hang', { skip }, async () => {
  const evil = '<img src=x onerror="document.title=1"><script>document.title=2</script>';
  const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { note: evil } }, APP);
  await page.goto(`${srv.url}/#/events/${r.body.event}`);
  await page.getByRole('heading', { name: r.body.event }).waitFor();
  assert.match(await page.getByTestId('payload').innerText(), /<img src=x onerror=/);
  assert.equal(await page.locator('main img, main script').count(), 0);
  assert.equal(await page.title(), 'Amebo');
  await page.goto(`${srv.url}/#/events/01a00000-0000-7000-8000-000000000000`);
  await page.getByRole('alert').filter({ hasText: 'AMEBO_ERR_EVENT_NOT_FOUND' }).waitFor();
  await page.goto(`${srv.url}/#/subscriptions/shop%2Fnope`);
  await page.getByRole('alert').filter({ hasText: 'AMEBO_ERR_SUBSCRIPTION_NOT_FOUND' }).waitFor();
  // The browser logs each refused request; nothing else may be logged.
  const errors = consoleErrors.splice(0);
  assert.ok(
    errors.every((e) => /status of 404/.test(e)),
    errors.join('\n'),
  );
});

test('subscriptions: state and backlog of each subscription', { skip }, async () => {
  await page.click('[data-testid=nav-subscriptions]');
  // Each row's health arrives on its own.
  await page.getByTestId('backlog-held').getByText('4', { exact: true }).waitFor();
  await page.getByTestId('state-down').getByText('next probe').waitFor();
  await page.getByTestId('backlog-steady').getByText('0', { exact: true }).waitFor();
  assert.equal(await page.getByTestId('state-held').getByTestId('badge').innerText(), 'paused');
  assert.equal(await page.getByTestId('state-down').getByTestId('badge').innerText(), 'circuit_open');
  assert.match(await page.getByTestId('backlog-down').innerText(), /^\d+$/);
  assert.equal(await page.getByTestId('state-steady').getByTestId('badge').innerText(), 'active');
});

test('home: every subscription at a glance, state, backlog, success, p99 and a sparkline', { skip }, async () => {
  await page.click('[data-testid=nav-home]');
  const steady = page.getByTestId('home-steady');
  await steady.getByTestId('home-success').getByText('100%').waitFor();
  assert.equal(await steady.getByTestId('home-state').getByTestId('badge').innerText(), 'active');
  assert.equal(await steady.getByTestId('home-backlog').innerText(), '0');
  assert.match(await steady.getByTestId('home-p99').innerText(), /^\d+ ms$/);
  assert.equal(await steady.getByTestId('sparkline').locator('polyline').count(), 1);
  const down = page.getByTestId('home-down');
  await down.getByTestId('home-state').getByText('next probe').waitFor();
  assert.equal(await down.getByTestId('home-state').getByTestId('badge').innerText(), 'circuit_open');
  assert.equal(await down.getByTestId('home-success').innerText(), '0%');
  // Failures drawn over the attempts.
  assert.equal(await down.getByTestId('sparkline').locator('polyline.spark-bad').count(), 1);
  const gone = page.getByTestId('home-gone').getByTestId('home-state');
  await gone.getByText('410').waitFor();
  assert.equal(await gone.getByTestId('badge').innerText(), 'disabled');
  const held = page.getByTestId('home-held');
  await held.getByTestId('home-backlog').getByText('4', { exact: true }).waitFor();
  assert.equal(await held.getByTestId('home-state').getByTestId('badge').innerText(), 'paused');
  await shot('home');
  await page.getByTestId('window').getByRole('button', { name: '5m' }).click();
  await page.getByTestId('home-table').getByText('success (5m)').waitFor();
  await steady.getByTestId('home-success').getByText('100%').waitFor();
});

test('subscription page: figures and uPlot charts over 5m / 1h / 24h', { skip }, async () => {
  await page.getByTestId('home-steady').getByTestId('open').click();
  const p = page.getByTestId('subscription-page');
  await p.waitFor();
  assert.match(await p.getByTestId('subscription-id').innerText(), new RegExp(subs.steady!));
  // Its attempts in the hour (two events and those published since), all successful.
  await p.getByTestId('fig-attempts').getByText(/^\d+$/).waitFor();
  assert.ok(Number(await p.getByTestId('fig-attempts').innerText()) >= 2);
  assert.equal(await p.getByTestId('fig-success').innerText(), '100%');
  assert.equal(await p.getByTestId('fig-backlog').innerText(), '0');
  for (const c of ['attempts', 'outcomes', 'latency', 'backlog']) {
    const chart = p.getByTestId(`chart-${c}`);
    await chart.locator('.uplot canvas').waitFor();
    assert.ok((await chart.locator('.uplot canvas').boundingBox())!.width > 150);
  }
  assert.match(await p.getByTestId('chart-outcomes').innerText(), /successes[\s\S]*failures/);
  // uPlot's stylesheet is a file under the CSP: its legend is laid out by it.
  assert.equal(
    await page.evaluate("getComputedStyle(document.querySelector('[data-testid=chart-latency] .u-legend')).textAlign"),
    'center',
  );
  await shot('subscription');
  for (const w of ['24h', '5m']) {
    await p.getByTestId('window').getByRole('button', { name: w }).click();
    await eventually(
      async () =>
        (await p.getByTestId('window').getByRole('button', { name: w }).getAttribute('aria-pressed')) === 'true',
      5000,
      100,
    );
    await p.getByTestId('chart-attempts').locator('.uplot canvas').waitFor();
  }
  const stats = await call('GET', `/v1/subscriptions/${subs.steady}/stats?window=5m`, undefined, 'admin');
  assert.equal(stats.status, 200);
});

test('subscriptions: dead letters listed and resurrected with a button', { skip }, async () => {
  await page.click('[data-testid=nav-subscriptions]');
  await page.getByTestId('open-dead-flaky').click();
  const dead = page.getByTestId('dead-flaky');
  await dead.getByTestId('dead-count').waitFor();
  const count = Number(await dead.getByTestId('dead-count').innerText());
  assert.ok(count >= 1, `dead letters: ${count}`);
  page.once('dialog', (d) => void d.accept());
  await page.getByTestId('resurrect-flaky').click();
  await dead.getByText(`resurrected ${count}`).waitFor();
  await eventually(() => rx.at('/flaky').some((r) => r.headers['webhook-id'] === events[1] && r.json), 30_000);
});

test('actions: search finds the action and shows its schema', { skip }, async () => {
  await page.click('[data-testid=nav-actions]');
  await page.fill('[data-testid=action-search]', 'refund');
  await eventually(async () => (await page.getByTestId('actions').locator('tbody tr').count()) === 1, 5000, 100);
  await page.getByTestId('actions').getByText('order.refunded').click();
  assert.match(await page.getByTestId('schema').innerText(), /"amount"/);
  // Its first version, from the version picker.
  await page.getByTestId('schema-version').selectOption('1');
  assert.match(await page.getByTestId('schema').innerText(), /"sku"/);
  assert.doesNotMatch(await page.getByTestId('schema').innerText(), /"amount"/);
  await page.fill('[data-testid=action-search]', 'zzz-nothing');
  await eventually(async () => (await page.getByTestId('actions').locator('tbody tr').count()) === 0, 5000, 100);
});

test('services: a fabric service is listed up, with its version and uptime', { skip }, async () => {
  await page.click('[data-testid=nav-services]');
  const row = page.getByTestId(`service-${domain}.pricing.p1`);
  await row.waitFor({ timeout: 20_000 });
  assert.equal(await row.getByTestId('badge').innerText(), 'up');
  assert.match(await row.innerText(), /1\.4\.2/);
  assert.match(await row.innerText(), /\d+s/);
});

test('services: filtered by domain and type; long-down entries hidden unless asked for', { skip }, async () => {
  // A service last heard from 30 minutes ago, as an Amebo process would have recorded it.
  const old = Date.now() - 30 * 60_000;
  const legacy = `${domain}.legacy.l1`;
  const p = env.cfg.redis.presence;
  await srv.amebo.redis
    .multi()
    .hset(
      `${p}fabric:svc:${legacy}`,
      'l1',
      JSON.stringify({
        domain,
        type: 'legacy',
        id: 'l1',
        version: '0.9',
        host: null,
        pid: null,
        started_at: null,
        last_seen: old,
        gone: true,
      }),
    )
    .zadd(`${p}fabric:services`, old, legacy)
    .exec();
  await page.click('[data-testid=nav-services]');
  const form = page.getByTestId('service-filters');
  await form.locator('input[name=domain]').fill(domain);
  await form.getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId(`service-${domain}.pricing.p1`).waitFor();
  await form.getByText('(1 hidden)').waitFor();
  assert.equal(await page.getByTestId(`service-${legacy}`).count(), 0);
  await page.getByTestId('show-down').check();
  await page.getByTestId(`service-${legacy}`).waitFor();
  assert.equal(await page.getByTestId(`service-${legacy}`).getByTestId('badge').innerText(), 'down');
  await page.getByTestId('show-down').uncheck();
  await form.locator('input[name=type]').fill('legacy');
  await form.getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId('empty').getByText('down for a while').waitFor();
  await form.locator('input[name=type]').fill('pricing');
  await form.getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId(`service-${domain}.pricing.p1`).waitFor();
  assert.equal(await page.getByTestId('services').locator('tbody tr').count(), 1);
});

test('service page: a call through the gateway shows the result, a remote error or a timeout', { skip }, async () => {
  await page.getByTestId(`service-${domain}.pricing.p1`).getByRole('link').click();
  const sp = page.getByTestId('service-page');
  await sp.waitFor();
  const form = sp.getByTestId('call-form');
  await form.locator('input[name=method]').fill('multiply');
  await form.locator('textarea[name=args]').fill('{"x": 6, "y": 7}');
  await form.getByRole('button', { name: 'call' }).click();
  await form.getByTestId('call-result').locator('pre').getByText('42').waitFor();
  await form.locator('input[name=method]').fill('fail');
  await form.locator('textarea[name=args]').fill('{}');
  await form.getByRole('button', { name: 'call' }).click();
  const err = form.getByTestId('call-error');
  await err.getByText('AMEBO_ERR_RPC_REMOTE').waitFor();
  assert.match(await err.innerText(), /ValueError: no <b>price<\/b> for that/);
  assert.equal(await err.locator('b').count(), 0);
  await form.locator('input[name=method]').fill('slow');
  await form.locator('input[name=timeout_ms]').fill('300');
  await form.getByRole('button', { name: 'call' }).click();
  await form.getByTestId('call-error').getByText('AMEBO_ERR_RPC_TIMEOUT').waitFor();
  await form.locator('textarea[name=args]').fill('{ nope');
  await form.getByRole('button', { name: 'call' }).click();
  await form.getByTestId('call-error').getByText('INVALID_JSON').waitFor();
  // The browser logged the two refused calls (4xx/5xx); nothing else.
  const errors = consoleErrors.splice(0);
  assert.ok(
    errors.every((e) => /Failed to load resource/.test(e)),
    errors.join('\n'),
  );
});

test(
  'live tail: a published event appears as it happens; the admin token never rides in its URL',
  { skip },
  async () => {
    const sockets: string[] = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.click('[data-testid=nav-live]');
    await page.getByTestId('live-status').getByText('live').waitFor();
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { sku: 'live-1' } }, APP);
    await page.getByTestId('live').getByText(r.body.event).first().waitFor();
    assert.ok(
      sockets.length >= 1 && sockets.every((u) => /[?&]ticket=amebo_ticket_/.test(u) && !u.includes(env.adminToken)),
      sockets.join(' '),
    );
    assert.deepEqual(consoleErrors, []);
  },
);

test(
  'live tail: delivery lines name the event, subscription, outcome and error; pausable; an empty state',
  { skip },
  async () => {
    await page.click('[data-testid=nav-live]');
    await page.getByTestId('live-status').getByText('live').waitFor();
    await page.getByRole('button', { name: 'clear' }).click();
    await page.getByTestId('live-empty').getByText('Waiting for traffic').waitFor();
    failing = true;
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { sku: 'tail-1' } }, APP);
    const line = page
      .getByTestId('live-delivery')
      .filter({ has: page.getByTestId('live-subscription').getByText('shop/flaky') })
      .filter({ has: page.getByTestId('live-event').getByText(r.body.event) });
    await line.waitFor();
    failing = false;
    assert.equal(await line.getByTestId('badge').innerText(), 'dead');
    assert.match(await line.getByTestId('live-error').innerText(), /500/);
    assert.equal(await line.getByTestId('live-event').getAttribute('href'), `#/events/${r.body.event}`);
    // Paused: new lines are held, not shown, until resumed.
    await page.getByTestId('live-pause').click();
    const r2 = await call('POST', '/v1/events', { action: 'order.placed', payload: { sku: 'tail-2' } }, APP);
    await eventually(() => rx.at('/steady').some((x) => x.headers['webhook-id'] === r2.body.event), 30_000);
    await page
      .getByTestId('live-held')
      .getByText(/[1-9]\d* new line/)
      .waitFor();
    assert.equal(await page.getByTestId('live').getByText(r2.body.event).count(), 0);
    await page.getByTestId('live-pause').click();
    await page.getByTestId('live').getByText(r2.body.event).first().waitFor();
  },
);

test('manage: applications, actions with the schema editor and a diff, subscriptions', { skip }, async () => {
  rx.on('/crm', () => ({ status: 200, body: 'thanks' }));
  page.on('dialog', (d) => void d.accept());
  await page.click('[data-testid=nav-manage]');
  const apps = page.getByTestId('manage-applications');
  await apps.getByText('Register an application').click();
  await apps.getByTestId('new-application').locator('input[name=application]').fill('crm');
  await apps.getByTestId('new-application').getByRole('button', { name: 'register' }).click();
  await apps.getByTestId('form-result').getByText('registered crm').waitFor();
  const secret = await apps.getByTestId('app-secret').getByTestId('secret-value').innerText();
  assert.ok(secret.length >= 16, secret);
  const crm = apps.getByTestId('app-crm');
  await crm.locator('input[name=address]').fill('https://crm.example');
  await crm.getByTestId('save-address').getByRole('button', { name: 'save' }).click();
  await crm.getByTestId('save-address').getByTestId('form-result').waitFor();
  assert.match(
    (await call('GET', '/v1/applications/crm', undefined, 'admin')).body.address,
    /^https:\/\/crm\.example\/?$/,
  );

  // An action, then a new version: an incompatible one is refused with the checker's answer.
  const acts = page.getByTestId('manage-actions');
  await acts.getByText('Register an action').click();
  const na = acts.getByTestId('new-action');
  await na.locator('input[name=action]').fill('crm.contact.created');
  await na.locator('select[name=application]').selectOption('crm');
  await na
    .locator('textarea[name=schemata]')
    .fill('{"type":"object","properties":{"email":{"type":"string","format":"email"}},"required":["email"]}');
  await na.getByRole('button', { name: 'register' }).click();
  await na.getByTestId('form-result').getByText('registered crm.contact.created').waitFor();
  await acts.getByTestId('action-crm.contact.created').getByTestId('edit-action').click();
  const editor = acts.getByTestId('action-editor');
  const v1 = JSON.parse(await editor.getByTestId('schema-text').inputValue());
  const incompatible = {
    ...v1,
    properties: { ...v1.properties, phone: { type: 'string' } },
    required: ['email', 'phone'],
  };
  await editor.getByTestId('schema-text').fill(JSON.stringify(incompatible, null, 2));
  // The check's answer before saving: each break listed, nothing stored.
  const check = editor.getByTestId('schema-check');
  await check.getByRole('button', { name: 'check compatibility' }).click();
  await check.getByTestId('schema-check-result').getByText('not compatible (BACKWARD) with v1').waitFor();
  assert.ok((await check.getByTestId('schema-violation').count()) >= 1);
  assert.match(await check.getByTestId('schema-check-result').innerText(), /phone|required/);
  assert.equal((await call('GET', '/v1/actions/crm.contact.created', undefined, 'admin')).body.version, 1);
  const save = editor.getByTestId('schema-editor').getByRole('button', { name: 'check and save as a new version' });
  await save.click();
  await editor.getByRole('alert').filter({ hasText: 'AMEBO_ERR_SCHEMA_INCOMPATIBLE' }).waitFor();
  consoleErrors.splice(0); // the refused PUT (409) was logged by the browser
  await editor.getByTestId('schema-text').fill('{ not json');
  await editor.getByTestId('schema-parse-error').waitFor();
  const compatible = { ...v1, properties: { ...v1.properties, name: { type: 'string' } } };
  await editor.getByTestId('schema-text').fill(JSON.stringify(compatible, null, 2));
  assert.equal(await check.getByTestId('schema-check-result').count(), 0); // the edit cleared the old answer
  await check.getByRole('button', { name: 'check compatibility' }).click();
  await check.getByTestId('schema-check-result').getByText('compatible (BACKWARD) with v1: saving makes v2').waitFor();
  assert.equal((await call('GET', '/v1/actions/crm.contact.created', undefined, 'admin')).body.version, 1);
  await save.click();
  await editor
    .getByTestId('schema-editor')
    .getByTestId('form-result')
    .getByText('compatible (BACKWARD): saved as v2')
    .waitFor();
  const settings = editor.getByTestId('action-settings');
  await settings.locator('input[name=description]').fill('a contact was created');
  await settings.locator('input[name=subscribers]').fill('crm, shop');
  await settings.getByRole('button', { name: 'save' }).click();
  await settings.getByTestId('form-result').waitFor();
  const described = (await call('GET', '/v1/actions/crm.contact.created', undefined, 'admin')).body;
  assert.deepEqual([described.description, described.subscribers], ['a contact was created', ['crm', 'shop']]);
  // The diff between versions (v1 → v2): the new property added, nothing of v1 removed.
  await editor.getByTestId('diff-to').locator('option[value="2"]').waitFor({ state: 'attached' });
  const diff = editor.getByTestId('diff').first();
  await diff.locator('span.add').filter({ hasText: '"name"' }).first().waitFor();
  assert.equal(
    await diff
      .locator('span.del')
      .filter({ hasText: /"(email|required|type)"/ })
      .count(),
    0,
  );

  // A subscription to the whole crm namespace, with its settings.
  const subsView = page.getByTestId('manage-subscriptions');
  await subsView.getByText('Create a subscription').click();
  const ns = subsView.getByTestId('new-subscription');
  await ns.locator('select[name=application]').selectOption('crm');
  await ns.locator('input[name=subscription]').fill('hooks');
  await ns.locator('input[name=action]').fill('crm.#');
  await ns.locator('input[name=handler]').fill(rx.url('/crm'));
  await ns.locator('input[name=retry_schedule]').fill('1, 2');
  await ns.locator('input[name=rate_limit]').fill('50');
  await ns.locator('input[name=ordered]').check();
  await ns.getByRole('button', { name: 'create' }).click();
  await ns.getByTestId('form-result').getByText('created hooks').waitFor();
  assert.match(
    await subsView.getByTestId('new-subscription-secret').getByTestId('secret-value').innerText(),
    /^whsec_/,
  );
  const hooks = (await call('GET', '/v1/subscriptions/crm%2Fhooks', undefined, 'admin')).body;
  assert.deepEqual([hooks.action, hooks.ordered, hooks.rate_limit, hooks.retry_schedule], ['crm.#', true, 50, [1, 2]]);
  await subsView.getByTestId('msub-hooks').getByTestId('edit-subscription').click();
  const se = subsView.getByTestId('subscription-editor');
  await se.locator('input[name=max_attempts]').fill('3');
  // The pattern narrowed (the queue rebound); ordered is shown, not editable.
  assert.equal(await se.locator('input[name=action]').inputValue(), 'crm.#');
  assert.ok(await se.getByTestId('ordered-readonly').isDisabled());
  await se.locator('input[name=action]').fill('crm.contact.*');
  await se.getByRole('button', { name: 'save' }).click();
  await se.getByTestId('form-result').waitFor();
  const edited = (await call('GET', '/v1/subscriptions/crm%2Fhooks', undefined, 'admin')).body;
  assert.deepEqual([edited.max_attempts, edited.action, edited.ordered], [3, 'crm.contact.*', true]);

  // A test event built from the schema reaches it.
  const te = editor.getByTestId('test-event');
  assert.match(await te.locator('textarea[name=payload]').inputValue(), /"email": "someone@example.com"/);
  await te.getByRole('button').click();
  const link = te.getByTestId('test-event-link');
  await link.waitFor();
  const published = await link.innerText();
  await eventually(() => rx.ids('/crm').includes(published), 30_000);
  await shot('manage');
});

test(
  'operate a subscription: test send, rotate its secret (shown once), replay a range, resurrect since T, delete an action',
  { skip },
  async () => {
    const hooks = (await call('GET', '/v1/subscriptions/crm%2Fhooks', undefined, 'admin')).body;
    await page.goto(`${srv.url}/#/subscriptions/${hooks.id}`);
    const p = page.getByTestId('subscription-page');
    await p.getByTestId('test-send').click();
    await p.getByText(/delivered: 200 in \d+ ms/).waitFor();
    assert.match(await p.getByTestId('test-result').innerText(), /status\s+200/);
    await p.getByTestId('rotate-secret').click();
    assert.match(await p.getByTestId('new-secret').getByTestId('secret-value').innerText(), /^whsec_/);
    const before = rx.ids('/crm').length;
    await p.getByTestId('replay').click();
    await p.getByText(/replayed [1-9]/).waitFor();
    await eventually(() => rx.ids('/crm').length > before, 30_000);
    // Everything that died since an hour ago, resurrected at once (flaky's dead letters, its handler
    // fixed): every dead letter of the run died within the hour, so all of them go back.
    const dead = await call('GET', '/v1/deliveries?state=dead', undefined, 'admin');
    assert.ok(dead.body.items.length >= 1, 'a dead delivery to resurrect');
    const deadLetters = async () => {
      let n = 0;
      for (const s of (await call('GET', '/v1/subscriptions', undefined, 'admin')).body.items)
        n += (await call('GET', `/v1/subscriptions/${s.id}/dead-letters?limit=1`, undefined, 'admin')).body.count;
      return n;
    };
    const letters = await deadLetters();
    assert.ok(letters >= dead.body.items.length, `${letters} dead letters`);
    await page.click('[data-testid=nav-deliveries]');
    await page.getByTestId('resurrect-dead-since').click();
    await page
      .getByTestId('bulk-resurrect')
      .getByText(new RegExp(`resurrected ${letters} dead letter\\(s\\) from \\d+ subscription\\(s\\); 0 older left`))
      .waitFor();
    assert.equal(await deadLetters(), 0);
    // Those of flaky (fixed) arrive; gone's wait in its queue (the subscription is disabled).
    const flakyDead = dead.body.items.filter((d: { subscription: string }) => d.subscription === subs.flaky);
    assert.ok(flakyDead.length >= 1);
    for (const d of flakyDead)
      await eventually(() => rx.at('/flaky').some((r) => r.headers['webhook-id'] === d.event && r.json), 30_000);
    // Deleting an action: refused while a subscription names it (shop/gone names order.refunded);
    // one only a pattern (crm.#) matches goes, with its versions.
    await page.click('[data-testid=nav-manage]');
    const refunded = page.getByTestId('action-order.refunded');
    await refunded.getByTestId('delete-action').click();
    await refunded
      .getByTestId('action-result')
      .getByText(/AMEBO_ERR_CONFLICT: .*shop\/gone/)
      .waitFor();
    consoleErrors.splice(0); // the refused DELETE (409) was logged by the browser
    assert.equal((await call('GET', '/v1/actions/order.refunded', undefined, 'admin')).status, 200);
    await page.getByTestId('action-crm.contact.created').getByTestId('delete-action').click();
    await page.getByTestId('action-crm.contact.created').waitFor({ state: 'detached' });
    assert.equal((await call('GET', '/v1/actions/crm.contact.created', undefined, 'admin')).status, 404);
    // Deleting: the subscription, then the application.
    await page.getByTestId('msub-hooks').getByTestId('delete-subscription').click();
    await page.getByTestId('msub-hooks').waitFor({ state: 'detached' });
    await page.getByTestId('app-crm').getByTestId('delete-app').click();
    await page.getByTestId('app-crm').waitFor({ state: 'detached' });
    assert.equal((await call('GET', '/v1/applications/crm', undefined, 'admin')).status, 404);
  },
);

test('ids are shown whole with a copy button', { skip }, async () => {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: srv.url });
  await page.goto(`${srv.url}/#/subscriptions/${subs.steady}`);
  const id = page.getByTestId('subscription-id');
  await id.getByText(subs.steady!).waitFor();
  await id.getByTestId('copy').click();
  await id.getByText('copied').waitFor();
  assert.equal(await page.evaluate('navigator.clipboard.readText()'), subs.steady);
});

test('empty states say what to do next', { skip }, async () => {
  await page.goto(`${srv.url}/#/subscriptions/${subs.steady}`);
  await page.getByTestId('pending-empty').getByText('Nothing waits for it').waitFor();
  await page.click('[data-testid=nav-deliveries]');
  await page.getByTestId('delivery-state').selectOption('retrying');
  await page.getByTestId('delivery-list').getByText('shop/down').first().waitFor();
  // Every dead letter was resurrected in bulk above.
  await page.getByTestId('delivery-state').selectOption('dead');
  await page.getByTestId('empty').getByText('Nothing dead').waitFor();
  await page.click('[data-testid=nav-services]');
  await page.getByTestId('service-filters').locator('input[name=domain]').fill('no-such-domain');
  await page.getByTestId('service-filters').getByRole('button', { name: 'Filter' }).click();
  await page.getByTestId('empty').getByText('No service matches').waitFor();
});

test('sign-in is shared with the other tabs of the session, and sign-out too', { skip }, async () => {
  const tab = await page.context().newPage();
  const errors: string[] = [];
  tab.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await tab.goto(`${srv.url}/#/home`);
  await tab.getByTestId('home').waitFor();
  assert.equal(await tab.locator('input[name=token]').count(), 0);
  // Another browser session (no tab to ask) must sign in.
  const other = await browser.newPage();
  await other.goto(`${srv.url}/`);
  await other.locator('input[name=token]').waitFor();
  await other.close();
  // Signing out in one tab signs out the others.
  await tab.getByTestId('sign-out').click();
  await page.locator('input[name=token]').waitFor();
  await tab.close();
  assert.deepEqual(errors, []);
  await page.fill('input[name=token]', env.adminToken);
  await page.click('button[type=submit]');
  await page.getByTestId('nav-home').waitFor();
});

test('at 375 px wide nothing overflows the page', { skip }, async () => {
  const narrow = await page.context().newPage();
  await narrow.setViewportSize({ width: 375, height: 740 });
  const errors: string[] = [];
  narrow.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  narrow.on('pageerror', (e) => errors.push(e.message));
  const views: [string, string][] = [
    ['#/home', 'home'],
    ['#/events', 'events'],
    [`#/events/${shipped[0]}`, 'timeline'],
    [`#/subscriptions/${subs.steady}`, 'charts'],
    ['#/deliveries', 'delivery-list'],
    ['#/subscriptions', 'subscriptions'],
    ['#/manage', 'manage'],
    ['#/services', 'services'],
    ['#/live', 'live-status'],
  ];
  for (const [hash, testid] of views) {
    await narrow.goto(`${srv.url}/${hash}`);
    await narrow.getByTestId(testid).first().waitFor();
    await narrow.waitForTimeout(150); // late rows (health, charts) laid out
    const width = Number(await narrow.evaluate('document.documentElement.scrollWidth'));
    assert.ok(width <= 375, `${hash}: ${width}px wide`);
  }
  await narrow.close();
  assert.deepEqual(errors, []);
});

test('/docs renders the API under its Content-Security-Policy, without a console error', { skip }, async () => {
  const docs = await browser.newPage();
  const errors: string[] = [];
  docs.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  docs.on('pageerror', (e) => errors.push(e.message));
  await docs.goto(srv.url + '/docs');
  await docs.getByText('/v1/events/batch').first().waitFor();
  await docs.close();
  assert.deepEqual(errors, []);
});

test('an unknown dashboard file is a 404 with a code', { skip }, async () => {
  const r = await call('GET', '/ui/nope.js');
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'AMEBO_ERR_NOT_FOUND');
});
