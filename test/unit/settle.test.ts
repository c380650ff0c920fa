/** The settle rules shared by the bridge and the SDK (pure: a fake channel and publisher). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { attemptOf, deadLetter, requeueLater, retryLater, type SettleDeps } from '../../src/delivery/settle.js';
import { HEADER } from '../../src/broker/message.js';

function message(headers: Record<string, unknown>, redelivered = false): ConsumeMessage {
  return {
    content: Buffer.from('{"id":"e1"}'),
    fields: { deliveryTag: 1, redelivered, exchange: 'x', routingKey: 'k', consumerTag: 'c' },
    properties: { headers, messageId: 'e1', contentType: 'application/json' },
  } as unknown as ConsumeMessage;
}

function fakes(confirm: 'ok' | 'fail') {
  const log: string[] = [];
  const published: { exchange: string; key: string; options: Options.Publish }[] = [];
  const deps: SettleDeps = {
    publisher: {
      publish: async (exchange, key, _c, options) => {
        log.push(`publish ${exchange}`);
        published.push({ exchange, key, options });
        await new Promise((r) => setImmediate(r));
        if (confirm === 'fail') throw new Error('nacked');
        log.push('confirmed');
      },
    },
    topology: { retry: (ms) => `retry.${ms}`, dead: 'dead' },
  };
  const ch = {
    ack: () => log.push('ack'),
    nack: (_m: unknown, _all: boolean, requeue: boolean) => log.push(`nack requeue=${requeue}`),
  } as unknown as Channel;
  return { deps, ch, log, published };
}

test('attemptOf: the ladder header plus the redeliveries the broker counted', () => {
  assert.deepEqual(attemptOf(message({}), 42), { attempt: 1, firstAt: 42 });
  assert.deepEqual(attemptOf(message({ [HEADER.attempt]: 3, [HEADER.firstAttemptAt]: 7 }), 42), {
    attempt: 3,
    firstAt: 7,
  });
  // A quorum queue counts redeliveries; a classic one only flags the message.
  assert.equal(attemptOf(message({ [HEADER.attempt]: 3, 'x-delivery-count': 2 })).attempt, 5);
  assert.equal(attemptOf(message({ [HEADER.attempt]: 3 }, true)).attempt, 4);
  assert.equal(attemptOf(message({ [HEADER.attempt]: 'junk' })).attempt, 1);
});

test('a retry copy is confirmed before the original is acked, with the next attempt and the first time', async () => {
  const f = fakes('ok');
  await retryLater(f.deps, f.ch, message({ 'x-delivery-count': 1 }), 'q1', { attempt: 2, firstAt: 5, delayMs: 30_000 });
  assert.deepEqual(f.log, ['publish retry.30000', 'confirmed', 'ack']);
  const h = f.published[0]!.options.headers!;
  assert.equal(f.published[0]!.key, 'q1');
  assert.equal(h[HEADER.attempt], 2);
  assert.equal(h[HEADER.firstAttemptAt], 5);
  assert.equal(h['x-delivery-count'], undefined, 'broker headers are not copied');
});

test('a dead letter carries its reason and last answer; unconfirmed, the original is not acked', async () => {
  const ok = fakes('ok');
  await deadLetter(ok.deps, ok.ch, message({}), 'q1', {
    reason: 'max_attempts',
    attempts: 10,
    lastStatus: 500,
    lastError: 'x'.repeat(600),
    subscriptionId: 's1',
  });
  assert.deepEqual(ok.log, ['publish dead', 'confirmed', 'ack']);
  const h = ok.published[0]!.options.headers!;
  assert.equal(h[HEADER.reason], 'max_attempts');
  assert.equal(h[HEADER.attempt], 10);
  assert.equal(h[HEADER.lastStatus], 500);
  assert.equal((h[HEADER.lastError] as string).length, 500);
  assert.equal(h[HEADER.subscriptionId], 's1');
  assert.equal(typeof h[HEADER.deadAt], 'number');

  const bad = fakes('fail');
  await assert.rejects(deadLetter(bad.deps, bad.ch, message({}), 'q1', { reason: 'malformed', attempts: 1 }), /nacked/);
  assert.deepEqual(bad.log, ['publish dead'], 'no ack without the confirm');
  await requeueLater(bad.ch, message({}), () => true, 1);
  assert.deepEqual(bad.log, ['publish dead', 'nack requeue=true']);
  await requeueLater(bad.ch, message({}), () => false, 1);
  assert.equal(bad.log.length, 2, 'a replaced channel: the broker requeued it already');
});
