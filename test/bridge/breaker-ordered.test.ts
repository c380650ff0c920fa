import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { destroy, eventually, http, REDIS_URL, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { Breaker, type BreakerState } from '../../bridge/breaker.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from './receiver.js';

// The circuit breaker pauses a failing endpoint's consumer (messages wait, no retries burned), probes
// after the cool-down and resumes; ordered subscriptions deliver one at a time in publish order.
const env = testEnv();
let srv: Running;
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];
const redis = new Redis(REDIS_URL, { lazyConnect: true });

before(async () => {
  await rx.listen();
  await redis.connect();
  srv = await start(env, {
    parts: [bridgeStarter({ prefetch: 2, breaker: { threshold: 3, windowMs: 10_000, cooldownMs: 1500 } })],
    plugins: [deliveryPlugin],
  });
  APP = await seed(call, 'acct', ['acct.fragile', 'acct.ledger']);
});
after(async () => {
  await srv?.close();
  await rx.close();
  const keys = await redis.keys(`${env.cfg.redis.root}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await destroy(env);
});

const publish = async (action: string, payload: unknown) => {
  const r = await call('POST', '/v1/events', { action, payload }, APP);
  assert.equal(r.status, 202);
  return r.body.event as string;
};

test('circuit breaker: opens after failures, messages wait, probe, resume', async () => {
  const s = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'acct',
      subscription: 'fragile',
      action: 'acct.fragile',
      handler: rx.url('/fragile'),
      retry_schedule: [2],
      max_attempts: 10,
    },
    'admin',
  );
  assert.equal(s.status, 201);
  let down = true;
  rx.on('/fragile', () => (down ? { status: 500 } : { status: 200 }));
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) ids.push(await publish('acct.fragile', { i }));
  const queue = s.body.queue as string;
  const check = () => srv.amebo.broker.withThrowawayChannel((ch) => ch.checkQueue(queue));
  const stateKey = env.cfg.redis.breaker('state', Breaker.id(rx.url('/fragile')));

  // (A quorum queue keeps listing a cancelled consumer while it holds unacked messages: the Redis
  // state and the receiver's silence are the evidence, not consumerCount.)
  const state = async () => {
    const v = await redis.get(stateKey);
    return v ? (JSON.parse(v) as BreakerState) : null;
  };
  const first = (await eventually(state, 30_000))!;
  const c0 = rx.at('/fragile').length;
  assert.ok(c0 >= 3 && c0 <= 5, `the circuit opened after the threshold (3) plus what was in flight: ${c0}`);
  const q = await check();
  assert.ok(q.messageCount >= 12 - c0 - 2, `messages wait in the queue (prefetch 2 held): ${q.messageCount}`);

  // Cool-down over: one probe, which fails: open again for longer.
  const reopened = (await eventually(async () => {
    const st = await state();
    return st && st.until > first.until ? st : null;
  }, 30_000))!;
  assert.equal(reopened.cooldownMs, 3000, 'a failed probe reopens the circuit, twice as long');
  // Nothing was attempted during the cool-down: the one request after the opening is the probe,
  // sent once the cool-down was over.
  assert.equal(rx.at('/fragile').length, c0 + 1, 'one probe, nothing else');
  const probeAt = rx.at('/fragile')[c0]!.at;
  assert.ok(probeAt >= first.until, `the probe waited for the cool-down: ${probeAt - first.until} ms after it`);

  down = false;
  await eventually(() => {
    const ok = new Set(
      rx
        .at('/fragile')
        .filter((r) => r.at > probeAt)
        .map((r) => String(r.headers['webhook-id'])),
    );
    return ids.every((id) => ok.has(id));
  }, 30_000);
  // Nothing was attempted during the second cool-down either: the next request was its probe.
  assert.ok(rx.at('/fragile')[c0 + 1]!.at >= reopened.until, 'the second probe waited for the longer cool-down');
  assert.equal((await check()).consumerCount, 1, 'consuming again');
  assert.equal(await redis.exists(stateKey), 0, 'the circuit is closed in Redis for every worker');
  const attemptsPerEvent = ids.map((id) => rx.at('/fragile').filter((r) => r.headers['webhook-id'] === id).length);
  assert.ok(
    attemptsPerEvent.filter((n) => n === 1).length >= 12 - c0 - 1,
    `events that waited were attempted once: ${attemptsPerEvent.join(',')}`,
  );
});

test('ordered: one at a time in publish order; a failing event holds the line', async () => {
  const s = await call(
    'POST',
    '/v1/subscriptions',
    {
      application: 'acct',
      subscription: 'ledger',
      action: 'acct.ledger',
      handler: rx.url('/ledger'),
      ordered: true,
      retry_schedule: [1],
      max_attempts: 5,
    },
    'admin',
  );
  assert.equal(s.status, 201);
  assert.equal(s.body.ordered, true);
  let concurrent = 0;
  let maxConcurrent = 0;
  rx.on('/ledger', async (r, n) => {
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    await new Promise((x) => setTimeout(x, 20)); // the scenario: a receiver slow enough for overlaps to show
    concurrent--;
    return r.json.payload.n === 2 && n < 2 ? { status: 503 } : { status: 200 };
  });
  for (let n = 0; n < 6; n++) await publish('acct.ledger', { n });
  await eventually(() => rx.at('/ledger').length >= 8, 30_000);
  // Nothing else: a later event comes next (the line is ordered), after exactly these.
  await publish('acct.ledger', { n: 6 });
  await eventually(() => rx.at('/ledger').some((r) => r.json.payload.n === 6), 30_000);
  const seq = rx.at('/ledger').map((r) => r.json.payload.n);
  assert.deepEqual(seq, [0, 1, 2, 2, 2, 3, 4, 5, 6], 'event 2 is retried in place before 3 goes');
  assert.equal(maxConcurrent, 1, 'one delivery at a time');
  const [, , a, b, c] = rx.at('/ledger');
  assert.ok(b!.at - a!.at >= 950 && c!.at - b!.at >= 950, 'the line waits for the retry schedule');
  assert.deepEqual(
    rx
      .at('/ledger')
      .slice(2, 5)
      .map((r) => r.headers['x-amebo-attempt']),
    ['1', '2', '3'],
  );
});
