import type { ManagedChannel, RecoveringConnection } from '../src/broker/link.js';
import type { Channel, ConsumeMessage } from 'amqplib';
import type { ConfirmPublisher } from '../src/broker/publisher.js';
import { HEADER } from '../src/broker/message.js';
import type { Topology } from '../src/broker/topology.js';
import type { Logger } from '../src/log.js';
import { metrics } from '../src/metrics.js';
import type { SubscriptionRow } from '../src/store/registry.js';
import type { Breaker, BreakerState } from './breaker.js';
import { spliceable, type BrokerEvent, type Outgoing } from './envelope.js';
import { decide, isSuccess, type LadderSettings } from '../src/delivery/ladder.js';
import { ack, attemptOf, deadLetter, requeueLater, retryLater } from '../src/delivery/settle.js';
import type { Attempt, Sender, Target } from './sender.js';
import type { Recorder } from './recorder.js';

/** How long a worker not holding an ordered subscription's head waits before it probes (see probeTick). */
const ORDERED_STANDBY_PROBE_DELAY_MS = 3000;

export interface WorkerDeps {
  sender: Sender;
  recorder: Recorder;
  publisher: ConfirmPublisher;
  topology: Topology;
  breaker: Breaker | null;
  log: Logger;
  prefetch: number;
  /** Longest wait between two tries of an ordered subscription's held event (see `deliver`). */
  orderedProbeMs: number;
  /** Declares a retry queue for a delay outside the schedule (a long Retry-After). */
  ensureRetryQueue(delayMs: number): Promise<void>;
  /** The handler answered 410: disable the subscription everywhere. */
  onGone(row: SubscriptionRow, reason: string): Promise<void>;
  /** The connection the worker's channel lives on (a `ManagedChannel` named `bridge <queue>`). */
  broker: RecoveringConnection;
  /** Declares the subscription's queues again (after the broker lost them) unless it was deleted. */
  /** Declares the subscription's queues again; false when the subscription is gone (deleted). */
  redeclare(row: SubscriptionRow): Promise<boolean>;
  /** A delivery outcome for the live tail (`GET /v1/stream`); dropped when nobody listens. */
  note(n: Record<string, unknown>): void;
  /** Where an ordered subscription keeps a held event's progress across channel losses (Redis). */
  held: HeldStore;
  /** Reserves the next `rate_limit` slot shared by all bridge processes: ms to wait, or null (pace locally). */
  reserveSlot(subscription: string, rate: number): Promise<number | null>;
  /** The worker's channel came up, was lost, or could not be built (the next try follows after `delayMs`). */
  channelState?(e: WorkerChannelEvent): void;
}

/** What a worker reports about its channel (the bridge's `worker-ready`, `worker-lost`, `worker-reconnecting`). */
export type WorkerChannelEvent =
  { state: 'ready' } | { state: 'lost' } | { state: 'reconnecting'; attempt: number; delayMs: number; error: string };

/** Progress of an ordered subscription's head event, which is retried in place (never re-published). */
export interface HeldState {
  /** The number of the next attempt. */
  next: number;
  /** Attempts that counted on the retry ladder so far (probes in between do not). */
  step?: number;
  /** When the next ladder step is due (epoch ms); tries before it are probes. */
  stepAt?: number;
  firstAt: number;
  /** When the next attempt is due (epoch ms). */
  at: number;
}
export interface HeldStore {
  get(sub: string, event: string): Promise<HeldState | null>;
  set(sub: string, event: string, s: HeldState, ttlMs: number): Promise<void>;
  del(sub: string, event: string): Promise<void>;
}

/**
 * RabbitMQ closes a channel holding an unacked message past `consumer_timeout` (30 min by
 * default), so an ordered subscription never waits longer than this in one go.
 */
export const ORDERED_MAX_WAIT_MS = 20 * 60_000;

type BreakerMode = 'closed' | 'open' | 'half';

