import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from '../log.js';

/**
 * Every exchange and queue name Amebo uses, and their declarations (design §5). All declarations
 * are idempotent and re-run on every reconnect; the registry is the source of truth.
 */
export class Topology {
  readonly prefix: string;
  readonly queueType: 'quorum' | 'classic';
  readonly deliveryLimit: number;

  constructor(opts: { prefix: string; queueType: string; deliveryLimit: number }) {
    this.prefix = opts.prefix;
    this.queueType = opts.queueType === 'classic' ? 'classic' : 'quorum';
    this.deliveryLimit = opts.deliveryLimit;
  }

  /** Topic exchange every event is published to, routing key = action name. */
  get events(): string {
    return `${this.prefix}.events`;
  }
  /**
   * Topic exchange of the events whose action names its subscribers. Only exact action names are
   * bound here, each for a subscription allowed to receive it, so no pattern can reach them.
   */
  get restrictedEvents(): string {
    return `${this.prefix}.events.restricted`;
  }
  /** Direct exchange that returns retried messages to their subscription queue. */
  get redeliver(): string {
    return `${this.prefix}.redeliver`;
  }
  /** Direct exchange of dead letters, routing key = the subscription queue's name. */
  get dead(): string {
    return `${this.prefix}.dead`;
  }
  subscriptionQueue(application: string, subscription: string): string {
    return `${this.prefix}.sub.${application}.${subscription}`;
  }
  deadQueue(application: string, subscription: string): string {
    return `${this.prefix}.dead.${application}.${subscription}`;
  }
  /** Exchange and queue of one step of the retry ladder. */
  retry(delayMs: number): string {
    return `${this.prefix}.retry.${Math.round(delayMs)}`;
  }

  private queueArgs(extra: Record<string, unknown> = {}): Record<string, unknown> {
    if (this.queueType === 'quorum')
      return {
        'x-queue-type': 'quorum',
        'x-dead-letter-strategy': 'at-least-once',
        'x-overflow': 'reject-publish',
        ...extra,
      };
    return { 'x-queue-type': 'classic', ...extra };
  }

  async declareBase(ch: Channel, retryDelaysMs: number[]): Promise<void> {
    await ch.assertExchange(this.events, 'topic', { durable: true });
    await ch.assertExchange(this.restrictedEvents, 'topic', { durable: true });
    await ch.assertExchange(this.redeliver, 'direct', { durable: true });
    await ch.assertExchange(this.dead, 'direct', { durable: true });
    for (const d of new Set(retryDelaysMs)) await this.declareRetry(ch, d);
  }

  async declareRetry(ch: Channel, delayMs: number): Promise<void> {
    const name = this.retry(delayMs);
    await ch.assertExchange(name, 'fanout', { durable: true });
    await ch.assertQueue(name, {
      durable: true,
      arguments: this.queueArgs({ 'x-message-ttl': Math.round(delayMs), 'x-dead-letter-exchange': this.redeliver }),
    });
    await ch.bindQueue(name, name, '');
  }

  /**
   * Declares a subscription's queues and bindings on `ch`. Quorum queues get an explicit
   * `x-delivery-limit`: RabbitMQ 4.x otherwise applies 20 and drops what passes it. Ordered and
   * dead-letter queues get a limit they never reach (an ordered head event is handed back every
   * `consumer_timeout`; dead letters are read and put back by the operator tools). A queue declared
   * by an older Amebo without it answers 406 (arguments cannot change): with `reopen`, it is kept as
   * it is, on a new channel, and reported in `legacy`. Returns the channel to go on with.
   */
  /** The arguments of a subscription's queue (`limit`: with its delivery limit, as declared today). */
  subscriptionQueueArgs(
    application: string,
    subscription: string,
    ordered: boolean,
    limit = true,
  ): Record<string, unknown> {
    const extra: Record<string, unknown> = {
      'x-dead-letter-exchange': this.dead,
      'x-dead-letter-routing-key': this.subscriptionQueue(application, subscription),
    };
    if (ordered) extra['x-single-active-consumer'] = true;
    if (limit && this.queueType === 'quorum') extra['x-delivery-limit'] = ordered ? NEVER_REACHED : this.deliveryLimit;
    return this.queueArgs(extra);
  }

