import { EventEmitter } from 'node:events';
import type { Pool } from '../src/store/db.js';
import type { Logger } from '../src/log.js';
import { isUuid } from '../src/ids.js';
import { writeAttempts, writeDeliveries, type AttemptRecord, type DeliveryRecord } from '../src/store/deliveries.js';

/**
 * What the recorder reports (for tests and operators):
 * - `flushed`: a batch is in PostgreSQL: how many delivery states and attempts it held;
 * - `error`: a batch could not be written (it is kept and tried again). Emitted only when someone
 *   listens, so an unobserved recorder never throws it.
 */
export interface RecorderEvents {
  flushed: [{ deliveries: number; attempts: number }];
  error: [Error];
}

/**
 * Writes delivery states and attempts in batches (every `intervalMs` or `maxRows`), off the
 * delivery path: an ack never waits for PostgreSQL. While PostgreSQL is down rows wait in memory up
 * to `maxBuffered`, then the oldest are dropped with a warning (records are not the delivery promise).
 */
export class Recorder extends EventEmitter<RecorderEvents> {
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
    super();
    this.pool = o.pool;
    this.log = o.log;
    this.intervalMs = o.intervalMs ?? 75;
    this.maxRows = o.maxRows ?? 500;
    this.maxBuffered = o.maxBuffered ?? 50_000;
  }

  delivery(r: DeliveryRecord): void {
    if (!isUuid(r.event)) return; // a foreign message id: nothing to key a record on
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
    if (!isUuid(r.event)) return;
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
    // Set inside the write below (a closure: hence the widened types).
    let ok = false as boolean;
    let failure = null as Error | null;
    this.flushing = (async () => {
      let written = 0; // attempts already in the table: not written twice on a retry
      try {
        // Attempts first: a state that says "dead after 3 attempts" then always has its 3 attempts.
        for (; written < a.length; written += 2000) await writeAttempts(this.pool, a.slice(written, written + 2000));
        for (let i = 0; i < d.length; i += 2000) await writeDeliveries(this.pool, d.slice(i, i + 2000));
        ok = true;
      } catch (err) {
        failure = err as Error;
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
    // Reported once the batch is settled, so a listener sees the table as written.
    if (ok && this.listenerCount('flushed')) this.emit('flushed', { deliveries: d.length, attempts: a.length });
    if (failure && this.listenerCount('error')) this.emit('error', failure);
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
  private closed = false;
}
