/**
 * What a PostgreSQL failure means for a caller, decided here, beside the driver: the API maps
 * these to its codes and never looks at a driver's message itself.
 */

/** Socket errors and SQLSTATEs (57P01 admin shutdown, 57P03 cannot connect now, 08xxx connection). */
const DOWN = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  '57P01',
  '57P03',
  '08006',
  '08001',
  '08003',
]);

/**
 * pg-pool and pg raise a few connection failures as plain `Error`s with no code (the pool's
 * connect timeout, a connection terminated under a query). They are known by their fixed text,
 * which only this module reads.
 */
const DRIVER_TEXT = [
  'timeout exceeded when trying to connect',
  'Connection terminated',
  'connect ECONNREFUSED',
  'Query read timeout',
];

/** True when the error says PostgreSQL is unreachable (a 503 for the caller, not a bug). */
export function storeUnreachable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return DOWN.has(code);
  return DRIVER_TEXT.some((t) => err.message.startsWith(t));
}

/**
 * The SQLSTATE of a data exception (class 22: a NUL byte, an invalid encoding, a value out of
 * range): the input's fault, not the server's. Null for anything else.
 */
export function dataException(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code) ? code : null;
}
