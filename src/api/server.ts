import { dashboardRoutes } from '../dashboard/index.js';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { AmeboError } from '../errors.js';
import type { Logger } from '../log.js';
import { dataException, storeUnreachable } from '../store/errors.js';
import { BrokerUnavailableError } from '../broker/connection.js';
import { addSharedSchemas, SHARED } from './schemas.js';
import type { Registry } from '../registry.js';
import type { PublishPipeline } from '../publish.js';
import type { Pool } from '../store/db.js';
import type { Broker } from '../broker/connection.js';
import type { Topology } from '../broker/topology.js';
import type { ConfirmPublisher } from '../broker/publisher.js';
import { Authenticator } from './auth.js';
import { registryRoutes } from './registry-routes.js';
import { eventRoutes } from './event-routes.js';
import { subscriptionRoutes } from './subscription-routes.js';
import { healthRoutes } from './health-routes.js';
import { opsRoutes } from './ops-routes.js';
import { streamRoutes } from './stream.js';
import { metrics } from '../metrics.js';

/** What routes need. Optional parts belong to roles this process may not run. */
export interface ApiContext {
  cfg: Config;
  log: Logger;
  pool: Pool;
  redis: Redis;
  registry: Registry;
  broker: Broker;
  topology: Topology;
  publisher: ConfirmPublisher;
  pipeline: PublishPipeline;
  auth: Authenticator;
  /** Extra route plugins (bridge deliveries, fabric gateway, services, stream, dashboard). */
  plugins?: ((app: FastifyInstance, ctx: ApiContext) => Promise<void>)[];
}

/**
 * Maps any error to the `{ error: { code, message, details } }` contract; bad input is never a 5xx.
 * Errors are told apart by their class or code (fastify's FST_*, the store's verdicts), never by
 * their message.
 */
export function toAmeboError(err: FastifyError | Error, req?: FastifyRequest): AmeboError {
  const log = req?.log as Logger | undefined;
  if (err instanceof AmeboError) return err;
  const e = err as FastifyError & { validation?: unknown[]; code?: string };
  if (e.validation)
    return new AmeboError(
      'VALIDATION',
      `${e.validationContext ?? 'request'} ${e.message.replace(/^(body|querystring|params)\/?\S* ?/, '')}`.trim(),
      (e.validation as { instancePath: string; message?: string; keyword: string; params: unknown }[]).map((v) => ({
        instancePath: v.instancePath,
        message: v.message,
        keyword: v.keyword,
        params: v.params,
      })),
    );
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AmeboError(
        'UNSUPPORTED_MEDIA_TYPE',
        `${
          req?.headers['content-type']
            ? `the body was sent as ${JSON.stringify(req.headers['content-type'])}`
            : 'the body was sent without a Content-Type'
        }; Amebo reads JSON: send the header Content-Type: application/json (curl: -H 'content-type: application/json')`,
        { received: req?.headers['content-type'] ?? null, expected: 'application/json' },
      );
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AmeboError('BODY_TOO_LARGE');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AmeboError('MALFORMED_JSON', 'the body is empty but the content type is application/json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AmeboError('MALFORMED_JSON', e.message);
  }
  if (e instanceof SyntaxError || e.code === 'FST_ERR_CTP_INVALID_JSON')
    return new AmeboError('MALFORMED_JSON', e.message);
  // PostgreSQL data exceptions (class 22: NUL bytes, bad encodings) are the input's fault.
  // Their text is PostgreSQL's and names its internals: it goes to the log, never to the client.
  const sqlstate = dataException(e);
  if (sqlstate) {
    log?.debug({ err: e.message, code: sqlstate }, 'input PostgreSQL cannot store');
    return new AmeboError(
      'BAD_REQUEST',
      'the input holds a value that cannot be stored (a NUL character, an invalid encoding or an out-of-range value)',
      [{ sqlstate }],
    );
  }
  if (storeUnreachable(e)) return new AmeboError('UNAVAILABLE', 'PostgreSQL is unreachable');
  if (e instanceof BrokerUnavailableError)
    return new AmeboError('UNAVAILABLE', 'RabbitMQ is not connected; try again shortly');
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)
    return new AmeboError(
      e.statusCode === 404 ? 'NOT_FOUND' : e.statusCode === 405 ? 'METHOD_NOT_ALLOWED' : 'BAD_REQUEST',
      e.message,
    );
  log?.error({ err }, 'unhandled error');
  return new AmeboError('INTERNAL', 'internal error; see the server log');
}

/** Action names go up to 255 characters (TOPIC_LIMITS); path parameters get a little more. */
const MAX_PARAM_LENGTH = 300;

