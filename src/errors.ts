/**
 * The error registry: every error Amebo answers with has a stable `AMEBO_ERR_*` code and a status.
 * Routes throw `AmeboError`s; the API's error handler turns anything else into a coded error too.
 */

export const ERRORS = {
  BAD_REQUEST: { status: 400, message: 'The request is malformed' },
  MALFORMED_JSON: { status: 400, message: 'The body is not valid JSON' },
  VALIDATION: { status: 400, message: 'The request does not match what this route accepts' },
  UNAUTHENTICATED: { status: 401, message: 'Authentication is required' },
  FORBIDDEN: { status: 403, message: 'Not allowed' },
  NOT_FOUND: { status: 404, message: 'Not found' },
  ROUTE_NOT_FOUND: { status: 404, message: 'No such route' },
  APPLICATION_NOT_FOUND: { status: 404, message: 'No such application' },
  ACTION_NOT_FOUND: { status: 404, message: 'No such action' },
  EVENT_NOT_FOUND: { status: 404, message: 'No such event' },
  SUBSCRIPTION_NOT_FOUND: { status: 404, message: 'No such subscription' },
  DELIVERY_NOT_FOUND: { status: 404, message: 'No such delivery' },
  SERVICE_NOT_FOUND: { status: 404, message: 'No such service or method' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed' },
  CONFLICT: { status: 409, message: 'Conflict' },
  UPGRADE_REQUIRED: { status: 426, message: 'This route is a websocket' },
  NAME_TAKEN: { status: 409, message: 'That name is taken' },
  SCHEMA_INCOMPATIBLE: { status: 409, message: 'The new schema is not compatible with the current one' },
  BODY_TOO_LARGE: { status: 413, message: 'The body is larger than allowed' },
  URI_TOO_LONG: { status: 414, message: 'A path parameter is longer than allowed' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Bodies must be application/json' },
  SCHEMA_INVALID: { status: 422, message: 'The schema is not a valid JSON Schema' },
  PAYLOAD_INVALID: { status: 422, message: 'The payload does not match the action schema' },
  PAYLOAD_TOO_DEEP: { status: 422, message: 'The payload is nested too deeply' },
  TARGET_FORBIDDEN: { status: 422, message: 'The webhook target is on a private network' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  INTERNAL: { status: 500, message: 'Internal error' },
  RPC_REMOTE: { status: 502, message: 'The remote method raised an error' },
  UNAVAILABLE: { status: 503, message: 'A store Amebo needs is unreachable' },
  RPC_TIMEOUT: { status: 504, message: 'The remote method did not answer in time' },
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
