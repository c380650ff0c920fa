import type { Channel, GetMessage, Options } from 'amqplib';
import {
  copyProperties,
  eventBody,
  eventProperties,
  fromStoredRow,
  HEADER,
  type BrokerEvent,
} from '../broker/message.js';
import type { Logger } from '../log.js';
import type { Pool } from '../store/db.js';
import type { SubscriptionRow } from '../store/registry.js';
import { isWildcard, topicMatcher } from '../delivery/topic.js';
import { eventById, eventsForReplay, type ReplayRow } from '../store/events.js';
import { getDelivery, writeDeliveries } from '../store/deliveries.js';

/**
 * Operator recovery (api.md "Subscriptions", "Deliveries"): dead letters listed and resurrected,
 * a time range replayed from the event log, one delivery resent (the synthetic test send is HTTP,
 * so it lives with the sender in bridge/test-send.ts). Every re-publish is confirmed by the broker
 * before anything is acked or reported.
 */

/** What the operator functions need, and nothing more (the API builds it from its context). */
export interface RecoveryDeps {
  pool: Pool;
  log: Logger;
  /** Throwaway channels for reading and moving dead letters. */
  broker: { withThrowawayChannel<T>(fn: (ch: Channel) => Promise<T>): Promise<T> };
  /** Confirmed publishes (resolves once the broker confirmed). */
  publisher: {
    publish(exchange: string, routingKey: string, content: Buffer, options?: Options.Publish): Promise<void>;
  };
  topology: {
    readonly redeliver: string;
    subscriptionQueue(application: string, subscription: string): string;
    deadQueue(application: string, subscription: string): string;
  };
  /** True when `application` may receive events of `action` now (the registry's rule). */
  mayReceive(application: string, action: string): Promise<boolean>;
}

/** What a dead letter carries of its previous life; a resurrected copy drops them all. */
const DEATH_HEADERS = new Set<string>([
  HEADER.reason,
  HEADER.firstAttemptAt,
  HEADER.deadAt,
  HEADER.lastStatus,
  HEADER.lastError,
]);

export interface DeadLetterView {
  event: string | null;
  action: string | null;
  reason: string;
  attempts: number | null;
  last_status: number | null;
  last_error: string | null;
  dead_at: string | null;
  payload: unknown;
}

function reasonOf(h: Record<string, unknown>): string {
  if (typeof h[HEADER.reason] === 'string') return h[HEADER.reason] as string;
  // Dead-lettered by RabbitMQ itself (x-delivery-limit poison guard, rejection, expiry).
  const death = (h['x-death'] as { reason?: string }[] | undefined)?.[0];
  if (death?.reason === 'delivery_limit') return 'delivery_limit';
  return death?.reason ?? (typeof h['x-first-death-reason'] === 'string' ? h['x-first-death-reason'] : 'unknown');
}

function view(m: GetMessage): DeadLetterView {
  const h = (m.properties.headers ?? {}) as Record<string, unknown>;
  let body: Partial<BrokerEvent> = {};
  try {
    body = JSON.parse(m.content.toString('utf8')) as BrokerEvent;
  } catch {
    /* shown as is */
  }
  const status = Number(h[HEADER.lastStatus]);
  const deadAt = Number(h[HEADER.deadAt]);
  return {
    event: body.id ?? (m.properties.messageId as string | undefined) ?? null,
    action: body.action ?? (h[HEADER.action] as string | undefined) ?? null,
    reason: reasonOf(h),
    attempts: Number(h[HEADER.attempt]) || null,
    last_status: Number.isFinite(status) && status >= 0 ? status : null,
    last_error: (h[HEADER.lastError] as string | undefined) || null,
    dead_at: deadAt ? new Date(deadAt).toISOString() : null,
    payload: body.payload,
  };
}

const names = (ctx: RecoveryDeps, row: SubscriptionRow) => ({
  queue: ctx.topology.subscriptionQueue(row.application, row.name),
  dead: ctx.topology.deadQueue(row.application, row.name),
});

/**
 * Lists up to `limit` dead letters without removing them: fetched unacked on a throwaway channel,
 * then returned by closing it. Counts the queue depth too.
 */
