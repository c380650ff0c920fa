import { Agent, buildConnector, request, errors as undiciErrors } from 'undici';
import { isIP } from 'node:net';
import { HEADER, traceparent as childTraceparent } from '../src/broker/message.js';
import { buildBody, signatureHeader, splicedBody, type BrokerEvent, type Outgoing } from './envelope.js';
import { parseRetryAfter, type AttemptResult } from '../src/delivery/ladder.js';
import { TargetForbiddenError, TargetPolicy } from '../src/targets.js';

/** A subscription as the sender needs it: decrypted secrets and key, parsed URL. */
export interface Target {
  /** Subscription id. */
  id: string;
  /** `application/name`, for headers and metrics. */
  label: string;
  url: URL;
  timeoutMs: number;
  format: 'amebo' | 'cloudevents';
  /** Signing keys (decoded whsec_), newest first. */
  keys: Buffer[];
  encryptionKey: Uint8Array | null;
}

export interface Attempt extends AttemptResult {
  latencyMs: number;
  /** null on 2xx; else http_4xx/http_5xx/redirect/timeout/connection_refused/network/blocked/... */
  errorClass: string | null;
  error: string | null;
  excerpt: string | null;
}

export interface SenderOptions {
  connectTimeoutMs: number;
  /** Which addresses webhooks may reach; checked on the address actually connected to. */
  targets: TargetPolicy;
  /** Most connections per origin. @default 256 */
  connectionsPerOrigin?: number;
}

const EXCERPT_BYTES = 512;

/**
 * Sends webhooks: one undici Agent (a keep-alive Pool per origin), timeouts on connect and on the
 * whole attempt, redirects never followed, bodies always consumed or destroyed.
 */
export class Sender {
  readonly agent: Agent;
  private readonly targets: TargetPolicy;

  constructor(o: SenderOptions) {
    this.targets = o.targets;
    // The policy needs the port (allow-list entries may be host:port), which undici gives the
    // connector per connection and not to `lookup`: one connector per port, each with its lookup.
    const byPort = new Map<number, buildConnector.connector>();
    const connector = (port: number): buildConnector.connector => {
      let c = byPort.get(port);
      if (!c) {
        c = buildConnector({
          timeout: o.connectTimeoutMs,
          noDelay: true,
          ...(this.targets.block ? { lookup: this.targets.lookup(port) } : {}),
        } as buildConnector.BuildOptions);
        byPort.set(port, c);
      }
      return c;
    };
    this.agent = new Agent({
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 60_000,
      connections: o.connectionsPerOrigin ?? 256,
      pipelining: 1,
      connect: (opts, cb) => {
        const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
        try {
          // An address literal never goes through `lookup`: check it here.
          if (this.targets.block && isIP(opts.hostname.replace(/^\[|\]$/g, '')))
            this.targets.check(opts.hostname, port, opts.hostname.replace(/^\[|\]$/g, ''));
        } catch (err) {
          cb(err as Error, null);
          return;
        }
        connector(port)(opts, cb);
      },
    });
  }

  /** One delivery attempt of `e` to `t`. Never throws: failures are outcomes. */
  async send(t: Target, e: Outgoing, attempt: number, parentTrace?: string): Promise<Attempt> {
    const started = performance.now();
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(new AttemptTimeout()), t.timeoutMs);
    try {
      const fast = e.raw && t.format === 'amebo' && !t.encryptionKey ? splicedBody(e.raw, t.label, attempt) : null;
      const { body, contentType } = fast
        ? { body: fast, contentType: 'application/json' }
        : await buildBody((e.event ??= JSON.parse(e.raw!.toString('utf8')) as BrokerEvent), {
            subscription: t.label,
            attempt,
            format: t.format,
            encryptionKey: t.encryptionKey,
          });
      const ts = Math.floor(Date.now() / 1000);
      const res = await request(t.url, {
        method: 'POST',
        dispatcher: this.agent,
        signal: ctl.signal,
        headersTimeout: t.timeoutMs,
        bodyTimeout: t.timeoutMs,
        headers: {
          'content-type': contentType,
          'user-agent': 'Amebo-Webhooks/0.1',
          'webhook-id': e.id,
          'webhook-timestamp': String(ts),
          'webhook-signature': signatureHeader(t.keys, e.id, ts, body),
          [HEADER.action]: e.action,
          [HEADER.attempt]: String(attempt),
          [HEADER.subscription]: t.label,
          traceparent: childTraceparent(parentTrace),
        },
        body,
      });
      const status = res.statusCode;
      if (status >= 200 && status < 300) {
        await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        return { status, latencyMs: performance.now() - started, errorClass: null, error: null, excerpt: null };
      }
      const excerpt = await readExcerpt(res.body);
      return {
        status,
        latencyMs: performance.now() - started,
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        errorClass: status >= 300 && status < 400 ? 'redirect' : status < 500 ? 'http_4xx' : 'http_5xx',
        error:
          status >= 300 && status < 400
            ? `HTTP ${status} to ${String(res.headers.location ?? '?')} (redirects are not followed)`
            : `HTTP ${status}`,
        excerpt,
      };
    } catch (err) {
      const { errorClass, fatal } = classify(err, ctl.signal);
      return {
        status: null,
        latencyMs: performance.now() - started,
        errorClass,
        error: describe(err, ctl.signal),
        excerpt: null,
        fatal,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await Promise.race([this.agent.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
    await this.agent.destroy().catch(() => undefined);
  }
}

class AttemptTimeout extends Error {
  override name = 'AttemptTimeout';
}

async function readExcerpt(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string | null> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      chunks.push(c);
      n += c.length;
      if (n >= EXCERPT_BYTES) break; // leaving the loop destroys the rest: no unread body left behind
    }
  } catch {
    /* a body cut short still gave what it gave */
  }
  if (!n) return null;
  return Buffer.concat(chunks).subarray(0, EXCERPT_BYTES).toString('utf8');
}

function rootCause(err: unknown): Error & { code?: string } {
  let e = err as Error & { code?: string; cause?: unknown };
  for (let i = 0; i < 5 && e && !e.code && e.cause; i++) e = e.cause as typeof e;
  return e;
}

function classify(err: unknown, signal: AbortSignal): { errorClass: string; fatal: boolean } {
  if (signal.aborted) return { errorClass: 'timeout', fatal: false };
  const e = rootCause(err);
  if (e instanceof TargetForbiddenError || (err as Error | undefined) instanceof TargetForbiddenError)
    return { errorClass: 'blocked', fatal: true };
  if (
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError ||
    err instanceof undiciErrors.ConnectTimeoutError
  )
    return { errorClass: 'timeout', fatal: false };
  switch (e?.code) {
    case 'ECONNREFUSED':
      return { errorClass: 'connection_refused', fatal: false };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { errorClass: 'dns', fatal: false };
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'EPIPE':
      return { errorClass: 'connection_reset', fatal: false };
    case 'CERT_HAS_EXPIRED':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return { errorClass: 'tls', fatal: false };
    case 'AMEBO_BLOCKED_TARGET':
      return { errorClass: 'blocked', fatal: true };
  }
  return { errorClass: 'network', fatal: false };
}

function describe(err: unknown, signal: AbortSignal): string {
  if (signal.aborted) return 'the attempt timed out';
  const e = rootCause(err);
  return `${e?.code ? e.code + ': ' : ''}${(e?.message ?? String(err)).slice(0, 300)}`;
}
