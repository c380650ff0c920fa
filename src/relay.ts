import { EventEmitter } from 'node:events';
import type { Logger } from './log.js';
import type { Pool } from './store/db.js';
import { RELAY_DONE, RELAY_LOCK, RELAY_SELECT, type OutboxRow } from './store/events.js';
import { eventBody, eventProperties, fromStoredRow } from './broker/message.js';
import type { ConfirmPublisher } from './broker/publisher.js';
import { backoffMs, Pause } from './broker/link.js';
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

/** What the relay needs from the publish path of its process (see `PublishPipeline.backlog`). */
export interface BacklogSource {
  /**
   * Non-null when every committed event of this process is either confirmed or the relay's: then
   * the relay takes this process's rows (`owner`) and those committed before it started (`since`)
   * without waiting for the grace period. Another live process's young rows are its publishes in
   * flight and are left to it.
   */
  ownRows(): { owner: string; since: Date } | null;
  /** A token naming what has been committed so far, or null while a commit to the outbox is in flight. */
  backlogToken(): number | null;
  /** Everything up to `token` is published: live publishing may resume. */
  drained(token: number): void;
}

/** What one relay pass did (the `tick` event). */
export interface RelayTick {
  /** Events published and confirmed in this pass. */
  published: number;
  /** Events tried and not confirmed: they stay in the outbox for the next pass. */
  failed: number;
  /** The next pass publishes one at a time (after a reconnect or a refused publish). */
  careful: boolean;
}

/**
 * What the relay loop reports (for tests and operators; nothing in Amebo depends on them):
 * - `tick`: a pass of the loop ended (also a pass that had nothing to do, or found the broker away);
 * - `drained`: a pass left no due row behind (the outbox holds nothing the relay should publish now);
 * - `error`: a pass failed (PostgreSQL away, say); the loop goes on and tries again. Emitted only
 *   when someone listens, so an unobserved relay never throws it.
 */
export interface RelayEvents {
  tick: [RelayTick];
  drained: [];
  error: [Error];
}

/**
 * The outbox relay: publishes what is committed but unconfirmed (a crash, a broker outage or a
 * connection cut between commit and confirm) and deferred events whose `deliver_at` has come.
 * Exactly one loop per process; one relay at a time across processes (an advisory lock), in commit
 * order, so that a backlog reaches the broker in the order it was accepted. Rows are locked inside
 * a transaction held across the confirms; a failure rolls back and they are tried again.
 */
export class Relay extends EventEmitter<RelayEvents> {
  private readonly o: RelayOptions;
  private stopped = true;
  private loop: Promise<void> | null = null;
  private readonly pause = new Pause();
  private kicked = false;
  private backlog: BacklogSource | null = null;
  /** Loops started since construction (one per start(); a test reads it). */
  loops = 0;

  /** What the last pass did (read by `run` to report it; not allocated per pass). */
  private last = { published: 0, failed: 0, drained: false };

  constructor(opts: RelayOptions) {
    super();
    this.o = opts;
    // The broker is back: publish what waited for it now, not at the next tick, and carefully.
    opts.publisher.events.on('ready', () => {
      this.careful = true;
      this.refusals = 0;
      this.backingOff = false;
      this.kick();
    });
  }

  /** The publish path of this process, which routes events through the outbox during an outage. */
  attach(backlog: BacklogSource): void {
    this.backlog = backlog;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loops++;
    this.loop = this.run();
  }

  /** Runs a tick now (or as soon as the current one ends; after a refused publish, once the backoff is over). */
  kick(): void {
    this.kicked = true;
    if (!this.backingOff) this.pause.wake();
  }

  /**
   * Passes in a row in which the broker refused a publish. While a queue the events route to has no
   * leader (a quorum queue electing one after a node died), every publish is nacked, also where the
   * other queues took the message. Each new commit kicks the relay, so without a pause each kick
   * republished the head event: one duplicate per commit on the queues that did take it (355 in one
   * chaos run). Now the next pass waits 50 ms, doubling up to the interval; a reconnect ends the wait.
   */
  private refusals = 0;
  private backingOff = false;

