import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { destroy, eventually, http, nextEvent, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeOf, bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from './receiver.js';

// Outcomes of an attempt and the retry ladder, with real receivers and short schedules (seconds).
const env = testEnv();
let srv: Running;
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];

before(async () => {
  await rx.listen();
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  APP = await seed(
    call,
    'hooks',
    ['flaky', 'gone', 'limited', 'unavailable', 'hang', 'refused', 'moved', 'aging', 'replayed', 'paced', 'junk'].map(
      (a) => `t.${a}`,
    ),
  );
});
after(async () => {
  await srv?.close();
  await rx.close();
  await destroy(env);
});

async function subscribe(name: string, extra: Record<string, unknown> = {}) {
  const r = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'hooks', subscription: name, action: `t.${name}`, handler: rx.url(`/${name}`), ...extra },
    'admin',
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body as { id: string; queue: string };
}
const publish = async (action: string, payload: unknown = {}) => {
  const r = await call('POST', '/v1/events', { action, payload }, APP);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.event as string;
};
const attempts = async (event: string, sub: string) =>
  (await call('GET', `/v1/deliveries/${event}/${sub}/attempts`, undefined, 'admin')).body.items as any[];
const delivery = async (event: string, sub: string) =>
  (await call('GET', `/v1/deliveries?event=${event}&subscription=${sub}`, undefined, 'admin')).body.items[0];
const deadLetters = async (sub: string) =>
  (await call('GET', `/v1/subscriptions/${sub}/dead-letters`, undefined, 'admin')).body;

