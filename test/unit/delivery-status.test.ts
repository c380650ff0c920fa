/** Each rule of "what happened to my event", per subscription (pure). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deliveryStatus, type StatusInput } from '../../src/delivery/status.js';

const now = Date.parse('2026-12-01T12:00:00Z');
const at = (s: number): Date => new Date(now + s * 1000);

function input(over: Partial<StatusInput> & { sub?: Partial<StatusInput['subscription']> } = {}): StatusInput {
  const { sub, ...rest } = over;
  return {
    event: { created_at: at(-60), published: true, deliver_at: null },
    subscription: {
      created_at: at(-3600),
      paused: false,
      disabled_reason: null,
      transport: 'http',
      visible: true,
      ...sub,
    },
    record: null,
    breaker: null,
    held: false,
    queue: { messages: 12 },
    now,
    ...rest,
  };
}
const rec = (state: 'pending' | 'delivered' | 'retrying' | 'dead', extra = {}) => ({
  state,
  attempts: 3,
  next_attempt_at: at(30),
  last_status: 500,
  last_error: 'HTTP 500',
  ...extra,
});

test('pending, with the queue depth as the backlog', () => {
  const s = deliveryStatus(input());
  assert.equal(s.state, 'pending');
  assert.equal(s.backlog, 12);
  assert.equal(s.attempts, 0);
  assert.equal(
    deliveryStatus(input({ event: { created_at: at(-1), published: false, deliver_at: null } })).reason.includes(
      'relay',
    ),
    true,
  );
});

test('delivered and dead come from the record, whatever else holds', () => {
  assert.equal(deliveryStatus(input({ record: rec('delivered'), sub: { paused: true } })).state, 'delivered');
  const d = deliveryStatus(
    input({ record: rec('dead', { last_error: 'max_attempts: HTTP 500' }), breaker: { until: now + 5000 } }),
  );
  assert.deepEqual([d.state, d.attempts, d.reason], ['dead', 3, 'max_attempts: HTTP 500']);
});

test('retrying with the next attempt; in_flight when an ordered subscription holds it', () => {
  const r = deliveryStatus(input({ record: rec('retrying') }));
  assert.deepEqual([r.state, r.next_attempt_at], ['retrying', at(30).toISOString()]);
  assert.equal(deliveryStatus(input({ record: rec('retrying'), held: true })).state, 'in_flight');
});

test('paused and circuit_open, also for a subscription that never attempted it', () => {
  const p = deliveryStatus(input({ sub: { paused: true } }));
  assert.deepEqual([p.state, p.backlog, p.attempts], ['paused', 12, 0]);
  assert.match(deliveryStatus(input({ sub: { disabled_reason: 'gone: 410' } })).reason, /disabled: gone/);
  const c = deliveryStatus(input({ breaker: { until: now + 8000 } }));
  assert.deepEqual([c.state, c.next_probe_at, c.backlog], ['circuit_open', at(8).toISOString(), 12]);
  assert.equal(
    deliveryStatus(input({ record: rec('retrying'), breaker: { until: now + 8000 } })).state,
    'circuit_open',
  );
});

test('filtered, not routed, native and scheduled', () => {
  assert.equal(deliveryStatus(input({ sub: { visible: false } })).state, 'filtered');
  assert.equal(deliveryStatus(input({ sub: { created_at: at(-1) } })).state, 'not_routed');
  assert.equal(deliveryStatus(input({ sub: { transport: 'amqp' } })).state, 'native');
  const s = deliveryStatus(input({ event: { created_at: at(-60), published: false, deliver_at: at(600) } }));
  assert.deepEqual([s.state, s.next_attempt_at], ['scheduled', at(600).toISOString()]);
});