export async function listDeadLetters(
  ctx: RecoveryDeps,
  row: SubscriptionRow,
  limit: number,
): Promise<{ count: number; items: DeadLetterView[] }> {
  const { dead } = names(ctx, row);
  const listed = await ctx.broker.withThrowawayChannel(async (ch) => {
    const { messageCount } = await ch.checkQueue(dead);
    const items: DeadLetterView[] = [];
    for (let i = 0; i < Math.min(limit, messageCount); i++) {
      const m = await ch.get(dead, { noAck: false });
      if (!m) break;
      items.push(view(m));
    }
    return { count: messageCount, items };
  });
  // The channel's close returns them; wait (bounded) until they are ready again, so a listing or a
  // resurrect right after this one sees them all.
  for (let i = 0; i < 40 && listed.items.length; i++) {
    const { messageCount } = await ctx.broker.withThrowawayChannel((ch) => ch.checkQueue(dead));
    if (messageCount >= listed.count) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return listed;
}

/** When a dead letter died (its x-amebo-dead-at), or null when it does not say. */
function diedAt(m: GetMessage): number | null {
  const t = Number(m.properties.headers?.[HEADER.deadAt]);
  return Number.isFinite(t) && t > 0 ? t : null;
}

/**
 * Moves up to `limit` dead letters back to the subscription queue with their attempts reset. Each
 * is re-published (confirmed) before it is acked off the dead-letter queue: a crash in between
 * duplicates, never loses. With `since`, only those that died at or after it go back; the older
 * ones (and any that does not say when it died) stay, never acked: they are returned to the dead
 * queue in the order they were read, as are those the subscription may no longer receive.
 */
export async function resurrect(
  ctx: RecoveryDeps,
  row: SubscriptionRow,
  limit: number,
  since?: Date,
): Promise<{ resurrected: number; skipped: number; older: number }> {
  const { queue, dead } = names(ctx, row);
  const at = new Date();
  const matches = topicMatcher(row.action);
  return ctx.broker.withThrowawayChannel(async (ch) => {
    let n = 0;
    const pending: Promise<void>[] = [];
    const events: string[] = [];
    const skipped: GetMessage[] = [];
    const kept: GetMessage[] = [];
    let older = 0;
    while (n < limit) {
      const m = await ch.get(dead, { noAck: false });
      if (!m) break;
      if (since) {
        const t = diedAt(m);
        if (t === null || t < since.getTime()) {
          older++;
          kept.push(m); // held unacked like the skipped ones, returned in order at the end
          continue;
        }
      }
      // Only what this subscription may receive goes back: its binding matches the action and the
      // action lets its application subscribe (the list may have changed since it died).
      const action = m.properties.headers?.[HEADER.action] as string | undefined;
      if (!action || !matches(action) || !(await ctx.mayReceive(row.application, action))) {
        skipped.push(m); // held unacked until the end (so `get` moves on), then returned
        kept.push(m);
        continue;
      }
      n++;
      // Resurrected: a first attempt again, without the traces of its previous life.
      const props = copyProperties(m, { [HEADER.attempt]: 1 }, (k) => DEATH_HEADERS.has(k));
      const p = m.properties;
      const id = (p.messageId as string | undefined) ?? null;
      if (id) events.push(id);
      pending.push(ctx.publisher.publish(ctx.topology.redeliver, queue, m.content, props).then(() => ch.ack(m)));
    }
    // Every re-publish confirmed (and its original acked) before the kept ones go back: a failed
    // confirm rejects here, the channel closes, and the broker returns everything unacked.
    await Promise.all(pending);
    for (const m of kept) ch.nack(m, false, true);
    await markPending(ctx, row, events, 0, at);
    return { resurrected: n, skipped: skipped.length, older };
  });
}

/** `at` is taken before the re-publish, so the bridge's own outcome (later) wins over this record. */
async function markPending(
  ctx: RecoveryDeps,
  row: SubscriptionRow,
  events: string[],
  attempts: number,
  at: Date,
): Promise<void> {
  const rows = events
    .filter((e) => /^[0-9a-f-]{36}$/i.test(e))
    .map((event) => ({
      event,
      subscription: row.id,
      state: 'pending' as const,
      attempts,
      lastStatus: null,
      lastError: null,
      nextAttemptAt: at,
      at,
    }));
  await writeDeliveries(ctx.pool, rows).catch((err: unknown) =>
    ctx.log.warn({ err: (err as Error).message }, 'delivery records not written'),
  );
}

function message(r: ReplayRow, attempt: number) {
  const input = fromStoredRow(r);
  const props = eventProperties(input);
  props.headers = { ...props.headers, [HEADER.attempt]: attempt, [HEADER.replay]: true };
  return { body: eventBody(input), props };
}

/** Re-enqueues the stored events of [from, to) that match the subscription, oldest first. */
export async function replay(
  ctx: RecoveryDeps,
  row: SubscriptionRow,
  from: Date,
  to: Date,
  max = 100_000,
): Promise<{ replayed: number }> {
  const { queue } = names(ctx, row);
  const pattern = isWildcard(row.action) ? row.action : null;
  const matches = topicMatcher(row.action);
  let after: string | null = null;
  let n = 0;
  while (n < max) {
    const rows = await eventsForReplay(ctx.pool, {
      action: pattern ? null : row.action,
      from,
      to,
      afterId: after,
      limit: 1000,
      viewer: row.application,
    });
    if (!rows.length) break;
    after = rows[rows.length - 1]!.id;
    const batch = rows.filter((r) => matches(r.action)).slice(0, max - n);
    await Promise.all(
      batch.map((r) => {
        const { body, props } = message(r, 1);
        return ctx.publisher.publish(ctx.topology.redeliver, queue, body, props);
      }),
    );
    n += batch.length;
    if (rows.length < 1000) break;
  }
  return { replayed: n };
}

/** Resends one stored event to one subscription now, as one more attempt. */
export async function retryOne(
  ctx: RecoveryDeps,
  row: SubscriptionRow,
  eventId: string,
): Promise<{ attempt: number } | null> {
  // Only an event this subscription could have received: its binding matches the action and the
  // action lets its application subscribe. Anything else is "no such event" (never another tenant's).
  const ev = await eventById(ctx.pool, eventId, row.application);
  if (!ev || !topicMatcher(row.action)(ev.action)) return null;
  const d = await getDelivery(ctx.pool, eventId, row.id);
  const attempt = (d?.attempts ?? 0) + 1;
  const at = new Date();
  const { body, props } = message(ev, attempt);
  await ctx.publisher.publish(ctx.topology.redeliver, names(ctx, row).queue, body, props);
  await markPending(ctx, row, [eventId], d?.attempts ?? 0, at);
  return { attempt };
}
