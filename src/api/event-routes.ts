import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { isUuid } from '../ids.js';
import { depth, violations } from '../schema.js';
import type { PublishRequest } from '../publish.js';
import { NAME } from '../registry.js';
import { deliveriesOfEvent, getEvent, listEvents, type EventRow } from '../store/events.js';
import type { Principal } from './auth.js';
import type { ApiContext } from './server.js';

const eventItem = {
  type: 'object',
  properties: {
    action: { type: 'string', maxLength: 255 },
    event: { type: 'string', maxLength: 255, description: 'seed 000 alias of action' },
    payload: {},
    deduper: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
    deliver_at: { type: ['string', 'null'], maxLength: 64 },
    conversation_id: { type: 'string', maxLength: 255 },
    application: { type: 'string', maxLength: 63 },
    microservice: { type: 'string', maxLength: 63 },
    secret: { type: 'string', maxLength: 512 },
  },
  anyOf: [{ required: ['action'] }, { required: ['event'] }],
} as const;

export const eventView = (e: EventRow) => ({
  event: e.id,
  id: e.id,
  action: e.action,
  application: e.application,
  payload: e.payload,
  deduper: e.deduper,
  conversation_id: e.conversation_id,
  schema_version: e.schema_version,
  deliver_at: e.deliver_at,
  created_at: e.created_at,
  published: e.published,
});

export const encodeCursor = (id: string): string => Buffer.from(id).toString('base64url');
export function decodeCursor(c: string | undefined): string | undefined {
  if (!c) return undefined;
  const id = Buffer.from(c, 'base64url').toString();
  if (!isUuid(id))
    throw new AmeboError('VALIDATION', 'cursor is not one this API returned', [
      { instancePath: '/cursor', message: 'invalid cursor' },
    ]);
  return id;
}

export function parseTime(s: string | undefined | null, pointer: string): Date | undefined {
  if (s === undefined || s === null || s === '') return undefined;
  const ok = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i.test(s);
  const d = new Date(s);
  if (!ok || Number.isNaN(d.getTime()))
    throw new AmeboError('VALIDATION', `${pointer.slice(1)} must be an RFC 3339 time`, [
      { instancePath: pointer, message: 'not an RFC 3339 time' },
    ]);
  return d;
}

