import { createCipheriv, createDecipheriv, createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const scryptAsync = promisify(scrypt) as (pw: string, salt: Buffer, len: number, opts: object) => Promise<Buffer>;
const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

/** A random secret for applications (URL-safe, 32 bytes of entropy). */
export const newSecret = (): string => randomBytes(32).toString('base64url');

/** A Standard Webhooks signing secret: `whsec_` + base64 of 24 random bytes. */
export const newSigningSecret = (): string => `whsec_${randomBytes(24).toString('base64')}`;

/** Application secrets are stored as scrypt hashes: `scrypt$N$r$p$salt$hash`. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(secret, salt, 32, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64');
  const key = await scryptAsync(secret, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

const keyId = (secretKey: string): string =>
  createHash('sha256').update(`amebo-key-id:${secretKey}`).digest('hex').slice(0, 8);
const boxKey = (secretKey: string): Buffer => createHash('sha256').update(`amebo-secret-box:${secretKey}`).digest();

/**
 * AES-256-GCM for secrets Amebo must read back (webhook signing secrets, encryption keys). Sealed
 * values name the key that sealed them (`v2.<key id>.…`), so after a key rotation the previous keys
 * still open what they sealed until `amebo rotate-key` has re-sealed it under the current one.
 */
export class SecretBox {
  private readonly current: { id: string; key: Buffer };
  private readonly keys = new Map<string, Buffer>();

  /** `secretKey` seals; it and `previous` open. */
  constructor(secretKey: string, previous: string[] = []) {
    this.current = { id: keyId(secretKey), key: boxKey(secretKey) };
    for (const k of [secretKey, ...previous]) if (k) this.keys.set(keyId(k), boxKey(k));
  }

  /** Id of the key that seals now (a hash of it, safe to log). */
  get keyId(): string {
    return this.current.id;
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.current.key, iv);
    const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return `v2.${this.current.id}.${iv.toString('base64')}.${c.getAuthTag().toString('base64')}.${body.toString('base64')}`;
  }

  /** True when `sealed` is sealed by the current key (nothing to re-seal). */
  isCurrent(sealed: string): boolean {
    return sealed.startsWith(`v2.${this.current.id}.`);
  }

  open(sealed: string): string {
    const parts = sealed.split('.');
    if (parts[0] === 'v2' && parts.length === 5) {
      const key = this.keys.get(parts[1]!);
      if (!key) throw new Error(`sealed with key ${parts[1]}, which this process does not have`);
      return decrypt(key, parts[2]!, parts[3]!, parts[4]!);
    }
    // v1 (before key ids): whichever key opens it.
    const [v, iv, tag, body] = parts;
    if (v !== 'v1' || !iv || !tag || body === undefined || parts.length !== 4) throw new Error('not a sealed secret');
    let last: unknown;
    for (const key of this.keys.values()) {
      try {
        return decrypt(key, iv, tag, body);
      } catch (err) {
        last = err;
      }
    }
    throw last instanceof Error ? last : new Error('no key opens this secret');
  }
}

function decrypt(key: Buffer, iv: string, tag: string, body: string): string {
  const d = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64'));
  d.setAuthTag(Buffer.from(tag, 'base64'));
  return Buffer.concat([d.update(Buffer.from(body, 'base64')), d.final()]).toString('utf8');
}
