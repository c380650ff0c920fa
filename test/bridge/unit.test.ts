import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { decide, parseRetryAfter, retryDelay } from '../../src/delivery/ladder.js';
import { topicMatches } from '../../src/delivery/topic.js';
import { buildBody, secretKey, signatureHeader, spliceable, splicedBody } from '../../bridge/envelope.js';
import { eventBody } from '../../src/broker/message.js';
import { TargetPolicy } from '../../src/targets.js';
import { Sender } from '../../bridge/sender.js';

// Pure rules of the bridge: the retry ladder, Retry-After, topic matching, signatures, SSRF ranges.
const s = { scheduleMs: [1000, 2000, 4000], maxAttempts: 5, maxAgeMs: 60_000 };

test('ladder: 2xx delivered, 410 disables, failures climb the schedule, the last step repeats', () => {
  assert.deepEqual(decide({ status: 204 }, 1, 0, 0, s), { kind: 'delivered' });
  assert.equal(decide({ status: 410 }, 1, 0, 0, s).kind, 'disable');
  for (const [attempt, delay] of [
    [1, 1000],
    [2, 2000],
    [3, 4000],
    [4, 4000],
  ])
    assert.deepEqual(decide({ status: 500 }, attempt!, 0, 0, s), { kind: 'retry', delayMs: delay, reason: 'http_500' });
  assert.deepEqual(decide({ status: null }, 5, 0, 0, s), { kind: 'dead', reason: 'max_attempts' });
  assert.deepEqual(decide({ status: 400 }, 2, 0, 58_500, s), { kind: 'dead', reason: 'max_age' });
  assert.deepEqual(decide({ status: null, fatal: true }, 1, 0, 0, s), { kind: 'dead', reason: 'fatal' });
  assert.equal(decide({ status: 302 }, 1, 0, 0, s).kind, 'retry', '3xx is a failure');
});

test('Retry-After: honoured only on 429/503, the smallest step at least as long, else its own delay', () => {
  assert.equal(retryDelay(s.scheduleMs, 1, 1500), 2000);
  assert.equal(retryDelay(s.scheduleMs, 1, 500), 1000, 'never sooner than the schedule');
  assert.equal(retryDelay(s.scheduleMs, 1, 9500), 10_000, 'longer than every step: rounded up to the second');
  assert.equal((decide({ status: 429, retryAfterMs: 3000 }, 1, 0, 0, s) as { delayMs: number }).delayMs, 4000);
  assert.equal((decide({ status: 500, retryAfterMs: 3000 }, 1, 0, 0, s) as { delayMs: number }).delayMs, 1000);
  assert.equal(parseRetryAfter('7'), 7000);
  assert.equal(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())! > 8000, true);
  assert.equal(parseRetryAfter('soon'), null);
  assert.equal(parseRetryAfter('0'), null);
  assert.equal(parseRetryAfter('999999999'), 86_400_000, 'capped at a day');
});

test('topic patterns match like a RabbitMQ topic exchange', () => {
  assert.ok(topicMatches('orders.*', 'orders.placed'));
  assert.ok(!topicMatches('orders.*', 'orders.v1.placed'));
  assert.ok(topicMatches('orders.#', 'orders.v1.placed'));
  assert.ok(topicMatches('#.created', 'user.created'));
  assert.ok(topicMatches('#', 'a.b.c'));
  assert.ok(topicMatches('user.created', 'user.created'));
  assert.ok(!topicMatches('user.created', 'user.deleted'));
});

test('signatures: the same bytes the standardwebhooks package computes, one per secret', () => {
  const secrets = [`whsec_${randomBytes(24).toString('base64')}`, `whsec_${randomBytes(24).toString('base64')}`];
  const body = JSON.stringify({ id: 'e1', payload: { ü: '✓' } });
  const ts = Math.floor(Date.now() / 1000);
  const header = signatureHeader(secrets.map(secretKey), 'e1', ts, body);
  assert.equal(header.split(' ')[0], new Webhook(secrets[0]!).sign('e1', new Date(ts * 1000), body));
  for (const sec of secrets)
    new Webhook(sec).verify(body, { 'webhook-id': 'e1', 'webhook-timestamp': String(ts), 'webhook-signature': header });
  assert.throws(() =>
    new Webhook(secrets[0]!).verify(body + ' ', {
      'webhook-id': 'e1',
      'webhook-timestamp': String(ts),
      'webhook-signature': header,
    }),
  );
});

