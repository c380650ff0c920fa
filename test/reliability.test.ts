import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { drainQueue, eventually, http, SHOP, type Running, type TestEnv } from './helpers/harness.js';
import { shopBehindProxy, type TcpProxy } from './helpers/proxy.js';

// Faults the chaos suite found, each reproduced here on the shared services (issue "Production on a
// RabbitMQ cluster" §5): events accepted during a broker outage overtook each other, and each
// outage left one more relay loop behind.
let proxy: TcpProxy;
let close: () => Promise<void>;
let env: TestEnv;
let srv: Running;
const APP = SHOP;
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let queue = '';

before(async () => {
  ({ proxy, env, srv, queue, close } = await shopBehindProxy({
    confirmWaitMs: 400,
    relayGraceMs: 2000,
    relayIntervalMs: 100,
  }));
});
after(async () => {
  await close?.();
});

const outboxSize = async (): Promise<number> =>
  (await srv.amebo.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox')).rows[0]!.n;

test('events accepted during a broker outage reach the queue in the order they were accepted', async () => {
  const accepted: number[] = [];
  const outage = async (): Promise<void> => {
    proxy.refuse(true);
    proxy.cut();
    await new Promise((r) => setTimeout(r, 1500)); // the scenario: the broker is away for 1.5 s
    proxy.refuse(false);
  };
  let cut: Promise<unknown> | null = null;
  let back = false;
  let after = 0;
  // Publish before, during and after the outage: 60 more once the connection is back.
  for (let n = 0; after < 60; n++) {
    if (n === 30)
      cut = outage().then(() => eventually(() => srv.amebo.broker.connected, 30_000).then(() => (back = true)));
    const r = await call('POST', '/v1/events', { action: 'order.placed', payload: { n } }, APP);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    accepted.push(n);
    if (back) after++;
  }
  await cut;
  await eventually(async () => (await outboxSize()) === 0, 30_000);
  const firsts: number[] = [];
  const seen = new Set<number>();
  // At-least-once: an event cut off before its confirm is published again, so the queue may hold
  // duplicates; draining goes on until every accepted event was seen (or a minute).
  const until = Date.now() + 60_000;
  while (seen.size < accepted.length && Date.now() < until)
    for (const m of await drainQueue(queue, accepted.length - seen.size, 5_000)) {
      const n = (JSON.parse(m.content.toString()) as { payload: { n: number } }).payload.n;
      if (!seen.has(n)) firsts.push(n);
      seen.add(n);
    }
  await drainQueue(queue, 1000, 300); // clears at-least-once duplicates, if any (nothing asserted on them)
  const missing = accepted.filter((n) => !seen.has(n));
  assert.deepEqual(missing, [], `accepted but never in the queue (of ${accepted.length})`);
  assert.equal(firsts.length, accepted.length, 'every accepted event reached the queue');
  const late = firsts.filter((n, i) => i > 0 && n < firsts[i - 1]!);
  assert.deepEqual(late, [], `first deliveries out of order: ${JSON.stringify(firsts)}`);
  assert.equal(srv.amebo.pipeline.inBacklog, false, 'live publishing again once the backlog is out');
});

test('the relay runs one loop, also after full batches and outages', async () => {
  const relay = srv.amebo.relay!;
  let running = 0;
  let most = 0;
  let ticks = 0;
  const tick = relay.tick.bind(relay);
  relay.tick = async () => {
    ticks++;
    most = Math.max(most, ++running);
    try {
      return await tick();
    } finally {
      running--;
    }
  };
  // More than two full batches (500) at once, as after a long outage.
  await srv.amebo.pool.query(`WITH e AS (
      INSERT INTO events (id, action, application, schema_version, payload, conversation_id, created_at)
      SELECT gen_random_uuid(), 'order.placed', 'shop', 1, '{"bulk":true}'::json, 'bulk', now() - interval '1 minute'
      FROM generate_series(1, 1100) RETURNING id, created_at)
    INSERT INTO outbox (id, due_at, deferred) SELECT id, created_at, false FROM e`);
  for (let i = 0; i < 2; i++) {
    proxy.cut();
    await eventually(() => srv.amebo.broker.connected, 30_000);
  }
  await eventually(async () => (await outboxSize()) === 0, 30_000);
  assert.equal((await drainQueue(queue, 1100, 30_000)).length >= 1100, true);
  // Idle now: one loop ends a pass, sleeps relayIntervalMs (100 ms), passes again: its passes end
  // at least 100 ms apart, however loaded the machine. A leaked loop would interleave its own.
  const ends: number[] = [];
  const onTick = (t: { published: number }): void => void (t.published === 0 && ends.push(performance.now()));
  relay.on('tick', onTick);
  await eventually(() => ends.length >= 11, 30_000);
  relay.off('tick', onTick);
  const gaps = ends.slice(1).map((t, i) => Math.round(t - ends[i]!));
  assert.ok(
    gaps.every((g) => g >= 95),
    `idle passes end one interval apart: ${gaps.join(', ')} ms`,
  );
  assert.ok(ticks > 0);
  assert.equal(relay.loops, 1, 'one loop started, across full batches and outages');
  assert.equal(most, 1, 'never two ticks at once');
});
