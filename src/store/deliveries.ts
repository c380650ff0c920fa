import type { Pool } from './db.js';

/** Delivery states (one row per event × subscription) and the attempt log. */

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

// ---- reads for the API and the operators' tools

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
