/**
 * HTTP gateway to any RPC service on the fabric (Python or TypeScript):
 * `POST /v1/rpc/:domain/:type/:id/:method` with the keyword arguments as the JSON body.
 * Failures are `AmeboError`s, serialized by the caller's error handler.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { AmeboError, ERROR_BODY } from '../errors.js';
import type { FabricConnector } from './connector.js';
import { FabricUnavailableError, RemoteError, RpcTimeoutError, ServiceNotFoundError } from './errors.js';
import { encodeStrictJson, MAX_DEPTH, nestingDepth } from './json.js';
import { isValidMethod, isValidPart } from './names.js';

export interface RpcGatewayOptions {
  /** The connector calls go out on. */
  fabric: FabricConnector;
  /**
   * Decides whether the caller may call this method; throws to refuse. Runs before anything about
   * the service is looked up, so a refusal says nothing about whether it exists.
   */
  authorize?: (req: FastifyRequest, domain: string, type: string, method: string) => Promise<void>;
  /**
   * Deadline when the request gives no `?timeout_ms=`.
   * @default 10000
   */
  defaultTimeoutMs?: number;
  /**
   * Largest `?timeout_ms=` accepted.
   * @default 300000
   */
  maxTimeoutMs?: number;
}

const PART = { type: 'string', description: '[A-Za-z0-9_-]{1,63}' } as const;

/**
 * The route's contract. Names and `timeout_ms` are checked by the handler (every problem reported
 * at once, with its instancePath); the schema types them and documents the answers.
 */
const RPC_SCHEMA = {
  tags: ['rpc'],
  summary: 'Call an RPC method of a fabric service; the JSON body holds its keyword arguments',
  params: {
    type: 'object',
    properties: {
      domain: PART,
      type: PART,
      id: PART,
      method: { type: 'string', description: '[A-Za-z_][A-Za-z0-9_]{0,127}' },
    },
    required: ['domain', 'type', 'id', 'method'],
  },
  querystring: {
    type: 'object',
    properties: { timeout_ms: { type: 'string', description: 'deadline in milliseconds (default 10000)' } },
  },
  response: {
    200: {
      type: 'object',
      properties: { result: { description: 'what the method returned (strict JSON)' } },
    },
    '4xx': ERROR_BODY,
    '5xx': ERROR_BODY,
  },
} as const;

/** Registers the route; usable directly or as a plugin (`app.register(rpcGatewayRoutes, opts)`). */
export async function rpcGatewayRoutes(app: FastifyInstance, opts: RpcGatewayOptions): Promise<void> {
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? 10_000;
  const maxTimeoutMs = opts.maxTimeoutMs ?? 300_000;
  const typed = app.withTypeProvider<JsonSchemaToTsProvider>();
  typed.post('/v1/rpc/:domain/:type/:id/:method', { schema: RPC_SCHEMA }, async (req, reply) => {
    const { domain, type, id, method } = req.params;
    const problems: Array<{ instancePath: string; message: string }> = [];
    for (const [k, v] of Object.entries({ domain, type, id }))
      if (!isValidPart(v)) problems.push({ instancePath: `/params/${k}`, message: 'must match [A-Za-z0-9_-]{1,63}' });
    if (!isValidMethod(method))
      problems.push({ instancePath: '/params/method', message: 'must match [A-Za-z_][A-Za-z0-9_]{0,127}' });
    const body: unknown = req.body ?? {};
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      problems.push({ instancePath: '/body', message: 'must be a JSON object of keyword arguments' });
    else if (nestingDepth(body, MAX_DEPTH) > MAX_DEPTH)
      throw new AmeboError('PAYLOAD_TOO_DEEP', `the arguments are nested deeper than ${MAX_DEPTH} levels`);
    let timeoutMs = defaultTimeoutMs;
    const raw = req.query.timeout_ms;
    if (raw !== undefined) {
      timeoutMs = Number(raw);
      if (!/^\d+$/.test(raw) || timeoutMs < 1 || timeoutMs > maxTimeoutMs)
        problems.push({ instancePath: '/query/timeout_ms', message: `must be an integer from 1 to ${maxTimeoutMs}` });
    }
    if (problems.length) throw new AmeboError('VALIDATION', undefined, problems);
    await opts.authorize?.(req, domain, type, method);
    let result: unknown;
    try {
      result = await opts.fabric.rpcCall({ domain, type, id }, method, body as object, { timeoutMs });
    } catch (err) {
      throw toAmeboError(err, `${domain}.${type}.${id}`, method);
    }
    // Results may hold bigints and non-finite numbers (from Python): strict JSON for HTTP clients.
    return reply
      .type('application/json; charset=utf-8')
      .serializer((payload) => encodeStrictJson(payload))
      .send({ result });
  });
}

function toAmeboError(err: unknown, fqn: string, method: string): unknown {
  if (err instanceof RemoteError)
    return new AmeboError('RPC_REMOTE', `${fqn}.${method} raised ${err.type}: ${err.message}`, {
      type: err.type,
      message: err.message,
    });
  if (err instanceof RpcTimeoutError)
    return new AmeboError('RPC_TIMEOUT', err.message, { reason: err.reason, timeout_ms: err.timeoutMs });
  if (err instanceof ServiceNotFoundError)
    return new AmeboError('SERVICE_NOT_FOUND', err.message, { reason: err.reason });
  if (err instanceof FabricUnavailableError)
    return new AmeboError('UNAVAILABLE', `RabbitMQ unavailable: ${err.message}`);
  return err;
}
