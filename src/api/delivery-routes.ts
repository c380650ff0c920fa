import type { FastifyInstance } from 'fastify';
import { IllegalOperationError } from 'amqplib';
import { listAttempts, listDeliveries, type DeliveryView } from '../store/deliveries.js';
import { listDeadLetters, replay, resurrect, retryOne, type RecoveryDeps } from '../operations/recovery.js';
import type { SubscriptionRow } from '../store/registry.js';
import { AmeboError } from '../errors.js';
import { BrokerUnavailableError } from '../broker/connection.js';
import { isUuid } from '../ids.js';
import { parseTime } from './event-routes.js';
import { subscriptionById, subscriptionOwner } from './owned.js';
import { decodeCursor, page } from './paging.js';
import { CURSOR, ID_PARAM, LIMIT, PAIR_PARAM, pageOf, record, replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';
import { deliveryView } from './views.js';

/** Deliveries page by (updated_at, event, subscription), newest change first. */
const deliveryCursor = (parts: string[]) => {
  const [updatedAt, event, subscription] = parts;
  if (parts.length !== 3 || !updatedAt || Number.isNaN(Date.parse(updatedAt))) return undefined;
  if (!event || !isUuid(event) || !subscription || !isUuid(subscription)) return undefined;
  return { updatedAt, event, subscription };
};

const view = (d: DeliveryView) => ({ event: d.event, ...deliveryView(d) });

/** What the operator functions of src/operations/recovery.ts need, from the API's context. */
export function recoveryDeps(ctx: ApiContext): RecoveryDeps {
  const { registry } = ctx;
  return {
    pool: ctx.pool,
    log: ctx.log,
    broker: ctx.broker,
    publisher: ctx.publisher,
    topology: ctx.topology,
    mayReceive: (application, action) => registry.mayReceive(application, action),
  };
}

/**
 * Deliveries (api.md "Deliveries") and the subscription recovery routes: test, replay, dead letters.
 * Admin may do everything; an application sees and manages its own subscriptions' deliveries.
 */
export interface DeliveryRouteDeps {
  /** Sends a synthetic event to an http subscription now (bridge/test-send.ts, given by the composer). */
  testSend: (row: SubscriptionRow) => Promise<TestSendResult>;
}

export interface TestSendResult {
  event: string;
  status: number | null;
  latencyMs: number;
  errorClass: string | null;
  error: string | null;
  excerpt: string | null;
}

export async function deliveryRoutes(
  scope: FastifyInstance,
  ctx: ApiContext,
  { testSend }: DeliveryRouteDeps,
): Promise<void> {
  const app = typed(scope);
  const { pool, registry } = ctx;
  const deps = recoveryDeps(ctx);

  /** Broker operations while RabbitMQ is away are a 503 with the contract's code, not a 500. */
  const onBroker = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      // A channel or connection lost under the operation (amqplib refuses further operations).
      if (err instanceof BrokerUnavailableError || err instanceof IllegalOperationError || !ctx.broker.connected)
        throw new AmeboError('UNAVAILABLE', 'RabbitMQ is not connected; try again shortly');
      throw err;
    }
  };

  /** Subscription routes act for the subscription's application. */
  const owner = subscriptionOwner(registry);
  const pairOwner = subscriptionOwner(registry, 'subscription');

  /** The delivery's subscription (the auth rule checked the caller may see it), and its event. */
  async function pair(params: { event: string; subscription: string }) {
    const row = await subscriptionById(registry, params.subscription);
    if (!isUuid(params.event)) throw new AmeboError('EVENT_NOT_FOUND', `no event "${params.event}"`);
    return { event: params.event, row };
  }

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
            limit: LIMIT,
            cursor: CURSOR,
          },
        },
        response: replies({ 200: pageOf('Delivery#') }),
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query;
      const cursor = decodeCursor(q.cursor, deliveryCursor);
      const rows = await listDeliveries(pool, {
        ...(q.subscription ? { subscription: q.subscription } : {}),
        ...(q.event ? { event: q.event } : {}),
        ...(q.state ? { state: q.state } : {}),
        ...(who.kind === 'app' ? { application: who.name } : {}),
        ...(cursor ? { cursor } : {}),
        limit: q.limit,
      });
      return page(rows, q.limit, view, (d) => [d.updated_at.toISOString(), d.event, d.subscription]);
    },
  );

  app.get(
    '/v1/deliveries/:event/:subscription/attempts',
    {
      config: { auth: { owner: pairOwner } },
      schema: {
        tags: ['deliveries'],
        summary: 'The attempt log of one delivery',
        params: PAIR_PARAM,
        response: replies({
          200: record({
            event: { type: 'string' },
            subscription: { type: 'string' },
            items: { type: 'array', items: { $ref: 'Attempt#' } },
          }),
        }),
      },
    },
    async (req) => {
      const { event, row } = await pair(req.params);
      return { event, subscription: row.id, items: await listAttempts(pool, event, row.id) };
    },
  );

  app.post(
    '/v1/deliveries/:event/:subscription/retry',
    {
      config: { auth: { owner: pairOwner } },
      schema: {
        tags: ['deliveries'],
        summary: 'Resend one stored event to one subscription now',
        params: PAIR_PARAM,
        response: replies({
          202: record({
            event: { type: 'string' },
            subscription: { type: 'string' },
            state: { const: 'pending' },
            attempt: { type: 'integer' },
          }),
        }),
      },
    },
    async (req, reply) => {
      const { event, row } = await pair(req.params);
      const r = await onBroker(() => retryOne(deps, row, event));
      if (!r) throw new AmeboError('EVENT_NOT_FOUND', `no event "${event}"`);
      return reply.status(202).send({ event, subscription: row.id, state: 'pending', attempt: r.attempt });
    },
  );

  app.post(
    '/v1/subscriptions/:id/test',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Send a synthetic event to the handler now',
        params: ID_PARAM,
        response: replies({
          200: record({
            event: { type: 'string' },
            delivered: { type: 'boolean' },
            status: { type: ['integer', 'null'] },
            latency_ms: { type: 'integer' },
            error_class: { type: ['string', 'null'] },
            error: { type: ['string', 'null'] },
            response_excerpt: { type: ['string', 'null'] },
          }),
        }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      if (row.transport !== 'http' || !row.handler)
        throw new AmeboError('VALIDATION', 'only http subscriptions can be tested');
      const a = await testSend(row);
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
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Re-enqueue the stored events of a time range for this subscription',
        params: ID_PARAM,
        body: {
          type: 'object',
          properties: { from: { type: 'string', maxLength: 64 }, to: { type: 'string', maxLength: 64 } },
          required: ['from'],
        },
        response: replies({
          202: record({
            subscription: { type: 'string' },
            count: { type: 'integer' },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
          }),
        }),
      },
    },
    async (req, reply) => {
      const row = await subscriptionById(registry, req.params.id);
      const from = parseTime(req.body.from, '/from');
      if (!from) throw new AmeboError('VALIDATION', 'from is required', [{ instancePath: '/from' }]);
      const to = parseTime(req.body.to, '/to') ?? new Date();
      if (to <= from) throw new AmeboError('VALIDATION', 'to must be after from', [{ instancePath: '/to' }]);
      const r = await onBroker(() => replay(deps, row, from, to));
      return reply.status(202).send({ subscription: row.id, count: r.replayed, from, to });
    },
  );

  app.get(
    '/v1/subscriptions/:id/dead-letters',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Dead letters of this subscription (not removed)',
        params: ID_PARAM,
        querystring: { type: 'object', properties: { limit: LIMIT } },
        response: replies({
          200: record({
            subscription: { type: 'string' },
            count: { type: 'integer', description: 'dead letters in the queue (all of them, not only listed)' },
            items: { type: 'array', items: { $ref: 'DeadLetter#' } },
          }),
        }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      return { subscription: row.id, ...(await onBroker(() => listDeadLetters(deps, row, req.query.limit))) };
    },
  );

  app.post(
    '/v1/subscriptions/:id/dead-letters/resurrect',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary:
          'Move dead letters back to the subscription queue, attempts reset; with since, only those that died at or after it (the others stay in the dead queue, in order)',
        params: ID_PARAM,
        body: {
          type: ['object', 'null'],
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 100_000 },
            since: {
              type: 'string',
              maxLength: 64,
              description:
                'RFC 3339 time: resurrect only dead letters that died at or after it (those without a dead-at time count as older)',
            },
          },
        },
        response: replies({
          200: record({
            subscription: { type: 'string' },
            resurrected: { type: 'integer' },
            skipped: { type: 'integer', description: 'dead letters this subscription may no longer receive' },
            older: {
              type: 'integer',
              description: 'dead letters left in the dead queue because they died before since',
            },
          }),
        }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      const limit = req.body?.limit ?? 1000;
      const since = parseTime(req.body?.since, '/since');
      return { subscription: row.id, ...(await onBroker(() => resurrect(deps, row, limit, since))) };
    },
  );
}
