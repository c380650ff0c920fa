import type { FastifyInstance } from 'fastify';
import { AmeboError } from '../errors.js';
import type { Topology } from '../broker/topology.js';
import type { SubscriptionRow } from '../store/registry.js';
import { redactUrl } from '../log.js';
import { BINDING_PATTERN_RULES } from '../delivery/topic.js';
import { bodyString } from './auth.js';
import { subscriptionById, subscriptionOwner } from './owned.js';
import { ID_PARAM, NO_CONTENT, replies, SubscriptionSchema, typed } from './schemas.js';
import type { ApiContext } from './server.js';

const settingsProps = {
  handler: { type: 'string', maxLength: 2048 },
  max_attempts: { type: 'integer', minimum: 1, maximum: 1000 },
  max_age: { type: 'integer', minimum: 1, maximum: 90 * 86400 },
  retry_schedule: {
    type: 'array',
    minItems: 1,
    maxItems: 50,
    items: { type: 'number', exclusiveMinimum: 0, maximum: 604800 },
  },
  timeout_ms: { type: 'integer', minimum: 100, maximum: 120_000 },
  format: { enum: ['amebo', 'cloudevents'] },
  encryption_key: { type: ['string', 'null'], maxLength: 64 },
  rate_limit: { type: ['integer', 'null'], minimum: 1, maximum: 100_000 },
  description: { type: ['string', 'null'], maxLength: 4096 },
} as const;

