import type { DeliveryView } from '../store/deliveries.js';

/** How one event's delivery to one subscription is shown (event detail and the deliveries list). */
export const deliveryView = (d: DeliveryView) => ({
  subscription: d.subscription,
  subscription_name: d.subscription_name,
  application: d.application,
  state: d.state,
  attempts: d.attempts,
  last_status: d.last_status,
  last_error: d.last_error,
  next_attempt_at: d.next_attempt_at,
  updated_at: d.updated_at,
});
