/**
 * Remote logs on `{domain}.log.records`, readable by amqp-fabric tooling: headers `service_id`,
 * `service_type`, `level_name` (Python's names) and a body that is a JSON string of the message.
 * Extra facts (domain, time, logger, error, the record's other fields) travel as extra headers so
 * consumers expecting a string body keep working.
 *
 * Shipping is best effort and must never slow or break the service: records go out on a plain
 * channel, wait in a bounded buffer while the broker is away or pushing back, and beyond that are
 * dropped and counted.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { safeString } from './errors.js';
import { asciiJsonString } from './json.js';
import { send } from '../broker/send.js';
import type { Link, ManagedChannel } from './link.js';
import { DECLARE, logExchange, type ServiceAddress } from './names.js';
import { DataSubscription, type Subscription } from './data.js';

/** Python logging level names, lowest first. */
export const LEVEL_NAMES = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'] as const;
export type LevelName = (typeof LEVEL_NAMES)[number];

/** pino level number → Python level name (trace and debug → DEBUG, fatal → CRITICAL). */
export function pythonLevel(level: number): LevelName {
  if (level >= 60) return 'CRITICAL';
  if (level >= 50) return 'ERROR';
  if (level >= 40) return 'WARNING';
  if (level >= 30) return 'INFO';
  return 'DEBUG';
}

/** Accepts Python names and pino names (`warn`, `fatal`, `trace`), any case. */
export function parseLevel(s: string): LevelName {
  const u = s.trim().toUpperCase();
  const alias: Record<string, LevelName> = { TRACE: 'DEBUG', WARN: 'WARNING', FATAL: 'CRITICAL' };
  const v = alias[u] ?? u;
  if (!(LEVEL_NAMES as readonly string[]).includes(v))
    throw new RangeError(`unknown level ${JSON.stringify(s)} (use ${LEVEL_NAMES.join(', ')} or pino names)`);
  return v as LevelName;
}

export interface LogDestinationOptions {
  /**
   * Records kept while the broker is away or applying backpressure; beyond that they are dropped and counted.
   * @default 1000
   */
  maxBuffer?: number;
  /**
   * Largest header value (error stack, extra fields) in bytes; longer ones are cut.
   * @default 8192
   */
  maxHeaderBytes?: number;
}

const PINO_CORE = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'err', 'v']);

/**
 * A pino destination (anything with `write(line)`): `pino({ level: 'info' }, fabric.logDestination())`.
 * `write` never throws and never blocks.
 */
export class LogDestination extends EventEmitter {
  private readonly link: Link;
  private readonly log: Logger;
  private readonly address: ServiceAddress;
  private readonly exchange: string;
  private readonly maxBuffer: number;
  private readonly maxHeaderBytes: number;
  private readonly mc: ManagedChannel;
  private buffer: Array<{ body: Buffer; headers: Record<string, string> }> = [];
  private pushedBack = false;
  private closed = false;
  /** Records dropped since creation (buffer full, or unreadable). */
  dropped = 0;
  /** Records published. */
  sent = 0;
  constructor(link: Link, log: Logger, address: ServiceAddress, opts: LogDestinationOptions = {}) {
    super();
    this.link = link;
    this.log = log;
    this.address = address;
    this.exchange = logExchange(address.domain);
    this.maxBuffer = opts.maxBuffer ?? 1000;
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 8192;
    // One recovery path (ManagedChannel): rebuilt on reconnect and after a channel-level close.
    this.mc = link.channel({
      name: `fabric logs ${address.domain}`,
      setup: async (ch) => {
        await ch.assertExchange(this.exchange, 'headers', DECLARE.durableHeaders);
        ch.on('drain', () => {
          this.pushedBack = false;
          this.flushBuffer();
        });
      },
    });
    this.mc.on('ready', () => {
      this.pushedBack = false;
      this.flushBuffer();
    });
    // Not awaited: logging must not wait for the broker. The channel is built when connected.
    this.mc.open({ wait: false }).catch(() => undefined);
  }