export function subscriptionView(topology: Topology, r: SubscriptionRow) {
  return {
    id: r.id,
    application: r.application,
    subscription: r.name,
    action: r.action,
    transport: r.transport,
    handler: r.handler === null ? null : redactUrl(r.handler),
    queue: topology.subscriptionQueue(r.application, r.name),
    dead_letter_queue: topology.deadQueue(r.application, r.name),
    max_attempts: r.max_attempts,
    max_age: r.max_age,
    retry_schedule: r.retry_schedule,
    timeout_ms: r.timeout_ms,
    format: r.format,
    encrypted: r.encryption_key !== null,
    ordered: r.ordered,
    rate_limit: r.rate_limit,
    description: r.description,
    paused: r.paused,
    disabled_reason: r.disabled_reason,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

const gone = (id: string) => new AmeboError('SUBSCRIPTION_NOT_FOUND', `no subscription "${id}"`);

export async function subscriptionRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  const { registry, topology } = ctx;
  const view = (r: SubscriptionRow) => subscriptionView(topology, r);
  const owner = subscriptionOwner(registry);

  app.post(
    '/v1/subscriptions',
    {
      config: { auth: { bodySecret: true, owner: (req) => bodyString(req, 'application', 'microservice') } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Subscribe an application to an action or topic pattern; the signing secret is shown only here',
        body: {
          type: 'object',
          properties: {
            application: { type: 'string', maxLength: 63 },
            microservice: { type: 'string', maxLength: 63 },
            subscription: { type: 'string', maxLength: 63 },
            action: { type: 'string', maxLength: 255, description: BINDING_PATTERN_RULES },
            transport: { enum: ['http', 'amqp'] },
            ordered: { type: 'boolean' },
            secret: { type: 'string', maxLength: 512 },
            ...settingsProps,
          },
          required: ['subscription', 'action'],
          anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
        },
        response: replies({
          201: subscriptionWith({
            queue_declared: {
              type: 'boolean',
              description: 'false when RabbitMQ was away: the queues are declared when it is back',
            },
          }),
        }),
      },
    },
    async (req, reply) => {
      const { microservice, secret: _secret, encryption_key, rate_limit, description, retry_schedule, ...b } = req.body;
      const application = b.application ?? microservice;
      if (application === undefined)
        throw new AmeboError('VALIDATION', 'application is required', [{ instancePath: '/application' }]);
      const { row, signingSecret, queueDeclared } = await registry.subscribe({
        ...b,
        application,
        ...(retry_schedule ? { retry_schedule: [...retry_schedule] } : {}),
        ...(encryption_key ? { encryption_key } : {}),
        ...(rate_limit !== undefined && rate_limit !== null ? { rate_limit } : {}),
        ...(description !== undefined && description !== null ? { description } : {}),
      });
      return reply.status(201).send({ ...view(row), signing_secret: signingSecret, queue_declared: queueDeclared });
    },
  );

  app.get(
    '/v1/subscriptions',
    {
      schema: {
        tags: ['subscriptions'],
        querystring: {
          type: 'object',
          properties: { application: { type: 'string', maxLength: 63 }, action: { type: 'string', maxLength: 255 } },
        },
        response: replies({
          200: {
            type: 'object',
            properties: { items: { type: 'array', items: { $ref: 'Subscription#' } } },
            required: ['items'],
          },
        }),
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query;
      if (who.kind === 'app' && q.application && q.application !== who.name)
        throw new AmeboError('FORBIDDEN', 'applications list their own subscriptions');
      const rows = await registry.listSubscriptions({
        ...q,
        application: who.kind === 'app' ? who.name : q.application,
      });
      return { items: rows.map(view) };
    },
  );

  app.get(
    '/v1/subscriptions/:id',
    {
      config: { auth: { owner } },
      schema: { tags: ['subscriptions'], params: ID_PARAM, response: replies({ 200: { $ref: 'Subscription#' } }) },
    },
    async (req) => view(await subscriptionById(registry, req.params.id)),
  );

  app.patch(
    '/v1/subscriptions/:id',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary:
          'Change the handler, the delivery settings or the action (topic pattern: the queue is bound to the new one before the old is unbound). ordered is set at creation only',
        params: ID_PARAM,
        body: {
          type: 'object',
          properties: {
            ...settingsProps,
            action: {
              type: 'string',
              maxLength: 255,
              description: `${BINDING_PATTERN_RULES}, that the application may receive`,
            },
            ordered: { type: 'boolean', description: 'refused: set at creation only' },
          },
          additionalProperties: false,
        },
        response: replies({ 200: { $ref: 'Subscription#' } }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      const { retry_schedule, ordered, ...b } = req.body;
      if (ordered !== undefined && ordered !== row.ordered)
        throw new AmeboError(
          'VALIDATION',
          'ordered is set at creation only: it is a queue argument (single active consumer) RabbitMQ cannot change on an existing queue; create a new subscription with the ordering you need',
          [{ instancePath: '/ordered', message: 'create-only' }],
        );
      const updated = await registry.updateSubscription(row, {
        ...b,
        ...(retry_schedule ? { retry_schedule: [...retry_schedule] } : {}),
      });
      if (!updated) throw gone(row.id);
      return view(updated);
    },
  );

  app.delete(
    '/v1/subscriptions/:id',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Delete a subscription and its queues',
        params: ID_PARAM,
        response: replies({ 204: NO_CONTENT }),
      },
    },
    async (req, reply) => {
      const row = await subscriptionById(registry, req.params.id);
      if (!(await registry.deleteSubscription(row.id))) throw gone(row.id);
      return reply.status(204).send(null);
    },
  );

  for (const [verb, paused] of [
    ['pause', true],
    ['resume', false],
  ] as const) {
    app.post(
      `/v1/subscriptions/:id/${verb}`,
      {
        config: { auth: { owner } },
        schema: {
          tags: ['subscriptions'],
          summary: paused
            ? 'Stop deliveries (events wait in the queue)'
            : 'Resume deliveries (clears a disabled reason)',
          params: ID_PARAM,
          response: replies({ 200: { $ref: 'Subscription#' } }),
        },
      },
      async (req) => {
        const row = await subscriptionById(registry, req.params.id);
        const updated = await registry.setPaused(row.id, paused);
        if (!updated) throw gone(row.id);
        return view(updated);
      },
    );
  }

  app.post(
    '/v1/subscriptions/:id/rotate-secret',
    {
      config: { auth: { owner } },
      schema: {
        tags: ['subscriptions'],
        summary: 'A new signing secret; the previous ones keep signing for 24 h (both signatures are sent)',
        params: ID_PARAM,
        response: replies({
          200: subscriptionWith({
            previous_valid_until: {
              type: ['string', 'null'],
              description: 'until when the previous secrets still sign (null: there were none)',
            },
          }),
        }),
      },
    },
    async (req) => {
      const row = await subscriptionById(registry, req.params.id);
      const r = await registry.rotateSigningSecret(row);
      if (!r) throw gone(row.id);
      return { ...view(r.row), signing_secret: r.secret, previous_valid_until: r.previousValidUntil };
    },
  );
} /** A subscription with its signing secret (shown only on create and rotate) and `extra` fields. */
function subscriptionWith<const E extends Record<string, object>>(extra: E) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...SubscriptionSchema.properties,
      signing_secret: { type: 'string', description: 'shown only here' },
      ...extra,
    },
    required: [...SubscriptionSchema.required, 'signing_secret', ...(Object.keys(extra) as (keyof E & string)[])],
  } as const;
}
