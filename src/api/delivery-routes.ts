import type { FastifyInstance, FastifyRequest } from 'fastify';
import { listAttempts, listDeliveries } from '../store/deliveries.js';
import { closeTestSender, listDeadLetters, replay, resurrect, retryOne, sendTest } from '../../bridge/recovery.js';
import { AmeboError } from '../errors.js';
import { BrokerUnavailableError } from '../broker/connection.js';
import { isUuid } from '../ids.js';
import { getSubscription, type SubscriptionRow } from '../store/registry.js';
import { parseTime } from './event-routes.js';
import type { ApiContext } from './server.js';

const idParam = { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } as const;
const pairParam = {
  type: 'object',
  properties: { event: { type: 'string', maxLength: 64 }, subscription: { type: 'string', maxLength: 64 } },
  required: ['event', 'subscription'],
} as const;

function encodeCursor(d: { updated_at: Date; event: string; subscription: string }): string {
  return Buffer.from(`${d.updated_at.toISOString()}|${d.event}|${d.subscription}`).toString('base64url');
}
function decodeCursor(c: string | undefined) {
  if (!c) return undefined;
  const [updatedAt, event, subscription] = Buffer.from(c, 'base64url').toString().split('|');
  if (!updatedAt || !isUuid(event ?? '') || !isUuid(subscription ?? '') || Number.isNaN(Date.parse(updatedAt)))
    throw new AmeboError('VALIDATION', 'cursor is not one this API returned', [{ instancePath: '/cursor' }]);
  return { updatedAt, event: event!, subscription: subscription! };
}

/**
 * Deliveries (api.md "Deliveries") and the subscription recovery routes: test, replay, dead letters.
 * Admin may do everything; an application sees and manages its own subscriptions' deliveries.
 */
