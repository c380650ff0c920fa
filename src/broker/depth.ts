import type { RecoveringConnection } from './link.js';

export interface QueueDepth {
  /** Messages ready for delivery (not those held unacked by a consumer). */
  messages: number;
  consumers: number;
}

/**
 * Queue depths by passive declare, on one throwaway channel; a queue the broker does not know
 * (which closes the channel) is null and the rest go on on a fresh channel. Bounded by `timeoutMs`
 * as a whole: what is not read by then is null.
 */
export async function queueDepths(
  broker: RecoveringConnection,
  queues: string[],
  timeoutMs = 5000,
): Promise<Map<string, QueueDepth | null>> {
  const out = new Map<string, QueueDepth | null>(queues.map((q) => [q, null]));
  const deadline = Date.now() + timeoutMs;
  let i = 0;
  while (i < queues.length && Date.now() < deadline) {
    try {
      await broker.withThrowawayChannel(async (ch) => {
        for (; i < queues.length && Date.now() < deadline; i++) {
          const q = queues[i]!;
          const r = await withTimeout(ch.checkQueue(q), deadline - Date.now());
          out.set(q, { messages: r.messageCount, consumers: r.consumerCount });
        }
      });
    } catch {
      i++; // that queue is missing (404 closed the channel) or the broker is away: skip it
    }
  }
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error('queue depth: timed out')), Math.max(1, ms));
    }),
  ]).finally(() => clearTimeout(t));
}
