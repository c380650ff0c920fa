/**
 * Operators' truth about a subscription: its health over a window (state, backlog from the broker,
 * breaker, success rate, latency), its stats in time buckets for charts, and the events waiting for
 * it (from the event log and delivery records, never by taking messages off its queue).
 */
import type { FastifyInstance } from 'fastify';
import { queueDepths } from '../broker/depth.js';
import { AmeboError } from '../errors.js';
import { readBreaker, type BreakerView } from '../delivery/breaker-view.js';
import { topicMatcher } from '../delivery/topic.js';
import { pendingForSubscription, subscriptionHealthFigures, subscriptionStats } from '../store/deliveries.js';
import type { SubscriptionRow } from '../store/registry.js';
import { subscriptionById, subscriptionOwner } from './owned.js';
import { ID_PARAM, LIMIT, record, replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';

/** The windows a health or stats request may ask for, with the bucket width of its stats. */
export const WINDOWS = {
  '5m': { seconds: 300, bucket: 10 },
  '1h': { seconds: 3600, bucket: 60 },
  '24h': { seconds: 86_400, bucket: 1800 },
} as const;
type WindowName = keyof typeof WINDOWS;

const WINDOW_QUERY = {
  type: 'object',
  properties: { window: { enum: Object.keys(WINDOWS), default: '1h' } },
  additionalProperties: false,
} as const;

const BREAKER = record({
  state: { enum: ['closed', 'open', 'half_open', 'unknown', 'none'] },
  failures: { type: 'integer' },
  next_probe_at: { type: ['string', 'null'], format: 'date-time' },
});

const NUM_OR_NULL = { type: ['number', 'null'] } as const;
const TIME_OR_NULL = { type: ['string', 'null'], format: 'date-time' } as const;

const HEALTH = {
  type: 'object',
  additionalProperties: false,
  properties: {
    subscription: { type: 'string' },
    application: { type: 'string' },
    name: { type: 'string' },
    window: { type: 'string' },
    state: { enum: ['active', 'paused', 'circuit_open', 'disabled'] },
    disabled_reason: { type: ['string', 'null'] },
    backlog: { type: ['integer', 'null'], description: 'messages ready in its queue (the broker; null: unreachable)' },
    consumers: { type: ['integer', 'null'] },
    retrying: { type: 'integer', description: 'events waiting on the retry ladder' },
    dead: { type: ['integer', 'null'], description: 'dead letters waiting (the broker)' },
    breaker: BREAKER,
    attempts: { type: 'integer' },
    success_rate: { ...NUM_OR_NULL, description: 'successes / attempts in the window; null without attempts' },
    latency_ms: record({ p50: NUM_OR_NULL, p99: NUM_OR_NULL }),
    last_success_at: TIME_OR_NULL,
    last_failure_at: TIME_OR_NULL,
    last_error: { type: ['string', 'null'] },
  },
  required: ['subscription', 'state', 'backlog', 'retrying', 'dead', 'breaker', 'success_rate', 'latency_ms'],
} as const;

const STATS = {
  type: 'object',
  additionalProperties: false,
  properties: {
    subscription: { type: 'string' },
    window: { type: 'string' },
    bucket_seconds: { type: 'integer' },
    buckets: {
      type: 'array',
      items: record({
        at: { type: 'string', format: 'date-time' },
        attempts: { type: 'integer' },
        successes: { type: 'integer' },
        failures: { type: 'integer' },
        p50_ms: NUM_OR_NULL,
        p99_ms: NUM_OR_NULL,
        backlog: { type: ['integer', 'null'], description: 'largest queue depth sampled in the bucket' },
      }),
    },
  },
  required: ['subscription', 'window', 'bucket_seconds', 'buckets'],
} as const;

const PENDING = {
  type: 'object',
  additionalProperties: false,
  properties: {
    subscription: { type: 'string' },
    items: {
      type: 'array',
      items: record(
        {
          id: { type: 'string' },
          action: { type: 'string' },
          created_at: { type: 'string', format: 'date-time' },
          payload: {},
          state: { enum: ['pending', 'retrying'] },
          attempts: { type: 'integer' },
          next_attempt_at: TIME_OR_NULL,
        },
        ['next_attempt_at'],
      ),
    },
  },
  required: ['subscription', 'items'],
} as const;

/** The endpoint's breaker, for an http subscription. */
export async function breakerOf(ctx: ApiContext, row: SubscriptionRow): Promise<BreakerView | null> {
  if (row.transport !== 'http' || !row.handler) return null;
  let url: string;
  try {
    url = new URL(row.handler).toString();
  } catch {
    return null;
  }
  return readBreaker(ctx.redis, ctx.cfg.redis, url);
}

export async function healthRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  const { registry, topology, pool } = ctx;
  const owner = subscriptionOwner(registry);

  app.get(
    '/v1/subscriptions/:id/health',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary:
          'How the subscription is doing: state, backlog and dead letters (the broker), breaker, success rate, latency',
        params: ID_PARAM,
        querystring: WINDOW_QUERY,
        response: replies({ 200: HEALTH }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      const window = (req.query.window ?? '1h') as WindowName;
      const from = new Date(Date.now() - WINDOWS[window].seconds * 1000);
      const q = topology.subscriptionQueue(row.application, row.name);
      const dq = topology.deadQueue(row.application, row.name);
      const [figures, depths, breaker] = await Promise.all([
        subscriptionHealthFigures(pool, row.id, from),
        queueDepths(ctx.broker, [q, dq], 3000),
        breakerOf(ctx, row),
      ]);
      const open = breaker && (breaker.state === 'open' || breaker.state === 'half_open');
      return {
        subscription: row.id,
        application: row.application,
        name: row.name,
        window,
        state: row.disabled_reason ? 'disabled' : row.paused ? 'paused' : open ? 'circuit_open' : 'active',
        disabled_reason: row.disabled_reason,
        backlog: depths.get(q)?.messages ?? null,
        consumers: depths.get(q)?.consumers ?? null,
        retrying: figures.retrying,
        dead: depths.get(dq)?.messages ?? null,
        breaker: breaker ?? { state: 'none', failures: 0, next_probe_at: null },
        attempts: figures.attempts,
        success_rate: figures.attempts ? figures.successes / figures.attempts : null,
        latency_ms: { p50: figures.p50_ms, p99: figures.p99_ms },
        last_success_at: figures.last_success_at?.toISOString() ?? null,
        last_failure_at: figures.last_failure_at?.toISOString() ?? null,
        last_error: figures.last_error,
      } as const;
    },
  );

  app.get(
    '/v1/subscriptions/:id/stats',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary:
          'Attempts, successes, failures, p50/p99 latency and backlog in time buckets (5m: 10 s, 1h: 1 min, 24h: 30 min)',
        params: ID_PARAM,
        querystring: WINDOW_QUERY,
        response: replies({ 200: STATS }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      const window = (req.query.window ?? '1h') as WindowName;
      const w = WINDOWS[window];
      const buckets = await subscriptionStats(pool, row.id, new Date(Date.now() - w.seconds * 1000), w.bucket);
      return {
        subscription: row.id,
        window,
        bucket_seconds: w.bucket,
        buckets: buckets.map((b) => ({ ...b, at: b.at.toISOString() })),
      };
    },
  );

  app.get(
    '/v1/subscriptions/:id/pending',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary:
          'Events waiting for the subscription, oldest first, from the event log (its queue is not touched: no redelivery counts)',
        params: ID_PARAM,
        querystring: {
          type: 'object',
          properties: { limit: { ...LIMIT, default: 20 } },
          additionalProperties: false,
        },
        response: replies({ 200: PENDING }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      if (row.transport === 'amqp')
        throw new AmeboError(
          'CONFLICT',
          `${row.application}/${row.name} is consumed natively over AMQP: its consumer settles events and Amebo keeps no delivery records (see its backlog in /health)`,
        );
      const matches = topicMatcher(row.action);
      const actions = (await registry.listActions({}))
        .filter((a) => matches(a.name))
        .filter((a) => !a.subscribers || a.application === row.application || a.subscribers.includes(row.application))
        .map((a) => a.name);
      const rows = await pendingForSubscription(pool, row.id, actions, row.created_at, req.query.limit ?? 20);
      return {
        subscription: row.id,
        items: rows.map((e) => ({
          id: e.id,
          action: e.action,
          created_at: e.created_at.toISOString(),
          payload: e.payload,
          state: e.state === 'retrying' ? ('retrying' as const) : ('pending' as const),
          attempts: e.attempts,
          next_attempt_at: e.next_attempt_at?.toISOString() ?? null,
        })),
      };
    },
  );
}