export async function deliveryRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { pool } = ctx;
  app.addHook('onClose', async () => closeTestSender());

  /** Broker operations while RabbitMQ is away are a 503 with the contract's code, not a 500. */
  const onBroker = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof BrokerUnavailableError || /Channel closed|Connection closed/.test((err as Error).message))
        throw new AmeboError('UNAVAILABLE', 'RabbitMQ is not connected; try again shortly');
      throw err;
    }
  };

  const owned = async (req: FastifyRequest): Promise<SubscriptionRow> => {
    if (!ctx.ownedSubscription) throw new AmeboError('INTERNAL', 'subscription routes are not mounted');
    return (await ctx.ownedSubscription(req)).row;
  };

  /** The delivery's subscription, checked against the caller. */
  async function ownedPair(req: FastifyRequest): Promise<{ event: string; row: SubscriptionRow }> {
    const { event, subscription } = req.params as { event: string; subscription: string };
    const row = isUuid(subscription) ? await getSubscription(pool, subscription) : null;
    const who = req.principal;
    if (!row) throw new AmeboError('SUBSCRIPTION_NOT_FOUND', `no subscription "${subscription}"`);
    if (who.kind === 'app' && who.name !== row.application) throw new AmeboError('FORBIDDEN', 'not your subscription');
    if (!isUuid(event)) throw new AmeboError('EVENT_NOT_FOUND', `no event "${event}"`);
    return { event, row };
  }

  const view = (d: Awaited<ReturnType<typeof listDeliveries>>[number]) => ({
    event: d.event,
    subscription: d.subscription,
    application: d.application,
    subscription_name: d.subscription_name,
    state: d.state,
    attempts: d.attempts,
    last_status: d.last_status,
    last_error: d.last_error,
    next_attempt_at: d.next_attempt_at,
    updated_at: d.updated_at,
  });

  app.get(
    '/v1/deliveries',
    {
      schema: {
        tags: ['deliveries'],
        summary: 'Delivery states (one per event and subscription), newest change first',
        querystring: {
          type: 'object',
          properties: {
            subscription: { type: 'string', format: 'uuid' },
            event: { type: 'string', format: 'uuid' },
            state: { enum: ['pending', 'delivered', 'retrying', 'dead'] },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', maxLength: 200 },
          },
        },
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query as { subscription?: string; event?: string; state?: string; limit: number; cursor?: string };
      const rows = await listDeliveries(pool, {
        ...(q.subscription ? { subscription: q.subscription } : {}),
        ...(q.event ? { event: q.event } : {}),
        ...(q.state ? { state: q.state } : {}),
        ...(who.kind === 'app' ? { application: who.name } : {}),
        ...(q.cursor ? { cursor: decodeCursor(q.cursor)! } : {}),
        limit: q.limit,
      });
      const last = rows[rows.length - 1];
      return { items: rows.map(view), next_cursor: rows.length === q.limit && last ? encodeCursor(last) : null };
    },
  );

  app.get(
    '/v1/deliveries/:event/:subscription/attempts',
    { schema: { tags: ['deliveries'], summary: 'The attempt log of one delivery', params: pairParam } },
    async (req) => {
      const { event, row } = await ownedPair(req);
      const items = await listAttempts(pool, event, row.id);
      return { event, subscription: row.id, items };
    },
  );

  app.post(
    '/v1/deliveries/:event/:subscription/retry',
    { schema: { tags: ['deliveries'], summary: 'Resend one stored event to one subscription now', params: pairParam } },
    async (req, reply) => {
      const { event, row } = await ownedPair(req);
      const r = await onBroker(() => retryOne(ctx, row, event));
      if (!r) throw new AmeboError('EVENT_NOT_FOUND', `no event "${event}"`);
      return reply.status(202).send({ event, subscription: row.id, state: 'pending', attempt: r.attempt });
    },
  );

  app.post(
    '/v1/subscriptions/:id/test',
    { schema: { tags: ['subscriptions'], summary: 'Send a synthetic event to the handler now', params: idParam } },
    async (req) => {
      const row = await owned(req);
      if (row.transport !== 'http' || !row.handler)
        throw new AmeboError('VALIDATION', 'only http subscriptions can be tested');
      const a = await sendTest(ctx, row);
      return {
        event: a.event,
        delivered: a.status !== null && a.status >= 200 && a.status < 300,
        status: a.status,
        latency_ms: Math.round(a.latencyMs),
        error_class: a.errorClass,
        error: a.error,
        response_excerpt: a.excerpt,
      };
    },
  );

  app.post(
    '/v1/subscriptions/:id/replay',
    {
      schema: {
        tags: ['subscriptions'],
        summary: 'Re-enqueue the stored events of a time range for this subscription',
        params: idParam,
        body: {
          type: 'object',
          properties: { from: { type: 'string', maxLength: 64 }, to: { type: 'string', maxLength: 64 } },
          required: ['from'],
        },
      },
    },
    async (req, reply) => {
      const row = await owned(req);
      const b = req.body as { from: string; to?: string };
      const from = parseTime(b.from, '/from')!;
      const to = parseTime(b.to, '/to') ?? new Date();
      if (to <= from) throw new AmeboError('VALIDATION', 'to must be after from', [{ instancePath: '/to' }]);
      const r = await onBroker(() => replay(ctx, row, from, to));
      return reply.status(202).send({ subscription: row.id, count: r.replayed, from, to });
    },
  );

  app.get(
    '/v1/subscriptions/:id/dead-letters',
    {
      schema: {
        tags: ['subscriptions'],
        summary: 'Dead letters of this subscription (not removed)',
        params: idParam,
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
      },
    },
    async (req) => {
      const row = await owned(req);
      const { limit } = req.query as { limit: number };
      return { subscription: row.id, ...(await onBroker(() => listDeadLetters(ctx, row, limit))) };
    },
  );

  app.post(
    '/v1/subscriptions/:id/dead-letters/resurrect',
    {
      schema: {
        tags: ['subscriptions'],
        summary: 'Move dead letters back to the subscription queue, attempts reset',
        params: idParam,
        body: {
          type: ['object', 'null'],
          properties: { limit: { type: 'integer', minimum: 1, maximum: 100_000 } },
        },
      },
    },
    async (req) => {
      const row = await owned(req);
      const limit = (req.body as { limit?: number } | null)?.limit ?? 1000;
      return { subscription: row.id, ...(await onBroker(() => resurrect(ctx, row, limit))) };
    },
  );
}
