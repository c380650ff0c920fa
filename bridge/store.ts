import type { Pool } from '../src/store/db.js';
import type { Logger } from '../src/log.js';
import type { SubscriptionRow } from '../src/store/registry.js';

/** All bridge SQL: delivery states (one row per event × subscription) and the attempt log. */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type DeliveryState = 'pending' | 'delivered' | 'retrying' | 'dead';

export interface DeliveryRecord {
  event: string;
  subscription: string;
  state: DeliveryState;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  nextAttemptAt: Date | null;
  at: Date;
}

export interface AttemptRecord {
  event: string;
  subscription: string;
  attempt: number;
  status: number | null;
  latencyMs: number;
  errorClass: string | null;
  error: string | null;
  excerpt: string | null;
  at: Date;
}

// A later write never loses to an earlier one that reaches PostgreSQL after it (several workers).
// Rows of a subscription deleted meanwhile are skipped (the FK would fail the whole batch).
const UPSERT_DELIVERIES = `INSERT INTO deliveries (event, subscription, state, attempts, last_status, last_error, next_attempt_at, updated_at)
  SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[], $6::text[], $7::timestamptz[], $8::timestamptz[])
    AS u(event, subscription, state, attempts, last_status, last_error, next_attempt_at, updated_at)
  WHERE EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = u.subscription)
  ON CONFLICT (event, subscription) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
    last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error, next_attempt_at = EXCLUDED.next_attempt_at,
    updated_at = EXCLUDED.updated_at
  WHERE deliveries.updated_at <= EXCLUDED.updated_at`;

export async function writeDeliveries(pool: Pool, rows: DeliveryRecord[]): Promise<void> {
  if (!rows.length) return;
  await pool.query({
    name: 'amebo-bridge-upsert-deliveries',
    text: UPSERT_DELIVERIES,
    values: [
      rows.map((r) => r.event),
      rows.map((r) => r.subscription),
      rows.map((r) => r.state),
      rows.map((r) => r.attempts),
      rows.map((r) => r.lastStatus),
      rows.map((r) => r.lastError),
      rows.map((r) => r.nextAttemptAt),
      rows.map((r) => r.at),
    ],
  });
}

export async function writeAttempts(pool: Pool, rows: AttemptRecord[]): Promise<void> {
  if (!rows.length) return;
  await pool.query({
    name: 'amebo-bridge-insert-attempts',
    text: `INSERT INTO attempts (event, subscription, attempt, status, latency_ms, error_class, error, response_excerpt, created_at)
      SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
        AS u(event, subscription, attempt, status, latency_ms, error_class, error, response_excerpt, created_at)
      WHERE EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = u.subscription)`,
    values: [
      rows.map((r) => r.event),
      rows.map((r) => r.subscription),
      rows.map((r) => r.attempt),
      rows.map((r) => r.status),
      rows.map((r) => Math.round(r.latencyMs)),
      rows.map((r) => r.errorClass),
      rows.map((r) => r.error),
      rows.map((r) => r.excerpt),
      rows.map((r) => r.at),
    ],
  });
}

/**
 * Writes delivery states and attempts in batches (every `intervalMs` or `maxRows`), off the
 * delivery path: an ack never waits for PostgreSQL. While PostgreSQL is down rows wait in memory up
 * to `maxBuffered`, then the oldest are dropped with a warning (records are not the delivery promise).
 */
export class Recorder {
  private readonly pool: Pool;
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly maxRows: number;
  private readonly maxBuffered: number;
  private deliveries = new Map<string, DeliveryRecord>();
  private attempts: AttemptRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private dropped = 0;

  constructor(o: { pool: Pool; log: Logger; intervalMs?: number; maxRows?: number; maxBuffered?: number }) {
    this.pool = o.pool;
    this.log = o.log;
    this.intervalMs = o.intervalMs ?? 75;
    this.maxRows = o.maxRows ?? 500;
    this.maxBuffered = o.maxBuffered ?? 50_000;
  }

