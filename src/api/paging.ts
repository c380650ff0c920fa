import { AmeboError } from '../errors.js';

/**
 * Cursor paging, one implementation for every list route: a cursor is the sort key of the last
 * item returned (its parts joined by `|`, base64url), opaque to clients; a page is full when it
 * holds `limit` items, and only then has a `next_cursor`.
 */

export function encodeCursor(parts: readonly string[]): string {
  return Buffer.from(parts.join('|')).toString('base64url');
}

/**
 * The key a cursor holds, checked by `parse` (which returns undefined for a key this API could
 * not have returned); a 400 VALIDATION for anything else. Undefined when there is no cursor.
 */
export function decodeCursor<T>(cursor: string | undefined, parse: (parts: string[]) => T | undefined): T | undefined {
  if (!cursor) return undefined;
  const key = parse(Buffer.from(cursor, 'base64url').toString().split('|'));
  if (key === undefined)
    throw new AmeboError('VALIDATION', 'cursor is not one this API returned', [
      { instancePath: '/cursor', message: 'invalid cursor' },
    ]);
  return key;
}

/** `{ items, next_cursor }` from a page of rows fetched with `limit`. */
export function page<R, V>(
  rows: readonly R[],
  limit: number,
  view: (r: R) => V,
  keyOf: (r: R) => readonly string[],
): { items: V[]; next_cursor: string | null } {
  const last = rows[rows.length - 1];
  return {
    items: rows.map(view),
    next_cursor: rows.length === limit && last !== undefined ? encodeCursor(keyOf(last)) : null,
  };
}
