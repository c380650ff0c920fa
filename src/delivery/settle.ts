/**
 * Settling a consumed event, the same for the HTTP bridge and the SDK's native consumer: ack it,
 * or put a retry copy on the ladder's delay queue, or dead-letter it with its reason — the copy is
 * confirmed by the broker before the original is acked, so a crash in between gives a duplicate,
 * never a loss. A copy that cannot be confirmed leaves the original unacked; it is given back to
 * the queue after a pause (`requeueLater`).
 */
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { copyProperties, HEADER } from '../broker/message.js';

/** What settling needs: a confirming publisher and the retry/dead exchange names. */
export interface SettleDeps {
  publisher: {
    publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void>;
  };
  topology: { retry(delayMs: number): string; dead: string };
}

/** Where a message stands on the ladder, from its headers. */
export interface AttemptInfo {
  /**
   * The number of this attempt: the header counts attempts made through the retry ladder; a copy
   * the broker gives again (a consumer died holding it) was attempted once more per redelivery
   * (quorum queues count them in x-delivery-count; classic ones only flag `redelivered`).
   */
  attempt: number;
  /** When the first attempt was made (epoch ms); now for a first attempt. */
  firstAt: number;
}

export function attemptOf(msg: ConsumeMessage, now = Date.now()): AttemptInfo {
  const h = msg.properties.headers ?? {};
  const redeliveries = Number(h['x-delivery-count']) || (msg.fields.redelivered ? 1 : 0);
  return {
    attempt: Math.max(1, Number(h[HEADER.attempt] ?? 1) || 1) + redeliveries,
    firstAt: Number(h[HEADER.firstAttemptAt]) || now,
  };
}

/** Acks, unless the channel died meanwhile (the broker then redelivers it: at-least-once). */
export function ack(ch: Channel, msg: ConsumeMessage): void {
  try {
    ch.ack(msg);
  } catch {
    /* channel gone */
  }
}

/** The retry copy goes to the delay step's queue (routed back to `queue`), confirmed before the ack. */
export async function retryLater(
  d: SettleDeps,
  ch: Channel,
  msg: ConsumeMessage,
  queue: string,
  next: { attempt: number; firstAt: number; delayMs: number },
): Promise<void> {
  await d.publisher.publish(
    d.topology.retry(next.delayMs),
    queue,
    msg.content,
    copyProperties(msg, { [HEADER.attempt]: next.attempt, [HEADER.firstAttemptAt]: next.firstAt }),
  );
  ack(ch, msg);
}

export interface DeadLetterInfo {
  /** Why: max_attempts, max_age, malformed, permanent_error, gone, an error class… */
  reason: string;
  attempts: number;
  lastStatus?: number | null;
  lastError?: string | null;
  subscriptionId?: string;
}

/** The dead letter, with its reason and last answer, confirmed before the ack. */
export async function deadLetter(
  d: SettleDeps,
  ch: Channel,
  msg: ConsumeMessage,
  queue: string,
  info: DeadLetterInfo,
): Promise<void> {
  await d.publisher.publish(
    d.topology.dead,
    queue,
    msg.content,
    copyProperties(msg, {
      [HEADER.reason]: info.reason,
      [HEADER.attempt]: info.attempts,
      [HEADER.deadAt]: Date.now(),
      ...(info.lastStatus !== undefined ? { [HEADER.lastStatus]: info.lastStatus ?? -1 } : {}),
      [HEADER.lastError]: (info.lastError ?? '').slice(0, 500),
      ...(info.subscriptionId ? { [HEADER.subscriptionId]: info.subscriptionId } : {}),
    }),
  );
  ack(ch, msg);
}

/** How long an unsettled message stays with its consumer before it is given back. */
export const REQUEUE_PAUSE_MS = 1000;

/**
 * A retry copy or dead letter was not confirmed: give the original back to the queue after a
 * pause (not at once, which would spin against a broker that refuses), unless `owned()` says the
 * channel was replaced meanwhile (the broker requeued it already).
 */
export async function requeueLater(
  ch: Channel,
  msg: ConsumeMessage,
  owned: () => boolean = () => true,
  pauseMs = REQUEUE_PAUSE_MS,
): Promise<void> {
  await new Promise((r) => setTimeout(r, pauseMs));
  try {
    if (owned()) ch.nack(msg, false, true);
  } catch {
    /* channel gone: the broker requeues it */
  }
}
