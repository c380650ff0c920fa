import { randomBytes } from 'node:crypto';

let lastMs = 0;

// One randomBytes call per 4 KiB of ids instead of a syscall per id.
let pool = randomBytes(4096);
let poolAt = 0;
/** Fills `dst` from offset 8 with random bytes (and offsets 0..7 too; they are overwritten). */
function random(dst: Buffer, _from: number): void {
  if (poolAt + 16 > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  pool.copy(dst, 0, poolAt, poolAt + 16);
  poolAt += 16;
}

/** Random hex from the same pool (trace and span ids). */
export function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}
let seq = 0;

/**
 * UUIDv7 (RFC 9562): 48-bit unix ms, then a 12-bit counter that keeps ids from one process strictly
 * increasing within the same millisecond, then random bits. Sortable by time as text.
 */
export function uuidv7(now = Date.now()): string {
  if (now <= lastMs) {
    seq++;
    if (seq > 0xfff) {
      lastMs++;
      seq = 0;
    }
    now = lastMs;
  } else {
    lastMs = now;
    seq = 0;
  }
  const b = Buffer.allocUnsafe(16);
  random(b, 8);
  b.writeUIntBE(now, 0, 6);
  b[6] = 0;
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = 0x80 | (b[8]! & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The time encoded in a UUIDv7. */
export function uuidv7Time(id: string): Date {
  return new Date(parseInt(id.replace(/-/g, '').slice(0, 12), 16));
}

export const isUuid = (s: string): boolean => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