/**
 * Consumes one HTTP subscription's queue: bounded prefetch, each message attempted as it arrives;
 * the outcome acks it (delivered), re-publishes it to a retry step (confirmed first) or to the
 * dead-letter exchange. Ordered subscriptions (single active consumer, prefetch 1) retry in place so
 * a failing event holds the line. A circuit breaker stops the consumer while the endpoint is down.
 *
 * Its channel is a `ManagedChannel` (`bridge <queue>`), rebuilt by the same code as every other
 * AMQP user of Amebo: on each (re)connect, with backoff after a channel-level close or a failed
 * build, and after the broker cancels the consumer (the queue is declared again, then `reset()`).
 * Its state shows in `amebo_amqp_channels_ready{channel="bridge <queue>"}` through the connection's
 * observer.
 */
export class SubscriptionWorker {
  row: SubscriptionRow;
  target: Target;
  ladder: LadderSettings;
  readonly queue: string;
  private readonly d: WorkerDeps;
  private readonly mc: ManagedChannel;
  /** The channel being set up or live (`mc`'s, once ready); null once lost. */
  private ch: Channel | null = null;
  private tag: string | null = null;
  private stopped = false;
  private finished = false;
  private inflight = 0;
  private readonly idle: (() => void)[] = [];
  private mode: BreakerMode = 'closed';
  private probing = false;
  private breakerState: BreakerState | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private readonly waiters: (() => void)[] = [];
  private readonly sleepers = new Set<() => void>();
  private readonly hist: ReturnType<typeof metrics.deliverySeconds.labels>;
  private readonly gauge: ReturnType<typeof metrics.inFlight.labels>;

  constructor(row: SubscriptionRow, target: Target, deps: WorkerDeps) {
    this.row = row;
    this.target = target;
    this.ladder = ladderOf(row);
    this.d = deps;
    this.queue = deps.topology.subscriptionQueue(row.application, row.name);
    this.hist = metrics.deliverySeconds.labels(target.label);
    this.gauge = metrics.inFlight.labels(target.label);
    this.mc = deps.broker.channel({
      name: `bridge ${this.queue}`,
      prefetch: row.ordered ? 1 : deps.prefetch,
      setup: (ch) => this.setup(ch),
    });
    this.mc.on('ready', () => {
      if (!this.stopped) this.d.channelState?.({ state: 'ready' });
    });
    this.mc.on('lost', () => {
      this.ch = null;
      this.tag = null;
      if (!this.stopped) this.d.channelState?.({ state: 'lost' });
    });
    // A failed build is logged at warn by the connection, with the channel's name and node.
    this.mc.on('failed', (f) => {
      if (!this.stopped)
        this.d.channelState?.({
          state: 'reconnecting',
          attempt: f.attempt,
          delayMs: f.delayMs,
          error: f.error.message,
        });
    });
  }

  get endpoint(): string {
    return this.target.url.toString();
  }
  get ordered(): boolean {
    return this.row.ordered;
  }

  update(row: SubscriptionRow, target: Target): void {
    this.row = row;
    this.target = target;
    this.ladder = ladderOf(row);
  }

  /**
   * Registers the worker's channel with the connection: built now when connected, else on
   * connect. Never throws: a failed build is reported (`reconnecting`) and retried with backoff.
   */
  async start(): Promise<void> {
    if (this.stopped) return;
    await this.mc.open({ retry: true });
  }

  /** The managed channel's setup, on every new channel: consume unless the circuit is open. */
  private async setup(ch: Channel): Promise<void> {
    if (this.stopped) return;
    this.ch = ch;
    this.tag = null;
    try {
      if (this.mode !== 'open') await this.consume();
    } catch (err) {
      if (this.ch === ch) this.ch = null;
      this.tag = null;
      throw err;
    }
  }

  /** The channel a consumer is being started on. */
  private consuming: Channel | null = null;

