/**
 * Delivery defaults shared by the server (its config table) and the SDK's `consume()`: one source,
 * so a native consumer retries like a webhook subscription created with the defaults.
 */
import { OPTIONS } from '../config.js';

export const DELIVERY_DEFAULTS = {
  /** Seconds between attempts; the last step repeats. */
  retrySchedule: OPTIONS.retrySchedule.default,
  maxAttempts: OPTIONS.maxAttempts.default,
  /** Seconds from the first attempt after which a failing event is dead-lettered. */
  maxAgeSeconds: OPTIONS.maxAgeSeconds.default,
  /** x-delivery-limit of quorum subscription queues. */
  deliveryLimit: OPTIONS.deliveryLimit.default,
  queueType: OPTIONS.queueType.default as 'quorum' | 'classic',
  prefix: OPTIONS.prefix.default,
} as const;
