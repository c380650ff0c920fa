/**
 * The event detail's deliveries: every subscription whose pattern matches the event, with its
 * state (src/delivery/status.ts) from the delivery records, the subscription's flags, its
 * endpoint's breaker, an ordered subscription's held head, and its queue depth (the broker).
 */
import { queueDepths } from '../broker/depth.js';
import { deliveryStatus, type DeliveryStatus } from '../delivery/status.js';
import { topicMatcher } from '../delivery/topic.js';
import type { EventRow } from '../store/events.js';
import { deliveriesOfEvent } from '../store/deliveries.js';
import type { ApiContext } from './server.js';
import { breakerOf } from './health-routes.js';

export interface EventDelivery extends DeliveryStatus {
  subscription: string;
  subscription_name: string;
  application: string;
  transport: 'http' | 'amqp';
  updated_at: string | null;
}

export const EVENT_DELIVERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    subscription: { type: 'string' },
    subscription_name: { type: 'string' },
    application: { type: 'string' },
    transport: { enum: ['http', 'amqp'] },
    state: {
      enum: [
        'filtered',
        'not_routed',
        'scheduled',
        'pending',
        'in_flight',
        'retrying',
        'delivered',
        'dead',
        'paused',
        'circuit_open',
        'native',
      ],
    },
    reason: { type: 'string' },
    attempts: { type: 'integer' },
    last_status: { type: ['integer', 'null'] },
    last_error: { type: ['string', 'null'] },
    next_attempt_at: { type: ['string', 'null'], format: 'date-time' },
    next_probe_at: { type: ['string', 'null'], format: 'date-time' },
    backlog: {
      type: ['integer', 'null'],
      description: 'messages ready in its queue (this one among them, when pending)',
    },
    updated_at: { type: ['string', 'null'], format: 'date-time' },
  },
  required: ['subscription', 'subscription_name', 'application', 'transport', 'state', 'reason', 'attempts'],
} as const;

export async function eventDeliveries(ctx: ApiContext, e: EventRow): Promise<EventDelivery[]> {
  const [subs, action, records] = await Promise.all([
    ctx.registry.listSubscriptions(),
    ctx.registry.getAction(e.action),
    deliveriesOfEvent(ctx.pool, e.id),
  ]);
  const byRecord = new Map(records.map((r) => [r.subscription, r]));
  const matching = subs.filter((s) => byRecord.has(s.id) || topicMatcher(s.action)(e.action));
  const subscribers = action?.row.subscribers ?? null;
  const owner = action?.row.application ?? e.application;
  // Only what is not settled needs the broker and Redis.
  const open = matching.filter((s) => {
    const r = byRecord.get(s.id);
    return !r || (r.state !== 'delivered' && r.state !== 'dead');
  });
  const t = ctx.topology;
  const [depths, breakers, held] = await Promise.all([
    queueDepths(
      ctx.broker,
      open.map((s) => t.subscriptionQueue(s.application, s.name)),
      2000,
    ),
    Promise.all(open.map(async (s) => [s.id, await breakerOf(ctx, s)] as const)).then((x) => new Map(x)),
    Promise.all(open.filter((s) => s.ordered).map(async (s) => [s.id, await heldHead(ctx, s.id, e.id)] as const)).then(
      (x) => new Map(x),
    ),
  ]);
  const now = Date.now();
  return matching.map((s) => {
    const r = byRecord.get(s.id) ?? null;
    const b = breakers.get(s.id);
    const status = deliveryStatus({
      event: { created_at: e.created_at, published: e.published, deliver_at: e.deliver_at },
      subscription: {
        created_at: s.created_at,
        paused: s.paused,
        disabled_reason: s.disabled_reason,
        transport: s.transport,
        visible: !subscribers || s.application === owner || subscribers.includes(s.application),
      },
      record: r,
      breaker:
        b && (b.state === 'open' || b.state === 'half_open') && b.next_probe_at
          ? { until: Date.parse(b.next_probe_at) }
          : null,
      held: held.get(s.id) ?? false,
      queue: depths.get(t.subscriptionQueue(s.application, s.name)) ?? null,
      now,
    });
    return {
      subscription: s.id,
      subscription_name: s.name,
      application: s.application,
      transport: s.transport,
      ...status,
      updated_at: r?.updated_at.toISOString() ?? null,
    };
  });
}

async function heldHead(ctx: ApiContext, subscription: string, event: string): Promise<boolean> {
  if (ctx.redis.status !== 'ready') return false;
  try {
    return (await ctx.redis.exists(ctx.cfg.redis.held(subscription, event))) === 1;
  } catch {
    return false;
  }
}
