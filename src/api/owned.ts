import type { FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { isUuid } from '../ids.js';
import type { Registry } from '../registry.js';
import type { SubscriptionRow } from '../store/registry.js';
import { param } from './auth.js';

/**
 * Subscriptions addressed by `:id` (the subscription and delivery routes). Who may manage one is
 * the auth rule `owner: subscriptionOwner(registry)`; the handler then loads it with
 * `subscriptionById`.
 */

/** The application owning the subscription of the `:id` (or `:subscription`) parameter, if any. */
export const subscriptionOwner =
  (registry: Registry, name: 'id' | 'subscription' = 'id') =>
  async (req: FastifyRequest): Promise<string | undefined> => {
    const id = param(req, name);
    return id && isUuid(id) ? (await registry.getSubscription(id))?.application : undefined;
  };

/** The subscription, or 404 SUBSCRIPTION_NOT_FOUND. */
export async function subscriptionById(registry: Registry, id: string): Promise<SubscriptionRow> {
  const row = isUuid(id) ? await registry.getSubscription(id) : null;
  if (!row) throw new AmeboError('SUBSCRIPTION_NOT_FOUND', `no subscription "${id}"`);
  return row;
}