  /** Starts the consumer unless one runs or is starting; cancels it at once if the state moved meanwhile. */
  private async consume(): Promise<void> {
    const ch = this.ch;
    if (!ch || this.tag || this.consuming === ch || this.stopped || this.mode === 'open') return;
    // An ordered subscription holding its head event (paused by the breaker meanwhile) must not
    // consume again until that event is settled: a new consumer gets a fresh prefetch window, and
    // the next event would overtake the held one. `handle` consumes once it is settled.
    if (this.ordered && this.inflight > 0) return;
    this.consuming = ch;
    try {
      const { consumerTag } = await ch.consume(this.queue, (msg) => {
        if (msg) void this.handle(ch, msg);
        else if (!this.stopped && this.ch === ch) {
          // The broker cancelled us (queue deleted or failed over): declare the queue again, then
          // reset the managed channel, which is rebuilt (with backoff) until the queue is there.
          // A subscription being deleted loses its queue before the notice stops this worker: that
          // is routine, not worth a warning.
          void this.d
            .redeclare(this.row)
            .then((exists) => {
              if (exists)
                this.d.log.warn({ queue: this.queue }, 'consumer cancelled by the broker; declared again, attaching');
              else this.d.log.debug({ queue: this.queue }, 'consumer cancelled: the subscription was deleted');
            })
            .catch((err: Error) =>
              this.d.log.warn(
                { err: err.message, queue: this.queue },
                'consumer cancelled by the broker; queue not declared',
              ),
            )
            .finally(() => {
              if (this.mc.channel === ch) this.mc.reset();
              else void ch.close().catch(() => undefined);
            });
        }
      });
      if (this.ch !== ch) return;
      this.tag = consumerTag;
      if (this.stopped || (this.mode as BreakerMode) === 'open') await this.cancel();
    } finally {
      if (this.consuming === ch) this.consuming = null;
    }
  }

  private async cancel(): Promise<void> {
    const ch = this.ch;
    const tag = this.tag;
    this.tag = null;
    if (ch && tag) await ch.cancel(tag).catch(() => undefined);
  }

