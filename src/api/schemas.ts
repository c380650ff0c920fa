/**
 * The API's contract: shared JSON Schemas, registered once on the server (`app.addSchema`) and
 * referenced by `$ref` from the routes; the type provider that types every handler's request and
 * reply from its route schema; and helpers for the response maps every route declares.
 *
 * A response schema is also the serializer (fast-json-stringify): a property it does not declare is
 * not sent. Every field a client, the CLI or the dashboard reads must be declared here.
 */
import type { FastifyInstance } from 'fastify';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { ERROR_BODY } from '../errors.js';

const time = { type: 'string', format: 'date-time' } as const;
const timeOrNull = { type: ['string', 'null'], format: 'date-time' } as const;
const uuid = { type: 'string', format: 'uuid' } as const;

export const ErrorSchema = { $id: 'Error', ...ERROR_BODY } as const;

export const ApplicationSchema = {
  $id: 'Application',
  type: 'object',
  additionalProperties: false,
  properties: {
    application: { type: 'string' },
    address: { type: ['string', 'null'] },
    rpc_grants: { type: 'array', items: { type: 'string' } },
    created_at: time,
    updated_at: time,
  },
  required: ['application', 'address', 'rpc_grants', 'created_at', 'updated_at'],
} as const;

export const ActionSchema = {
  $id: 'Action',
  type: 'object',
  additionalProperties: false,
  properties: {
    action: { type: 'string' },
    application: { type: 'string' },
    description: { type: ['string', 'null'] },
    subscribers: { type: ['array', 'null'], items: { type: 'string' } },
    version: { type: 'integer' },
    schemata: { description: 'the JSON Schema of this version' },
    created_at: time,
    updated_at: time,
  },
  required: ['action', 'application', 'description', 'subscribers', 'version', 'schemata', 'created_at', 'updated_at'],
} as const;

export const ActionVersionSchema = {
  $id: 'ActionVersion',
  type: 'object',
  additionalProperties: false,
  properties: { version: { type: 'integer' }, schemata: {}, created_at: time },
  required: ['version', 'schemata', 'created_at'],
} as const;

export const SubscriptionSchema = {
  $id: 'Subscription',
  type: 'object',
  additionalProperties: false,
  properties: {
    id: uuid,
    application: { type: 'string' },
    subscription: { type: 'string' },
    action: { type: 'string', description: 'an action name or a topic pattern (* one segment, # any)' },
    transport: { enum: ['http', 'amqp'] },
    handler: { type: ['string', 'null'], description: 'credentials redacted' },
    queue: { type: 'string' },
    dead_letter_queue: { type: 'string' },
    max_attempts: { type: 'integer' },
    max_age: { type: 'integer' },
    retry_schedule: { type: 'array', items: { type: 'number' } },
    timeout_ms: { type: 'integer' },
    format: { enum: ['amebo', 'cloudevents'] },
    encrypted: { type: 'boolean' },
    ordered: { type: 'boolean' },
    rate_limit: { type: ['integer', 'null'] },
    description: { type: ['string', 'null'] },
    paused: { type: 'boolean' },
    disabled_reason: { type: ['string', 'null'] },
    created_at: time,
    updated_at: time,
  },
  required: [
    'id',
    'application',
    'subscription',
    'action',
    'transport',
    'handler',
    'queue',
    'dead_letter_queue',
    'max_attempts',
    'max_age',
    'retry_schedule',
    'timeout_ms',
    'format',
    'encrypted',
    'ordered',
    'rate_limit',
    'description',
    'paused',
    'disabled_reason',
    'created_at',
    'updated_at',
  ],
} as const;

export const EventSchema = {
  $id: 'Event',
  type: 'object',
  additionalProperties: false,
  properties: {
    event: uuid,
    id: uuid,
    action: { type: 'string' },
    application: { type: 'string' },
    payload: {},
    deduper: { type: ['string', 'null'] },
    conversation_id: { type: ['string', 'null'] },
    schema_version: { type: 'integer' },
    deliver_at: timeOrNull,
    created_at: time,
    published: { type: 'boolean', description: 'false while the event waits in the outbox' },
  },
  required: [
    'event',
    'id',
    'action',
    'application',
    'payload',
    'deduper',
    'conversation_id',
    'schema_version',
    'deliver_at',
    'created_at',
    'published',
  ],
} as const;

/** What a publish answers (one per event; `duplicate` when the deduper was seen). */
export const PublishResultSchema = {
  $id: 'PublishResult',
  type: 'object',
  additionalProperties: false,
  properties: {
    event: uuid,
    action: { type: 'string' },
    deduper: { type: ['string', 'null'] },
    created_at: { type: 'string' },
    published: {
      type: 'boolean',
      description:
        'the broker had confirmed the event when this reply went: the reply goes on the commit (usually false), or with `Prefer: wait=<seconds>` after the confirm (bounded by AMEBO_CONFIRM_WAIT_MS); either way a committed event is published',
    },
    duplicate: { type: 'boolean' },
    deliver_at: { type: 'string' },
  },
  required: ['event', 'action', 'deduper', 'created_at', 'published'],
} as const;

/** One event's delivery to one subscription. */
export const DeliverySchema = {
  $id: 'Delivery',
  type: 'object',
  additionalProperties: false,
  properties: {
    event: uuid,
    subscription: uuid,
    application: { type: 'string' },
    subscription_name: { type: 'string' },
    state: { enum: ['pending', 'delivered', 'retrying', 'dead'] },
    attempts: { type: 'integer' },
    last_status: { type: ['integer', 'null'] },
    last_error: { type: ['string', 'null'] },
    next_attempt_at: timeOrNull,
    updated_at: time,
  },
  required: [
    'subscription',
    'application',
    'subscription_name',
    'state',
    'attempts',
    'last_status',
    'last_error',
    'next_attempt_at',
    'updated_at',
  ],
} as const;

