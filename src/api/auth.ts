import type { RedisNames } from '../redis-names.js';
import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { AmeboError } from '../errors.js';
import type { Registry } from '../registry.js';
import { sha256 } from '../secrets.js';

export type Principal = { kind: 'admin' } | { kind: 'app'; name: string };

/**
 * Who may call a route, declared in its `config.auth` and enforced by one `preValidation` hook, so
 * credentials are checked before the body is validated (an anonymous caller learns nothing about a
 * route's schema). Routes under `/v1/` without a rule need a principal (admin or application).
 * - `public`: no credentials (the route checks whatever else it needs);
 * - `admin`: the admin token;
 * - `any`: the admin token or application credentials;
 * - `metrics`: Bearer AMEBO_METRICS_TOKEN when one is set, else public;
 * - an object: `any` with options (a body secret, the application the request acts for, admin only).
 */
export type AuthRule = 'public' | 'admin' | 'any' | 'metrics' | AuthOptions;

export interface AuthOptions {
  /** Accept `secret` (+ `application`/`microservice`) in the JSON body, as Amebo's clients send it. */
  bodySecret?: boolean;
  /** Application to check a body secret against when the body names none (the action's owner). */
  fallbackApplication?: (req: FastifyRequest) => Promise<string | undefined>;
  /**
   * The application the request acts for (a path parameter, a body field, the owner of the thing
   * addressed): an application principal must be that application (403 otherwise); the admin may
   * act for any. Undefined when there is none to check (the route answers, e.g. 404 for a thing
   * that does not exist). Runs before validation: read the request defensively.
   */
  owner?: (req: FastifyRequest) => Promise<string | undefined> | string | undefined;
  /** Only the admin. */
  admin?: boolean;
  /**
   * Other credentials that stand for the admin on this route (the live tail's one-use ticket):
   * resolves true to admit the request as the admin, false to ask for the usual ones; throws to refuse.
   */
  admits?: (req: FastifyRequest) => Promise<boolean>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook on every route that is not `public`. */
    principal: Principal;
  }
  interface FastifyContextConfig {
    auth?: AuthRule;
  }
}

/** What credentials a route takes, and how to send them (curl spellings included). */
function howTo(opts: AuthOptions): string {
  if (opts.admin)
    return "this route takes the admin token: send Authorization: Bearer <admin token> (curl: -H 'authorization: Bearer <token>')";
  return (
    "send the admin token as Authorization: Bearer <token>, or an application's credentials as HTTP Basic " +
    '<application>:<secret> (curl: -u <application>:<secret>)' +
    (opts.bodySecret ? ', or "application" and "secret" in the JSON body' : '')
  );
}

export interface ThrottleOptions {
  redis: Redis;
  /** The deployment's Redis names. */
  names: RedisNames;
  /** Failures allowed per window, per client address and per application. */
  limit: number;
  windowSeconds: number;
}

/**
 * Failed-authentication throttle, shared by every API process through Redis (each process keeps
 * its own counts while Redis is away): after `limit` failures within the window from one client
 * address, or against one application, further attempts answer 429 with Retry-After without
 * checking anything. A client presenting credentials already verified stays admitted while its
 * application's name is under attack, so an attacker cannot lock a working client out.
 */
export class AuthThrottle {
  private readonly o: ThrottleOptions;
  private readonly local = new Map<string, { n: number; until: number }>();

  constructor(o: ThrottleOptions) {
    this.o = o;
  }

  private key(kind: 'ip' | 'app', id: string): string {
    return this.o.names.authFail(kind, id);
  }

  /** Seconds until `keys` may try again, or 0. */
  async blockedFor(keys: string[]): Promise<number> {
    const now = Date.now();
    let wait = 0;
    const redis = this.o.redis;
    if (redis.status === 'ready') {
      try {
        const pipe = redis.pipeline();
        for (const k of keys) pipe.get(k).pttl(k);
        const res = (await pipe.exec()) ?? [];
        for (let i = 0; i < keys.length; i++) {
          const n = Number(res[2 * i]?.[1] ?? 0);
          const ttl = Number(res[2 * i + 1]?.[1] ?? -1);
          if (n >= this.o.limit) wait = Math.max(wait, Math.ceil(Math.max(ttl, 1000) / 1000));
        }
        return wait;
      } catch {
        /* Redis away: the local counts decide */
      }
    }
    for (const k of keys) {
      const e = this.local.get(k);
      if (e && e.until > now && e.n >= this.o.limit) wait = Math.max(wait, Math.ceil((e.until - now) / 1000));
    }
    return wait;
  }

