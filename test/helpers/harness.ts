/**
 * Test harness: a real Amebo against the real PostgreSQL, RabbitMQ and Redis on loopback, isolated
 * per test file by a fresh database, a RabbitMQ name prefix and a Redis key prefix, all random.
 */
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import amqp from 'amqplib';
import { request } from 'undici';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startAmebo, type Amebo, type StartOptions } from '../../src/app.js';
import { createPool, ensureDatabase, migrate, type Pool } from '../../src/store/db.js';
import type { NewEvent } from '../../src/store/events.js';
import { uuidv7 } from '../../src/ids.js';

export const AMQP_URL = process.env.AMEBO_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const PG_BASE = process.env.AMEBO_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
export const REDIS_URL = process.env.AMEBO_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

export const hex = (n = 4): string => randomBytes(n).toString('hex');

export interface TestEnv {
  id: string;
  cfg: Config;
  adminToken: string;
  /** Overrides to start more Amebo processes against the same stores (restart tests). */
  overrides: Partial<Config>;
}

/** A unique set of stores for one test file. */
export function testEnv(overrides: Partial<Config> = {}): TestEnv {
  const id = hex();
  const adminToken = `admin-${hex(12)}`;
  const o: Partial<Config> = {
    amqpUrl: AMQP_URL,
    databaseUrl: `${PG_BASE}/amebo_t_${id}`,
    redisUrl: REDIS_URL,
    prefix: `t${id}`,
    adminToken,
    secretKey: `secret-key-${id}-0123456789`,
    address: '127.0.0.1:0',
    logLevel: process.env.AMEBO_TEST_LOG ?? 'silent',
    stateDir: path.join(tmpdir(), `amebo-t-${id}`),
    relayIntervalMs: 200,
    relayGraceMs: 1000,
    // Webhook receivers in the tests listen on loopback, which production refuses by default
    // (test/security/ runs without this exemption).
    allowedTargets: '127.0.0.0/8,::1,localhost',
    ...overrides,
  };
  return { id, cfg: loadConfig(o, {}), adminToken, overrides: o };
}

export interface Running {
  amebo: Amebo;
  url: string;
  close(): Promise<void>;
}

export async function start(env: TestEnv, opts: StartOptions = {}, extra: Partial<Config> = {}): Promise<Running> {
  const cfg = loadConfig({ ...env.overrides, ...extra }, {});
  const amebo = await startAmebo(cfg, createLogger(cfg.logLevel), { listen: false, ...opts });
  let url = '';
  if (amebo.api) {
    await amebo.api.listen({ host: '127.0.0.1', port: 0 });
    const addr = amebo.api.server.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  }
  return { amebo, url, close: () => amebo.close() };
}

/** Drops the test database and every RabbitMQ object under the prefix. */
export async function destroy(env: TestEnv): Promise<void> {
  await dropBrokerObjects(env.cfg.prefix).catch(() => undefined);
  const c = new pg.Client({ connectionString: `${PG_BASE}/postgres` });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS "amebo_t_${env.id}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
}