test('the spliced envelope equals the built one (plus schema_version), payload bytes untouched', async () => {
  const input = {
    id: '0192f000-0000-7000-8000-000000000001',
    action: 'order.placed',
    application: 'shop',
    payloadJson: '{"b":1,"a":[1,2,{"subscription":"nested"}],"u":"\u00fc✓"}',
    deduper: 'k"1',
    conversationId: null,
    createdAt: new Date(),
    schemaVersion: 3,
  };
  const raw = eventBody(input);
  const spliced = splicedBody(raw, 'shop/plain', 2)!;
  assert.ok(spliced.includes(input.payloadJson), 'the payload JSON text is passed through as published');
  const built = JSON.parse(
    (await buildBody(JSON.parse(raw.toString()), { subscription: 'shop/plain', attempt: 2, format: 'amebo' })).body,
  );
  assert.deepEqual(JSON.parse(spliced), { ...built, schema_version: 3 });
  assert.equal(spliceable(raw), true);
  assert.equal(spliceable(Buffer.from('[1,2]')), false);
  assert.equal(splicedBody(Buffer.from('[1,2]'), 's', 1), null);
  assert.equal(splicedBody(Buffer.from('{"action":"x","id":"y"}'), 's', 1), null);
});

test('SSRF at delivery time: a loopback target is blocked (dead at once), unless allow-listed', async () => {
  const srv = createServer((_q, r) => r.end('ok'));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  const target = (host: string) => ({
    id: 'x',
    label: 'a/b',
    url: new URL(`http://${host}:${port}/`),
    timeoutMs: 2000,
    format: 'amebo' as const,
    keys: [randomBytes(24)],
    encryptionKey: null,
  });
  const ev = {
    id: 'e',
    action: 'a',
    application: 'a',
    deduper: null,
    timestamp: '',
    conversation_id: null,
    payload: {},
  };
  const e = { id: 'e', action: 'a', event: ev };
  const blocked = new Sender({ connectTimeoutMs: 1000, targets: new TargetPolicy({ block: true, allowed: '' }) });
  const allowed = new Sender({
    connectTimeoutMs: 1000,
    targets: new TargetPolicy({ block: true, allowed: 'localhost' }),
  });
  try {
    for (const host of ['127.0.0.1', 'localhost']) {
      const a = await blocked.send(target(host), e, 1);
      assert.equal(a.errorClass, 'blocked', host);
      assert.equal(a.fatal, true);
    }
    const ok = await allowed.send(target('localhost'), e, 1);
    assert.equal(ok.status, 200, String(ok.error));
  } finally {
    await blocked.close();
    await allowed.close();
    srv.close();
  }
});

test('recorder: a failed batch is retried without writing its attempts twice; buffers are bounded', async () => {
  const { Recorder } = await import('../../bridge/recorder.js');
  const { createLogger } = await import('../../src/log.js');
  const written = { attempts: 0, deliveries: 0 };
  let failDeliveries = 1;
  // A stand-in for pg's pool (pure unit test): counts rows per statement, fails the first delivery write.
  const pool = {
    query: async (q: { name: string; values: unknown[][] }) => {
      if (q.name.includes('attempts')) written.attempts += q.values[0]!.length;
      else if (failDeliveries-- > 0) throw new Error('connection terminated');
      else written.deliveries += q.values[0]!.length;
      return { rows: [], rowCount: 0 };
    },
  };
  const rec = new Recorder({ pool: pool as never, log: createLogger('silent'), intervalMs: 10_000, maxBuffered: 3 });
  const ev = (n: number) => `00000000-0000-7000-8000-00000000000${n}`;
  const sub = '00000000-0000-7000-8000-0000000000aa';
  const at = new Date();
  for (const n of [1, 2]) {
    rec.attempt({
      event: ev(n),
      subscription: sub,
      attempt: 1,
      status: 500,
      latencyMs: 3,
      errorClass: 'http_500',
      error: null,
      excerpt: null,
      at,
    });
    rec.delivery({
      event: ev(n),
      subscription: sub,
      state: 'retrying',
      attempts: 1,
      lastStatus: 500,
      lastError: null,
      nextAttemptAt: null,
      at,
    });
  }
  await rec.flush(); // attempts written, deliveries fail and stay buffered
  assert.deepEqual(written, { attempts: 2, deliveries: 0 });
  await rec.flush();
  assert.deepEqual(written, { attempts: 2, deliveries: 2 }, 'the retry wrote the states only');
  for (const n of [1, 2, 3, 4, 5])
    rec.delivery({
      event: ev(n),
      subscription: sub,
      state: 'pending',
      attempts: 0,
      lastStatus: null,
      lastError: null,
      nextAttemptAt: null,
      at,
    });
  await rec.close();
  assert.equal(written.deliveries, 2 + 3, 'at most maxBuffered states wait');
});
