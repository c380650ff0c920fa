import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { isUuid } from '../ids.js';
import { depth, violations } from '../schema.js';
import type { PublishRequest, PublishResult } from '../publish.js';
import { NAME } from '../registry.js';
import { deliveryStateCounts, getEvent, listEvents, type EventRow } from '../store/events.js';
import { isTopicPattern, isWildcard, topicMatcher } from '../delivery/topic.js';
import type { Principal } from './auth.js';
import { decodeCursor, page } from './paging.js';
import { CURSOR, EventSchema, LIMIT, PublishResultSchema, replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';
import { EVENT_DELIVERY, eventDeliveries } from './event-status.js';

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

/** Events page by id (uuidv7: creation order), newest first. */
const eventCursor = (parts: string[]): string | undefined =>
  parts.length === 1 && isUuid(parts[0]!) ? parts[0] : undefined;

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

/** An event as sent: the route's schema checks a single event; a batch's items are checked here. */
interface EventInput {
  action?: unknown;
  event?: unknown;
  payload?: unknown;
  deduper?: unknown;
  deliver_at?: unknown;
  conversation_id?: unknown;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Delivery-record states an event listing may filter on. */
const RECORD_STATES = ['pending', 'delivered', 'retrying', 'dead'] as const;

/** A listed event: the Event schema, plus its delivery records by state when asked (`?with=states`). */
const ListedEvent = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ...EventSchema.properties,
    delivery_states: {
      type: 'object',
      additionalProperties: { type: 'integer' },
      description: 'with=states: how many of its delivery records are in each state ({} before any attempt)',
    },
  },
  required: EventSchema.required,
} as const;

/**
 * `Prefer: wait=<seconds>` (RFC 7240): the client will wait for the broker confirm, so the reply goes
 * after it (bounded by AMEBO_CONFIRM_WAIT_MS) and its `published` says whether it came. Without it,
 * the reply goes on the commit. Honoured preferences are named in `Preference-Applied`.
 */
function waitPreference(req: FastifyRequest, reply: FastifyReply): boolean {
  const h = req.headers.prefer;
  if (!h) return false;
  for (const pref of (Array.isArray(h) ? h.join(',') : h).split(',')) {
    const m = /^\s*wait\s*=\s*"?(\d{1,9})"?\s*(?:;|$)/i.exec(pref);
    if (m && Number(m[1]) > 0) {
      void reply.header('preference-applied', `wait=${m[1]}`);
      return true;
    }
  }
  return false;
}

