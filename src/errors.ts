/**
 * The error registry: every error Amebo answers with has a stable `AMEBO_ERR_*` code and a status.
 * Routes throw `AmeboError`s; the API's error handler turns anything else into a coded error too.
 */

export const ERRORS = {
  BAD_REQUEST: {
    status: 400,
    message: 'The request is malformed',
    when: 'a value PostgreSQL cannot store, a path that is not a valid URL, other malformed requests',
  },
  MALFORMED_JSON: {
    status: 400,
    message: 'The body is not valid JSON',
    when: 'the body is not JSON (or empty with a JSON content type)',
  },
  VALIDATION: {
    status: 400,
    message: 'The request does not match what this route accepts',
    when: 'the request does not match the route (each problem with its `instancePath`)',
  },
  UNAUTHENTICATED: {
    status: 401,
    message: 'Authentication is required',
    when: 'no or wrong admin token / application credentials',
  },
  FORBIDDEN: {
    status: 403,
    message: 'Not allowed',
    when: "authenticated, but another application's action or subscription, an action whose `subscribers` leave you out, an RPC method without a grant",
  },
  NOT_FOUND: {
    status: 404,
    message: 'Not found',
    when: 'a thing the route looks up does not exist (or is not yours to see)',
  },
  ROUTE_NOT_FOUND: { status: 404, message: 'No such route', when: 'no route has this method and path' },
  APPLICATION_NOT_FOUND: { status: 404, message: 'No such application', when: 'no application of that name' },
  ACTION_NOT_FOUND: { status: 404, message: 'No such action', when: 'no action of that name' },
  EVENT_NOT_FOUND: { status: 404, message: 'No such event', when: 'no event with that id that you may see' },
  SUBSCRIPTION_NOT_FOUND: {
    status: 404,
    message: 'No such subscription',
    when: 'no subscription with that id that you may manage',
  },
  DELIVERY_NOT_FOUND: {
    status: 404,
    message: 'No such delivery',
    when: 'that event was never routed to that subscription (or you may not see it)',
  },
  SERVICE_NOT_FOUND: {
    status: 404,
    message: 'No such service or method',
    when: 'the RPC gateway: no such fabric service or method',
  },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed', when: 'the path exists, not with this method' },
  CONFLICT: {
    status: 409,
    message: 'Conflict',
    when: 'the state does not allow it (e.g. a subscription already paused)',
  },
  UPGRADE_REQUIRED: {
    status: 426,
    message: 'This route is a websocket',
    when: '`/v1/stream` asked without a websocket upgrade',
  },
  NAME_TAKEN: { status: 409, message: 'That name is taken', when: 'application, action or subscription name exists' },
  SCHEMA_INCOMPATIBLE: {
    status: 409,
    message: 'The new schema is not compatible with the current one',
    when: 'a schema update breaks the compatibility mode (default BACKWARD); details list each break',
  },
  BODY_TOO_LARGE: { status: 413, message: 'The body is larger than allowed', when: 'body over `AMEBO_BODY_LIMIT`' },
  URI_TOO_LONG: {
    status: 414,
    message: 'A path parameter is longer than allowed',
    when: 'a path parameter over 300 characters',
  },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Bodies must be application/json', when: 'not `application/json`' },
  SCHEMA_INVALID: {
    status: 422,
    message: 'The schema is not a valid JSON Schema',
    when: 'the schema is not a valid JSON Schema (or too large, too deep, an unsupported `$schema`, a regex RE2 cannot run, too slow to compile or compiling to too large a validator)',
  },
  PAYLOAD_INVALID: {
    status: 422,
    message: 'The payload does not match the action schema',
    when: "the payload violates the action's schema; details list every violation",
  },
  PAYLOAD_TOO_DEEP: {
    status: 422,
    message: 'The payload is nested too deeply',
    when: 'payload nested deeper than `AMEBO_MAX_PAYLOAD_DEPTH` (RPC arguments: 512)',
  },
  TARGET_FORBIDDEN: {
    status: 422,
    message: 'The webhook target is on a private network',
    when: 'a webhook on a private address (details: the address it resolved to and its range); see Security',
  },
  RATE_LIMITED: {
    status: 429,
    message: 'Too many requests',
    when: 'too many failed authentications (`Retry-After`), live-tail clients over the cap, 64 schemas already waiting to compile',
  },
  INTERNAL: { status: 500, message: 'Internal error', when: 'a bug: see the server log' },
  RPC_REMOTE: {
    status: 502,
    message: 'The remote method raised an error',
    when: 'the RPC gateway: the method raised (details: its type and message)',
  },
  UNAVAILABLE: {
    status: 503,
    message: 'A store Amebo needs is unreachable',
    when: 'PostgreSQL or RabbitMQ unreachable',
  },
  RPC_TIMEOUT: {
    status: 504,
    message: 'The remote method did not answer in time',
    when: 'the RPC gateway: no answer within `timeout_ms`',
  },
} as const;

/** The README's error table, generated from the registry (`npm run docs:errors`; a test keeps them equal). */
export function errorTable(): string {
  const rows = Object.entries(ERRORS)
    .sort(([, a], [, b]) => a.status - b.status)
    .map(([name, e]) => `| \`AMEBO_ERR_${name}\` | ${e.status} | ${e.when} |`);
  return ['| code | status | when |', '| --- | --- | --- |', ...rows].join('\n');
}

/**
 * The JSON Schema of every error answer, `{ error: { code, message, details? } }`: the API
 * registers it once (`$ref: 'Error#'`); the fabric's routes, usable without the API, inline it.
 */
export const ERROR_BODY = {
  type: 'object',
  description: 'An error: a stable AMEBO_ERR_* code (see the README error table), a message, details when useful',
  additionalProperties: false,
  properties: {
    error: {
      type: 'object',
      additionalProperties: false,
      properties: {
        code: { type: 'string', enum: Object.keys(ERRORS).map((n) => `AMEBO_ERR_${n}`) },
        message: { type: 'string' },
        details: {
          description: 'each problem (with its instancePath for validation errors), or facts about the error',
        },
      },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;

export type ErrorName = keyof typeof ERRORS;
export type ErrorCode = `AMEBO_ERR_${ErrorName}`;

export class AmeboError extends Error {
  override name = 'AmeboError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: unknown;
  /** Response headers the error needs (e.g. Retry-After on a 429). */
  readonly headers: Record<string, string> | undefined;
  constructor(name: ErrorName, message?: string, details?: unknown, headers?: Record<string, string>) {
    super(message ?? ERRORS[name].message);
    this.code = `AMEBO_ERR_${name}`;
    this.status = ERRORS[name].status;
    this.details = details;
    this.headers = headers;
  }
  toJSON(): { error: { code: string; message: string; details?: unknown } } {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details !== undefined ? { details: this.details } : {}),
      },
    };
  }
}

export const fail = (name: ErrorName, message?: string, details?: unknown): never => {
  throw new AmeboError(name, message, details);
};