/** Deletes queues and exchanges whose names start with `prefix.` (one prefix or several), listed by rabbitmqctl. */
export async function dropBrokerObjects(prefix: string | string[]): Promise<number> {
  const prefixes = (Array.isArray(prefix) ? prefix : [prefix]).map((p) => p + '.');
  if (!prefixes.length) return 0;
  const { execFile } = await import('node:child_process');
  const list = (what: string): Promise<string[]> =>
    new Promise((resolve) => {
      execFile('rabbitmqctl', ['-q', 'list_' + what, 'name'], { timeout: 15_000 }, (err, out) =>
        resolve(
          err
            ? []
            : out
                .split('\n')
                .map((s) => s.trim())
                .filter((s) => prefixes.some((p) => s.startsWith(p))),
        ),
      );
    });
  const [queues, exchanges] = await Promise.all([list('queues'), list('exchanges')]);
  const conn = await amqp.connect(AMQP_URL);
  try {
    for (const q of queues) {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await ch.deleteQueue(q).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
    for (const x of exchanges) {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await ch.deleteExchange(x).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  return queues.length + exchanges.length;
}

/**
 * A throwaway database with Amebo's schema, for the store's tests: `open()` creates and migrates it
 * (call it in `before`), `drop()` closes the pool and drops the database (in `after`).
 */
export function scratchDatabase(label: string): { open(): Promise<Pool>; drop(): Promise<void> } {
  const name = `amebo_t_${label}_${hex()}`;
  const url = `${PG_BASE}/${name}`;
  let pool: Pool | undefined;
  return {
    async open() {
      await ensureDatabase(url);
      pool = createPool({ url, max: 2, logger: createLogger('silent') });
      await migrate(pool);
      return pool;
    },
    async drop() {
      await pool?.end();
      const c = new pg.Client({ connectionString: `${PG_BASE}/postgres` });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** An event row as the publish path hands it to the store (action `x.y` of `a`, `{}`), with `over` applied. */
export function newEvent(over: Partial<NewEvent> = {}): NewEvent {
  const createdAt = over.createdAt ?? new Date();
  const id = over.id ?? uuidv7(createdAt.getTime());
  return {
    id,
    action: 'x.y',
    application: 'a',
    schemaVersion: 1,
    payloadJson: '{}',
    deduper: null,
    conversationId: id,
    deliverAt: null,
    createdAt,
    ...over,
  };
}

export interface Reply {
  status: number;
  body: any;
  headers: Record<string, string | string[] | undefined>;
}

/** A real HTTP call. `auth`: 'admin' | ['app', 'secret'] | a raw Authorization value | undefined. */
export async function http(
  base: string,
  env: TestEnv,
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  path: string,
  body?: unknown,
  auth?: [string, string] | string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const h: Record<string, string> = { ...headers };
  if (auth === 'admin') h.authorization = `Bearer ${env.adminToken}`;
  else if (Array.isArray(auth)) h.authorization = `Basic ${Buffer.from(`${auth[0]}:${auth[1]}`).toString('base64')}`;
  else if (typeof auth === 'string') h.authorization = auth;
  let payload: string | Buffer | undefined;
  if (body !== undefined) {
    payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    h['content-type'] ??= 'application/json';
  }
  const res = await request(base + path, {
    method,
    headers: h,
    body: payload,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* keep text */
  }
  return { status: res.statusCode, body: parsed, headers: res.headers };
}

/** Reads every message currently in a queue without losing them for the assertions (get + ack). */
export async function drainQueue(queue: string, expect: number, timeoutMs = 30_000): Promise<amqp.GetMessage[]> {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  const out: amqp.GetMessage[] = [];
  const deadline = Date.now() + timeoutMs;
  try {
    while (out.length < expect && Date.now() < deadline) {
      const m = await ch.get(queue, { noAck: true });
      if (m) out.push(m);
      else await new Promise((r) => setTimeout(r, 25));
    }
    return out;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Waits until `fn` returns a truthy value, at most `timeoutMs`. */
export async function eventually<T>(fn: () => Promise<T> | T, timeoutMs = 30_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

type Listener = (...args: unknown[]) => void;
type Args<E, K extends keyof E> = E[K] extends unknown[] ? E[K] : never;

/**
 * The next `event` of `emitter` whose arguments pass `filter`. Start waiting BEFORE the action that
 * causes the event (keep the promise, act, then await it). `timeoutMs` is a hang guard only.
 */
export function nextEvent<E extends Record<keyof E, unknown[]>, K extends keyof E & string>(
  emitter: EventEmitter<E>,
  event: K,
  filter: (...args: Args<E, K>) => boolean = () => true,
  timeoutMs = 30_000,
): Promise<Args<E, K>> {
  const em = emitter as unknown as { on(e: string, l: Listener): void; off(e: string, l: Listener): void };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      em.off(event, listener);
      reject(new Error(`no ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener: Listener = (...args) => {
      if (!filter(...(args as Args<E, K>))) return;
      clearTimeout(timer);
      em.off(event, listener);
      resolve(args as Args<E, K>);
    };
    em.on(event, listener);
  });
}

/** Records every `event` of `emitter` (its first argument) from now on; `stop()` ends it. */
export function record<E extends Record<keyof E, unknown[]>, K extends keyof E & string>(
  emitter: EventEmitter<E>,
  event: K,
): { seen: Args<E, K>[0][]; stop(): void } {
  const em = emitter as unknown as { on(e: string, l: Listener): void; off(e: string, l: Listener): void };
  const seen: Args<E, K>[0][] = [];
  const listener: Listener = (first) => void seen.push(first);
  em.on(event, listener);
  return { seen, stop: () => em.off(event, listener) };
}

/** The application most broker tests publish as. */
export const SHOP: [string, string] = ['shop', 'shop-secret-0123456789'];

/**
 * Registers application `shop` with action `order.placed` on a running Amebo and, unless
 * `subscription` is null, an AMQP subscription to it; returns that subscription's queue.
 */
export async function seedShop(srv: Running, env: TestEnv, subscription: string | null = 'audit'): Promise<string> {
  await http(srv.url, env, 'POST', '/v1/applications', { application: 'shop', secret: SHOP[1] }, 'admin');
  await http(srv.url, env, 'POST', '/v1/actions', { action: 'order.placed', application: 'shop', schemata: {} }, SHOP);
  if (subscription === null) return '';
  const s = await http(
    srv.url,
    env,
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription, action: 'order.placed', transport: 'amqp' },
    'admin',
  );
  return (s.body as { queue: string }).queue;
}