  /** Records waiting for the broker. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** Called by pino with one JSON line per record. */
  write(chunk: string | Buffer): boolean {
    if (this.closed) return true;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(typeof chunk === 'string' ? chunk : chunk.toString('utf8')) as Record<string, unknown>;
    } catch {
      this.dropped++;
      return true;
    }
    const item = this.toMessage(rec);
    if (this.mc.ready && !this.pushedBack && this.buffer.length === 0 && this.send(item)) return true;
    if (this.buffer.length < this.maxBuffer) this.buffer.push(item);
    else this.dropped++;
    return true;
  }

  private toMessage(rec: Record<string, unknown>): { body: Buffer; headers: Record<string, string> } {
    const level = typeof rec.level === 'number' ? rec.level : 30;
    const headers: Record<string, string> = {
      service_id: this.address.id,
      service_type: this.address.type,
      level_name: pythonLevel(level),
      service_domain: this.address.domain,
      level: String(level),
      time: new Date(typeof rec.time === 'number' ? rec.time : Date.now()).toISOString(),
    };
    if (typeof rec.name === 'string') headers.logger = rec.name;
    if (typeof rec.hostname === 'string') headers.hostname = rec.hostname;
    if (typeof rec.pid === 'number') headers.pid = String(rec.pid);
    const err = rec.err as { type?: string; message?: string; stack?: string } | undefined;
    if (err && typeof err === 'object') {
      headers.error = this.cut(`${err.type ?? 'Error'}: ${err.message ?? ''}`);
      if (typeof err.stack === 'string') headers.error_stack = this.cut(err.stack);
    }
    const extra: Record<string, unknown> = {};
    let hasExtra = false;
    for (const k of Object.keys(rec))
      if (!PINO_CORE.has(k)) {
        extra[k] = rec[k];
        hasExtra = true;
      }
    if (hasExtra) headers.extra = this.cut(JSON.stringify(extra));
    const msg = typeof rec.msg === 'string' ? rec.msg : rec.msg === undefined ? '' : JSON.stringify(rec.msg);
    return { body: Buffer.from(asciiJsonString(msg)), headers };
  }

  private cut(s: string): string {
    if (Buffer.byteLength(s) <= this.maxHeaderBytes) return s;
    return (
      Buffer.from(s)
        .subarray(0, this.maxHeaderBytes)
        .toString('utf8')
        .replace(/\uFFFD$/, '') + '…'
    );
  }

  private send(item: { body: Buffer; headers: Record<string, string> }): boolean {
    const ch = this.mc.channel;
    if (!ch) return false;
    try {
      const ok = send(ch, this.exchange, '', item.body, { headers: item.headers, deliveryMode: 1, priority: 0 });
      this.sent++;
      if (!ok) this.pushedBack = true;
      return true;
    } catch {
      // The channel is closing: the managed channel rebuilds it and flushes the buffer then.
      return false;
    }
  }

  private flushBuffer(): void {
    while (this.buffer.length > 0 && this.mc.ready && !this.pushedBack) {
      if (!this.send(this.buffer[0]!)) break;
      this.buffer.shift();
    }
  }

  /** Stops shipping; records still buffered are given up to `timeoutMs` to go out. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.closed) return;
    const until = Date.now() + timeoutMs;
    while (this.buffer.length > 0 && Date.now() < until && !this.link.isClosed) {
      this.flushBuffer();
      if (this.buffer.length > 0) await new Promise((r) => setTimeout(r, 20));
    }
    this.closed = true;
    this.dropped += this.buffer.length;
    this.buffer = [];
    // Closing the channel flushes what was written to it.
    await this.mc.close();
  }
}

/** A received log record. */
export interface LogRecord {
  domain: string;
  serviceId: string;
  serviceType: string;
  level: string;
  /** The message (the body's JSON string decoded; the raw body when it is not one). */
  message: string;
  /** ISO time when the sender says (TypeScript senders do; Python's AmqpHandler does not). */
  time: string | null;
  headers: Record<string, unknown>;
}

export interface LogFilter {
  domain: string;
  /** Service id, or `type.id`. */
  service?: string;
  /** Lowest level to receive (Python or pino name). */
  level?: string;
}

export function logBindings(f: LogFilter): Array<Record<string, unknown>> {
  const base: Record<string, unknown> = { 'x-match': 'all' };
  if (f.service) {
    const dot = f.service.indexOf('.');
    if (dot > 0) {
      base.service_type = f.service.slice(0, dot);
      base.service_id = f.service.slice(dot + 1);
    } else base.service_id = f.service;
  }
  if (!f.level) return [base];
  const min = LEVEL_NAMES.indexOf(parseLevel(f.level));
  return LEVEL_NAMES.slice(min).map((level_name) => ({ ...base, level_name }));
}

export function recordOfLog(domain: string, content: Buffer, h: Record<string, unknown>): LogRecord {
  const s = (v: unknown): string =>
    Buffer.isBuffer(v) ? v.toString('utf8') : v === undefined || v === null ? '' : safeString(v);
  const raw = content.toString('utf8');
  let message = raw;
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v === 'string') message = v;
  } catch {
    /* not a JSON string: show it as it is */
  }
  return {
    domain: s(h.service_domain) || domain,
    serviceId: s(h.service_id),
    serviceType: s(h.service_type),
    level: s(h.level_name),
    message,
    time: typeof h.time === 'string' ? h.time : null,
    headers: h,
  };
}

/** Tails a domain's logs on a private queue that goes away with the subscriber. */
export function createLogSubscription(
  link: Link,
  log: Logger,
  f: LogFilter,
  handler: (r: LogRecord) => unknown,
): DataSubscription & Subscription {
  return new DataSubscription(link, log, {
    exchange: logExchange(f.domain),
    queue: '',
    bindings: logBindings(f),
    handler: (m) => handler(recordOfLog(f.domain, m.body, m.headers)),
    prefetch: 100,
  });
}