export async function eventRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { registry, pipeline, cfg, pool } = ctx;

  /** Checks one event against its action; throws the 4xx it deserves. */
  async function prepare(item: Record<string, unknown>, who: Principal, pointer = ''): Promise<PublishRequest> {
    const name = (item.action ?? item.event) as string;
    const action = NAME.action.test(name) && name.length <= 255 ? await registry.getAction(name) : null;
    if (!action)
      throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`, [{ instancePath: `${pointer}/action` }]);
    if (who.kind === 'app' && action.row.application !== who.name)
      throw new AmeboError('FORBIDDEN', `action "${name}" belongs to "${action.row.application}", not "${who.name}"`);
    const payload = item.payload === undefined ? {} : item.payload;
    if (depth(payload, cfg.maxPayloadDepth) > cfg.maxPayloadDepth)
      throw new AmeboError('PAYLOAD_TOO_DEEP', `payload is nested deeper than ${cfg.maxPayloadDepth} levels`);
    if (!action.validate(payload))
      throw new AmeboError(
        'PAYLOAD_INVALID',
        `payload does not match the schema of "${name}" (version ${action.row.version})`,
        violations(action.validate.errors ?? []).map((v) => ({
          ...v,
          instancePath: `${pointer}/payload${v.instancePath}`,
        })),
      );
    for (const k of ['deduper', 'conversation_id'] as const)
      if (typeof item[k] === 'string' && item[k].includes('\u0000'))
        throw new AmeboError('VALIDATION', `${k} must not contain NUL characters`, [
          { instancePath: `${pointer}/${k}` },
        ]);
    const deliverAt = parseTime(item.deliver_at as string | undefined, `${pointer}/deliver_at`) ?? null;
    return {
      action: name,
      application: action.row.application,
      schemaVersion: action.row.version,
      payloadJson: JSON.stringify(payload),
      deduper: (item.deduper as string | null | undefined) ?? null,
      conversationId: item.conversation_id as string | undefined,
      deliverAt,
      restricted: action.row.subscribers !== null,
    };
  }

  const ownerOf = async (req: FastifyRequest) => {
    const b = req.body as Record<string, unknown>;
    const first = Array.isArray(b.events) ? (b.events[0] as Record<string, unknown> | undefined) : b;
    const name = first?.action ?? first?.event;
    return typeof name === 'string' ? (await registry.getAction(name))?.row.application : undefined;
  };

  app.post(
    '/v1/events',
    {
      config: { auth: { bodySecret: true, fallbackApplication: ownerOf } },
      schema: { tags: ['events'], summary: 'Publish an event', body: eventItem },
    },
    async (req, reply) => {
      const who = req.principal;
      const pr = await prepare(req.body as Record<string, unknown>, who);
      pr.traceparent = req.headers.traceparent as string | undefined;
      pr.conversationId ??= req.headers['x-conversation-id'] as string | undefined;
      const [res] = await pipeline.submit([pr]);
      return reply.status(res!.duplicate ? 200 : 202).send(res);
    },
  );

  app.post(
    '/v1/events/batch',
    {
      config: { auth: { bodySecret: true, fallbackApplication: ownerOf } },
      schema: {
        tags: ['events'],
        summary: 'Publish up to 1000 events; one result per item',
        body: {
          type: 'object',
          properties: {
            events: { type: 'array', minItems: 1, maxItems: 1000, items: { type: 'object' } },
            application: { type: 'string', maxLength: 63 },
            microservice: { type: 'string', maxLength: 63 },
            secret: { type: 'string', maxLength: 512 },
          },
          required: ['events'],
        },
      },
    },
    async (req) => {
      const who = req.principal;
      const items = (req.body as { events: Record<string, unknown>[] }).events;
      const results: Record<string, unknown>[] = new Array(items.length);
      const accepted: { i: number; pr: PublishRequest }[] = [];
      await Promise.all(
        items.map(async (item, i) => {
          try {
            if (typeof (item.action ?? item.event) !== 'string')
              throw new AmeboError('VALIDATION', 'action is required', [{ instancePath: `/events/${i}/action` }]);
            if (
              item.deduper !== undefined &&
              item.deduper !== null &&
              (typeof item.deduper !== 'string' || item.deduper.length > 255 || !item.deduper)
            )
              throw new AmeboError('VALIDATION', 'deduper must be a string of 1 to 255 characters', [
                { instancePath: `/events/${i}/deduper` },
              ]);
            accepted.push({ i, pr: await prepare(item, who, `/events/${i}`) });
          } catch (err) {
            if (!(err instanceof AmeboError)) throw err;
            results[i] = { status: err.status, ...err.toJSON() };
          }
        }),
      );
      accepted.sort((a, b) => a.i - b.i);
      const out = await pipeline.submit(accepted.map((a) => a.pr));
      accepted.forEach((a, k) => (results[a.i] = { status: out[k]!.duplicate ? 200 : 202, ...out[k] }));
      return {
        accepted: out.filter((r) => !r.duplicate).length,
        duplicates: out.filter((r) => r.duplicate).length,
        rejected: items.length - accepted.length,
        results,
      };
    },
  );

  app.get(
    '/v1/events',
    {
      schema: {
        tags: ['events'],
        querystring: {
          type: 'object',
          properties: {
            action: { type: 'string', maxLength: 255 },
            application: { type: 'string', maxLength: 63 },
            deduper: { type: 'string', maxLength: 255 },
            from: { type: 'string', maxLength: 64 },
            to: { type: 'string', maxLength: 64 },
            timeline: { enum: ['today', 'week', 'month'] },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', maxLength: 200 },
          },
        },
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query as Record<string, string | undefined> & { limit: number };
      let from = parseTime(q.from, '/from');
      if (q.timeline) {
        const now = new Date();
        const start =
          q.timeline === 'today'
            ? new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()))
            : new Date(now.getTime() - (q.timeline === 'week' ? 7 : 30) * 86400_000);
        if (!from || start > from) from = start;
      }
      if (who.kind === 'app' && q.application && q.application !== who.name)
        throw new AmeboError('FORBIDDEN', 'applications list their own events');
      const rows = await listEvents(pool, {
        action: q.action,
        application: who.kind === 'app' ? who.name : q.application,
        deduper: q.deduper,
        from,
        to: parseTime(q.to, '/to'),
        cursor: decodeCursor(q.cursor),
        limit: q.limit,
      });
      return {
        items: rows.map(eventView),
        next_cursor: rows.length === q.limit ? encodeCursor(rows[rows.length - 1]!.id) : null,
      };
    },
  );

  app.get(
    '/v1/events/:id',
    { schema: { tags: ['events'], params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } } } } },
    async (req) => {
      const who = req.principal;
      const { id } = req.params as { id: string };
      const e = isUuid(id) ? await getEvent(pool, id) : null;
      if (!e) throw new AmeboError('EVENT_NOT_FOUND', `no event "${id}"`);
      if (who.kind === 'app' && who.name !== e.application) throw new AmeboError('FORBIDDEN', 'not your event');
      const deliveries = (await deliveriesOfEvent(pool, id)).map((d) => ({
        subscription: d.subscription,
        subscription_name: d.subscription_name,
        application: d.application,
        state: d.state,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
        next_attempt_at: d.next_attempt_at,
        updated_at: d.updated_at,
      }));
      return { ...eventView(e), deliveries };
    },
  );
}
