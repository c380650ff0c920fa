import type { Pool } from './db.js';

/** All event-log (outbox) SQL. */

export interface NewEvent {
  id: string;
  action: string;
  application: string;
  schemaVersion: number;
  payloadJson: string;
  deduper: string | null;
  conversationId: string;
  deliverAt: Date | null;
  createdAt: Date;
}

export interface EventRow {
  id: string;
  action: string;
  application: string;
  schema_version: number;
  payload: unknown;
  deduper: string | null;
  conversation_id: string | null;
  deliver_at: Date | null;
  created_at: Date;
  published_at: Date | null;
}

/** Rows for the broker: payload kept as the JSON text it was stored as. */
export interface OutboxRow extends Omit<EventRow, 'payload'> {
  payload_text: string;
}

export interface ExistingEvent {
  id: string;
  application: string;
  deduper: string;
  created_at: Date;
  published_at: Date | null;
}

/**
 * One multi-row INSERT for a whole group commit. Returns the ids inserted; the rest collided on
 * (application, deduper) and are looked up with `findByDedupers`.
 */
export async function insertEvents(pool: Pool, evs: NewEvent[]): Promise<Set<string>> {
  const r = await pool.query<{ id: string }>({
    name: 'amebo_insert_events',
    text: `INSERT INTO events (id, action, application, schema_version, payload, deduper, conversation_id, deliver_at, created_at)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::json[], $6::text[], $7::text[],
                          $8::timestamptz[], $9::timestamptz[])
     ON CONFLICT (application, deduper) WHERE deduper IS NOT NULL DO NOTHING
     RETURNING id`,
    values: [
      evs.map((e) => e.id),
      evs.map((e) => e.action),
      evs.map((e) => e.application),
      evs.map((e) => e.schemaVersion),
      evs.map((e) => e.payloadJson),
      evs.map((e) => e.deduper),
      evs.map((e) => e.conversationId),
      evs.map((e) => e.deliverAt),
      evs.map((e) => e.createdAt),
    ],
  });
  return new Set(r.rows.map((x) => x.id));
}

export async function findByDedupers(
  pool: Pool,
  keys: { application: string; deduper: string }[],
): Promise<ExistingEvent[]> {
  if (!keys.length) return [];
  const r = await pool.query<ExistingEvent>(
    `SELECT e.id, e.application, e.deduper, e.created_at, e.published_at
       FROM events e JOIN unnest($1::text[], $2::text[]) AS k(application, deduper)
         ON e.application = k.application AND e.deduper = k.deduper`,
    [keys.map((k) => k.application), keys.map((k) => k.deduper)],
  );
  return r.rows;
}

/**
 * Marks confirmed events. The mark is an optimisation (without it the relay publishes the event
 * again, a duplicate at worst), so it does not wait for its WAL flush.
 */
export async function markPublished(pool: Pool, ids: string[]): Promise<void> {
  if (!ids.length) return;
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    await c.query('SET LOCAL synchronous_commit = off');
    await c.query({
      name: 'amebo_mark_published',
      text: 'UPDATE events SET published_at = now() WHERE id = ANY($1::uuid[]) AND published_at IS NULL',
      values: [ids],
    });
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

const OUTBOX_COLS = `id, action, application, schema_version, payload::text AS payload_text, deduper, conversation_id,
  deliver_at, created_at, published_at`;

/**
 * Events the relay owns: committed but unconfirmed for longer than `graceMs`, or whose `deliver_at`
 * has come. Locked with SKIP LOCKED so several relays share the work instead of doubling it.
 */
export const RELAY_SELECT = `SELECT ${OUTBOX_COLS} FROM events
  WHERE published_at IS NULL
    AND ((deliver_at IS NULL AND created_at < now() - make_interval(secs => $1::float8 / 1000)) OR deliver_at <= now())
  ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED`;

export interface EventFilter {
  action?: string;
  application?: string;
  deduper?: string;
  from?: Date;
  to?: Date;
  cursor?: string;
  limit: number;
  /** Oldest first (replay) instead of newest first (listing). */
  ascending?: boolean;
}

export async function listEvents(pool: Pool, f: EventFilter): Promise<EventRow[]> {
  const cmp = f.ascending ? '>' : '<';
  const r = await pool.query<EventRow>(
    `SELECT * FROM events
      WHERE ($1::text IS NULL OR action = $1) AND ($2::text IS NULL OR application = $2)
        AND ($3::text IS NULL OR deduper = $3) AND ($4::timestamptz IS NULL OR created_at >= $4)
        AND ($5::timestamptz IS NULL OR created_at < $5) AND ($6::uuid IS NULL OR id ${cmp} $6)
      ORDER BY id ${f.ascending ? 'ASC' : 'DESC'} LIMIT $7`,
    [
      f.action ?? null,
      f.application ?? null,
      f.deduper ?? null,
      f.from ?? null,
      f.to ?? null,
      f.cursor ?? null,
      f.limit,
    ],
  );
  return r.rows;
}

export async function getEvent(pool: Pool, id: string): Promise<EventRow | null> {
  const r = await pool.query<EventRow>('SELECT * FROM events WHERE id = $1', [id]);
  return r.rows[0] ?? null;
}

export async function getOutboxRows(pool: Pool, ids: string[]): Promise<OutboxRow[]> {
  const r = await pool.query<OutboxRow>(`SELECT ${OUTBOX_COLS} FROM events WHERE id = ANY($1::uuid[]) ORDER BY id`, [
    ids,
  ]);
  return r.rows;
}

export interface DeliveryRow {
  event: string;
  subscription: string;
  subscription_name: string;
  application: string;
  state: string;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  next_attempt_at: Date | null;
  updated_at: Date;
}

export async function deliveriesOfEvent(pool: Pool, id: string): Promise<DeliveryRow[]> {
  const r = await pool.query<DeliveryRow>(
    `SELECT d.*, s.name AS subscription_name, s.application FROM deliveries d JOIN subscriptions s ON s.id = d.subscription
      WHERE d.event = $1 ORDER BY s.application, s.name`,
    [id],
  );
  return r.rows;
}