  delivery(r: DeliveryRecord): void {
    if (!UUID.test(r.event)) return; // a foreign message id: nothing to key a record on
    const key = `${r.event}/${r.subscription}`;
    const prev = this.deliveries.get(key);
    if (!prev || prev.at <= r.at) this.deliveries.set(key, r);
    if (this.deliveries.size > this.maxBuffered) {
      // Oldest first (a Map iterates in insertion order).
      this.deliveries.delete(this.deliveries.keys().next().value!);
      if (this.dropped++ % 1000 === 0) this.log.warn('delivery state buffer full: oldest states dropped');
    }
    this.schedule();
  }

  attempt(r: AttemptRecord): void {
    if (!UUID.test(r.event)) return;
    this.attempts.push(r);
    if (this.attempts.length > this.maxBuffered) {
      this.attempts.splice(0, this.attempts.length - this.maxBuffered);
      if (this.dropped++ % 1000 === 0) this.log.warn('attempt log buffer full: oldest attempts dropped');
    }
    this.schedule();
  }

  private schedule(): void {
    // Closed: an attempt that ends after shutdown is not written (its pool is gone); the message
    // was not acked, so the broker redelivers it and the next attempt is recorded.
    if (this.closed) return;
    if (this.deliveries.size + this.attempts.length >= this.maxRows && !this.flushing) {
      void this.flush();
      return;
    }
    if (!this.timer) this.timer = setTimeout(() => void this.flush(), this.intervalMs);
  }