  async failed(keys: string[]): Promise<void> {
    const now = Date.now();
    if (this.local.size > 50_000) this.local.clear();
    for (const k of keys) {
      const e = this.local.get(k);
      if (e && e.until > now) e.n++;
      else this.local.set(k, { n: 1, until: now + this.o.windowSeconds * 1000 });
    }
    if (this.o.redis.status !== 'ready') return;
    const pipe = this.o.redis.pipeline();
    for (const k of keys) pipe.incr(k).expire(k, this.o.windowSeconds, 'NX');
    await pipe.exec().catch(() => undefined);
  }

  keysFor(ip: string, application?: string): string[] {
    return [this.key('ip', ip), ...(application ? [this.key('app', application)] : [])];
  }
}

/**
 * Authenticates a request: admin bearer token, application HTTP Basic, or (where the route allows
 * it) a `secret` in the body. Throws 401 when none is valid, 429 when the caller failed too often.
 */
export class Authenticator {
  private readonly adminHash: Buffer;
  private readonly metricsHash: Buffer | null;
  private readonly registry: Registry;
  private readonly throttle: AuthThrottle | null;

  constructor(
    adminTokenHash: string,
    registry: Registry,
    throttle: AuthThrottle | null = null,
    opts: { metricsTokenHash?: string | null } = {},
  ) {
    this.adminHash = Buffer.from(adminTokenHash, 'hex');
    this.metricsHash = opts.metricsTokenHash ? Buffer.from(opts.metricsTokenHash, 'hex') : null;
    this.registry = registry;
    this.throttle = throttle;
  }

  isAdminToken(token: string): boolean {
    return sameHash(token, this.adminHash);
  }

  /** The fastify `preValidation` hook that enforces each route's `config.auth`. */
  readonly hook = async (req: FastifyRequest): Promise<void> => {
    const rule = req.routeOptions.config.auth ?? (req.routeOptions.url?.startsWith('/v1/') ? 'any' : 'public');
    if (rule === 'public') return;
    if (rule === 'metrics') return this.metrics(req);
    const opts: AuthOptions = rule === 'admin' ? { admin: true } : rule === 'any' ? {} : rule;
    req.principal = opts.admits && (await opts.admits(req)) ? { kind: 'admin' } : await this.principal(req, opts);
    if (opts.admin && req.principal.kind !== 'admin')
      throw new AmeboError('FORBIDDEN', 'this route needs the admin token (Authorization: Bearer <admin token>)');
    if (opts.owner && req.principal.kind === 'app') {
      const owner = await opts.owner(req);
      if (owner !== undefined) this.actsFor(req.principal, owner);
    }
  };

  /** `/metrics`: Bearer AMEBO_METRICS_TOKEN when one is set. */
  private metrics(req: FastifyRequest): void {
    if (!this.metricsHash) return;
    const [scheme, token = ''] = (req.headers.authorization ?? '').split(' ', 2);
    if (!/^bearer$/i.test(scheme ?? '') || !sameHash(token.trim(), this.metricsHash))
      throw new AmeboError('UNAUTHENTICATED', 'send Authorization: Bearer <AMEBO_METRICS_TOKEN>');
  }

