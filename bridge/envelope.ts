import { createHmac } from 'node:crypto';
import { CompactEncrypt } from 'jose';

import type { BrokerEvent } from '../src/broker/message.js';

export type { BrokerEvent };

export interface EnvelopeOptions {
  subscription: string;
  attempt: number;
  format: 'amebo' | 'cloudevents';
  /** 32-byte key: the payload becomes a JWE (dir + A256GCM) compact string. */
  encryptionKey?: Uint8Array | null;
}

const encoder = new TextEncoder();

/** An event to send: the broker body as is (fast path) and/or parsed. */
export interface Outgoing {
  id: string;
  action: string;
  raw?: Buffer;
  event?: BrokerEvent;
}

const HEAD = Buffer.from('{"id":"');

/** `raw` is a body `splicedBody` can extend (checked without building the string). */
export function spliceable(raw: Buffer): boolean {
  return raw.length >= 16 && raw[raw.length - 1] === 0x7d && raw.compare(HEAD, 0, HEAD.length, 0, HEAD.length) === 0;
}

/**
 * The amebo envelope spliced from the broker body, which src/broker/message.ts builds as the
 * envelope minus `subscription` and `attempt` (plus `schema_version`): the payload is neither
 * parsed nor serialised again. Null when the body has another shape (then it is parsed).
 */
export function splicedBody(raw: Buffer, subscription: string, attempt: number): string | null {
  if (!spliceable(raw)) return null;
  return `${raw.toString('utf8', 0, raw.length - 1)},"subscription":${JSON.stringify(subscription)},"attempt":${attempt}}`;
}

/** JWE compact serialisation (alg dir, enc A256GCM) of the payload's JSON: any JOSE library opens it. */
export async function encryptPayload(payload: unknown, key: Uint8Array): Promise<string> {
  return new CompactEncrypt(encoder.encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', cty: 'application/json' })
    .encrypt(key);
}

/**
 * The body a webhook handler receives (api.md "What a webhook handler receives"), or CloudEvents
 * 1.0 structured mode. Returns the body and its content type.
 */
export async function buildBody(e: BrokerEvent, o: EnvelopeOptions): Promise<{ body: string; contentType: string }> {
  const payload = o.encryptionKey ? await encryptPayload(e.payload, o.encryptionKey) : e.payload;
  if (o.format === 'cloudevents')
    return {
      contentType: 'application/cloudevents+json',
      body: JSON.stringify({
        specversion: '1.0',
        id: e.id,
        source: `/amebo/applications/${e.application}`,
        type: e.action,
        time: e.timestamp,
        datacontenttype: o.encryptionKey ? 'application/jose' : 'application/json',
        data: payload,
        amebosubscription: o.subscription,
        ameboattempt: o.attempt,
        ...(e.deduper !== null ? { amebodeduper: e.deduper } : {}),
        ...(e.conversation_id !== null ? { conversationid: e.conversation_id } : {}),
      }),
    };
  return {
    contentType: 'application/json',
    body: JSON.stringify({
      id: e.id,
      action: e.action,
      application: e.application,
      subscription: o.subscription,
      payload,
      deduper: e.deduper,
      timestamp: e.timestamp,
      attempt: o.attempt,
      conversation_id: e.conversation_id,
      ...(o.encryptionKey ? { encrypted: true } : {}),
    }),
  };
}

/**
 * Standard Webhooks signature header: `v1,<base64 HMAC-SHA256(id.timestamp.body)>` for each secret,
 * space-separated (several during a rotation). Computed with node:crypto (the standardwebhooks
 * package signs in pure JS, ~10x slower); tests verify with that package.
 */
export function signatureHeader(secrets: Buffer[], id: string, timestampSec: number, body: string): string {
  const parts: string[] = [];
  for (const key of secrets)
    parts.push('v1,' + createHmac('sha256', key).update(`${id}.${timestampSec}.`).update(body).digest('base64'));
  return parts.join(' ');
}

/** The key bytes of a `whsec_<base64>` secret. */
export function secretKey(whsec: string): Buffer {
  return Buffer.from(whsec.startsWith('whsec_') ? whsec.slice(6) : whsec, 'base64');
}
