import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import type { Registry } from '../registry.js';
import { sha256 } from '../secrets.js';

export type Principal = { kind: 'admin' } | { kind: 'app'; name: string };

export interface AuthOptions {
  /** Accept `secret` (+ `application`/`microservice`) in the JSON body, as Amebo's clients send it. */
  bodySecret?: boolean;
  /** Application to check a body secret against when the body names none (the action's owner). */
  fallbackApplication?: () => Promise<string | undefined>;
}

/**
 * Authenticates a request: admin bearer token, application HTTP Basic, or (where the API allows
 * it) a `secret` in the body. Throws 401 when none is valid.
 */
export class Authenticator {
  private readonly adminHash: Buffer;
  private readonly registry: Registry;

  constructor(adminTokenHash: string, registry: Registry) {
    this.adminHash = Buffer.from(adminTokenHash, 'hex');
    this.registry = registry;
  }

  isAdminToken(token: string): boolean {
    const h = Buffer.from(sha256(token), 'hex');
    return h.length === this.adminHash.length && timingSafeEqual(h, this.adminHash);
  }

  async principal(req: FastifyRequest, opts: AuthOptions = {}): Promise<Principal> {
    const h = req.headers.authorization;
    if (h) {
      const [scheme, value = ''] = h.split(' ', 2) as [string, string?];
      if (/^bearer$/i.test(scheme)) {
        if (this.isAdminToken(value.trim())) return { kind: 'admin' };
        throw new AmeboError('UNAUTHENTICATED', 'invalid admin token');
      }
      if (/^basic$/i.test(scheme)) {
        const decoded = Buffer.from(value.trim(), 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i > 0 && (await this.registry.authenticate(decoded.slice(0, i), decoded.slice(i + 1))))
          return { kind: 'app', name: decoded.slice(0, i) };
        throw new AmeboError('UNAUTHENTICATED', 'invalid application credentials');
      }
      throw new AmeboError('UNAUTHENTICATED', 'unsupported Authorization scheme (use Bearer or Basic)');
    }
    if (opts.bodySecret) {
      const body = (req.body ?? {}) as Record<string, unknown>;
      const secret = body.secret ?? body.passphrase;
      if (typeof secret === 'string') {
        let app = body.application ?? body.microservice;
        if (typeof app !== 'string' && opts.fallbackApplication) app = await opts.fallbackApplication();
        if (typeof app === 'string' && (await this.registry.authenticate(app, secret)))
          return { kind: 'app', name: app };
        throw new AmeboError('UNAUTHENTICATED', 'invalid application secret');
      }
    }
    throw new AmeboError('UNAUTHENTICATED', 'send Authorization: Bearer <admin token> or Basic <application:secret>');
  }

  async admin(req: FastifyRequest): Promise<void> {
    const p = await this.principal(req);
    if (p.kind !== 'admin') throw new AmeboError('FORBIDDEN', 'admin token required');
  }

  /** Admin, or the named application itself. */
  async adminOr(req: FastifyRequest, application: string, opts: AuthOptions = {}): Promise<Principal> {
    const p = await this.principal(req, opts);
    if (p.kind === 'app' && p.name !== application)
      throw new AmeboError('FORBIDDEN', `application "${p.name}" may not act for "${application}"`);
    return p;
  }
}
