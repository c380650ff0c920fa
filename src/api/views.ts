/** How one event's delivery to one subscription is shown (event detail and the deliveries list). */
export const deliveryView = (d: {
  subscription: string;
  subscription_name: string;
  application: string;
  state: 'pending' | 'delivered' | 'retrying' | 'dead';
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  next_attempt_at: Date | null;
  updated_at: Date;
}) => ({
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
