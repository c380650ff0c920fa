import { randomHex } from '../ids.js';
import type { ConsumeMessage, GetMessage, Options } from 'amqplib';

/** What every event message carries on the broker (design §5). */
/** The event as it travels on the broker (`eventBody` below). */
export interface BrokerEvent {
  id: string;
  action: string;
  application: string;
  deduper: string | null;
  timestamp: string;
  conversation_id: string | null;
  schema_version?: number;
  payload: unknown;
}

export interface EventMessageInput {
  id: string;
  action: string;
  application: string;
  payloadJson: string;
  deduper: string | null;
  conversationId: string | null;
  createdAt: Date;
  schemaVersion: number;
  traceparent?: string | undefined;
}

/** An event as the event log stores it (payload kept as its JSON text). */
export interface StoredEventRow {
  id: string;
  action: string;
  application: string;
  payload_text: string;
  deduper: string | null;
  conversation_id: string | null;
  created_at: Date;
  schema_version: number;
}

export const fromStoredRow = (r: StoredEventRow): EventMessageInput => ({
  id: r.id,
  action: r.action,
  application: r.application,
  payloadJson: r.payload_text,
  deduper: r.deduper,
  conversationId: r.conversation_id,
  createdAt: r.created_at,
  schemaVersion: r.schema_version,
});

export const HEADER = {
  action: 'x-amebo-action',
  application: 'x-amebo-application',
  attempt: 'x-amebo-attempt',
  schemaVersion: 'x-amebo-schema-version',
  conversation: 'conversation_id',
  traceparent: 'traceparent',
  reason: 'x-amebo-reason',
  firstAttemptAt: 'x-amebo-first-attempt-at',
  // On dead letters: when, why (the last answer) and for which subscription.
  deadAt: 'x-amebo-dead-at',
  lastStatus: 'x-amebo-last-status',
  lastError: 'x-amebo-last-error',
  subscriptionId: 'x-amebo-subscription-id',
  /** On webhook requests: the subscription's label. */
  subscription: 'x-amebo-subscription',
  /** On copies re-enqueued by a replay of the event log. */
  replay: 'x-amebo-replay',
} as const;

/** A W3C traceparent with a fresh trace id, or a child span of the one given. */
export function traceparent(parent?: string): string {
  const m = parent ? /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/.exec(parent) : null;
  const traceId = m?.[1] ?? randomHex(16);
  return `00-${traceId}-${randomHex(8)}-${m?.[2] ?? '01'}`;
}

/**
 * The event body on the broker: the webhook envelope without the per-subscription fields. Built
 * by concatenation so the payload's JSON text, already produced once for PostgreSQL, is not
 * serialised again.
 */
export function eventBody(e: EventMessageInput): Buffer {
  return Buffer.from(
    `{"id":"${e.id}","action":${JSON.stringify(e.action)},"application":${JSON.stringify(e.application)},` +
      `"deduper":${JSON.stringify(e.deduper)},"timestamp":"${e.createdAt.toISOString()}",` +
      `"conversation_id":${JSON.stringify(e.conversationId)},"schema_version":${e.schemaVersion},"payload":${e.payloadJson}}`,
  );
}

export function eventProperties(e: EventMessageInput): Options.Publish {
  return {
    persistent: true,
    contentType: 'application/json',
    messageId: e.id,
    appId: e.application,
    type: e.action,
    timestamp: Math.floor(e.createdAt.getTime() / 1000),
    headers: {
      [HEADER.action]: e.action,
      [HEADER.application]: e.application,
      [HEADER.attempt]: 1,
      [HEADER.schemaVersion]: e.schemaVersion,
      [HEADER.conversation]: e.conversationId ?? e.id,
      [HEADER.traceparent]: e.traceparent ?? traceparent(),
    },
  };
}

/** Headers RabbitMQ adds on dead-lettering; dropped from our copies so they do not grow forever. */
export const BROKER_HEADERS = [
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
  'x-delivery-count',
] as const;

/**
 * Properties of a retry, dead-letter or resurrected copy of `msg`: the original's, minus broker
 * headers (and those `drop` names), plus `headers`.
 */
export function copyProperties(
  msg: ConsumeMessage | GetMessage,
  headers: Record<string, unknown>,
  drop: (header: string) => boolean = () => false,
): Options.Publish {
  const p = msg.properties;
  const h: Record<string, unknown> = { ...(p.headers ?? {}) };
  for (const k of BROKER_HEADERS) delete h[k];
  for (const k of Object.keys(h)) if (drop(k)) delete h[k];
  return {
    persistent: true,
    contentType: p.contentType ?? 'application/json',
    messageId: p.messageId,
    appId: p.appId,
    type: p.type,
    timestamp: p.timestamp,
    correlationId: p.correlationId,
    headers: { ...h, ...headers },
  };
}