  async principal(req: FastifyRequest, opts: AuthOptions = {}): Promise<Principal> {
    const claim = await this.claim(req, opts);
    if (claim.kind === 'none') throw new AmeboError('UNAUTHENTICATED', `credentials are required: ${howTo(opts)}`);
    if (claim.kind === 'bad') {
      await this.throttle?.failed(this.throttle.keysFor(req.ip));
      throw new AmeboError('UNAUTHENTICATED', claim.message);
    }
    // Credentials verified recently (a cache lookup, no scrypt) are admitted without reading the
    // throttle: a known-good client keeps working while its application's name is attacked, and
    // the hot path (every publish) costs no Redis round trip.
    if (
      claim.kind === 'app' &&
      (this.registry.knownGood(claim.name, claim.secret) ||
        (await this.registry.recentlyVerified(claim.name, claim.secret)))
    )
      return { kind: 'app', name: claim.name };
    const keys = this.throttle?.keysFor(req.ip, claim.kind === 'app' ? claim.name : undefined) ?? [];
    if (this.throttle) {
      const wait = await this.throttle.blockedFor(keys);
      if (wait > 0)
        throw new AmeboError(
          'RATE_LIMITED',
          `too many failed authentications; try again in ${wait} s`,
          { retry_after: wait },
          { 'retry-after': String(wait) },
        );
    }
    const ok =
      claim.kind === 'admin'
        ? this.isAdminToken(claim.token)
        : await this.registry.authenticate(claim.name, claim.secret);
    if (ok) return claim.kind === 'admin' ? { kind: 'admin' } : { kind: 'app', name: claim.name };
    await this.throttle?.failed(keys);
    throw new AmeboError(
      'UNAUTHENTICATED',
      claim.kind === 'admin'
        ? 'invalid admin token'
        : claim.via === 'body'
          ? 'invalid application secret'
          : 'invalid application credentials',
    );
  }

  /** What the request claims to be, before anything is verified. */
  private async claim(
    req: FastifyRequest,
    opts: AuthOptions,
  ): Promise<
    | { kind: 'none' }
    | { kind: 'bad'; message: string }
    | { kind: 'admin'; token: string }
    | { kind: 'app'; name: string; secret: string; via: 'header' | 'body' }
  > {
    const h = req.headers.authorization;
    if (h) {
      const [scheme, value = ''] = h.split(' ', 2) as [string, string?];
      if (/^bearer$/i.test(scheme)) return { kind: 'admin', token: value.trim() };
      if (/^basic$/i.test(scheme)) {
        const decoded = Buffer.from(value.trim(), 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i <= 0 || i > 63) return { kind: 'bad', message: `malformed Basic credentials: ${howTo(opts)}` };
        return { kind: 'app', name: decoded.slice(0, i), secret: decoded.slice(i + 1), via: 'header' };
      }
      return { kind: 'bad', message: `unsupported Authorization scheme: ${howTo(opts)}` };
    }
    if (opts.bodySecret) {
      const secret = bodyString(req, 'secret', 'passphrase');
      if (secret !== undefined) {
        let app = bodyString(req, 'application', 'microservice');
        if (typeof app !== 'string' && opts.fallbackApplication) app = await opts.fallbackApplication(req);
        if (typeof app !== 'string' || app.length > 63)
          return { kind: 'bad', message: 'a body secret needs the application it belongs to' };
        return { kind: 'app', name: app, secret, via: 'body' };
      }
    }
    return { kind: 'none' };
  }

  /** 403 unless the principal is the admin or the named application itself. */
  actsFor(p: Principal, application: string): void {
    if (p.kind === 'app' && p.name !== application)
      throw new AmeboError('FORBIDDEN', `application "${p.name}" may not act for "${application}"`);
  }
}

/** True when sha256(token) is `hash`, compared in constant time. */
function sameHash(token: string, hash: Buffer): boolean {
  const h = Buffer.from(sha256(token), 'hex');
  return h.length === hash.length && timingSafeEqual(h, hash);
}

/** A string property of a parsed request part (read before validation: nothing is assumed). */
function stringField(part: unknown, name: string): string | undefined {
  if (part === null || typeof part !== 'object' || Array.isArray(part)) return undefined;
  const v: unknown = Object.getOwnPropertyDescriptor(part, name)?.value;
  return typeof v === 'string' ? v : undefined;
}

/** A string field of the raw JSON body (auth runs before validation), the first of `names` present. */
export function bodyString(req: FastifyRequest, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = stringField(req.body, n);
    if (v !== undefined) return v;
  }
  return undefined;
}

/** A path parameter, when the route has it. */
export const param = (req: FastifyRequest, name: string): string | undefined => stringField(req.params, name);

/** A query-string parameter as sent (before validation), when it is one string. */
export const queryString = (req: FastifyRequest, name: string): string | undefined => stringField(req.query, name);