  async declareSubscription(
    ch: Channel,
    sub: TopologySubscription,
    reopen?: () => Promise<Channel>,
    legacy?: string[],
  ): Promise<Channel> {
    const q = this.subscriptionQueue(sub.application, sub.name);
    const dq = this.deadQueue(sub.application, sub.name);
    const quorum = this.queueType === 'quorum';
    const declare = async (name: string, args: Record<string, unknown>, older: Record<string, unknown>) => {
      try {
        await ch.assertQueue(name, { durable: true, arguments: args });
      } catch (err) {
        if (!reopen || (err as { code?: number }).code !== 406) throw err;
        ch = await reopen();
        await ch.assertQueue(name, { durable: true, arguments: older });
        legacy?.push(name);
      }
    };
    const deadArgs = quorum ? { 'x-queue-type': 'quorum' } : {};
    await declare(dq, quorum ? { ...deadArgs, 'x-delivery-limit': NEVER_REACHED } : deadArgs, deadArgs);
    await ch.bindQueue(dq, this.dead, q);
    // Before explicit limits, ordered quorum queues had none.
    await declare(
      q,
      this.subscriptionQueueArgs(sub.application, sub.name, sub.ordered),
      this.subscriptionQueueArgs(sub.application, sub.name, sub.ordered, !sub.ordered),
    );
    await ch.bindQueue(q, this.redeliver, q);
    for (const pattern of sub.patterns) await ch.bindQueue(q, this.events, pattern);
    for (const pattern of sub.unboundPatterns ?? []) await ch.unbindQueue(q, this.events, pattern);
    for (const action of sub.restricted.bind) await ch.bindQueue(q, this.restrictedEvents, action);
    for (const action of sub.restricted.unbind) await ch.unbindQueue(q, this.restrictedEvents, action);
    for (const d of sub.retryDelaysMs) await this.declareRetry(ch, d);
    return ch;
  }

  /** Lets one subscription receive one restricted action's events, or stops it. */
  async bindRestricted(ch: Channel, application: string, name: string, action: string, bound: boolean): Promise<void> {
    const q = this.subscriptionQueue(application, name);
    if (bound) await ch.bindQueue(q, this.restrictedEvents, action);
    else await ch.unbindQueue(q, this.restrictedEvents, action);
  }

  async deleteSubscription(ch: Channel, application: string, name: string): Promise<void> {
    await ch.deleteQueue(this.subscriptionQueue(application, name));
    await ch.deleteQueue(this.deadQueue(application, name));
  }

  /**
   * Declares everything the registry describes. A queue whose arguments drifted (declared earlier
   * with another type) closes the channel with 406: it is reported and the rest goes on.
   */
  async reconcile(
    model: ChannelModel,
    retryDelaysMs: number[],
    subs: TopologySubscription[],
    log: Logger,
  ): Promise<number> {
    let ch = await model.createChannel();
    ch.on('error', () => undefined);
    let drift = 0;
    try {
      await this.declareBase(ch, retryDelaysMs);
      const reopen = async (): Promise<Channel> => {
        ch = await model.createChannel();
        ch.on('error', () => undefined);
        return ch;
      };
      const legacy: string[] = [];
      for (const sub of subs) {
        try {
          ch = await this.declareSubscription(ch, sub, reopen, legacy);
        } catch (err) {
          drift++;
          log.error(
            { err: (err as Error).message, subscription: `${sub.application}/${sub.name}` },
            'topology drift: cannot declare subscription queue',
          );
          ch = await model.createChannel();
          ch.on('error', () => undefined);
        }
      }
      if (legacy.length)
        log.warn(
          { queues: legacy },
          'queues declared by an older Amebo keep their arguments (no explicit x-delivery-limit); drain and delete them to have them declared anew',
        );
    } finally {
      await ch.close().catch(() => undefined);
    }
    return drift;
  }
}

/** A delivery limit no message reaches: RabbitMQ 4.x's default (20) must not apply to these queues. */
export const NEVER_REACHED = 1_000_000_000;

export interface TopologySubscription {
  application: string;
  name: string;
  /** Action names or topic patterns bound to the events exchange. */
  patterns: string[];
  /** Patterns an older Amebo may have bound and that must not stay bound (see `Registry.topologyOf`). */
  unboundPatterns?: string[];
  /** Restricted actions (by name) this subscription receives, and those it must not. */
  restricted: { bind: string[]; unbind: string[] };
  ordered: boolean;
  retryDelaysMs: number[];
}
