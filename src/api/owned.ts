import type { FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { isUuid } from '../ids.js';
import type { Registry } from '../registry.js';
import type { SubscriptionRow } from '../store/registry.js';
import { param } from './auth.js';

/**
 * Subscriptions addressed by `:id` (the subscription and delivery routes): its id, or its name
 * `application/subscription` (the slash URL-encoded, `%2F`). Who may manage one is the auth rule
 * `owner: subscriptionOwner(registry)`; the handler then loads it with `subscriptionById`.
 */

/** The subscription a reference names (id or `application/subscription`), if any. */
async function lookup(registry: Registry, ref: string): Promise<SubscriptionRow | null> {
  if (isUuid(ref)) return registry.getSubscription(ref);
  const slash = ref.indexOf('/');
  if (slash <= 0 || slash === ref.length - 1) return null;
  return registry.getSubscriptionByName(ref.slice(0, slash), ref.slice(slash + 1));
}

/** The application owning the subscription of the `:id` (or `:subscription`) parameter, if any. */
export const subscriptionOwner =
  (registry: Registry, name: 'id' | 'subscription' = 'id') =>
  async (req: FastifyRequest): Promise<string | undefined> => {
    const ref = param(req, name);
    return ref ? (await lookup(registry, ref))?.application : undefined;
  };

/** The subscription, or 404 SUBSCRIPTION_NOT_FOUND. */
export async function subscriptionById(registry: Registry, ref: string): Promise<SubscriptionRow> {
  const row = await lookup(registry, ref);
  if (!row)
    throw new AmeboError(
      'SUBSCRIPTION_NOT_FOUND',
      `no subscription "${ref}" (give its id, or application/subscription with the slash encoded as %2F)`,
    );
  return row;
}