function trustProxyOf(v: string): boolean | string[] {
  const s = v.trim().toLowerCase();
  if (s === '' || s === 'false') return false;
  if (s === 'true') return true;
  return v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

export async function buildApi(ctx: ApiContext): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = ctx.log.child({ role: 'api' });
  const cfg = ctx.cfg;
  const app = Fastify({
    loggerInstance: logger,
    // Errors the router raises before any route runs (undecodable or over-long path parameters)
    // answer in the same coded shape as everything else.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: (err, _req, reply) => {
      const ae =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new AmeboError('URI_TOO_LONG', `a path parameter is longer than ${MAX_PARAM_LENGTH} characters`)
          : new AmeboError('BAD_REQUEST', 'the path is not a valid URL (bad percent-encoding)');
      void (reply as unknown as FastifyReply).status(ae.status).send(ae.toJSON());
    },
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: cfg.bodyLimit,
    // X-Forwarded-For is believed only from the proxies named here: anyone else could pick the
    // address the failed-auth throttle counts against.
    trustProxy: trustProxyOf(cfg.trustProxy),
    return503OnClosing: true,
    // Every request is bounded: a client that sends headers and never finishes its body is cut
    // after requestTimeoutMs (Node checks every connectionsCheckingInterval).
    requestTimeout: cfg.requestTimeoutMs,
    keepAliveTimeout: cfg.keepAliveTimeoutMs,
    http: {
      headersTimeout: Math.min(cfg.requestTimeoutMs, 60_000),
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(cfg.requestTimeoutMs / 4))),
    },
  });
  app.server.maxConnections = cfg.maxConnections;
  // Bodies are validated as sent (no coercion: 42 is not "42"); query strings and params are coerced.
  const bodyAjv = new Ajv({
    removeAdditional: false,
    allErrors: true,
    coerceTypes: false,
    strict: false,
    useDefaults: true,
  });
  const queryAjv = new Ajv({
    removeAdditional: false,
    allErrors: true,
    coerceTypes: 'array',
    strict: false,
    useDefaults: true,
  });
  for (const a of [bodyAjv, queryAjv]) (addFormats as unknown as (x: Ajv) => void)(a);
  // The shared schemas ($ref: 'Event#', ...) for the serializer (fastify passes them on) and for
  // both validators (a custom compiler gets none of them by itself).
  addSharedSchemas(app);
  for (const a of [bodyAjv, queryAjv]) for (const s of SHARED) a.addSchema(s);
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : queryAjv).compile(schema));

  // Only JSON bodies: text/plain would otherwise parse to a string and fail later as a 400.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler((err, req, reply) => {
    const ae = toAmeboError(err as Error, req);
    if (ae.headers) void reply.headers(ae.headers);
    return reply.status(ae.status).send(ae.toJSON());
  });
  app.setNotFoundHandler((req, reply) =>
    reply
      .status(404)
      .send(new AmeboError('ROUTE_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON()),
  );
  app.addHook('preValidation', ctx.auth.hook);
  // Both hooks take fastify's callback form: an async hook costs each request a promise and a
  // microtask turn for work that cannot wait on anything.
  app.addHook('onSend', (req, reply, payload, done) => {
    void reply.header('x-content-type-options', 'nosniff');
    // API answers carry secrets (created applications, subscriptions, rotations) and tenants' data:
    // no cache along the way may keep them.
    if (req.url.startsWith('/v1/')) void reply.header('cache-control', 'no-store');
    done(null, payload);
  });
  app.addHook('onResponse', (req, reply, done) => {
    metrics.httpRequests.inc({ route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
    done();
  });

  await app.register(swagger, {
    // Shared schemas appear under components.schemas by their $id (Event, Subscription, Error...).
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (json.$id as string | undefined) ?? `def-${i}` },
    openapi: {
      info: { title: 'Amebo', version: '1', description: 'HTTP-first event notification server in front of RabbitMQ' },
      components: {
        securitySchemes: {
          admin: { type: 'http', scheme: 'bearer' },
          application: { type: 'http', scheme: 'basic' },
        },
      },
    },
  });
  // /docs gets a Content-Security-Policy of its own (the UI's scripts and styles, nothing else).
  // Served over plain http on loopback too, and offline: no upgrade to https, no outside validator.
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    transformStaticCSP: (h) =>
      h
        .replace(/\s*upgrade-insecure-requests;?/, '')
        .replace(' validator.swagger.io', '')
        .replace("font-src 'self' https: data:", "font-src 'self' data:")
        // Swagger UI sets style attributes from its scripts; inline styles cannot run code.
        .replace("style-src 'self' https:", "style-src 'self' 'unsafe-inline'"),
  });
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.register(async (scope) => {
    await opsRoutes(scope, ctx);
    await registryRoutes(scope, ctx);
    await eventRoutes(scope, ctx);
    await subscriptionRoutes(scope, ctx);
    await healthRoutes(scope, ctx);
    await streamRoutes(scope, ctx);
    await dashboardRoutes(scope);
    for (const p of ctx.plugins ?? []) await p(scope, ctx);
  });
  return app;
}
