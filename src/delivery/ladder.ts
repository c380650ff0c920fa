/**
 * The retry ladder (design §6): what happens after one delivery attempt, for the bridge and the SDK alike. Pure functions, so the
 * rules are unit-tested without a broker.
 */

/** What one attempt produced, as far as the ladder cares. */
export interface AttemptResult {
  /** HTTP status, or null when no response came (network error, timeout, blocked target). */
  status: number | null;
  /** Retry-After asked by a 429/503, in milliseconds. */
  retryAfterMs?: number | null;
  /** A failure that retrying cannot fix (blocked target, bad key): dead-letter at once. */
  fatal?: boolean;
}

export interface LadderSettings {
  /** Delays between attempts, milliseconds; the last step repeats. */
  scheduleMs: number[];
  maxAttempts: number;
  /** Longest time from the first attempt to the last one, milliseconds. */
  maxAgeMs: number;
}

export type Decision =
  | { kind: 'delivered' }
  | { kind: 'disable'; reason: string }
  | { kind: 'retry'; delayMs: number; reason: string }
  | { kind: 'dead'; reason: string };

export const isSuccess = (status: number | null): boolean => status !== null && status >= 200 && status < 300;

/**
 * The delay before attempt `attempt + 1`, honouring a Retry-After: the smallest schedule step that
 * is at least the asked delay, or the asked delay itself (rounded up to the second) when no step is.
 */
export function retryDelay(scheduleMs: number[], attempt: number, retryAfterMs?: number | null): number {
  const step = scheduleMs[Math.min(Math.max(attempt - 1, 0), scheduleMs.length - 1)] ?? 5000;
  if (!retryAfterMs || retryAfterMs <= step) return step;
  const fit = [...scheduleMs].sort((a, b) => a - b).find((d) => d >= retryAfterMs);
  return fit ?? Math.ceil(retryAfterMs / 1000) * 1000;
}

/**
 * Decides after attempt number `attempt` (1-based) of a message first attempted at `firstAt`.
 * Dead when attempts are exhausted or when the next attempt would fall past the max age.
 */
export function decide(r: AttemptResult, attempt: number, firstAt: number, now: number, s: LadderSettings): Decision {
  if (isSuccess(r.status)) return { kind: 'delivered' };
  if (r.status === 410) return { kind: 'disable', reason: 'gone: the handler answered 410' };
  if (r.fatal) return { kind: 'dead', reason: 'fatal' };
  if (attempt >= s.maxAttempts) return { kind: 'dead', reason: 'max_attempts' };
  const delayMs = retryDelay(s.scheduleMs, attempt, r.status === 429 || r.status === 503 ? r.retryAfterMs : null);
  if (now + delayMs - firstAt > s.maxAgeMs) return { kind: 'dead', reason: 'max_age' };
  return { kind: 'retry', delayMs, reason: r.status === null ? 'error' : `http_${r.status}` };
}

/** Retry-After: delta seconds or an HTTP date; null when absent or unparsable; capped at a day. */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | null {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return null;
  const t = s.trim();
  let ms: number;
  if (/^\d+$/.test(t)) ms = Number(t) * 1000;
  else {
    const d = Date.parse(t);
    if (Number.isNaN(d)) return null;
    ms = d - now;
  }
  if (ms <= 0) return null;
  return Math.min(ms, 86_400_000);
}
