import type { Logger } from './log.js';
import type { Pool } from './store/db.js';
import { RELAY_DONE, RELAY_SELECT, type OutboxRow } from './store/events.js';
import { eventBody, eventProperties, fromStoredRow } from './broker/message.js';
import type { ConfirmPublisher } from './broker/publisher.js';
import { metrics } from './metrics.js';

export interface RelayOptions {
  pool: Pool;
  publisher: ConfirmPublisher;
  exchange: string;
  /** Exchange of the events whose action names its subscribers. */
  restrictedExchange: string;
  logger: Logger;
  intervalMs: number;
  graceMs: number;
  batch?: number;
}

/**
 * The outbox relay: publishes what is committed but unconfirmed (a crash, a broker outage or a
 * connection cut between commit and confirm) and deferred events whose `deliver_at` has come.
 * Rows are locked SKIP LOCKED inside a transaction held across the confirms, so relays in several
 * processes split the work; a failure rolls back and the rows are tried again next tick.
 */
export class Relay {
  private readonly o: RelayOptions;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(opts: RelayOptions) {
    this.o = opts;
  }

  start(): void {
    this.stopped = false;
    this.loop();
  }

  private loop(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick()
        .then((n) => {
          // A full batch means there is more: go again at once.
          if (n >= (this.o.batch ?? 500) && !this.stopped) this.timer = setTimeout(() => this.loop(), 0);
        })
        .catch((err: unknown) => this.o.logger.warn({ err: (err as Error).message }, 'relay tick failed; will retry'))
        .finally(() => {
          this.running = null;
          this.loop();
        });
    }, this.o.intervalMs);
    this.timer.unref();
  }

  /** One pass; returns how many events it published. */
  async tick(): Promise<number> {
    if (!this.o.publisher.ready) return 0;
    const client = await this.o.pool.connect();
    let published: number;
    try {
      await client.query('BEGIN');
      const rows = (await client.query<OutboxRow>(RELAY_SELECT, [this.o.graceMs, this.o.batch ?? 500])).rows;
      metrics.outboxPending.set(rows.length);
      if (!rows.length) {
        await client.query('COMMIT');
        return 0;
      }
      const results = await Promise.allSettled(rows.map((r) => this.publish(r)));
      const ok = rows.filter((_, i) => results[i]!.status === 'fulfilled').map((r) => r.id);
      if (ok.length) await client.query(RELAY_DONE, [ok]);
      await client.query('COMMIT');
      published = ok.length;
      metrics.relayPublished.inc(published);
      if (published)
        this.o.logger.info({ count: published, failed: rows.length - published }, 'relay published events');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    return published;
  }

  private publish(r: OutboxRow): Promise<void> {
    const msg = fromStoredRow(r);
    const exchange = r.restricted ? this.o.restrictedExchange : this.o.exchange;
    return this.o.publisher.publish(exchange, r.action, eventBody(msg), eventProperties(msg));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.running) await this.running;
  }
}