export async function eventRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  const { registry, pipeline, cfg, pool } = ctx;

  /** Checks one event against its action; throws the 4xx it deserves. */
  async function prepare(item: EventInput, who: Principal, pointer = ''): Promise<PublishRequest> {
    const name = str(item.action) ?? str(item.event);
    if (name === undefined)
      throw new AmeboError('VALIDATION', 'action is required', [{ instancePath: `${pointer}/action` }]);
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
      if (str(item[k])?.includes('\u0000'))
        throw new AmeboError('VALIDATION', `${k} must not contain NUL characters`, [
          { instancePath: `${pointer}/${k}` },
        ]);
    const deliverAt = parseTime(str(item.deliver_at), `${pointer}/deliver_at`) ?? null;
    return {
      action: name,
      application: action.row.application,
      schemaVersion: action.row.version,
      payloadJson: JSON.stringify(payload),
      deduper: str(item.deduper) ?? null,
      conversationId: str(item.conversation_id),
      deliverAt,
      restricted: action.row.subscribers !== null,
    };
  }

  /** A body secret without an application is checked against the (first) action's owner. */
  const ownerOf = async (req: FastifyRequest) => {
    const b = req.body;
    if (b === null || typeof b !== 'object') return undefined;
    const events = (b as { events?: unknown }).events;
    const first: unknown = Array.isArray(events) ? events[0] : b;
    if (first === null || typeof first !== 'object') return undefined;
    const name = str((first as EventInput).action) ?? str((first as EventInput).event);
    return name === undefined ? undefined : (await registry.getAction(name))?.row.application;
  };

  const batchResult = {
    type: 'object',
    description: 'a publish result (status 200 or 202), or an error (status 4xx)',
    properties: {
      status: { type: 'integer' },
      ...PublishResultSchema.properties,
      error: { $ref: 'Error#/properties/error' },
    },
    required: ['status'],
    additionalProperties: false,
  } as const;
  type BatchResult = { status: number } & (PublishResult | ReturnType<AmeboError['toJSON']>);

  app.post(
    '/v1/events',
    {
      config: { auth: { bodySecret: true, fallbackApplication: ownerOf } },
      schema: {
        tags: ['events'],
        summary: 'Publish an event',
        body: eventItem,
        response: replies({
          200: { $ref: 'PublishResult#', description: 'a duplicate: the deduper was seen, nothing published' },
          202: { $ref: 'PublishResult#', description: 'accepted: stored, and published (or to be)' },
        }),
      },
    },
    async (req, reply) => {
      const who = req.principal;
      const pr = await prepare(req.body, who);
      pr.traceparent = str(req.headers.traceparent);
      pr.conversationId ??= str(req.headers['x-conversation-id']);
      pr.waitConfirm = waitPreference(req, reply);
      const [res] = await pipeline.submit([pr]);
      if (!res) throw new AmeboError('INTERNAL', 'the publish pipeline answered nothing');
      return reply.status(res.duplicate ? 200 : 202).send(res);
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
        response: replies({
          200: {
            type: 'object',
            properties: {
              accepted: { type: 'integer' },
              duplicates: { type: 'integer' },
              rejected: { type: 'integer' },
              results: { type: 'array', items: batchResult, description: 'one per event, in order' },
            },
            required: ['accepted', 'duplicates', 'rejected', 'results'],
          },
        }),
      },
    },
    async (req, reply) => {
      const who = req.principal;
      const items: EventInput[] = req.body.events;
      const results: BatchResult[] = new Array<BatchResult>(items.length);
      const accepted: { i: number; pr: PublishRequest }[] = [];
      await Promise.all(
        items.map(async (item, i) => {
          try {
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
      const waitConfirm = waitPreference(req, reply);
      for (const a of accepted) a.pr.waitConfirm = waitConfirm;
      const out = await pipeline.submit(accepted.map((a) => a.pr));
      accepted.forEach((a, k) => {
        const r = out[k];
        if (r) results[a.i] = { status: r.duplicate ? 200 : 202, ...r };
      });
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
            action: {
              type: 'string',
              maxLength: 255,
              description: 'an action, or a topic pattern (`order.*` one word, `order.#` any)',
            },
            application: { type: 'string', maxLength: 63 },
            deduper: { type: 'string', maxLength: 255 },
            state: {
              enum: RECORD_STATES,
              description: 'only events with a delivery to some subscription in this state',
            },
            with: { enum: ['states'], description: 'states: add each event’s delivery_states' },
            from: { type: 'string', maxLength: 64 },
            to: { type: 'string', maxLength: 64 },
            timeline: { enum: ['today', 'week', 'month'] },
            limit: LIMIT,
            cursor: CURSOR,
          },
        },
        response: replies({
          200: {
            type: 'object',
            additionalProperties: false,
            properties: {
              items: { type: 'array', items: ListedEvent },
              next_cursor: { type: ['string', 'null'], description: 'pass as ?cursor= for the next page' },
            },
            required: ['items', 'next_cursor'],
          },
        }),
      },
    },
    async (req) => {
      const who = req.principal;
      const q = req.query;
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
      // A pattern is resolved to the registered actions it matches (topic.ts, linear time): the SQL
      // compares names, never runs a user-supplied pattern.
      let actions: string[] | undefined;
      if (q.action && isWildcard(q.action)) {
        if (!isTopicPattern(q.action))
          throw new AmeboError(
            'VALIDATION',
            'action must be an action name or a topic pattern (`order.*`, `order.#`)',
            [{ instancePath: '/action', message: 'not a topic pattern' }],
          );
        const matches = topicMatcher(q.action);
        actions = (await registry.listActions({})).map((a) => a.name).filter((n) => matches(n));
      }
      const rows = await listEvents(pool, {
        action: actions ? undefined : q.action,
        actions,
        deliveryState: q.state,
        application: who.kind === 'app' ? who.name : q.application,
        deduper: q.deduper,
        from,
        to: parseTime(q.to, '/to'),
        cursor: decodeCursor(q.cursor, eventCursor),
        limit: q.limit,
      });
      const listed = page(rows, q.limit, eventView, (e) => [e.id]);
      if (q.with !== 'states') return listed;
      const counts = await deliveryStateCounts(
        pool,
        listed.items.map((e) => e.id),
      );
      return { ...listed, items: listed.items.map((e) => ({ ...e, delivery_states: counts.get(e.id) ?? {} })) };
    },
  );

  app.get(
    '/v1/events/:id',
    {
      schema: {
        tags: ['events'],
        summary: 'One event, with its delivery state for every subscription it matches',
        params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] },
        response: replies({
          200: {
            type: 'object',
            additionalProperties: false,
            properties: {
              ...EventSchema.properties,
              deliveries: {
                type: 'array',
                items: EVENT_DELIVERY,
                description: 'every subscription matching the event, with its state (never-attempted ones included)',
              },
            },
            required: [...EventSchema.required, 'deliveries'],
          },
        }),
      },
    },
    async (req) => {
      const who = req.principal;
      const { id } = req.params;
      const e = isUuid(id) ? await getEvent(pool, id) : null;
      if (!e) throw new AmeboError('EVENT_NOT_FOUND', `no event "${id}"`);
      if (who.kind === 'app' && who.name !== e.application) throw new AmeboError('FORBIDDEN', 'not your event');
      return { ...eventView(e), deliveries: await eventDeliveries(ctx, e) };
    },
  );
}
