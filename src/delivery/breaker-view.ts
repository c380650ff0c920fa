/**
 * What an operator sees of an endpoint's circuit breaker (the bridge keeps it in Redis: see
 * bridge/breaker.ts): closed, open until the next probe, or half open (the cool-down is over and
 * a probe is due or running), and the failures counted in the current window.
 */
import type { Redis } from 'ioredis';
import { RedisNames } from '../redis-names.js';

export interface BreakerView {
  state: 'closed' | 'open' | 'half_open' | 'unknown';
  failures: number;
  /** open: when one probe may go. */
  next_probe_at: string | null;
}

export async function readBreaker(
  redis: Redis,
  names: RedisNames,
  endpoint: string,
  now = Date.now(),
): Promise<BreakerView> {
  const id = RedisNames.endpointId(endpoint);
  if (redis.status !== 'ready') return { state: 'unknown', failures: 0, next_probe_at: null };
  try {
    const [state, fail] = await redis.mget(names.breaker('state', id), names.breaker('fail', id));
    const failures = Number(fail ?? 0) || 0;
    if (!state) return { state: 'closed', failures, next_probe_at: null };
    const { until } = JSON.parse(state) as { until: number };
    return until > now
      ? { state: 'open', failures, next_probe_at: new Date(until).toISOString() }
      : { state: 'half_open', failures, next_probe_at: new Date(until).toISOString() };
  } catch {
    return { state: 'unknown', failures: 0, next_probe_at: null };
  }
}