  /** Stops consuming, lets attempts in flight finish (bounded), then closes the channel (requeues the rest). */
  async stop(graceMs = 5000): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.halt();
    if (this.inflight > 0)
      await Promise.race([new Promise<void>((r) => this.idle.push(r)), new Promise((r) => setTimeout(r, graceMs))]);
    this.ch = null;
    // Closes the channel (what is unacked is requeued) and removes its gauge.
    await this.mc.close();
  }

  /** Stops taking and attempting messages at once; those held are requeued when the channel closes. */
  async halt(): Promise<void> {
    this.stopped = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    for (const w of this.waiters.splice(0)) w();
    for (const s of [...this.sleepers]) s();
    await this.cancel();
  }

  // ---------------------------------------------------------------- circuit breaker

  /** The endpoint's circuit opened (here or in another worker). */
  onOpen(state: BreakerState): void {
    this.breakerState = state;
    if (this.stopped) return;
    if (this.mode !== 'open') this.d.log.info({ queue: this.queue }, 'consumer paused: circuit open');
    this.mode = 'open';
    this.probing = false;
    // An ordered subscription holding its head event keeps its consumer: the queue has a single
    // active consumer, and cancelling it would hand the next event to another bridge process while
    // this one still holds the head. The held event waits at the gate; prefetch 1 lets nothing else in.
    if (!(this.ordered && this.inflight > 0)) void this.cancel();
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probeTick(), Math.max(0, state.until - Date.now()));
  }

  /** The endpoint's circuit closed (a probe succeeded somewhere). */
  onClosed(): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (this.mode === 'closed') return;
    this.d.log.info({ queue: this.queue }, 'consumer resumed: circuit closed');
    this.mode = 'closed';
    this.probing = false;
    this.breakerState = null;
    for (const w of this.waiters.splice(0)) w();
    if (this.ch && !this.tag) void this.consume().catch(() => undefined);
  }

  /** The cool-down (its `until`) for which this worker already let the head's holder probe first. */
  private standbyDeferredFor = 0;

  private async probeTick(): Promise<void> {
    this.probeTimer = null;
    const b = this.d.breaker;
    if (!b || this.stopped || this.mode !== 'open') return;
    const st = await b.state(this.endpoint);
    if (!st) return this.onClosed();
    if (st.until > Date.now()) return this.onOpen(st);
    // An ordered subscription's head event is held by one worker (the queue's single active
    // consumer): that one probes. Another bridge's worker for it would consume as a standby, get no
    // message, and hold the probe for the whole probe lease while the holder waits. So a worker
    // holding nothing lets ORDERED_STANDBY_PROBE_DELAY_MS pass first, once per cool-down, and
    // probes only if no holder did (the holder's process died, say).
    if (this.ordered && this.inflight === 0 && this.standbyDeferredFor !== st.until) {
      this.standbyDeferredFor = st.until;
      this.probeTimer = setTimeout(() => void this.probeTick(), ORDERED_STANDBY_PROBE_DELAY_MS);
      return;
    }
    if (await b.tryProbe(this.endpoint, this.target.timeoutMs + 5000)) {
      this.breakerState = st;
      this.mode = 'half';
      this.d.log.info({ queue: this.queue }, 'circuit half-open: probing with one delivery');
      for (const w of this.waiters.splice(0)) w();
      if (this.ch && !this.tag) await this.consume().catch(() => undefined);
    } else this.probeTimer = setTimeout(() => void this.probeTick(), 1000);
  }

  /** Waits until an attempt may go: 'go', 'probe' (the one half-open attempt) or 'stop'. */
  private async gate(): Promise<'go' | 'probe' | 'stop'> {
    for (;;) {
      if (this.stopped) return 'stop';
      if (this.mode === 'closed') return 'go';
      if (this.mode === 'half' && !this.probing) {
        this.probing = true;
        return 'probe';
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private async afterAttempt(a: Attempt, probe: boolean): Promise<void> {
    const b = this.d.breaker;
    if (!b) return;
    const bad = a.status === null ? !a.fatal : a.status >= 500 || a.status === 429;
    if (probe) {
      // `probing` stays set until the state moves on: no second probe slips in meanwhile.
      if (!bad) {
        await b.success(this.endpoint, true);
        this.onClosed();
      } else {
        const st = await b.reopen(this.endpoint, this.breakerState);
        if (st) this.onOpen(st);
        else this.onClosed();
      }
      return;
    }
    if (bad) {
      const st = await b.failure(this.endpoint);
      if (st && this.mode === 'closed') this.onOpen(st);
    } else if (a.status !== null && a.status < 300) await b.success(this.endpoint);
  }

  // ---------------------------------------------------------------- delivery

  private async handle(ch: Channel, msg: ConsumeMessage): Promise<void> {
    this.inflight++;
    this.gauge.inc();
    try {
      await this.deliver(ch, msg);
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message, queue: this.queue }, 'delivery not settled; message requeued');
      await requeueLater(ch, msg, () => this.ch === ch);
    } finally {
      this.inflight--;
      this.gauge.dec();
      if (this.inflight === 0) for (const r of this.idle.splice(0)) r();
      if (this.ordered && this.inflight === 0 && this.ch && !this.tag && this.mode !== 'open')
        void this.consume().catch(() => undefined);
    }
  }

  private async deliver(ch: Channel, msg: ConsumeMessage): Promise<void> {
    const headers = msg.properties.headers ?? {};
    const id = msg.properties.messageId as string | undefined;
    const action = (headers[HEADER.action] as string | undefined) ?? (msg.properties.type as string | undefined);
    let event: Outgoing;
    if (id && action && spliceable(msg.content)) event = { id, action, raw: msg.content };
    else
      try {
        const e = JSON.parse(msg.content.toString('utf8')) as BrokerEvent;
        if (typeof e.id !== 'string' || typeof e.action !== 'string') throw new Error('no id or action');
        event = { id: e.id, action: e.action, event: e, raw: msg.content };
      } catch {
        await this.deadLetter(ch, msg, 'malformed', 1, null);
        return;
      }
    let { attempt, firstAt } = attemptOf(msg);
    let step = attempt;
    let stepDue = 0;
    if (this.ordered) {
      // Redelivered after a crash or a channel loss: carry on where the last holder stopped.
      const h = await this.d.held.get(this.row.id, event.id);
      if (h) {
        attempt = Math.max(attempt, h.next);
        step = h.step ?? h.next;
        stepDue = h.stepAt ?? 0;
        firstAt = h.firstAt;
        if (h.at > Date.now() && !(await this.sleep(Math.min(h.at - Date.now(), ORDERED_MAX_WAIT_MS)))) return;
      }
    }
    const trace = typeof headers[HEADER.traceparent] === 'string' ? (headers[HEADER.traceparent] as string) : undefined;
    for (;;) {
      const g = await this.gate();
      if (g === 'stop') return; // unacked: requeued when the channel closes
      if (this.row.rate_limit && !(await this.pace(this.row.rate_limit))) return;
      const a = await this.d.sender.send(this.target, event, attempt, trace);
      const now = Date.now();
      this.hist.observe(a.latencyMs / 1000);
      this.d.recorder.attempt({
        event: event.id,
        subscription: this.row.id,
        attempt,
        status: a.status,
        latencyMs: a.latencyMs,
        errorClass: a.errorClass,
        error: a.error,
        excerpt: a.excerpt,
        at: new Date(now),
      });
      await this.afterAttempt(a, g === 'probe');
      if (this.ordered && stepDue > 0) {
        if (now < stepDue && !isSuccess(a.status) && a.status !== 410 && !a.fatal) {
          // A probe between two ladder steps failed: hold on until the step is due, probing at
          // least every orderedProbeMs, so a receiver that comes back is served within that.
          if (!(await this.holdHead(event.id, a, { next: attempt + 1, step, stepAt: stepDue, firstAt }, now))) return;
          attempt++;
          continue;
        }
        // This try is the ladder's next step.
        step++;
        stepDue = 0;
      }
      const dec = decide(a, step, firstAt, now, this.ladder);
      const base = { event: event.id, subscription: this.row.id, attempts: attempt, lastStatus: a.status };
      switch (dec.kind) {
        case 'delivered':
          if (this.ordered && attempt > 1) await this.d.held.del(this.row.id, event.id);
          ack(ch, msg);
          metrics.delivered.inc({ subscription: this.target.label, outcome: 'delivered' });
          this.notify(event.id, event.action, 'delivered', attempt, a);
          this.d.recorder.delivery({
            ...base,
            state: 'delivered',
            lastError: null,
            nextAttemptAt: null,
            at: new Date(now),
          });
          return;
        case 'disable':
        case 'dead': {
          const reason =
            dec.kind === 'disable' ? 'gone' : dec.reason === 'fatal' ? (a.errorClass ?? 'fatal') : dec.reason;
          await this.deadLetter(ch, msg, reason, attempt, a);
          if (this.ordered && attempt > 1) await this.d.held.del(this.row.id, event.id);
          this.notify(event.id, event.action, 'dead', attempt, a);
          this.d.recorder.delivery({
            ...base,
            state: 'dead',
            lastError: `${reason}: ${a.error ?? ''}`.slice(0, 500),
            nextAttemptAt: null,
            at: new Date(Date.now()),
          });
          if (dec.kind === 'disable') await this.d.onGone(this.row, dec.reason);
          return;
        }
        case 'retry': {
          metrics.delivered.inc({ subscription: this.target.label, outcome: 'failed' });
          this.notify(event.id, event.action, 'retrying', attempt, a);
          const next = new Date(now + dec.delayMs);
          if (this.ordered) {
            // Hold the line: the next event waits until this one succeeds or dies. The ladder's
            // step may be long (hours); the held event is probed meanwhile (see above).
            stepDue = now + Math.min(dec.delayMs, ORDERED_MAX_WAIT_MS);
            metrics.delivered.inc({ subscription: this.target.label, outcome: 'retried' });
            if (!(await this.holdHead(event.id, a, { next: attempt + 1, step, stepAt: stepDue, firstAt }, now))) return;
            attempt++;
            continue;
          }
          if (!this.row.retry_schedule.some((s) => s * 1000 === dec.delayMs))
            await this.d.ensureRetryQueue(dec.delayMs);
          await retryLater(this.d, ch, msg, this.queue, { attempt: attempt + 1, firstAt, delayMs: dec.delayMs });
          metrics.delivered.inc({ subscription: this.target.label, outcome: 'retried' });
          this.d.recorder.delivery({
            ...base,
            state: 'retrying',
            lastError: a.error,
            nextAttemptAt: next,
            at: new Date(Date.now()),
          });
          return;
        }
      }
    }
  }

  /**
   * An ordered subscription holds its head event until its next try: the ladder step's due time
   * (`stepAt`), or sooner, every orderedProbeMs, so a receiver that comes back is served within
   * that. Its progress is kept (Redis, or this process while Redis is away) so a redelivery
   * carries on, and the wait is recorded. False when the worker stopped meanwhile (the event
   * stays unacked and is redelivered).
   */
  private async holdHead(
    eventId: string,
    a: Attempt,
    progress: Omit<Required<HeldState>, 'at'>,
    now: number,
  ): Promise<boolean> {
    const h: Required<HeldState> = { ...progress, at: now + Math.min(progress.stepAt - now, this.d.orderedProbeMs) };
    await this.d.held.set(this.row.id, eventId, h, Math.max(this.ladder.maxAgeMs, h.stepAt - now) + 60_000);
    this.d.recorder.delivery({
      event: eventId,
      subscription: this.row.id,
      attempts: h.next - 1,
      lastStatus: a.status,
      state: 'retrying',
      lastError: a.error,
      nextAttemptAt: new Date(h.at),
      at: new Date(now),
    });
    return this.sleep(h.at - now);
  }

  private notify(eventId: string, action: string, state: string, attempt: number, a: Attempt): void {
    this.d.note({
      type: 'delivery',
      event: eventId,
      action,
      subscription: this.row.id,
      application: this.row.application,
      subscription_name: this.row.name,
      state,
      attempt,
      status: a.status,
      error: a.error,
    });
  }

  private nextSlot = 0;

  /** `rate_limit` per second across every bridge process (in Redis); per process while Redis is away. */
  private async pace(rate: number): Promise<boolean> {
    const shared = await this.d.reserveSlot(this.row.id, rate);
    if (shared !== null) return shared > 0 ? this.sleep(shared) : true;
    const now = Date.now();
    const slot = Math.max(now, this.nextSlot);
    this.nextSlot = slot + 1000 / rate;
    return slot > now ? this.sleep(slot - now) : true;
  }

  private sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve(false);
      };
      const t = setTimeout(() => {
        this.sleepers.delete(wake);
        resolve(!this.stopped);
      }, ms);
      this.sleepers.add(wake);
    });
  }

  /** Dead letter with its reason, confirmed before the original is acked. */
  private async deadLetter(ch: Channel, msg: ConsumeMessage, reason: string, attempts: number, a: Attempt | null) {
    await deadLetter(this.d, ch, msg, this.queue, {
      reason,
      attempts,
      lastStatus: a?.status ?? null,
      lastError: a?.error ?? null,
      subscriptionId: this.row.id,
    });
    metrics.delivered.inc({ subscription: this.target.label, outcome: 'dead' });
  }
}

export function ladderOf(row: SubscriptionRow): LadderSettings {
  return {
    scheduleMs: row.retry_schedule.map((s) => s * 1000),
    maxAttempts: row.max_attempts,
    maxAgeMs: row.max_age * 1000,
  };
}
