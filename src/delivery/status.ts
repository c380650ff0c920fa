/**
 * "What happened to my event", per subscription: one state from what the stores and the broker
 * know. Pure, so each rule is unit-tested; the API gathers the inputs.
 */

export type DeliveryState =
  | 'filtered'
  | 'not_routed'
  | 'scheduled'
  | 'pending'
  | 'in_flight'
  | 'retrying'
  | 'delivered'
  | 'dead'
  | 'paused'
  | 'circuit_open'
  | 'native';

export interface DeliveryStatus {
  state: DeliveryState;
  /** Attempts made so far (from the delivery record). */
  attempts: number;
  /** retrying: when the next attempt is due. */
  next_attempt_at?: string | null;
  /** circuit_open: when the endpoint is probed next. */
  next_probe_at?: string | null;
  /** pending / paused / circuit_open: messages waiting in the subscription's queue (this one among them). */
  backlog?: number | null;
  last_status?: number | null;
  last_error?: string | null;
  /** Why, in words, for people. */
  reason: string;
}

export interface StatusInput {
  event: { created_at: Date; published: boolean; deliver_at: Date | null };
  subscription: {
    created_at: Date;
    paused: boolean;
    disabled_reason: string | null;
    transport: 'http' | 'amqp';
    /** The action's `subscribers` let this subscription's application receive it. */
    visible: boolean;
  };
  /** The bridge's record for this event × subscription, if any. */
  record: {
    state: 'pending' | 'delivered' | 'retrying' | 'dead';
    attempts: number;
    next_attempt_at: Date | null;
    last_status: number | null;
    last_error: string | null;
  } | null;
  /** The endpoint's circuit, when open (until = epoch ms of the next probe). */
  breaker: { until: number } | null;
  /** An ordered subscription is holding this event at its head (retried in place). */
  held: boolean;
  /** The subscription queue's depth, when the broker answered. */
  queue: { messages: number } | null;
  now: number;
}

const iso = (d: Date | number | null | undefined): string | null =>
  d === null || d === undefined ? null : new Date(d).toISOString();

export function deliveryStatus(i: StatusInput): DeliveryStatus {
  const r = i.record;
  const base = {
    attempts: r?.attempts ?? 0,
    ...(r ? { last_status: r.last_status, last_error: r.last_error } : {}),
  };
  const backlog = i.queue ? i.queue.messages : null;
  if (!i.subscription.visible)
    return { state: 'filtered', ...base, reason: "the action's subscribers do not include this application" };
  if (r?.state === 'delivered') return { state: 'delivered', ...base, reason: 'the handler answered 2xx' };
  if (r?.state === 'dead') return { state: 'dead', ...base, reason: r.last_error ?? 'dead-lettered' };
  if (i.subscription.created_at.getTime() > i.event.created_at.getTime() && !r)
    return {
      state: 'not_routed',
      ...base,
      reason: 'the subscription was created after the event (replay it to deliver it)',
    };
  if (i.subscription.transport === 'amqp')
    return {
      state: 'native',
      ...base,
      backlog,
      reason: 'consumed natively over AMQP: the consumer settles it, Amebo does not record it',
    };
  if (i.event.deliver_at && i.event.deliver_at.getTime() > i.now && !i.event.published)
    return { state: 'scheduled', ...base, next_attempt_at: iso(i.event.deliver_at), reason: 'deferred (deliver_at)' };
  if (i.subscription.disabled_reason)
    return { state: 'paused', ...base, backlog, reason: `disabled: ${i.subscription.disabled_reason}` };
  if (i.subscription.paused) return { state: 'paused', ...base, backlog, reason: 'the subscription is paused' };
  if (i.breaker && i.breaker.until > i.now - 1000)
    return {
      state: 'circuit_open',
      ...base,
      backlog,
      next_probe_at: iso(i.breaker.until),
      reason: "the endpoint's circuit is open: deliveries wait for the next probe",
    };
  if (i.held)
    return {
      state: 'in_flight',
      ...base,
      next_attempt_at: iso(r?.next_attempt_at),
      reason: 'held at the head of its ordered subscription, tried again in place',
    };
  if (r?.state === 'retrying')
    return {
      state: 'retrying',
      ...base,
      next_attempt_at: iso(r.next_attempt_at),
      reason: 'waiting on the retry ladder',
    };
  if (!i.event.published)
    return {
      state: 'pending',
      ...base,
      backlog,
      reason: 'committed, not yet confirmed by the broker: the relay publishes it',
    };
  return {
    state: 'pending',
    ...base,
    backlog,
    reason: backlog
      ? `queued behind at most ${backlog - 1} other message(s), or being attempted`
      : 'queued or being attempted',
  };
}
