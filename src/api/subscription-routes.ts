import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { isUuid } from '../ids.js';
import { newSigningSecret } from '../secrets.js';
import * as sql from '../store/registry.js';
import type { SubscriptionRow } from '../store/registry.js';
import type { Principal } from './auth.js';
import { redactUrl } from '../log.js';
import type { ApiContext } from './server.js';

/** Grace period during which a rotated-out signing secret still signs (both signatures are sent). */
export const ROTATION_GRACE_MS = 24 * 3600_000;

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

export function subscriptionView(ctx: ApiContext, r: SubscriptionRow) {
  return {
    id: r.id,
    application: r.application,
    subscription: r.name,
    action: r.action,
    transport: r.transport,
    handler: r.handler === null ? null : redactUrl(r.handler),
    queue: ctx.topology.subscriptionQueue(r.application, r.name),
    dead_letter_queue: ctx.topology.deadQueue(r.application, r.name),
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

/** Tells bridge workers (all processes) that a subscription changed. */
export async function announce(ctx: ApiContext, id: string): Promise<void> {
  await ctx.redis.publish(ctx.cfg.redis.subscriptionsChannel, id).catch(() => undefined);
}

const idParam = { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] } as const;

export async function subscriptionRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { registry, auth, pool } = ctx;

  /** Loads the subscription and checks the caller may manage it (admin or its application). */
  async function owned(req: FastifyRequest): Promise<{ row: SubscriptionRow; who: Principal }> {
    const { id } = req.params as { id: string };
    const row = isUuid(id) ? await sql.getSubscription(pool, id) : null;
    if (!row) throw new AmeboError('SUBSCRIPTION_NOT_FOUND', `no subscription "${id}"`);
    const who = req.principal;
    if (who.kind === 'app' && who.name !== row.application) throw new AmeboError('FORBIDDEN', 'not your subscription');
    return { row, who };
  }
  ctx.ownedSubscription = owned;

  app.post(
    '/v1/subscriptions',
    {
      config: { auth: { bodySecret: true } },
      schema: {
        tags: ['subscriptions'],
        summary: 'Subscribe an application to an action or topic pattern; the signing secret is shown only here',
        body: {
          type: 'object',
          properties: {
            application: { type: 'string', maxLength: 63 },
            microservice: { type: 'string', maxLength: 63 },
            subscription: { type: 'string', maxLength: 63 },
            action: { type: 'string', maxLength: 255 },
            transport: { enum: ['http', 'amqp'] },
            ordered: { type: 'boolean' },
            secret: { type: 'string', maxLength: 512 },
            ...settingsProps,
          },
          required: ['subscription', 'action'],
          anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
        },
      },
    },
    async (req, reply) => {
      const b = req.body as Record<string, any>;
      const application = (b.application ?? b.microservice) as string;
      auth.actsFor(req.principal, application);
      const { row, signingSecret } = await registry.createSubscription({ ...b, application } as never);
      const declared = await registry.declareQueues(row);
      await announce(ctx, row.id);
      return reply
        .status(201)
        .send({ ...subscriptionView(ctx, row), signing_secret: signingSecret, queue_declared: declared });
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
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query as { application?: string; action?: string };
      if (who.kind === 'app' && q.application && q.application !== who.name)
        throw new AmeboError('FORBIDDEN', 'applications list their own subscriptions');
      const rows = await sql.listSubscriptions(pool, {
        ...q,
        application: who.kind === 'app' ? who.name : q.application,
      });
      return { items: rows.map((r) => subscriptionView(ctx, r)) };
    },
  );

  app.get('/v1/subscriptions/:id', { schema: { tags: ['subscriptions'], params: idParam } }, async (req) => {
    return subscriptionView(ctx, (await owned(req)).row);
  });

  app.patch(
    '/v1/subscriptions/:id',
    {
      schema: {
        tags: ['subscriptions'],
        params: idParam,
        body: { type: 'object', properties: settingsProps, additionalProperties: false },
      },
    },
    async (req) => {
      const { row } = await owned(req);
      const b = req.body as Record<string, any>;
      const patch: sql.SubscriptionPatch = {};
      if (b.handler !== undefined) {
        if (row.transport !== 'http') throw new AmeboError('VALIDATION', 'amqp subscriptions have no handler');
        const { resolveHandler } = await import('../registry.js');
        patch.handler = resolveHandler(b.handler, (await registry.requireApplication(row.application)).address);
        await registry.checkTarget(patch.handler);
      }
      const merged = registry.settings({
        max_attempts: b.max_attempts ?? row.max_attempts,
        max_age: b.max_age ?? row.max_age,
        retry_schedule: b.retry_schedule ?? row.retry_schedule,
        timeout_ms: b.timeout_ms ?? row.timeout_ms,
        format: b.format ?? row.format,
        rate_limit: b.rate_limit === undefined ? (row.rate_limit ?? undefined) : b.rate_limit,
        description: b.description === undefined ? (row.description ?? undefined) : b.description,
        encryption_key: b.encryption_key ?? undefined,
      });
      Object.assign(patch, merged);
      if (b.encryption_key === undefined) delete patch.encryption_key;
      if (b.encryption_key === null) patch.encryption_key = null;
      const updated = (await sql.updateSubscription(pool, row.id, patch))!;
      await registry.declareQueues(updated); // a new retry step needs its queue
      await announce(ctx, row.id);
      return subscriptionView(ctx, updated);
    },
  );

  app.delete('/v1/subscriptions/:id', { schema: { tags: ['subscriptions'], params: idParam } }, async (req, reply) => {
    const { row } = await owned(req);
    await sql.deleteSubscription(pool, row.id);
    await registry.removeQueues(row.application, row.name);
    await announce(ctx, row.id);
    return reply.status(204).send();
  });

  for (const [verb, paused] of [
    ['pause', true],
    ['resume', false],
  ] as const) {
    app.post(`/v1/subscriptions/:id/${verb}`, { schema: { tags: ['subscriptions'], params: idParam } }, async (req) => {
      const { row } = await owned(req);
      const updated = (await sql.updateSubscription(
        pool,
        row.id,
        paused ? { paused } : { paused, disabled_reason: null },
      ))!;
      await announce(ctx, row.id);
      return subscriptionView(ctx, updated);
    });
  }

  app.post(
    '/v1/subscriptions/:id/rotate-secret',
    { schema: { tags: ['subscriptions'], params: idParam } },
    async (req) => {
      const { row } = await owned(req);
      const secret = newSigningSecret();
      const graceUntil = new Date(Date.now() + ROTATION_GRACE_MS).toISOString();
      const now = Date.now();
      const kept = row.signing_secrets
        .filter((s) => s.expires_at === null || Date.parse(s.expires_at) > now)
        .map((s) => ({ sealed: s.sealed, expires_at: s.expires_at ?? graceUntil }));
      const updated = (await sql.updateSubscription(pool, row.id, {
        signing_secrets: [...kept, { sealed: registry.box.seal(secret), expires_at: null }],
      }))!;
      await announce(ctx, row.id);
      return {
        ...subscriptionView(ctx, updated),
        signing_secret: secret,
        previous_valid_until: kept.length ? graceUntil : null,
      };
    },
  );
}