export const AttemptSchema = {
  $id: 'Attempt',
  type: 'object',
  additionalProperties: false,
  properties: {
    attempt: { type: 'integer' },
    status: { type: ['integer', 'null'] },
    latency_ms: { type: ['number', 'null'] },
    error_class: { type: ['string', 'null'] },
    error: { type: ['string', 'null'] },
    response_excerpt: { type: ['string', 'null'] },
    created_at: time,
  },
  required: ['attempt', 'status', 'latency_ms', 'error_class', 'error', 'response_excerpt', 'created_at'],
} as const;

export const DeadLetterSchema = {
  $id: 'DeadLetter',
  type: 'object',
  additionalProperties: false,
  properties: {
    event: { type: ['string', 'null'] },
    action: { type: ['string', 'null'] },
    reason: { type: 'string' },
    attempts: { type: ['integer', 'null'] },
    last_status: { type: ['integer', 'null'] },
    last_error: { type: ['string', 'null'] },
    dead_at: { type: ['string', 'null'] },
    payload: {},
  },
  required: ['event', 'action', 'reason', 'attempts', 'last_status', 'last_error', 'dead_at'],
} as const;

/** Every shared schema, in the order they are registered. */
export const SHARED = [
  ErrorSchema,
  ApplicationSchema,
  ActionSchema,
  ActionVersionSchema,
  SubscriptionSchema,
  EventSchema,
  PublishResultSchema,
  DeliverySchema,
  AttemptSchema,
  DeadLetterSchema,
] as const;

type Shared = [
  typeof ErrorSchema,
  typeof ApplicationSchema,
  typeof ActionSchema,
  typeof ActionVersionSchema,
  typeof SubscriptionSchema,
  typeof EventSchema,
  typeof PublishResultSchema,
  typeof DeliverySchema,
  typeof AttemptSchema,
  typeof DeadLetterSchema,
];

/**
 * Types each handler from its route schema: `req.body`, `req.query`, `req.params` as validated,
 * and what it may return or `send` as its response schema says (times may be `Date`s: the
 * serializer writes them as RFC 3339).
 */
export type ApiProvider = JsonSchemaToTsProvider<{
  ValidatorSchemaOptions: { references: Shared };
  SerializerSchemaOptions: {
    references: Shared;
    deserialize: [{ pattern: { type: 'string'; format: 'date-time' }; output: Date | string }];
  };
}>;

/** The fastify instance the route files register on, typed by ApiProvider. */
export type Api = ReturnType<typeof typed>;
export const typed = (app: FastifyInstance) => app.withTypeProvider<ApiProvider>();

/** Registers the shared schemas (once, on the root instance, before any route). */
export function addSharedSchemas(app: FastifyInstance): void {
  for (const s of SHARED) app.addSchema(s);
}

export const ERROR_REF = { $ref: 'Error#' } as const;

/** A route's responses: its own (2xx and any specific error), then the error shape for any 4xx or 5xx. */
export function replies<const T extends Record<number, object>>(
  ok: T,
): T & { '4xx': typeof ERROR_REF; '5xx': typeof ERROR_REF } {
  return { ...ok, '4xx': ERROR_REF, '5xx': ERROR_REF };
}

/** A closed object (no other properties) whose properties are all required but those named optional. */
export function record<const P extends Record<string, object>, const O extends keyof P & string = never>(
  properties: P,
  optional: readonly O[] = [],
) {
  const required = Object.keys(properties).filter((k) => !(optional as readonly string[]).includes(k));
  return {
    type: 'object',
    additionalProperties: false,
    properties,
    required: required as Exclude<keyof P & string, O>[],
  } as const;
}

/** `{ items: [...] }` of a shared schema. */
export function listOf<const R extends string>(ref: R) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: { items: { type: 'array', items: { $ref: ref } } },
    required: ['items'],
  } as const;
}

/** A cursor page: `{ items, next_cursor }` (null when this was the last page). */
export function pageOf<const R extends string>(ref: R) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      items: { type: 'array', items: { $ref: ref } },
      next_cursor: { type: ['string', 'null'], description: 'pass as ?cursor= for the next page' },
    },
    required: ['items', 'next_cursor'],
  } as const;
}

/** 204: nothing in the body. */
export const NO_CONTENT = { type: 'null', description: 'No content' } as const;

/** Path parameters shared by several routes. */
export const ID_PARAM = {
  type: 'object',
  properties: {
    id: {
      type: 'string',
      maxLength: 300,
      description: 'the subscription id, or application/subscription (slash URL-encoded: %2F)',
    },
  },
  required: ['id'],
} as const;

export const NAME_PARAM = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 255 } },
  required: ['name'],
} as const;

export const PAIR_PARAM = {
  type: 'object',
  properties: {
    event: { type: 'string', maxLength: 64 },
    subscription: { type: 'string', maxLength: 300, description: 'id, or application/subscription (%2F)' },
  },
  required: ['event', 'subscription'],
} as const;

export const LIMIT = { type: 'integer', minimum: 1, maximum: 1000, default: 100 } as const;
export const CURSOR = { type: 'string', maxLength: 200, description: 'next_cursor of the previous page' } as const;