  /** Writes what is buffered; resolves when written (or failed, then kept for the next try). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.flushing) {
      await this.flushing;
      if (!this.deliveries.size && !this.attempts.length) return;
    }
    const d = [...this.deliveries.values()];
    const a = this.attempts;
    if (!d.length && !a.length) return;
    this.deliveries = new Map();
    this.attempts = [];
    this.flushing = (async () => {
      let written = 0; // attempts already in the table: not written twice on a retry
      try {
        // Attempts first: a state that says "dead after 3 attempts" then always has its 3 attempts.
        for (; written < a.length; written += 2000) await writeAttempts(this.pool, a.slice(written, written + 2000));
        for (let i = 0; i < d.length; i += 2000) await writeDeliveries(this.pool, d.slice(i, i + 2000));
      } catch (err) {
        this.log.warn(
          { err: (err as Error).message, rows: d.length + a.length - Math.min(written, a.length) },
          'delivery records not written; retrying',
        );
        for (const r of d) this.delivery(r);
        this.attempts = a.slice(written).concat(this.attempts).slice(-this.maxBuffered);
        if (!this.timer && !this.closed) this.timer = setTimeout(() => void this.flush(), 1000);
      } finally {
        this.flushing = null;
      }
    })();
    await this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
  private closed = false;
}

// ---- reads for the API

export interface DeliveryView {
  event: string;
  subscription: string;
  application: string;
  subscription_name: string;
  state: DeliveryState;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  next_attempt_at: Date | null;
  updated_at: Date;
}

export async function listDeliveries(
  pool: Pool,
  f: {
    subscription?: string;
    event?: string;
    state?: string;
    application?: string;
    cursor?: { updatedAt: string; event: string; subscription: string };
    limit: number;
  },
): Promise<DeliveryView[]> {
  const r = await pool.query<DeliveryView>(
    `SELECT d.event, d.subscription, s.application, s.name AS subscription_name, d.state, d.attempts, d.last_status,
        d.last_error, d.next_attempt_at, d.updated_at
       FROM deliveries d JOIN subscriptions s ON s.id = d.subscription
      WHERE ($1::uuid IS NULL OR d.subscription = $1) AND ($2::uuid IS NULL OR d.event = $2)
        AND ($3::text IS NULL OR d.state = $3) AND ($4::text IS NULL OR s.application = $4)
        AND ($5::timestamptz IS NULL OR (d.updated_at, d.event, d.subscription) < ($5, $6::uuid, $7::uuid))
      ORDER BY d.updated_at DESC, d.event DESC, d.subscription DESC LIMIT $8`,
    [
      f.subscription ?? null,
      f.event ?? null,
      f.state ?? null,
      f.application ?? null,
      f.cursor?.updatedAt ?? null,
      f.cursor?.event ?? null,
      f.cursor?.subscription ?? null,
      f.limit,
    ],
  );
  return r.rows;
}

export async function getDelivery(pool: Pool, event: string, subscription: string): Promise<DeliveryView | null> {
  const r = await listDeliveries(pool, { event, subscription, limit: 1 });
  return r[0] ?? null;
}

export interface AttemptView {
  attempt: number;
  status: number | null;
  latency_ms: number | null;
  error_class: string | null;
  error: string | null;
  response_excerpt: string | null;
  created_at: Date;
}

export async function listAttempts(pool: Pool, event: string, subscription: string): Promise<AttemptView[]> {
  const r = await pool.query<AttemptView>(
    `SELECT attempt, status, latency_ms, error_class, error, response_excerpt, created_at FROM attempts
      WHERE event = $1 AND subscription = $2 ORDER BY id LIMIT 1000`,
    [event, subscription],
  );
  return r.rows;
}

/** 410 Gone: the subscription stops (paused with a reason) until someone resumes it. */
export async function disableSubscription(pool: Pool, id: string, reason: string): Promise<boolean> {
  const r = await pool.query(
    `UPDATE subscriptions SET paused = true, disabled_reason = $2, updated_at = now() WHERE id = $1 AND NOT paused`,
    [id, reason],
  );
  return (r.rowCount ?? 0) > 0;
}

/** HTTP subscriptions the bridge consumes (not paused, not disabled). */
export async function activeHttpSubscriptions(pool: Pool): Promise<SubscriptionRow[]> {
  const r = await pool.query<SubscriptionRow>(
    `SELECT * FROM subscriptions WHERE transport = 'http' AND NOT paused AND disabled_reason IS NULL ORDER BY id`,
  );
  return r.rows;
}

export async function subscriptionById(pool: Pool, id: string): Promise<SubscriptionRow | null> {
  const r = await pool.query<SubscriptionRow>('SELECT * FROM subscriptions WHERE id = $1', [id]);
  return r.rows[0] ?? null;
}

/** Stored events of a time range for a replay, oldest first, as the broker body needs them. */
export async function eventsForReplay(
  pool: Pool,
  f: { action: string | null; from: Date; to: Date; afterId: string | null; limit: number; viewer: string },
): Promise<ReplayRow[]> {
  const r = await pool.query<ReplayRow>(
    `SELECT e.id, e.action, e.application, e.schema_version, e.payload::text AS payload_text, e.deduper,
            e.conversation_id, e.created_at
       FROM events e JOIN actions a ON a.name = e.action
      WHERE e.created_at >= $1 AND e.created_at < $2 AND ($3::text IS NULL OR e.action = $3)
        AND ($4::uuid IS NULL OR e.id > $4) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = e.id)
        AND ${VISIBLE_TO('$6')}
      ORDER BY e.id LIMIT $5`,
    [f.from, f.to, f.action, f.afterId, f.limit, f.viewer],
  );
  return r.rows;
}

/** SQL: the action `a` lets application `param` subscribe (the owner, or everyone, or it is listed). */
const VISIBLE_TO = (param: string): string =>
  `(a.subscribers IS NULL OR a.application = ${param} OR ${param} = ANY(a.subscribers))`;

export interface ReplayRow {
  id: string;
  action: string;
  application: string;
  schema_version: number;
  payload_text: string;
  deduper: string | null;
  conversation_id: string | null;
  created_at: Date;
}

/** The stored event, when application `viewer` may receive it (its action lets it subscribe). */
export async function eventById(pool: Pool, id: string, viewer: string): Promise<ReplayRow | null> {
  const r = await pool.query<ReplayRow>(
    `SELECT e.id, e.action, e.application, e.schema_version, e.payload::text AS payload_text, e.deduper,
            e.conversation_id, e.created_at
       FROM events e JOIN actions a ON a.name = e.action WHERE e.id = $1 AND ${VISIBLE_TO('$2')}`,
    [id, viewer],
  );
  return r.rows[0] ?? null;
}
