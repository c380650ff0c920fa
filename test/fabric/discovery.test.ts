/** Keep-alives on msc.discovery and listServices: wire format, exact filters, status changes, no flapping under load. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import type { ServiceChange } from '../../src/fabric/index.js';
import { AMQP_URL, nextEvent, open, sleep, uniqueDomain, waitFor } from './helpers.js';

test('keep-alives carry string headers and a JSON body with version, host, pid, started_at, every interval', async (t) => {
  const domain = uniqueDomain();
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(queue, 'msc.discovery', '', { 'x-match': 'all', msg_type: 'keep_alive', service_domain: domain });
  const got: Array<{ at: number; m: amqp.ConsumeMessage }> = [];
  await ch.consume(queue, (m) => m && got.push({ at: Date.now(), m }), { noAck: true });

  await open(t, { domain, type: 'pricing', id: 'p1', version: '1.2.3', keepAliveMs: 200 });
  await waitFor(() => got.length >= 6, 30_000, 'six keep-alives');
  const { m } = got[0]!;
  const h = m.properties.headers!;
  for (const k of ['msg_type', 'service_domain', 'service_type', 'service_id'])
    assert.equal(typeof h[k], 'string', `${k} must be a string`);
  assert.deepEqual(
    [h.msg_type, h.service_domain, h.service_type, h.service_id],
    ['keep_alive', domain, 'pricing', 'p1'],
  );
  const body = JSON.parse(m.content.toString()) as Record<string, unknown>;
  assert.equal(body.version, '1.2.3');
  assert.equal(body.pid, process.pid);
  assert.equal(typeof body.host, 'string');
  assert.ok(!Number.isNaN(Date.parse(body.started_at as string)));
  // Every interval, not faster: five gaps average at least half the 200 ms interval (an average,
  // so one late arrival followed by a prompt one does not count; only a lower bound, load-proof).
  const mean = (got[5]!.at - got[0]!.at) / 5;
  assert.ok(mean >= 100, `keep-alives ${mean} ms apart on average, interval 200`);
});

test('listServices matches domain and type exactly (proj does not match project1)', async (t) => {
  const proj = uniqueDomain();
  const project1 = `${proj}ject1`;
  await open(t, { domain: proj, type: 'calc', id: 'a', keepAliveMs: 200 });
  await open(t, { domain: proj, type: 'calculator', id: 'b', keepAliveMs: 200 });
  await open(t, { domain: project1, type: 'calc', id: 'c', keepAliveMs: 200 });
  const lister = await open(t, { domain: proj, type: 'lister', id: 'l1', keepAliveMs: 200, keepAliveListen: true });

  // Wait until all three were heard (the project1 one included), so its absence below means something.
  await waitFor(async () => (await lister.listServices({ domain: project1 })).length === 1, 30_000, 'project1 listed');
  await waitFor(async () => (await lister.listServices({ domain: proj })).length === 3, 30_000, 'proj listed');
  const inProj = await lister.listServices({ domain: proj });
  assert.deepEqual(
    inProj.map((s) => s.fqn),
    [`${proj}.calc.a`, `${proj}.calculator.b`, `${proj}.lister.l1`],
  );
  const calc = await lister.listServices({ domain: proj, type: 'calc' });
  assert.deepEqual(
    calc.map((s) => [s.id, s.status, s.instances]),
    [['a', 'up', 1]],
  );
  assert.equal(calc[0]!.host !== null && calc[0]!.version === '0.0.0', true);
});

test('status changes are announced: up, then down on goodbye; silence goes stale, then down', async (t) => {
  const domain = uniqueDomain();
  const lister = await open(t, { domain, type: 'lister', id: 'l1', keepAliveMs: 0, serviceTtlMs: 900 });
  const changes: ServiceChange[] = [];
  await lister.watchServices((c) => {
    if (c.domain === domain) changes.push(c);
  });

  const svc = await open(t, { domain, type: 'svc', id: 's1', keepAliveMs: 200 });
  const up = await nextEvent<ServiceChange>(lister, 'service', 30_000, (c) => c.fqn === `${domain}.svc.s1`);
  assert.deepEqual([up.type, up.service_type, up.id, up.status, up.previous], ['service', 'svc', 's1', 'up', null]);
  const goodbye = nextEvent<ServiceChange>(lister, 'service', 30_000, (c) => c.fqn === `${domain}.svc.s1`);
  await svc.close();
  const down = await goodbye;
  // At once, from the goodbye: silence would have gone up → stale → down, so `previous` is 'up'.
  assert.deepEqual([down.status, down.previous], ['down', 'up']);

  // A sender that goes silent without goodbye (a killed process), here one raw keep-alive.
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  ch.publish('msc.discovery', '', Buffer.alloc(0), {
    headers: { msg_type: 'keep_alive', service_domain: domain, service_type: 'py', service_id: 'silent' },
  });
  const silent = (): string[] => changes.filter((c) => c.fqn === `${domain}.py.silent`).map((c) => c.status);
  await waitFor(() => silent().length === 3, 30_000, 'up, stale and down');
  assert.deepEqual(silent(), ['up', 'stale', 'down']);
  const listed = await lister.listServices({ domain, type: 'py' });
  assert.deepEqual(
    listed.map((s) => [s.id, s.status, s.version]),
    [['silent', 'down', null]],
  );
});

test('a long, CPU-yielding handler does not make its service drop out of listServices', async (t) => {
  const domain = uniqueDomain();
  const api = {
    // 4 s of work in 10 ms slices: slow, but it lets the event loop run between slices. (Done in one
    // block, the same work would silence the keep-alives: stale at 0.8 s, down at 2.4 s.)
    crunch: async () => {
      const until = Date.now() + 4000;
      let n = 0;
      while (Date.now() < until) {
        const slice = Date.now() + 10;
        while (Date.now() < slice) n++;
        await new Promise((r) => setImmediate(r));
      }
      return n > 0;
    },
  };
  const svc = await open(t, { domain, type: 'busy', id: 'b1', keepAliveMs: 200 });
  await svc.rpcRegister(api);
  // Stale after 800 ms of silence (four missed keep-alives: a loaded 2-core machine delays one
  // now and then by a few hundred ms), down after 2.4 s; the handler runs for 4 s.
  const lister = await open(t, {
    domain,
    type: 'lister',
    id: 'l1',
    keepAliveMs: 0,
    serviceTtlMs: 2400,
    keepAliveListen: true,
  });
  const flaps: ServiceChange[] = [];
  lister.on('service', (c) => c.fqn === `${domain}.busy.b1` && c.status !== 'up' && flaps.push(c));
  await waitFor(
    async () => (await lister.listServices({ domain, type: 'busy' }))[0]?.status === 'up',
    3000,
    'service up',
  );

  const call = (await lister.rpcProxy<typeof api>(domain, 'b1', 'busy', { timeoutMs: 15_000 })).crunch();
  const statuses = new Set<string>();
  let done = false;
  void call.finally(() => (done = true));
  while (!done) {
    for (const s of await lister.listServices({ domain, type: 'busy' })) statuses.add(s.status);
    await sleep(100); // the scenario: sample the listing while the call runs
  }
  assert.equal(await call, true);
  assert.deepEqual([...statuses], ['up']);
  assert.deepEqual(flaps, []);
});
