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

export async function deliveriesOfEvent(pool: Pool, id: string): Promise<DeliveryView[]> {
  const r = await pool.query<DeliveryView>(
    `SELECT d.*, s.name AS subscription_name, s.application FROM deliveries d JOIN subscriptions s ON s.id = d.subscription
      WHERE d.event = $1 ORDER BY s.application, s.name`,
    [id],
  );
  return r.rows;
}

// ---- health and stats of a subscription

/** Attempts of one subscription over a window, in buckets, oldest first. */
export interface StatsBucket {
  at: Date;
  attempts: number;
  successes: number;
  failures: number;
  p50_ms: number | null;
  p99_ms: number | null;
  /** Largest queue depth sampled in the bucket (null: no sample). */
  backlog: number | null;
}

export async function subscriptionStats(
  pool: Pool,
  subscription: string,
  from: Date,
  bucketSeconds: number,
): Promise<StatsBucket[]> {
  const r = await pool.query<StatsBucket>(
    `WITH b AS (
       SELECT generate_series(date_bin(make_interval(secs => $3), $2::timestamptz, 'epoch'), now(), make_interval(secs => $3)) AS at
     ), a AS (
       SELECT date_bin(make_interval(secs => $3), created_at, 'epoch') AS at, count(*)::int AS attempts,
              count(*) FILTER (WHERE status BETWEEN 200 AND 299)::int AS successes,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
              percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms
         FROM attempts WHERE subscription = $1 AND created_at >= $2 GROUP BY 1
     ), q AS (
       SELECT date_bin(make_interval(secs => $3), at, 'epoch') AS at, max(messages)::int AS backlog
         FROM queue_samples WHERE subscription = $1 AND at >= $2 GROUP BY 1
     )
     SELECT b.at, coalesce(a.attempts, 0) AS attempts, coalesce(a.successes, 0) AS successes,
            coalesce(a.attempts - a.successes, 0) AS failures, a.p50_ms, a.p99_ms, q.backlog
       FROM b LEFT JOIN a ON a.at = b.at LEFT JOIN q ON q.at = b.at ORDER BY b.at`,
    [subscription, from, bucketSeconds],
  );
  return r.rows;
}

/** The health figures PostgreSQL holds for one subscription over a window. */
export interface HealthFigures {
  attempts: number;
  successes: number;
  p50_ms: number | null;
  p99_ms: number | null;
  retrying: number;
  last_success_at: Date | null;
  last_failure_at: Date | null;
  last_error: string | null;
}

export async function subscriptionHealthFigures(pool: Pool, subscription: string, from: Date): Promise<HealthFigures> {
  const r = await pool.query<HealthFigures>(
    `SELECT
       (SELECT count(*)::int FROM attempts WHERE subscription = $1 AND created_at >= $2) AS attempts,
       (SELECT count(*)::int FROM attempts WHERE subscription = $1 AND created_at >= $2 AND status BETWEEN 200 AND 299) AS successes,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FROM attempts WHERE subscription = $1 AND created_at >= $2) AS p50_ms,
       (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM attempts WHERE subscription = $1 AND created_at >= $2) AS p99_ms,
       (SELECT count(*)::int FROM deliveries WHERE subscription = $1 AND state = 'retrying') AS retrying,
       (SELECT max(created_at) FROM attempts WHERE subscription = $1 AND status BETWEEN 200 AND 299) AS last_success_at,
       (SELECT max(created_at) FROM attempts WHERE subscription = $1 AND (status IS NULL OR status NOT BETWEEN 200 AND 299)) AS last_failure_at,
       (SELECT coalesce(error, 'HTTP ' || status) FROM attempts
         WHERE subscription = $1 AND (status IS NULL OR status NOT BETWEEN 200 AND 299) ORDER BY created_at DESC LIMIT 1) AS last_error`,
    [subscription, from],
  );
  return r.rows[0]!;
}

/** One queue-depth sample per subscription (the sampler's tick). */
export async function writeQueueSamples(
  pool: Pool,
  rows: { subscription: string; at: Date; messages: number; consumers: number; dead: number | null }[],
): Promise<void> {
  if (!rows.length) return;
  await pool.query(
    `INSERT INTO queue_samples (subscription, at, messages, consumers, dead)
       SELECT u.* FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[], $5::int[]) AS u(subscription, at, messages, consumers, dead)
       WHERE EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = u.subscription)
     ON CONFLICT DO NOTHING`,
    [
      rows.map((r) => r.subscription),
      rows.map((r) => r.at),
      rows.map((r) => r.messages),
      rows.map((r) => r.consumers),
      rows.map((r) => r.dead),
    ],
  );
}

/** Drops samples older than `keepSeconds`. */
export async function pruneQueueSamples(pool: Pool, keepSeconds: number): Promise<number> {
  const r = await pool.query(`DELETE FROM queue_samples WHERE at < now() - make_interval(secs => $1)`, [keepSeconds]);
  return r.rowCount ?? 0;
}

/**
 * Events waiting for a subscription, oldest first, from the event log and delivery records (never
 * from the broker: getting and requeueing messages counts toward a quorum queue's delivery limit):
 * events of its action pattern since it was created, published, with no final delivery state.
 * `actions` are the action names its pattern matches (and it may receive).
 */
export async function pendingForSubscription(
  pool: Pool,
  subscription: string,
  actions: string[],
  since: Date,
  limit: number,
): Promise<
  {
    id: string;
    action: string;
    created_at: Date;
    payload: unknown;
    state: string | null;
    attempts: number;
    next_attempt_at: Date | null;
  }[]
> {
  if (!actions.length) return [];
  const r = await pool.query(
    `SELECT e.id, e.action, e.created_at, e.payload, d.state, coalesce(d.attempts, 0) AS attempts, d.next_attempt_at
       FROM events e LEFT JOIN deliveries d ON d.event = e.id AND d.subscription = $1
      WHERE e.action = ANY($2::text[]) AND e.created_at >= $3
        AND (e.deliver_at IS NULL OR e.deliver_at <= now())
        AND (d.state IS NULL OR d.state NOT IN ('delivered', 'dead'))
      ORDER BY e.id LIMIT $4`,
    [subscription, actions, since, limit],
  );
  return r.rows;
}
