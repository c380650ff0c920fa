/**
 * What can go wrong with a fabric call, ordered by where it happened: the remote method raised
 * (`RemoteError`), nothing serves the method (`ServiceNotFoundError`), no answer by the deadline
 * (`RpcTimeoutError`), or the broker is not reachable (`FabricUnavailableError`).
 * A remote error is data, never a class looked up from the wire: amqp-fabric resolves the remote
 * `type` with `pydoc.locate` and calls whatever it finds, which lets a responder run code in the
 * caller.
 */

/** Base of every error the fabric SDK raises. */
export class FabricError extends Error {
  override name = 'FabricError';
}

/** The remote method raised. `type` is the remote exception type, e.g. `ValueError` or `mymodule.MyError`. */
export class RemoteError extends FabricError {
  override name = 'RemoteError';
  /** Remote exception type as sent (bare for Python built-ins, module-qualified otherwise). */
  readonly type: string;
  /** The exception's constructor arguments as sent (`list(exc.args)` for Python services). */
  readonly args: unknown[];
  constructor(type: string, message: string, args: unknown[] = []) {
    super(message);
    this.type = type;
    this.args = args;
  }
}

/** Why a call found nobody to serve it. */
export type NotFoundReason = 'no_service' | 'no_route';

/** No service with that address exists (`no_service`), or it has no such method (`no_route`, basic.return 312). */
export class ServiceNotFoundError extends FabricError {
  override name = 'ServiceNotFoundError';
  readonly reason: NotFoundReason;
  constructor(message: string, reason: NotFoundReason) {
    super(message);
    this.reason = reason;
  }
}

/** Why a call timed out. */
export type TimeoutReason = 'deadline' | 'expired' | 'rejected';

/**
 * No reply by the deadline (`deadline`), the call waited in the method queue past its
 * `expiration` and came back through `rpc.dlx` (`expired`), or the service rejected it without
 * replying (`rejected`, e.g. its reply publish failed).
 */
export class RpcTimeoutError extends FabricError {
  override name = 'RpcTimeoutError';
  readonly reason: TimeoutReason;
  readonly timeoutMs: number;
  constructor(message: string, reason: TimeoutReason, timeoutMs: number) {
    super(message);
    this.reason = reason;
    this.timeoutMs = timeoutMs;
  }
}

/** The connector is closed, or the broker stayed unreachable for longer than the operation could wait. */
export class FabricUnavailableError extends FabricError {
  override name = 'FabricUnavailableError';
}

/**
 * Python built-in exception names a TypeScript service may send: a Python caller turns each into the
 * native exception, and none of them can be abused to run code in the caller (wire spec §2.3).
 */
export const PYTHON_ERROR_TYPES = [
  'ValueError',
  'TypeError',
  'KeyError',
  'LookupError',
  'PermissionError',
  'NotImplementedError',
  'TimeoutError',
  'RuntimeError',
] as const;
export type PythonErrorType = (typeof PYTHON_ERROR_TYPES)[number];

/**
 * Throw this from an RPC handler to choose the exception type a caller sees (a Python caller
 * raises the built-in of that name). Other errors are sent as `TypeError` (a JS `TypeError`),
 * `ValueError` (a `RangeError`) or `RuntimeError`.
 * @example throw new ServiceError('ValueError', 'x must be positive', { field: 'x' })
 */
export class ServiceError extends Error {
  override name = 'ServiceError';
  readonly type: PythonErrorType;
  readonly details: unknown;
  constructor(type: PythonErrorType, message: string, details?: unknown) {
    super(message);
    this.type = (PYTHON_ERROR_TYPES as readonly string[]).includes(type) ? type : 'RuntimeError';
    this.details = details;
  }
}

/** The `error` object of a reply of type `error` (amqp-fabric's `CustomJsonRPC` shape). */
export interface WireError {
  type: string;
  message: string;
  args: unknown[];
}

/** What a thrown value becomes on the wire; only built-in names, never a stack trace. */
export function toWireError(err: unknown): WireError {
  if (err instanceof ServiceError) {
    return {
      type: err.type,
      message: err.message,
      args: err.details === undefined ? [err.message] : [err.message, err.details],
    };
  }
  if (err instanceof Error) {
    const type: PythonErrorType =
      err instanceof TypeError ? 'TypeError' : err instanceof RangeError ? 'ValueError' : 'RuntimeError';
    return { type, message: err.message, args: [err.message] };
  }
  const message = typeof err === 'string' ? err : safeString(err);
  return { type: 'RuntimeError', message, args: [message] };
}

export function safeString(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return v;
    case 'number':
    case 'boolean':
    case 'bigint':
      return v.toString();
    case 'undefined':
      return 'undefined';
    case 'symbol':
      return v.description ?? 'symbol';
    default:
      try {
        return JSON.stringify(v) ?? typeof v;
      } catch {
        return Object.prototype.toString.call(v);
      }
  }
}

/**
 * Reads the body of an `error` reply: amqp-fabric's envelope `{"error": {type, message, args}}`,
 * or (aio-pika >= 9.1.3, result not encodable) a bare JSON string such as
 * `"ValueError('Circular reference detected')"`.
 */
export function fromWireError(body: unknown): RemoteError {
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
    const e = (body as { error?: unknown }).error;
    if (e !== null && typeof e === 'object' && !Array.isArray(e)) {
      const { type, message, args } = e as { type?: unknown; message?: unknown; args?: unknown };
      return new RemoteError(
        typeof type === 'string' ? type : 'Error',
        typeof message === 'string' ? message : safeString(message),
        Array.isArray(args) ? args : [],
      );
    }
  }
  if (typeof body === 'string') {
    const m = /^([A-Za-z_][\w.]*)\(/.exec(body);
    return new RemoteError(m?.[1] ?? 'Error', body, []);
  }
  return new RemoteError('Error', safeString(body), []);
}