describe('outcomes', { concurrency: true }, () => {
  test('fails twice, then succeeds on attempt 3 at the scheduled times', async () => {
    const s = await subscribe('flaky', { retry_schedule: [1, 2], max_attempts: 5 });
    // The retry step each failure chose, as recorded (next_attempt_at - updated_at), read while the
    // next attempt is held at the receiver: the record of the previous one is written by then.
    const steps: number[] = [];
    rx.on('/flaky', async (r, n) => {
      if (r.json.payload.marker) return { status: 204 };
      if (n >= 1) {
        const rec = await eventually(async () => {
          const x = await delivery(r.json.id, s.id);
          return x?.state === 'retrying' && x.attempts === n ? x : null;
        }, 30_000);
        steps.push(Date.parse(rec.next_attempt_at) - Date.parse(rec.updated_at));
      }
      return n < 2 ? { status: 500, body: `nope ${n}` } : { status: 204 };
    });
    const id = await publish('t.flaky', { x: 1 });
    await eventually(() => rx.at('/flaky').length >= 3, 30_000);
    const [a1, a2, a3] = rx.at('/flaky');
    assert.deepEqual(
      [a1, a2, a3].map((r) => r!.headers['x-amebo-attempt']),
      ['1', '2', '3'],
    );
    assert.equal(a3!.json.attempt, 3);
    assert.ok(
      [a1, a2, a3].every((r) => r!.headers['webhook-id'] === id),
      'webhook-id is stable across retries',
    );
    // Each retry waited its step (at least), and the step chosen was the schedule's (at most: a
    // recorded wait is the step less the time the retry copy took to be confirmed).
    const g1 = a2!.at - a1!.at;
    const g2 = a3!.at - a2!.at;
    assert.ok(g1 >= 950, `first retry after the 1 s step, was ${g1} ms`);
    assert.ok(g2 >= 1950, `second retry after the 2 s step, was ${g2} ms`);
    // The third attempt's handler reads the second's record before it answers: wait for that read.
    await eventually(() => steps.length >= 2, 30_000);
    assert.equal(steps.length, 2);
    assert.ok(steps[0]! > 0 && steps[0]! <= 1000, `the first failure chose the 1 s step: ${steps[0]} ms`);
    assert.ok(steps[1]! > 1000 && steps[1]! <= 2000, `the second failure chose the 2 s step: ${steps[1]} ms`);
    const d = await eventually(async () => {
      const x = await delivery(id, s.id);
      return x?.state === 'delivered' ? x : null;
    });
    assert.equal(d.attempts, 3);
    const log = await attempts(id, s.id);
    assert.deepEqual(
      log.map((a) => [a.attempt, a.status, a.error_class]),
      [
        [1, 500, 'http_5xx'],
        [2, 500, 'http_5xx'],
        [3, 204, null],
      ],
    );
    assert.equal(log[0].response_excerpt, 'nope 0');
    // No attempt after success: a later event is delivered, and the first one was not tried again.
    const marker = await publish('t.flaky', { marker: true });
    await eventually(() => rx.ids('/flaky').includes(marker), 30_000);
    assert.equal(rx.ids('/flaky').filter((x) => x === id).length, 3, 'no attempt after success');
    assert.equal(rx.at('/flaky').length, 4);
    const m = String((await http(srv.url, env, 'GET', '/metrics')).body);
    assert.match(m, /amebo_deliveries_total\{subscription="hooks\/flaky",outcome="retried"\} 2/);
    assert.match(m, /amebo_deliveries_total\{subscription="hooks\/flaky",outcome="failed"\} 2/);
    assert.match(m, /amebo_deliveries_total\{subscription="hooks\/flaky",outcome="delivered"\} 2/);
  });

  test('410 disables the subscription and dead-letters the event', async () => {
    const s = await subscribe('gone', { retry_schedule: [1] });
    rx.on('/gone', () => ({ status: 410 }));
    const stopped = nextEvent(bridgeOf(srv.amebo)!, 'worker-stopped', (w) => w.subscription === s.id);
    const id = await publish('t.gone');
    const sub = await eventually(async () => {
      const r = await call('GET', `/v1/subscriptions/${s.id}`, undefined, 'admin');
      return r.body.paused ? r.body : null;
    });
    assert.match(sub.disabled_reason, /410/);
    const dl = await eventually(async () => ((await deadLetters(s.id)).count === 1 ? deadLetters(s.id) : null));
    assert.equal(dl.items[0].event, id);
    assert.equal(dl.items[0].reason, 'gone');
    assert.equal(dl.items[0].last_status, 410);
    await stopped; // the bridge no longer consumes the subscription's queue
    await publish('t.gone');
    // A disabled subscription gets nothing more: the event waits in its queue, which nobody consumes.
    const q = await eventually(async () => {
      const x = await srv.amebo.broker.withThrowawayChannel((ch) => ch.checkQueue(s.queue));
      return x.messageCount === 1 ? x : null;
    }, 30_000);
    assert.equal(q!.consumerCount, 0);
    assert.equal(rx.at('/gone').length, 1, 'a disabled subscription gets nothing more');
    assert.equal((await delivery(id, s.id)).state, 'dead');
  });

  test('429 Retry-After: the smallest schedule step at least as long', async () => {
    await subscribe('limited', { retry_schedule: [1, 3] });
    rx.on('/limited', (_r, n) => (n === 0 ? { status: 429, headers: { 'retry-after': '2' } } : {}));
    await publish('t.limited');
    await eventually(() => rx.at('/limited').length >= 2, 30_000);
    const [a, b] = rx.at('/limited');
    const gap = b!.at - a!.at;
    // Neither the 1 s step nor Retry-After's 2 s: the 3 s step, the only one at least as long.
    assert.ok(gap >= 2950, `waited the 3 s step, not 1 s: ${gap} ms`);
  });

  test('503 Retry-After longer than every step: a delay queue of its own', async () => {
    const s = await subscribe('unavailable', { retry_schedule: [1, 2] });
    rx.on('/unavailable', (_r, n) => (n === 0 ? { status: 503, headers: { 'retry-after': '4' } } : {}));
    const id = await publish('t.unavailable');
    await eventually(() => rx.at('/unavailable').length >= 2, 30_000);
    const [a, b] = rx.at('/unavailable');
    const gap = b!.at - a!.at;
    // Longer than every step of the schedule (1 s, 2 s): only a delay queue of 4 s explains it.
    assert.ok(gap >= 3950, `Retry-After 4 s honoured: ${gap} ms`);
    await eventually(async () => (await delivery(id, s.id))?.state === 'delivered');
  });

  test('timeouts and refused connections retry, then die at max_attempts', async () => {
    const s1 = await subscribe('hang', { retry_schedule: [1], max_attempts: 2, timeout_ms: 300 });
    // The receiver would answer after 30 s: an attempt classed `timeout` was cut at timeout_ms.
    rx.on('/hang', () => ({ delayMs: 30_000 }));
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const s2 = await subscribe('refused', {
      retry_schedule: [1],
      max_attempts: 2,
      handler: `http://127.0.0.1:${port}/nobody`,
    });
    const [e1, e2] = [await publish('t.hang'), await publish('t.refused')];
    for (const [e, s, cls] of [
      [e1, s1, 'timeout'],
      [e2, s2, 'connection_refused'],
    ] as const) {
      const d = await eventually(
        async () => ((await delivery(e, s.id))?.state === 'dead' ? delivery(e, s.id) : null),
        30_000,
      );
      assert.equal(d.attempts, 2);
      const log = await attempts(e, s.id);
      assert.deepEqual(
        log.map((a) => [a.attempt, a.status, a.error_class]),
        [
          [1, null, cls],
          [2, null, cls],
        ],
      );
      const dl = await deadLetters(s.id);
      assert.equal(dl.count, 1);
      assert.equal(dl.items[0].reason, 'max_attempts');
      assert.equal(dl.items[0].attempts, 2);
    }
    assert.match(
      String((await http(srv.url, env, 'GET', '/metrics')).body),
      /amebo_deliveries_total\{subscription="hooks\/hang",outcome="dead"\} 1/,
    );
    // The attempt waited for its timeout_ms (300 ms), and ended as a timeout, not with the answer.
    const t = (await attempts(e1, s1.id))[0];
    assert.ok(t.latency_ms >= 250, `the attempt waited for timeout_ms: ${t.latency_ms}`);
    assert.equal(rx.at('/hang').length, 2, 'each attempt sent once');
  });

  test('3xx is a failure: redirects are never followed', async () => {
    const s = await subscribe('moved', { max_attempts: 1 });
    rx.on('/moved', () => ({ status: 302, headers: { location: rx.url('/elsewhere') } }));
    const id = await publish('t.moved');
    await eventually(async () => (await delivery(id, s.id))?.state === 'dead', 30_000);
    const log = await attempts(id, s.id);
    assert.equal(log[0].status, 302);
    assert.equal(log[0].error_class, 'redirect');
    assert.equal(rx.at('/elsewhere').length, 0);
  });

  test('max_age ends in dead letters; resurrect brings them back with attempts reset', async () => {
    const s = await subscribe('aging', { retry_schedule: [1], max_attempts: 100, max_age: 2 });
    rx.on('/aging', () => ({ status: 500 }));
    const ids = [await publish('t.aging', { i: 1 }), await publish('t.aging', { i: 2 })];
    const dl = await eventually(async () => {
      const x = await deadLetters(s.id);
      return x.count === 2 ? x : null;
    }, 30_000);
    assert.deepEqual(
      dl.items.map((i: any) => i.reason),
      ['max_age', 'max_age'],
    );
    assert.deepEqual(dl.items.map((i: any) => i.event).sort(), [...ids].sort());
    const n = rx.at('/aging').length;
    assert.ok(n >= 4 && n <= 6, `2 or 3 attempts each inside 2 s: ${n}`);
    assert.equal((await deadLetters(s.id)).count, 2, 'listing does not consume');

    rx.on('/aging', () => ({}));
    const r = await call('POST', `/v1/subscriptions/${s.id}/dead-letters/resurrect`, { limit: 10 }, APP);
    assert.equal(r.status, 200);
    assert.equal(r.body.resurrected, 2);
    await eventually(() => rx.at('/aging').length >= n + 2, 30_000);
    const back = rx.at('/aging').slice(n);
    assert.deepEqual(
      back.map((x) => x.headers['x-amebo-attempt']),
      ['1', '1'],
    );
    assert.deepEqual(back.map((x) => x.headers['webhook-id']).sort(), [...ids].sort());
    assert.equal((await deadLetters(s.id)).count, 0);
    for (const id of ids) await eventually(async () => (await delivery(id, s.id))?.state === 'delivered');
  });

  test('a malformed message is dead-lettered at once; records and deliveries go on', async () => {
    const s = await subscribe('junk');
    await srv.amebo.publisher.publish('', s.queue, Buffer.from('not json'), { messageId: 'not-a-uuid' });
    const dl = await eventually(async () => ((await deadLetters(s.id)).count === 1 ? deadLetters(s.id) : null));
    assert.equal(dl.items[0].reason, 'malformed');
    const id = await publish('t.junk', { ok: true });
    await eventually(async () => (await delivery(id, s.id))?.state === 'delivered');
    assert.equal(rx.at('/junk').length, 1);
  });

  test('rate_limit paces deliveries', async () => {
    await subscribe('paced', { rate_limit: 5 });
    for (let i = 0; i < 6; i++) await publish('t.paced', { i });
    await eventually(() => rx.at('/paced').length >= 6, 30_000);
    const at = rx.at('/paced').map((r) => r.at);
    assert.ok(at[5]! - at[0]! >= 900, `6 deliveries at 5/s take about a second: ${at[5]! - at[0]!} ms`);
  });

  test('replay re-delivers a time range; retry resends one', async () => {
    const s = await subscribe('replayed');
    const from = new Date(Date.now() - 1000).toISOString();
    const ids = [await publish('t.replayed', { i: 1 }), await publish('t.replayed', { i: 2 })];
    await eventually(() => rx.at('/replayed').length >= 2);
    // The range ends strictly after the two events' timestamps (stored to the microsecond, sent to
    // the millisecond): once the clock is past the later one's millisecond.
    const stamps = rx.at('/replayed').map((x) => Date.parse(x.json.timestamp as string));
    assert.ok(stamps.every(Number.isFinite), 'the events carry their timestamps');
    await eventually(() => Date.now() > Math.max(...stamps), 5000, 1);
    const to = new Date().toISOString();
    const late = await publish('t.replayed', { i: 3 }); // outside the range
    await eventually(() => rx.at('/replayed').length >= 3);
    const r = await call('POST', `/v1/subscriptions/${s.id}/replay`, { from, to }, APP);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.count, 2);
    await eventually(() => rx.at('/replayed').length >= 5, 30_000);
    assert.deepEqual(rx.ids('/replayed').slice(3).sort(), [...ids].sort());
    const bad = await call('POST', `/v1/subscriptions/${s.id}/replay`, { from: 'yesterday' }, APP);
    assert.equal(bad.status, 400);

    await eventually(async () => (await delivery(late, s.id))?.state === 'delivered'); // recorded: 1 attempt
    const again = await call('POST', `/v1/deliveries/${late}/${s.id}/retry`, undefined, APP);
    assert.equal(again.status, 202, JSON.stringify(again.body));
    await eventually(() => rx.at('/replayed').length >= 6, 30_000);
    const last = rx.at('/replayed')[5]!;
    assert.equal(last.headers['webhook-id'], late);
    assert.equal(last.headers['x-amebo-attempt'], '2', 'one more attempt after the first');
    // Nothing else: a later event arrives, and only it.
    const marker = await publish('t.replayed', { i: 4 });
    await eventually(() => rx.ids('/replayed').includes(marker), 30_000);
    assert.deepEqual(rx.ids('/replayed').slice(6), [marker]);
  });
});