  private async run(): Promise<void> {
    const batch = this.o.batch ?? 500;
    while (!this.stopped) {
      this.kicked = false;
      let n = 0;
      let failed = false;
      this.last.published = this.last.failed = 0;
      this.last.drained = false;
      try {
        n = await this.tick();
      } catch (err) {
        failed = true;
        this.o.logger.warn({ err: (err as Error).message }, 'relay tick failed; will retry');
        if (this.listenerCount('error')) this.emit('error', err as Error);
      }
      if (this.listenerCount('tick'))
        this.emit('tick', { published: this.last.published, failed: this.last.failed, careful: this.careful });
      if (!failed && this.last.drained && this.listenerCount('drained')) this.emit('drained');
      if (this.stopped) break;
      if (!failed && this.last.failed > 0) {
        this.backingOff = true;
        await this.pause.sleep(backoffMs(this.refusals++, 50, this.o.intervalMs));
        this.backingOff = false;
        continue;
      }
      if (!failed) this.refusals = 0;
      // A full batch means there is more: go again at once.
      if (n >= batch || this.kicked) continue;
      await this.pause.sleep(this.o.intervalMs);
    }
  }

  /** One pass; returns how many events it published. */
  async tick(): Promise<number> {
    if (!this.o.publisher.ready) return 0;
    const token = this.backlog?.backlogToken() ?? null;
    const own = this.backlog?.ownRows() ?? null;
    const client = await this.o.pool.connect();
    let published: number;
    let failed: number;
    let rows: OutboxRow[];
    try {
      await client.query('BEGIN');
      if (!(await client.query<{ locked: boolean }>(RELAY_LOCK)).rows[0]?.locked) {
        await client.query('COMMIT');
        return 0;
      }
      rows = (
        await client.query<OutboxRow>(RELAY_SELECT, [
          this.o.graceMs,
          this.o.batch ?? 500,
          own?.owner ?? null,
          own?.since ?? null,
        ])
      ).rows;
      metrics.outboxPending.set(rows.length);
      if (!rows.length) {
        await client.query('COMMIT');
        this.last.drained = true;
        if (token !== null && own) this.backlog?.drained(token);
        return 0;
      }
      const { ok, errors } = this.careful ? await this.oneByOne(rows) : await this.pipelined(rows);
      failed = rows.length - ok.length;
      if (ok.length) await client.query(RELAY_DONE, [ok]);
      await client.query('COMMIT');
      published = ok.length;
      this.last.published = published;
      this.last.failed = failed;
      this.last.drained = failed === 0 && rows.length < (this.o.batch ?? 500);
      metrics.relayPublished.inc(published);
      if (published) this.o.logger.info({ count: published, failed, careful: this.careful }, 'relay published events');
      if (failed) {
        if (!this.careful)
          this.o.logger.warn('relay: publishing one at a time until the broker confirms a whole batch');
        this.careful = true;
        this.o.logger.warn(
          { failed, first: errors.slice(0, 3) },
          'relay: publishes not confirmed; they stay in the outbox',
        );
      } else if (this.careful && rows.length) {
        this.careful = false;
        this.o.logger.info('relay: a whole batch confirmed; publishing pipelined again');
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    if (token !== null && own && failed === 0 && rows.length < (this.o.batch ?? 500)) this.backlog?.drained(token);
    return published;
  }

  /**
   * After a reconnect or a refused publish, a broker may confirm some publishes and nack others
   * (a quorum queue electing a leader nacks for a while): pipelined, a nacked event would be
   * overtaken by the ones after it. So then the relay publishes one at a time and stops at the
   * first failure; a batch confirmed whole brings the pipelined mode back.
   */
  private careful = true;

  /** Written to the channel in order (one channel keeps it), confirmed together. */
  private async pipelined(rows: OutboxRow[]): Promise<{ ok: string[]; errors: string[] }> {
    const results = await Promise.allSettled(rows.map((r) => this.publish(r)));
    return {
      ok: rows.filter((_, i) => results[i]!.status === 'fulfilled').map((r) => r.id),
      errors: results.flatMap((r, i) =>
        r.status === 'rejected' ? [`${rows[i]!.id}: ${(r.reason as Error).message}`] : [],
      ),
    };
  }

  private async oneByOne(rows: OutboxRow[]): Promise<{ ok: string[]; errors: string[] }> {
    const ok: string[] = [];
    for (const r of rows)
      try {
        await this.publish(r);
        ok.push(r.id);
      } catch (err) {
        return { ok, errors: [`${r.id}: ${(err as Error).message}`] };
      }
    return { ok, errors: [] };
  }

  private publish(r: OutboxRow): Promise<void> {
    const msg = fromStoredRow(r);
    const exchange = r.restricted ? this.o.restrictedExchange : this.o.exchange;
    return this.o.publisher.publish(exchange, r.action, eventBody(msg), eventProperties(msg));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pause.wake();
    if (this.loop) await this.loop;
    this.loop = null;
  }
}
